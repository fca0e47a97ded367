import json

import pytest

from synthllm.errors import InputDataError
from synthllm.io import read_jsonl


def test_shared_reads_hold_each_repeated_string_once_and_change_no_value(tmp_path):
    premise = "متن فرضیه‌ای که برای چند فرضیه تکرار می‌شود."
    for name, label in (("a", "entailment"), ("b", "neutral")):
        rows = [{"id": f"{name}{i}", "premise": premise, "hypothesis": f"h{i}", "label": label, "n": i,
                 "votes": {"x": 1}} for i in range(3)]
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                                                encoding="utf-8")
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
