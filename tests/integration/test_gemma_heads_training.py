"""The Gemma-state head classifier on a tiny real causal LM (the ``tiny_lm`` fixture)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from synthllm.classifiers.gemma_heads import GemmaHeadClassifier, load
from synthllm.classifiers.gemma_states import GemmaStateCache
from synthllm.params import NLI_LABELS, GemmaHeadParams


@pytest.fixture(scope="module")
def rows(farstail_mirror) -> pd.DataFrame:
    df = pd.read_csv(farstail_mirror / "Train-word.csv", sep="\t", dtype=str, keep_default_na=False)
    names = {"e": "entailment", "c": "contradiction", "n": "neutral"}
    return df.head(60).assign(label=lambda d: d["label"].map(names))[["premise", "hypothesis", "label"]]


def tiny_params(model_dir, cache_dir, **kw) -> GemmaHeadParams:
    base = dict(
        model_dir=str(model_dir),
        feature_cache=str(cache_dir),
        layers=[1, 2],
        max_tokens=48,
        hidden=16,
        batch_size=16,
        ngram_weight=0.3,
        threads=2,
    )
    return GemmaHeadParams(**{**base, **kw})


def test_phases_continue_the_same_weights(tiny_lm, tmp_path, rows):
    params = tiny_params(tiny_lm, tmp_path / "cache")
    synthetic, gold = rows.iloc[:30], rows.iloc[30:]
    log = GemmaHeadClassifier(params, NLI_LABELS).fit_phases([(synthetic, 2), (gold, 1)], seed=3)
    assert [(e["phase"], e["rows"], e["epochs"]) for e in log] == [(0, 30, 2), (1, 30, 1)]
    # phase 1 starts from phase 0's trained weights, not from a fresh initialisation
    assert log[1]["weights_start"] == log[0]["weights_end"] != log[0]["weights_start"]
    assert log[1]["weights_end"] != log[1]["weights_start"]
    alone = GemmaHeadClassifier(params, NLI_LABELS).fit_phases([(synthetic, 2)], seed=3)
    assert alone[0]["weights_end"] == log[0]["weights_end"]


@pytest.mark.parametrize("head", ["align", "pooled"])
def test_same_seed_same_predictions_and_save_load_round_trip(tiny_lm, tmp_path, rows, head):
    params = tiny_params(tiny_lm, tmp_path / "cache", head=head)
    a, b = GemmaHeadClassifier(params, NLI_LABELS), GemmaHeadClassifier(params, NLI_LABELS)
    a.fit_phases([(rows, 2)], seed=7)
    b.fit_phases([(rows, 2)], seed=7)
    premises, hypotheses = list(rows.premise[:10]), list(rows.hypothesis[:10])
    proba = a.predict_proba(premises, hypotheses)
    np.testing.assert_array_equal(proba, b.predict_proba(premises, hypotheses))
    a.save(tmp_path / "model")
    np.testing.assert_array_equal(proba, load(tmp_path / "model").predict_proba(premises, hypotheses))
    other = GemmaHeadClassifier(params, NLI_LABELS)
    other.fit_phases([(rows, 2)], seed=8)
    assert not np.array_equal(proba, other.predict_proba(premises, hypotheses))


def test_probabilities_sum_to_one_in_the_given_label_order(tiny_lm, tmp_path):
    # each label has its own fixed hypothesis, so a working head must learn which is which
    labels = ("neutral", "entailment", "contradiction")
    cue = {"neutral": "شاید باران ببارد", "entailment": "هوا آفتابی است", "contradiction": "هرگز نه"}
    train = pd.DataFrame(
        [
            {"premise": f"متن شماره {i} درباره هوا", "hypothesis": cue[lab], "label": lab}
            for i in range(12)
            for lab in labels
        ]
    )
    params = tiny_params(tiny_lm, tmp_path / "cache", ngram_weight=0.0, learning_rate=1e-2, dropout=0.0)
    clf = GemmaHeadClassifier(params, labels=labels)
    clf.fit_phases([(train, 15)], seed=0)
    proba = clf.predict_proba(["متن تازه درباره هوا"] * 3, [cue[lab] for lab in labels])
    assert proba.shape == (3, 3)
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=0, atol=1e-9)
    assert list(proba.argmax(1)) == [0, 1, 2]


def test_cache_is_reused_from_disk_and_fills_new_pairs(tiny_lm, tmp_path):
    premise = "اولین متن کوتاه درباره هوا"
    hypotheses = ["هوا خوب است", "دومین جمله کمی بلندتر از اولی است"]
    first = GemmaStateCache(tiny_lm, [1, 2], 48, tmp_path / "cache")
    rows = first.get([premise] * 2, hypotheses)
    p_states, p_ids, h_states, h_ids = rows[0]
    assert p_states.shape == (len(p_ids), 2 * 64) and h_states.shape == (len(h_ids), 2 * 64)
    assert p_states.dtype == np.float16 and len(p_ids) > 0 and len(h_ids) > 0
    # causal LM: the premise's states do not depend on the hypothesis, the hypothesis's do
    np.testing.assert_array_equal(rows[1][0], p_states)
    alone = first.get([""], hypotheses[:1])[0]
    np.testing.assert_array_equal(alone[3], h_ids)
    assert len(alone[0]) == 0 and not np.array_equal(alone[2], h_states)
    again = GemmaStateCache(tiny_lm, [1, 2], 48, tmp_path / "cache")
    for old, new in zip(rows, again.get([premise] * 2, hypotheses)):
        for a, b in zip(old, new):
            np.testing.assert_array_equal(a, b)
    assert again._lm is None  # served from disk: the LM was never loaded
    (fresh,) = again.get([premise], ["جمله‌ای که هنوز دیده نشده"])
    assert len(fresh[3]) > 0 and again._lm is not None
    # each layer has its own folder: a model on layer 2 alone reuses layer 2 of this one
    only_two = GemmaStateCache(tiny_lm, [2], 48, tmp_path / "cache")
    np.testing.assert_array_equal(only_two.get([premise], hypotheses[:1])[0][2], h_states[:, 64:])
    assert only_two._lm is None


def test_single_text_task(tiny_lm, tmp_path, rows):
    params = tiny_params(tiny_lm, tmp_path / "cache")
    clf = GemmaHeadClassifier(params, NLI_LABELS, pair=False)
    clf.fit_phases([(rows.assign(premise=""), 1)], seed=0)
    proba = clf.predict_proba([""] * 4, list(rows.hypothesis[:4]))
    assert proba.shape == (4, 3)
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-9)


def test_regime_driver_resumes_from_a_phase_checkpoint_exactly(tiny_lm, tmp_path, rows):
    from synthllm.regimes import Monitor, run_phases

    params = tiny_params(tiny_lm, tmp_path / "cache", head="pooled")
    gold, synthetic = rows.iloc[:40], rows.iloc[40:]
    seen: list[dict] = []

    def train(checkpoints):
        return run_phases(
            "warmup",
            gold,
            synthetic,
            build=lambda seed: GemmaHeadClassifier(params, NLI_LABELS, seed=seed),
            load=load,
            gold_epochs=2,
            synthetic_epochs=2,
            seed=4,
            monitor=Monitor(val=gold.iloc[:10], dev=synthetic, log=seen.append),
            select_synthetic_epoch=True,
            checkpoint_dir=checkpoints,
        )

    clf, log = train(tmp_path / "run")
    assert [e["source"] for e in log] == ["synthetic", "gold"] and "selected_epoch" in log[0]
    assert len(seen) == 4  # the monitor saw every epoch of both phases
    (tmp_path / "run" / "phase-1" / "done.json").unlink()  # as if killed during the gold phase
    resumed, _ = train(tmp_path / "run")
    premises, hypotheses = list(rows.premise[:8]), list(rows.hypothesis[:8])
    np.testing.assert_array_equal(clf.predict_proba(premises, hypotheses), resumed.predict_proba(premises, hypotheses))


def test_pipeline_driver_warmup_continues_the_weights_and_loads_through_load_classifier(tiny_lm, tmp_path, rows):
    """The train stage's path (``train_regime`` → ``build_classifier`` → ``load_classifier``)."""
    import shutil

    from synthllm.classifiers import build_classifier, load_classifier, train_regime

    lm = tmp_path / "lm"
    shutil.copytree(tiny_lm, lm)
    params = tiny_params(lm, tmp_path / "cache", head="pooled", ngram_weight=0.0)
    assert isinstance(build_classifier(params, NLI_LABELS), GemmaHeadClassifier)
    gold, synthetic = rows.iloc[:40], rows.iloc[40:]
    clf, log = train_regime(
        "warmup", gold, synthetic, params, gold_epochs=1, synthetic_epochs=2, seed=5, labels=NLI_LABELS
    )
    assert [e["source"] for e in log] == ["synthetic", "gold"]
    # warm-up: the gold phase starts from the weights the synthetic phase ended with
    assert log[1]["weights_start"] == log[0]["weights_end"] != log[0]["weights_start"]
    _, rev = train_regime(
        "reversed", gold, synthetic, params, gold_epochs=1, synthetic_epochs=2, seed=5, labels=NLI_LABELS
    )
    assert [e["source"] for e in rev] == ["gold", "synthetic"]
    assert rev[1]["weights_start"] == rev[0]["weights_end"]
    clf.save(tmp_path / "model")
    premises, hypotheses = list(rows.premise[:6]), list(rows.hypothesis[:6])
    np.testing.assert_array_equal(
        load_classifier(tmp_path / "model").predict_proba(premises, hypotheses), clf.predict_proba(premises, hypotheses)
    )
    # other weights in the LM folder: the saved head would read states it was not trained on
    (lm / "added.bin").write_bytes(b"\0")
    with pytest.raises(ValueError, match="retrain it"):
        load_classifier(tmp_path / "model")


def test_memoised_means_equal_a_fresh_computation(tiny_lm, tmp_path, rows, monkeypatch):
    from synthllm.classifiers import gemma_states

    premises, hypotheses = list(rows.premise[:20]), list(rows.hypothesis[:20])
    cache = GemmaStateCache(tiny_lm, [1, 2], 48, tmp_path / "cache")

    def fresh(c):
        return [(gemma_states.mean_state(hs), len(hs), len(ps)) for ps, _, hs, _ in c.get(premises, hypotheses)]

    def same(got, expected):
        assert len(got) == len(expected)
        for (m, nh, n_p), (em, enh, enp) in zip(got, expected):
            assert m.dtype == np.float32 and (nh, n_p) == (enh, enp)
            np.testing.assert_array_equal(m, em)

    first = cache.means(premises, hypotheses)
    same(first, fresh(cache))
    same(cache.means(premises[::-1], hypotheses[::-1]), fresh(cache)[::-1])  # memo hits, any order
    # another instance on the same folder (the next seed) shares the memo and reads no states
    other = GemmaStateCache(tiny_lm, [1, 2], 48, tmp_path / "cache")
    monkeypatch.setattr(other, "get", lambda *a: pytest.fail("states read for memoised pairs"))
    same(other.means(premises, hypotheses), first)
    monkeypatch.undo()
    # a memo smaller than one call still answers every pair with the fresh values
    monkeypatch.setattr(gemma_states, "MEAN_CACHE_BYTES", 3 * first[0][0].nbytes)
    small = GemmaStateCache(tiny_lm, [1, 2], 48, None)
    same(small.means(premises, hypotheses), first)
    assert len(small._means) == 3


def test_a_new_process_reads_stored_means_not_token_states(tiny_lm, tmp_path, rows, monkeypatch):
    """Issue 19: a pooled head reads one mean per pair; a stage that trains or evaluates one must not
    load the token states to get it. Shards store each entry's mean beside its states, and a cache
    opened afresh (another process: the memo is emptied) answers means() from them, with the values
    a fresh computation gives, bit for bit."""
    from synthllm.classifiers import gemma_states

    premises, hypotheses = list(rows.premise[:24]), list(rows.hypothesis[:24])
    writer = GemmaStateCache(tiny_lm, [1, 2], 48, tmp_path / "cache")
    writer.get(premises, hypotheses)  # computes and writes the shards
    expected = [(gemma_states.mean_state(hs), len(hs), len(ps)) for ps, _, hs, _ in writer.get(premises, hypotheses)]
    gemma_states._SHARED_MEANS.clear()
    gemma_states._SHARED_INDEX.clear()
    reader = GemmaStateCache(tiny_lm, [1, 2], 48, tmp_path / "cache")
    monkeypatch.setattr(reader, "get", lambda *a: pytest.fail("token states read for stored pairs"))
    got = reader.means(premises, hypotheses)
    assert reader._shards == {}  # no states shard was opened
    for (m, nh, n_p), (em, enh, enp) in zip(got, expected):
        assert (nh, n_p) == (enh, enp)
        np.testing.assert_array_equal(m, em)
    # a shard written before means were stored: the means come from the states, as before
    for path in (tmp_path / "cache").rglob("*.means.npy"):
        path.unlink()
    gemma_states._SHARED_MEANS.clear()
    monkeypatch.undo()
    old = GemmaStateCache(tiny_lm, [1, 2], 48, tmp_path / "cache")
    for (m, _, _), (em, _, _) in zip(old.means(premises, hypotheses), expected):
        np.testing.assert_array_equal(m, em)
