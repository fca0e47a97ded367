"""Gemma 3 270M (the default generator, from its PyPI GGUF package) in bfloat16: a row's sampled
text, and a row's label-word scores, must not depend on what else runs beside it. On the tiny test
LM the kernels never showed the effect; on Gemma they did (batches of one or two sampled other
text before the fixed shapes), so this check runs the real model: generation through the slot
engine (alone, in a pair, in a run of six: the text of a row is one), and
scoring with a shared few-shot prefix (packed passes: a row's scores alone equal its scores in a run)."""

import pytest

from synthllm.backends.base import Request
from synthllm.backends.transformers_local import TransformersBackend
from synthllm.generator_model import materialise
from synthllm.params import GeneratorModelParams


@pytest.fixture(scope="module")
def gemma_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("gemma")
    return materialise(GeneratorModelParams(source="gguf_package", save_dtype="bfloat16"), out)


def _requests(n):
    """Prompts of several lengths, like the generate stage's few-shot prompts (~150-450 tokens)."""
    shot = "متن: هوا امروز در تهران آفتابی و گرم است.\nفرضیه: امروز در تهران باران می‌بارد.\n\n"
    return [
        Request(
            prompt=shot * (3 + 4 * (i % 3)) + f"متن: کتاب شماره {i} درباره تاریخ ایران است.\nفرضیه:",
            max_new_tokens=24,
            temperature=0.9,
            top_p=0.95,
            stop=("\n",),
            seed=7 + i,
        )
        for i in range(n)
    ]


def test_gemma_bfloat16_text_is_the_same_alone_and_in_a_batch(gemma_dir):
    b = TransformersBackend(gemma_dir, dtype="bfloat16", batch_size=4)
    reqs = _requests(6)
    whole = {i: r.text for i, r in b.run(reqs)}
    alone = [next(iter(b.run([r])))[1].text for r in reqs[:3]]
    pair = {i: r.text for i, r in b.run(reqs[3:5])}
    assert alone == [whole[i] for i in range(3)]
    assert [pair[0], pair[1]] == [whole[3], whole[4]]
    assert len(set(whole.values())) == 6  # six different texts: the check compares something


def test_gemma_bfloat16_scores_with_a_shared_prefix_are_the_same_alone_and_in_a_run(gemma_dir):
    b = TransformersBackend(gemma_dir, dtype="bfloat16", batch_size=4)
    head = (
        "آیا جمله با توجه به متن درست است؟ پاسخ: درست، غلط یا شاید.\n\n"
        + "متن: هوا گرم است.\nجمله: هوا سرد است.\nپاسخ: غلط\n\n" * 3
    )
    reqs = [
        Request(prompt=head + f"متن: کتاب شماره {i} درباره تاریخ است.\nجمله: کتاب {i} تاریخی است.\nپاسخ:",
                choices=("درست", "غلط", "شاید"), shared_prefix=len(head))
        for i in range(7)
    ]  # fmt: skip
    whole = {i: r.choice_logprobs for i, r in b.run(reqs)}
    for i in (0, 4, 6):
        assert next(iter(b.run([reqs[i]])))[1].choice_logprobs == whole[i]
    unshared = dict(b.run([Request(prompt=r.prompt, choices=r.choices) for r in reqs[:2]]))
    for i in range(2):  # the same prompt read in one pass: equal up to bfloat16 rounding
        assert max(abs(unshared[i].choice_logprobs[c] - whole[i][c]) for c in whole[i]) < 0.5
