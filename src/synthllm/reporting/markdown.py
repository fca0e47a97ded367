"""results.md, one function per section; :func:`document` assembles them in order."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd

from synthllm.generation import label_codes


def _pct(x) -> str:
    return f"{100 * x:.1f}"


def _annotator_row(name: str, m: Mapping, labels: Sequence[str]) -> tuple[str, str | None]:
    """An annotator's audit-table row, and the note an annotator without audit (intended) gets."""
    pct, note = _pct, None
    a, pool = m["audit"], m["pool"]
    dist = "/".join(pct(pool["label_distribution"].get(lab) or 0) for lab in labels)
    coverage = a.get("confidence_coverage")
    ece = (
        "– (no confidences)"
        if a.get("ece") is None
        else f"{a['ece']:.3f}" + (f" ({pct(coverage)} %)" if coverage is not None else "")
    )
    reasons = ", ".join(f"{k} {v}" for k, v in (pool.get("failure_reasons") or {}).items()) or "–"
    if a.get("not_applicable"):  # no gold-audit labels, so no scores: a dash and the reason
        acc, f1, ece = "– (no audit)", "–", "–"
        note = f"\n{name}: audit {a['not_applicable']}."
    else:
        acc, f1 = pct(a["accuracy"]), pct(a["macro_f1"])
    row = f"| {name} | {a['n']} | {acc} | {f1} | {ece} | {pool['failed']}/{pool['n']} | {reasons} | {dist} |"
    return row, note


def annotators_section(annotators: Mapping[str, dict], quality: Mapping | None, labels: Sequence[str]) -> list[str]:
    """The title and the annotators' audit table, flip rates and agreement."""
    pct = _pct
    codes = "/".join(label_codes(labels)[lab] for lab in labels)
    lines = [
        "# SynthLLM results",
        "",
        "## Annotators (gold-val audit sample)",
        "",
        f"| annotator | audit n | accuracy | macro-F1 | ECE (rows with a confidence) | failed (pool) "
        f"| failure reasons (pool) | pool labels {codes} |",
        "|---|---|---|---|---|---|---|---|",
    ]
    notes = []
    for name, m in sorted(annotators.items()):
        row, note = _annotator_row(name, m, labels)
        lines.append(row)
        notes += [note] if note else []
    lines += notes
    for name, m in sorted(annotators.items()):
        flips = m["pool"].get("prompt_order_flip_rate")
        if flips:
            per_class = ", ".join(f"{k} {pct(v)}" for k, v in sorted(flips["by_class"].items()))
            lines.append(
                f"\nPrompt-order flip rate of {name} (hypothesis first): {pct(flips['overall'])} % ({per_class})."
            )
    if quality and "pairwise_kappa" in quality:
        lines += [
            "",
            "Agreement on the synthetic pool: "
            + ", ".join(f"κ({k.replace('__', ', ')}) = {v:.3f}" for k, v in sorted(quality["pairwise_kappa"].items()))
            + (f"; Fleiss' κ = {quality['fleiss_kappa']:.3f}" if quality.get("fleiss_kappa") is not None else "")
            + ".",
        ]
        vote = quality.get("vote_on_audit")
        if vote and vote.get("unavailable"):
            lines.append(f"No majority vote on the audit sample: {vote['unavailable']}.")
        elif vote:
            weighted = vote.get("weighted_majority_accuracy")
            left_out = vote.get("without_audit")
            lines.append(
                f"Majority vote of {', '.join(vote['members'])} on the audit sample"
                + (f" ({', '.join(left_out)} left out: no audit)" if left_out else "")
                + f": {pct(vote['majority_accuracy'])} % (confidence-weighted: "
                + (
                    f"{pct(weighted)} %)."
                    if weighted is not None
                    else f"not computed: {vote.get('weighted_majority_unavailable')})."
                )
            )
    return lines


def accuracy_section(table: pd.DataFrame, strategy: str, gold_name: str) -> list[str]:
    """Test accuracy by annotator × regime."""
    pct = _pct
    hard = bool(table["hard_hypothesis_acc"].notna().any()) if len(table) else False
    lines = [
        "",
        f"## Test accuracy by annotator × regime ({gold_name} test, %)",
        "",
        "Mean over seeds; [t-interval over seeds]; {two-level bootstrap 95 % CI over seeds and test "
        f"items}}. Synthetic label distribution (split.strategy): {strategy}.",
        "",
        "| annotator | strategy | regime | passes | seeds | accuracy | seed CI | seed×item CI | macro-F1 "
        "| macro-F1 item CI |" + (" hard-hyp | hard-overlap |" if hard else ""),
        "|---|---|---|---|---|---|---|---|---|---|" + ("---|---|" if hard else ""),
    ]
    for r in table.itertuples():
        shown = "–" if r.regime == "gold_only" else strategy
        lines.append(
            f"| {r.annotator} | {shown} | {r.regime} | {getattr(r, 'passes', '')} | {r.seeds} | {pct(r.accuracy)} | "
            f"[{pct(r.acc_seed_ci_low)}, {pct(r.acc_seed_ci_high)}] | "
            f"{{{pct(r.acc_boot_ci_low)}, {pct(r.acc_boot_ci_high)}}} | {pct(r.macro_f1)} | "
            f"{{{pct(r.f1_boot_ci_low)}, {pct(r.f1_boot_ci_high)}}} |"
            + (f" {pct(r.hard_hypothesis_acc)} | {pct(r.hard_overlap_acc)} |" if hard else "")
        )
    return lines


def comparisons_section(comparisons: pd.DataFrame) -> list[str]:
    """The pairwise regime comparisons."""
    pct = _pct
    lines = [
        "",
        "## Regime comparisons",
        "",
        "Two-level bootstrap (seeds and test items resampled; items paired between the two regimes) of "
        "the accuracy difference, 95 % CI; p two-sided. Significant: Holm–Bonferroni adjusted p ≤ 0.05 "
        f"over the {len(comparisons)} comparisons below. McNemar's p per seed (seeds paired by number).",
        "",
        "| annotator | a | b | Δ accuracy (a − b) | CI | p | p (Holm) | significant | McNemar p by seed |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for c in comparisons.itertuples():
        lines.append(
            f"| {c.annotator} | {c.a} | {c.b} | {pct(c.delta_accuracy)} | "
            f"[{pct(c.ci_low)}, {pct(c.ci_high)}] | {c.p_value:.3g} | {c.p_holm:.3g} | "
            f"{'**yes**' if c.significant else 'no'} | {c.mcnemar_p_by_seed} |"
        )
    return lines


def main_sections(
    table: pd.DataFrame,
    comparisons: pd.DataFrame,
    annotators: Mapping[str, dict],
    quality: Mapping | None,
    strategy: str,
    labels: Sequence[str],
    gold_name: str,
) -> str:
    """Annotators, test accuracy and regime comparisons, as one block of text."""
    lines = [
        *annotators_section(annotators, quality, labels),
        *accuracy_section(table, strategy, gold_name),
        *comparisons_section(comparisons),
    ]
    return "\n".join(lines) + "\n"


def aggregates_section(table: pd.DataFrame, regimes: Sequence[str], gold_name: str) -> str:
    if table.empty:
        return ""
    pct = lambda x: "–" if x is None or x != x else f"{100 * x:.1f}"  # noqa: E731
    lines = [
        "",
        "## Aggregates: every vote method on the same members",
        "",
        "Audit accuracy is out of fold for the learned methods (reliabilities fit on the other folds of "
        "the audit sample); 95 % bootstrap CI over audit rows. Coverage: share of pool rows labelled. Test "
        f"accuracy ({gold_name} test, mean over seeds) for the configured method (✓), the one its branch "
        "trains on.",
        "",
        "| aggregate | method | audit accuracy | CI | macro-F1 | ECE | coverage | best member (audit) | "
        + " | ".join(regimes)
        + " |",
        "|---" * (8 + len(regimes)) + "|",
    ]
    for r in table.itertuples():
        mark = f"{r.method} ✓" if r.configured else r.method
        if r.unavailable:
            cells = f"unavailable: {r.unavailable} | | | | |"
        else:
            ece = "–" if r.ece is None or r.ece != r.ece else f"{r.ece:.3f}"
            cells = (
                f"{pct(r.accuracy)} | [{pct(r.ci_low)}, {pct(r.ci_high)}] | {pct(r.macro_f1)} | {ece} | "
                f"{pct(r.coverage)}"
            )
        tests = " | ".join(pct(getattr(r, f"test_{g}")) for g in regimes)
        lines.append(f"| {r.aggregate} | {mark} | {cells} | {r.best_member} {pct(r.best_member_accuracy)} | {tests} |")
    return "\n".join(lines) + "\n"


def curves_section(table: pd.DataFrame, comparisons: pd.DataFrame, pool: pd.DataFrame | None, main_budget: int) -> str:
    pct = lambda x: f"{100 * x:.1f}"  # noqa: E731
    lines = [
        "",
        "## Learning curves: test accuracy by gold budget (%)",
        "",
        f"Each budget re-trains the classifier annotator and every regime on that many gold pairs (nested "
        f"subsets); {main_budget} is the main run above. Mean over seeds and test items "
        f"{{two-level bootstrap 95 % CI}}.",
        "",
    ]
    wide = table.assign(cell=[f"{pct(r.accuracy)} {{{pct(r.ci_low)}, {pct(r.ci_high)}}}" for r in table.itertuples()])
    budgets = sorted(table["budget"].unique())
    lines += [
        "| annotator | regime | " + " | ".join(str(b) for b in budgets) + " |",
        "|---|---|" + "---|" * len(budgets),
    ]
    for (annotator, regime), g in wide.groupby(["annotator", "regime"], sort=True):
        cells = dict(zip(g["budget"], g["cell"]))
        lines.append(f"| {annotator} | {regime} | " + " | ".join(cells.get(b, "–") for b in budgets) + " |")
    wins = comparisons[comparisons["significant"] & (comparisons["delta_accuracy"] > 0)]
    losses = comparisons[comparisons["significant"] & (comparisons["delta_accuracy"] < 0)]
    lines += [
        "",
        f"Warm-up vs gold-only (two-level bootstrap, Holm over the {len(comparisons)} budget × annotator "
        "comparisons): "
        + (
            "warm-up is significantly better at "
            + ", ".join(f"{r.budget} ({r.annotator}, +{pct(r.delta_accuracy)})" for r in wins.itertuples())
            if len(wins)
            else "warm-up is significantly better at no budget"
        )
        + (
            "; significantly worse at "
            + ", ".join(f"{r.budget} ({r.annotator}, {pct(r.delta_accuracy)})" for r in losses.itertuples())
            if len(losses)
            else ""
        )
        + ".",
    ]
    if pool is not None and len(pool):
        lines += pool_section(pool)
    return "\n".join(lines) + "\n"


def pool_section(pool: pd.DataFrame) -> list[str]:
    """Accuracy by synthetic-pool fraction at one gold budget."""
    pct = _pct
    lines = [
        "",
        f"## Synthetic-pool fractions at gold budget {int(pool['budget'].iloc[0])} (%)",
        "",
        "| annotator | regime | " + " | ".join(f"{f:g}" for f in sorted(pool["fraction"].unique())) + " |",
        "|---|---|" + "---|" * pool["fraction"].nunique(),
    ]
    for (annotator, regime), g in pool.groupby(["annotator", "regime"], sort=True):
        cells = dict(
            zip(g["fraction"], (f"{pct(r.accuracy)} {{{pct(r.ci_low)}, {pct(r.ci_high)}}}" for r in g.itertuples()))
        )
        lines.append(
            f"| {annotator} | {regime} | "
            + " | ".join(cells.get(f, "–") for f in sorted(pool["fraction"].unique()))
            + " |"
        )
    return lines


def frontier_section(table: pd.DataFrame) -> str:
    fmt = lambda v, spec: "–" if v is None or v != v else format(v, spec)  # noqa: E731
    lines = [
        "",
        "## Cost / accuracy frontier (gold-val audit sample)",
        "",
        "Cost of labelling 1,000 pool rows: list-price dollars (params `price`; local models are $0) and "
        "measured compute seconds (– where the cache served the run). A cascade's points come from labels "
        "every annotator already gave on the audit sample: no extra calls.",
        "",
        "| annotator | kind | threshold | escalated | audit accuracy | $ / 1,000 rows | seconds / 1,000 rows |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in table.itertuples():
        lines.append(
            f"| {r.annotator} | {r.kind} | {fmt(r.threshold, 'g')} | {fmt(r.escalated_share, '.1%')} | "
            f"{100 * r.audit_accuracy:.1f} % | {fmt(r.usd_per_1000, '.4f')} | {fmt(r.seconds_per_1000, '.0f')} |"
        )
    return "\n".join(lines) + "\n"


def document(
    table: pd.DataFrame,
    comparisons: pd.DataFrame,
    annotators: Mapping[str, dict],
    quality: Mapping | None,
    strategy: str,
    labels: Sequence[str],
    gold_name: str,
    votes: pd.DataFrame,
    regimes: Sequence[str],
    curves: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame | None, int],
    frontier: pd.DataFrame,
) -> str:
    """The whole of results.md, sections in order. ``curves`` is (table, comparisons, pool, main budget)."""
    return (
        main_sections(table, comparisons, annotators, quality, strategy, labels, gold_name)
        + aggregates_section(votes, regimes, gold_name)
        + curves_section(*curves)
        + frontier_section(frontier)
    )
