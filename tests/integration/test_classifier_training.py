from synthllm.classifiers import load_classifier, train_regime
from synthllm.classifiers.hf import HFClassifier
from synthllm.evaluation import evaluate_predictions
from synthllm.io import read_frame
from synthllm.params import NLI_LABELS, HFClassifierParams, SklearnClassifierParams


def test_offline_default_learns_farstail(gold_dir, tmp_path):
    """The default classifier must really learn: well above chance on FarsTail test after one
    gold pass over a third of train (the full default run: docs/offline-default.md)."""
    train = read_frame(gold_dir / "train.jsonl").sample(2500, random_state=0)
    test = read_frame(gold_dir / "test.jsonl")
    clf, log = train_regime(
        "gold_only",
        train,
        None,
        SklearnClassifierParams(),
        gold_epochs=3,
        synthetic_epochs=1,
        seed=1,
        labels=NLI_LABELS,
    )
    assert log == [{"phase": 0, "source": "gold", "rows": 2500, "epochs": 3}]
    clf.save(tmp_path / "m")
    proba = load_classifier(tmp_path / "m").predict_proba(list(test["premise"]), list(test["hypothesis"]))
    assert proba.shape == (len(test), 3)
    acc = evaluate_predictions(test, [NLI_LABELS[i] for i in proba.argmax(1)], NLI_LABELS)["all"]["accuracy"]
    assert acc > 0.5


def test_warmup_continues_from_the_synthetic_phase(gold_dir):
    """Training on gold after synthetic must start from the synthetic weights (not a reset)."""
    gold = read_frame(gold_dir / "train.jsonl").head(300)
    syn = gold.assign(label="neutral")
    params = SklearnClassifierParams(n_features=2**12)
    after_syn, _ = train_regime(
        "synthetic_only", gold, syn, params, gold_epochs=1, synthetic_epochs=2, seed=0, labels=NLI_LABELS
    )
    warm, _ = train_regime("warmup", gold, syn, params, gold_epochs=1, synthetic_epochs=2, seed=0, labels=NLI_LABELS)
    cold, _ = train_regime(
        "gold_only", gold, None, params, gold_epochs=1, synthetic_epochs=2, seed=0, labels=NLI_LABELS
    )
    neutral_share = lambda clf: (clf.predict_proba(gold.premise, gold.hypothesis).argmax(1) == 2).mean()  # noqa: E731
    assert neutral_share(after_syn) == 1.0
    # SGD counts every sample it has stepped on: the gold phase added to the synthetic phase's count
    assert warm.model.t_ == after_syn.model.t_ + len(gold)
    assert cold.model.t_ == len(gold) + 1
    assert abs(warm.model.coef_ - cold.model.coef_).max() > 1e-3


def test_hf_trainer_path_trains_saves_and_reloads(tiny_encoder, gold_dir, tmp_path):
    gold = read_frame(gold_dir / "train.jsonl").head(64)
    syn = read_frame(gold_dir / "val.jsonl").head(32)
    params = HFClassifierParams(
        model=str(tiny_encoder), max_length=64, batch_size=16, learning_rate=1e-3, max_steps_per_phase=3
    )
    clf, log = train_regime("warmup", gold, syn, params, gold_epochs=1, synthetic_epochs=1, seed=0, labels=NLI_LABELS)
    assert [p["rows"] for p in log] == [32, 64]
    assert all(p["train_loss"] > 0 for p in log)
    clf.save(tmp_path / "hf")
    again = load_classifier(tmp_path / "hf")
    assert isinstance(again, HFClassifier)
    p1 = clf.predict_proba(list(gold.premise[:5]), list(gold.hypothesis[:5]))
    p2 = again.predict_proba(list(gold.premise[:5]), list(gold.hypothesis[:5]))
    assert p1.shape == (5, 3) and abs(p1 - p2).max() < 1e-5


def test_the_feature_cache_is_bounded_in_bytes_and_still_hashes_once(gold_dir, monkeypatch):
    """Hashed features are kept per process, one row per distinct pair, up to FEATURE_CACHE_BYTES:
    a matrix larger than the bound is never kept (a 100k-row synthetic split), smaller ones are
    reused until they must make room; a row read from the store equals a row hashed anew."""
    from synthllm.classifiers import ngrams

    rows = read_frame(gold_dir / "train.jsonl")
    small, big = rows.iloc[:200], rows.iloc[200:2200]
    clf = ngrams.HashingSGDClassifier(SklearnClassifierParams(), NLI_LABELS)
    ngrams._STORES.clear()
    fresh = clf._features(list(small["premise"]), list(small["hypothesis"]))
    small_x = clf.features(list(small["premise"]), list(small["hypothesis"]))
    store = ngrams._STORES[(clf.params.n_features, True, "None")]
    assert (small_x != fresh).nnz == 0 and store.nbytes() == ngrams._nbytes(fresh)
    monkeypatch.setattr(ngrams, "FEATURE_CACHE_BYTES", 3 * ngrams._nbytes(small_x))
    calls = []
    real = clf._features
    monkeypatch.setattr(clf, "_features", lambda p, h: calls.append(len(h)) or real(p, h))
    # repeated and reordered rows (a mix phase): hashed once, each row equal to its fresh hashing
    twice = small.iloc[::-1]
    again = clf.features(list(twice["premise"]) * 2, list(twice["hypothesis"]) * 2)
    assert calls == [] and (again[:200] != fresh[::-1]).nnz == 0 and (again[200:] != fresh[::-1]).nnz == 0
    big_x = clf.features(list(big["premise"]), list(big["hypothesis"]))
    assert calls == [2000] and ngrams._nbytes(big_x) > ngrams.FEATURE_CACHE_BYTES
    assert store.nbytes() <= ngrams.FEATURE_CACHE_BYTES  # the big one was not kept ...
    assert (clf.features(list(small["premise"]), list(small["hypothesis"])) != fresh).nnz == 0
    assert calls == [2000]  # ... and the small one still was
    assert (clf.features(list(big["premise"]), list(big["hypothesis"])) != big_x).nnz == 0
    assert calls == [2000, 2000]  # re-hashed, equal
    for start in range(200, 1200, 100):  # new rows make room: the total stays bounded
        part = rows.iloc[start : start + 100]
        clf.features(list(part["premise"]), list(part["hypothesis"]))
        assert store.nbytes() <= ngrams.FEATURE_CACHE_BYTES
    ngrams._STORES.clear()


def test_hashed_features_kept_on_disk_serve_a_new_process(gold_dir, tmp_path, monkeypatch):
    """With a feature folder, rows hashed in one process are read back in the next (the train and
    evaluate stages all read gold train/val/test), equal bit for bit, and only new rows are hashed."""
    from synthllm.classifiers import ngrams

    rows = read_frame(gold_dir / "train.jsonl")
    first, later = rows.iloc[:300], rows.iloc[200:400]
    clf = ngrams.HashingSGDClassifier(SklearnClassifierParams(), NLI_LABELS)
    clf.feature_dir = tmp_path / "features"
    ngrams._STORES.clear()
    ngrams._DISKS.clear()
    x = clf.features(list(first["premise"]), list(first["hypothesis"]))
    fresh = clf._features(list(later["premise"]), list(later["hypothesis"]))
    ngrams._STORES.clear()  # a new process: nothing in memory ...
    ngrams._DISKS.clear()
    again = ngrams.HashingSGDClassifier(SklearnClassifierParams(), NLI_LABELS)
    again.feature_dir = tmp_path / "features"
    hashed = []
    real = again._features
    monkeypatch.setattr(again, "_features", lambda p, h: hashed.append(len(h)) or real(p, h))
    got = again.features(list(later["premise"]), list(later["hypothesis"]))
    assert hashed == [100]  # ... rows 200-299 came from disk, 300-399 were hashed
    assert (got != fresh).nnz == 0
    assert (again.features(list(first["premise"]), list(first["hypothesis"])) != x).nnz == 0
    assert hashed == [100]
    assert len(list((tmp_path / "features").rglob("*.keys.json"))) == 2
    ngrams._STORES.clear()
    ngrams._DISKS.clear()
