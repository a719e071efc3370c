"""Final-only detokenization's text against vLLM's own incremental detokenizer, token for token.

No engine: the demo model's tokenizer only. The shortcut (decode a prompt tail plus the
output once) must give exactly what vLLM's DecodeStream-based detokenizer gives, for
well-formed text, split multi-byte characters and arbitrary token ids alike; the engine
tests (test_vllm_engine.py) then compare whole bodies with run_batch's.
"""

from __future__ import annotations

import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest


@pytest.fixture(scope="module")
def tokenizer(smollm2_dir: Path) -> Any:
    from vllm.tokenizers import get_tokenizer

    return get_tokenizer(str(smollm2_dir))


def prompt_ids(tokenizer: Any, content: str) -> list[int]:
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
    )
    return list(tokenizer.encode(text, add_special_tokens=False))


def test_final_decode_gives_vllms_text_for_any_tokens(tokenizer: Any) -> None:
    from vllm.sampling_params import RequestOutputKind, SamplingParams

    from jobs.engine.final_decode import FinalDecodeClient, exact_text

    client = FinalDecodeClient(SimpleNamespace(renderer=SimpleNamespace(tokenizer=tokenizer)))
    assert client._tokenizer is not None  # the demo model's tokenizer is a fast one
    rng = random.Random(21)
    pieces = ["Hello there! ", "naïve café 你好世界 🙂🙃 ", " \n\n  spaces ", "<|im_end|>", "def f(x):\n", "€"]
    prompts = [prompt_ids(tokenizer, "Héllo — 你好 🙂"), prompt_ids(tokenizer, "hi")]
    checked = 0
    for i in range(600):
        if i % 2:
            ids = list(tokenizer.encode("".join(rng.choices(pieces, k=rng.randint(1, 6))), add_special_tokens=False))
            ids = ids[: rng.randint(1, len(ids))]  # cut anywhere, through a character too
        else:
            ids = [rng.randrange(len(tokenizer)) for _ in range(rng.randint(1, 30))]  # any id, specials too
        finish = rng.choice(["stop", "length"])
        for include in (False, True):
            params = SamplingParams(
                max_tokens=64, include_stop_str_in_output=include, output_kind=RequestOutputKind.FINAL_ONLY
            )
            prompt = prompts[i % 2]
            got = client.text(prompt, SimpleNamespace(token_ids=ids, finish_reason=finish), params)
            assert got == exact_text(tokenizer, prompt, ids, params, finish == "stop"), (ids, finish, include)
            checked += 1
    assert client.decoded == checked


def test_only_lines_that_read_no_text_early_are_decoded_at_the_end() -> None:
    from vllm.sampling_params import RequestOutputKind, SamplingParams

    from jobs.engine.final_decode import wants_final_decode

    final = RequestOutputKind.FINAL_ONLY
    assert wants_final_decode(SamplingParams(max_tokens=4, output_kind=final))
    assert wants_final_decode(SamplingParams(max_tokens=4, n=3, seed=1, output_kind=final))
    assert not wants_final_decode(SamplingParams(max_tokens=4, stop=["x"], output_kind=final))
    assert not wants_final_decode(SamplingParams(max_tokens=4, logprobs=2, output_kind=final))
    assert not wants_final_decode(SamplingParams(max_tokens=4, prompt_logprobs=1, output_kind=final))
    assert not wants_final_decode(SamplingParams(max_tokens=4, skip_special_tokens=False, output_kind=final))
    assert not wants_final_decode(SamplingParams(max_tokens=4, output_kind=RequestOutputKind.DELTA))  # streamed
    assert not wants_final_decode(SamplingParams(max_tokens=4, detokenize=False, output_kind=final))
    assert not wants_final_decode(None)  # beam search and pooling params are not SamplingParams
