import http.server
import shutil
import threading
from functools import partial

import pytest

from synthllm import gold
from synthllm.errors import GoldDataError


@pytest.fixture
def served(tmp_path, farstail_mirror):
    """A real HTTP server on 127.0.0.1 serving a copy of the mirror folder."""
    root = tmp_path / "www"
    shutil.copytree(farstail_mirror, root)
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_download_over_http_verifies_and_parses(served, tmp_path):
    _, url = served
    frames = gold.load_farstail(tmp_path / "stage", base_url=url, mirror_dir=None)
    assert {k: len(v) for k, v in frames.items()} == {"train": 7266, "val": 1537, "test": 1564}
    assert frames["train"]["label"].value_counts().to_dict() == {
        "neutral": 2448,
        "entailment": 2429,
        "contradiction": 2389,
    }
    test = frames["test"]
    assert {"hard_hypothesis", "hard_overlap"} <= set(test.columns)
    assert 0 < test["hard_hypothesis"].sum() < len(test)


def test_checksum_mismatch_over_http_names_the_file(served, tmp_path):
    root, url = served
    (root / "Val-word.csv").write_bytes((root / "Val-word.csv").read_bytes()[:-10])
    with pytest.raises(GoldDataError, match=r"Val-word\.csv: sha256 mismatch"):
        gold.fetch(tmp_path / "stage", base_url=url, mirror_dir=None)
