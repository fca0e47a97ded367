import shutil

import pytest

from synthllm import gold
from synthllm.errors import GoldDataError
from synthllm.stages import gold as gold_stage


def test_unreachable_url_says_how_to_work_offline(tmp_path):
    with pytest.raises(GoldDataError, match="SYNTHLLM_FARSTAIL_MIRROR"):
        gold.fetch(tmp_path, base_url="http://127.0.0.1:9", mirror_dir=None, timeout=2)


def test_missing_mirror_file(tmp_path, farstail_mirror):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    shutil.copy(farstail_mirror / "Train-word.csv", mirror)
    with pytest.raises(GoldDataError, match=r"Val-word\.csv: missing from the mirror"):
        gold.fetch(tmp_path / "stage", base_url="unused", mirror_dir=mirror)


def _spec(columns=("premise", "hypothesis", "label")):
    return gold.GoldFile("train", "x.csv", "-", columns)


def test_parse_reads_quotes_and_line_breaks(tmp_path):
    f = tmp_path / "x.csv"
    f.write_text('premise\thypothesis\tlabel\n"متن با ""نقل"" و\nسطر دوم"\tجمله كوتاه\te\n', encoding="utf-8")
    df = gold.parse(f, _spec())
    assert len(df) == 1
    assert df.loc[0, "premise"] == "متن با «نقل» و سطر دوم"  # hazm: quotes → guillemets
    assert df.loc[0, "hypothesis"] == "جمله کوتاه"  # Arabic kaf normalised to Persian
    assert df.loc[0, "label"] == "entailment"


def test_parse_missing_column_and_bad_labels_and_empty_rows(tmp_path):
    f = tmp_path / "x.csv"
    f.write_text("premise\thypothesis\nالف\tب\n", encoding="utf-8")
    with pytest.raises(GoldDataError, match=r"missing columns \['label'\]"):
        gold.parse(f, _spec())
    f.write_text("premise\thypothesis\tlabel\nالف\tب\tx\n", encoding="utf-8")
    with pytest.raises(GoldDataError, match=r"unknown label codes \['x'\]"):
        gold.parse(f, _spec())
    f.write_text("premise\thypothesis\tlabel\nالف\tب\te\n \tب\tn\n", encoding="utf-8")
    with pytest.raises(GoldDataError, match="1 rows with an empty premise"):
        gold.parse(f, _spec())


def test_stage_fails_cleanly_on_missing_mirror_and_writes_nothing(tmp_path, repo_root, monkeypatch, capsys):
    monkeypatch.setenv("SYNTHLLM_FARSTAIL_MIRROR", str(tmp_path / "does-not-exist"))
    out = tmp_path / "gold"
    with pytest.raises(SystemExit) as exit_:
        gold_stage.main(["--params", str(repo_root / "params.yaml"), "--out", str(out)])
    assert exit_.value.code == 2
    assert "SYNTHLLM_FARSTAIL_MIRROR" in capsys.readouterr().err
    assert not out.exists()


def test_stage_on_corrupted_mirror_writes_nothing(tmp_path, repo_root, farstail_mirror, monkeypatch, capsys):
    mirror = tmp_path / "mirror"
    shutil.copytree(farstail_mirror, mirror)
    (mirror / "Test-word.csv").write_text("premise\thypothesis\tlabel\n", encoding="utf-8")
    monkeypatch.setenv("SYNTHLLM_FARSTAIL_MIRROR", str(mirror))
    out = tmp_path / "gold"
    with pytest.raises(SystemExit):
        gold_stage.main(["--params", str(repo_root / "params.yaml"), "--out", str(out)])
    assert "Test-word.csv: sha256 mismatch" in capsys.readouterr().err
    assert not out.exists()
