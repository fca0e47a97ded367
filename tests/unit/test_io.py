import json

import pytest

from synthllm.errors import InputDataError
from synthllm.io import read_jsonl


def test_shared_reads_hold_each_repeated_string_once_and_change_no_value(tmp_path):
    premise = "متن فرضیه‌ای که برای چند فرضیه تکرار می‌شود."
    for name, label in (("a", "entailment"), ("b", "neutral")):
        rows = [
            {"id": f"{name}{i}", "premise": premise, "hypothesis": f"h{i}", "label": label, "n": i, "votes": {"x": 1}}
            for i in range(3)
        ]
        (tmp_path / f"{name}.jsonl").write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"
        )
    shared: dict[str, str] = {}
    a, b = (read_jsonl(tmp_path / f"{n}.jsonl", shared=shared) for n in "ab")
    assert a == read_jsonl(tmp_path / "a.jsonl") and b == read_jsonl(tmp_path / "b.jsonl")
    assert len({id(r["premise"]) for r in a + b}) == 1  # one object across rows and files
    assert len({id(k) for r in a + b for k in r if k == "premise"}) == 1
    plain = read_jsonl(tmp_path / "a.jsonl")
    assert plain[0]["premise"] is not plain[1]["premise"]  # what the plain parser does (why shared exists)


def test_a_bad_line_names_its_file_and_line(tmp_path):
    (tmp_path / "x.jsonl").write_text('{"a": 1}\n{"a": \n', encoding="utf-8")
    with pytest.raises(InputDataError, match=r"x\.jsonl:2: not valid JSON"):
        read_jsonl(tmp_path / "x.jsonl", shared={})


def test_the_model_fingerprint_covers_subfolders_and_keeps_flat_folders_hashes(tmp_path):
    """Issue 14 (defect 4): the classifier annotator keeps its n-gram member in ngram/; a change
    there alone left the cache key as it was, so the old probabilities were served."""
    import hashlib
    import os

    from synthllm.io import fingerprint

    (tmp_path / "config.json").write_text("{}")
    (tmp_path / ".hidden").write_text("ignored")
    flat = fingerprint(tmp_path)
    old_rule = hashlib.sha256(b"config.json" + b"{}").hexdigest()[:16]  # name + content, top level only
    assert flat == old_rule  # folders without subfolders keep their cache keys
    (tmp_path / "ngram").mkdir()
    member = tmp_path / "ngram" / "weights.json"
    member.write_text('{"w": 1}')
    with_member = fingerprint(tmp_path)
    assert with_member != flat
    member.write_text('{"w": 2}')
    os.utime(member, ns=(1, 1))  # a new folder state even on a coarse clock
    assert fingerprint(tmp_path) not in (flat, with_member)
