"""Sampling judgements from a generative judge (CAPO's critiques; see
:mod:`jaxrl_reason.rewards.judge` for the prompt and the parser)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from jaxrl_reason.parallel.host import to_host
from jaxrl_reason.rollout.chat import decode_responses, stop_token_ids
from jaxrl_reason.rollout.sampler import SamplingConfig, left_pad, sample

__all__ = ["sample_judgements"]


def sample_judgements(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    key,
    *,
    num_judgements: int,
    temperature: float = 1.0,
    max_new_tokens: int = 64,
    prompt_bucket: int = 16,
) -> list[list[str]]:
    """``num_judgements`` sampled replies of ``model`` to each user message in ``prompts``
    (the tokenizer's chat template, generation prompt added; stops at end of turn).

    Args:
      model: the judge (the policy, or another ``Transformer`` with the same tokenizer).
      prompts: ``B`` user messages (:func:`jaxrl_reason.rewards.judge.judge_prompt`).
      key: PRNG key (split per prompt by the sampler).

    Returns: ``B`` lists of ``num_judgements`` texts.
    """
    if not prompts:
        return []
    ids = []
    for p in prompts:
        t = tokenizer.apply_chat_template(
            [{"role": "user", "content": p}], add_generation_prompt=True, tokenize=True
        )
        ids.append(list(t["input_ids"] if isinstance(t, dict) or hasattr(t, "input_ids") else t))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    toks, mask = left_pad(ids, pad)
    cfg = SamplingConfig(
        max_new_tokens=int(max_new_tokens),
        temperature=float(temperature),
        n=int(num_judgements),
        stop_token_ids=tuple(stop_token_ids(tokenizer)),
        prompt_bucket=int(prompt_bucket),
    )
    ro = sample(model, toks, mask, key, cfg)
    texts = decode_responses(tokenizer, to_host(ro.tokens), to_host(ro.lengths))
    n = int(num_judgements)
    return [texts[i * n : (i + 1) * n] for i in range(len(prompts))]


JudgeFn = Callable[[Sequence[str]], list[list[str]]]
