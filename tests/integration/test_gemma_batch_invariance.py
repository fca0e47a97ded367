"""Gemma 3 270M (the default generator, from its PyPI GGUF package) in bfloat16: a row's sampled
text must not depend on what else shares its batch. On the tiny test LM the kernels never showed the
effect; on Gemma they did (batches of one or two sampled other text), so this check runs the real model."""

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
