"""OpenAI-protocol backend pieces that need no server: the adaptive limit, key rules, prices and estimates.

The backend against a real local HTTP server is tests/integration/test_openai_backend_http.py."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from synthllm.backends.batch_api import BatchAPIBackend
from synthllm.backends.openai_http import AdaptiveLimit, OpenAIBackend
from synthllm.errors import BackendError
from synthllm.estimate import estimate
from synthllm.params import OpenAIBackendParams, PriceParams, parse_params

ROOT = Path(__file__).resolve().parents[2]


def test_adaptive_limit_halves_on_429_pauses_for_retry_after_and_regrows():
    async def scenario() -> tuple[list[float], float]:
        limit, seen = AdaptiveLimit(8), []
        await limit.acquire()
        await limit.release(ok=False, throttled=True, retry_after=0.1)
        seen.append(limit.limit)
        await limit.acquire()
        await limit.release(ok=False, throttled=True, retry_after=0.1)  # same cool-down: no second cut
        seen.append(limit.limit)
        started = asyncio.get_running_loop().time()
        await limit.acquire()  # waits out Retry-After
        waited = asyncio.get_running_loop().time() - started
        for _ in range(40):
            await limit.release(ok=True)
            await limit.acquire()
        seen.append(limit.limit)
        return seen, waited

    seen, waited = asyncio.run(scenario())
    assert seen[:2] == [4.0, 4.0] and seen[2] == 8.0 and waited >= 0.09


def test_a_budget_needs_a_price_and_prices_are_checked_against_the_dated_table(caplog, repo_root):
    """Issue 14 (defect 6): with the default price 0 a budget counted $0 forever."""
    from synthllm.params import OpenAIBackendParams, listed_price, parse_params

    with pytest.raises(ValueError, match="budget_usd 5.0 needs a price"):
        OpenAIBackendParams(model="gpt-4o-mini", budget_usd=5.0)
    listed = listed_price("gpt-4o-mini")
    assert listed is not None and listed.input_per_mtok == 0.15
    with caplog.at_level("WARNING", logger="synthllm"):
        OpenAIBackendParams(model="gpt-4o-mini", budget_usd=5.0, price=listed)
        assert not caplog.records
        OpenAIBackendParams(model="gpt-4o-mini", price=PriceParams(input_per_mtok=2.5, output_per_mtok=10.0))
        OpenAIBackendParams(model="my-finetune", price=PriceParams(input_per_mtok=1.0, output_per_mtok=1.0))
    assert "differs from the price table" in caplog.records[0].getMessage()
    assert "not in the price table" in caplog.records[1].getMessage()
    import yaml

    for preset in ("params.yaml", "presets/paper.yaml"):  # every priced preset block matches the table
        data = yaml.safe_load((repo_root / preset).read_text())
        for cfg in data["annotator_configs"].values():
            backend = cfg.get("backend") or {}
            if backend.get("price"):
                assert PriceParams(**backend["price"]) == listed_price(backend["model"])
        assert parse_params(data)


def test_api_key_rules(monkeypatch):
    monkeypatch.delenv("MY_KEY", raising=False)
    with pytest.raises(BackendError, match="MY_KEY"):
        OpenAIBackend(OpenAIBackendParams(model="gpt-x", api_key_env="MY_KEY"))
    local = OpenAIBackend(OpenAIBackendParams(model="m", api_key_env="MY_KEY", base_urls=["http://127.0.0.1:9/v1"]))
    assert local.identity == "served:m|chat|json_schema=True|top_logprobs=20"
    named = OpenAIBackendParams(model="m", base_urls=["http://127.0.0.1:9/v1"], served_identity="aya-23-35B@r1 bf16")
    assert OpenAIBackend(named).identity.startswith("served:aya-23-35B@r1 bf16|")
    with pytest.raises(BackendError, match="state directory"):
        BatchAPIBackend(OpenAIBackendParams(model="m", base_urls=["http://x/v1"], use_batch_api=True))
    with pytest.raises(BackendError, match="make_backend"):
        OpenAIBackend(OpenAIBackendParams(model="m", base_urls=["http://x/v1"], use_batch_api=True))


def test_estimate_prices_http_annotators_only():
    llm = {
        "kind": "llm",
        "method": "instruct",
        "backend": {"kind": "openai", "model": "gpt-x", "price": {"input_per_mtok": 1.0, "output_per_mtok": 4.0}},
    }
    p = parse_params(
        {
            "annotators": {"gpt": "prompts/fa/nli/annotate.yaml", "clf": "m"},
            "generate": {"num_premises": 10},
            "branches": {"gpt": "data/annotated/gpt.jsonl"},
            "annotator_configs": {"gpt": llm, "clf": {"kind": "classifier", "model_dir": "m"}},
        }
    )
    lines = {x.run: x for x in estimate(p, ROOT / "prompts")}
    assert lines["generate"].requests == 30 and lines["generate"].usd == 0.0
    gpt = lines["annotate:gpt"]
    assert gpt.requests == 30 + p.annotate.audit_size and gpt.prompt_tokens > 50 * gpt.requests
    assert gpt.usd == pytest.approx((gpt.prompt_tokens * 1.0 + gpt.output_tokens * 4.0) / 1e6)


def test_estimate_hours_from_concurrency_batch_window_and_measured_rates(tmp_path):
    from synthllm.estimate import Speed, measured_rates
    from synthllm.params import load_params

    (tmp_path / "annotators").mkdir()
    (tmp_path / "generate_run.json").write_text(json.dumps({"sent": 180, "wall_s": 450.0}))
    (tmp_path / "annotators" / "classifier.json").write_text(json.dumps({"run": {"sent": 330, "wall_s": 3.0}}))
    (tmp_path / "annotators" / "cached.json").write_text(json.dumps({"run": {"sent": 0, "wall_s": 0.01}}))
    rates = measured_rates(tmp_path)
    assert rates == {"generate": pytest.approx(0.4), "annotate:classifier": pytest.approx(110.0)}

    paper = load_params(ROOT / "presets/paper.yaml")
    lines = {
        x.run: x
        for x in estimate(
            paper, ROOT / "prompts", rows=1000, speed=Speed(ttft_s=0.5, decode_tok_s=40.0, measured=rates)
        )
    }
    gen = paper.generate
    expected = 1000 * (0.5 + gen.max_new_tokens / 40.0) / gen.backend.concurrency / 3600
    assert lines["generate"].hours == pytest.approx(expected)
    assert lines["annotate:gpt4o_mini"].hours is None and "24 h" in lines["annotate:gpt4o_mini"].basis
    assert lines["annotate:classifier"].hours == pytest.approx(lines["annotate:classifier"].requests / 110.0 / 3600)
    unmeasured = estimate(paper, ROOT / "prompts", rows=1000)
    assert next(x for x in unmeasured if x.run == "annotate:classifier").hours is None
