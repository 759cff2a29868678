"""Evaluate a policy on a task: greedy accuracy, extraction coverage, pass@k / maj@k, diversity.

:func:`evaluate_policy` is the one evaluation routine of the project: the RL loop's held-out
evaluation (``Trainer.evaluate``) and ``python -m experiments.eval`` both call it, so a number
in ``metrics.jsonl`` and one in ``eval.json`` mean the same thing.

Two passes over the examples, both through the jitted sampler (:func:`jaxrl_reason.rollout.sample`):

1. **Greedy** (``greedy=True``): one argmax response per prompt -> ``accuracy`` (the fraction of
   prompts whose response the task's verifier accepts), ``extraction_coverage`` (the fraction
   with any extractable final answer, :func:`jaxrl_reason.rewards.extract.extraction_stats`),
   mean response length and the truncation rate.
2. **Sampled** (``n_samples >= 1``): ``n`` samples per prompt at ``temperature`` / ``top_p`` ->
   :func:`jaxrl_reason.eval.metrics.summarize` over canonical answer keys
   (:func:`jaxrl_reason.rewards.canonical.canonical_keys`): unbiased pass@k (Chen et al. 2021,
   eq. 1), maj@k over the first k samples, distinct answers per prompt, no-answer rate.

Compile budget. Every prompt of an evaluation is left-padded to the longest prompt of the whole
evaluation and every sampler call holds the same number of prompts (the last chunk is padded
with copies of a real prompt whose outputs are dropped), so each pass compiles exactly once.

Determinism. Prompt ``i`` of the evaluation samples with ``fold_in(fold_in(key, pass), i)``; the
sampler makes a row's tokens depend only on its own key, so the result does not depend on
``batch_prompts`` or on which prompts share a batch.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

__all__ = ["evaluate_policy", "validate_eval"]

# Stream ids folded into the caller's key: the two passes draw independent randomness.
_GREEDY_STREAM = 0
_SAMPLED_STREAM = 1


def validate_eval(*, greedy: bool, n_samples: int, ks: Sequence[int], temperature: float) -> None:
    """Checks the evaluation settings; raises ``ValueError`` naming the ``eval.*`` field.

    Rules: something to evaluate (``greedy`` or ``n_samples >= 1``); with samples, every k in
    ``ks`` lies in ``[1, n_samples]`` (pass@k's unbiased estimator needs ``n >= k``) and the
    temperature is positive. ``ks`` is ignored when ``n_samples == 0`` (greedy only).
    """
    if isinstance(n_samples, bool) or int(n_samples) != n_samples or n_samples < 0:
        raise ValueError(f"eval.n_samples={n_samples!r}: must be an int >= 0 (0 = greedy only)")
    if not greedy and n_samples < 1:
        raise ValueError(
            "eval: nothing to evaluate: greedy=False and eval.n_samples=0; set "
            "eval.n_samples >= 1 or evaluate greedily"
        )
    if n_samples >= 1:
        if len(ks) == 0:
            raise ValueError(f"eval.ks=(): give at least one k in [1, eval.n_samples={n_samples}]")
        bad = [k for k in ks if isinstance(k, bool) or int(k) != k or not 1 <= k <= n_samples]
        if bad:
            raise ValueError(
                f"eval.ks={tuple(ks)}: k={bad[0]} is outside [1, eval.n_samples={n_samples}]; "
                f"pass@k and maj@k need at least k samples per prompt: raise eval.n_samples to "
                f">= {max(int(k) for k in ks)} or drop k from eval.ks"
            )
        if not float(temperature) > 0.0:
            raise ValueError(f"eval.temperature={temperature}: must be > 0 for sampling")


def _run_pass(
    model, tokenizer, ids, keys, *, chunk, width, pad_id, sampling_cfg
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Samples every prompt in fixed-shape chunks; returns texts, lengths, finish reasons.

    ``ids``: token lists of all prompts; ``keys``: one PRNG key per prompt. Output rows are in
    prompt-major order (prompt ``i``'s samples at ``i * n .. i * n + n - 1``).
    """
    from jaxrl_reason.rollout import left_pad, sample
    from jaxrl_reason.rollout.chat import decode_responses

    n = sampling_cfg.n
    texts: list[str] = []
    lengths, finish = [], []
    for start in range(0, len(ids), chunk):
        real = list(range(start, min(start + chunk, len(ids))))
        # Pad the chunk with copies of its first prompt: same shape -> no recompilation.
        rows = real + [real[0]] * (chunk - len(real))
        tokens, mask = left_pad([ids[i] for i in rows], pad_id, length=width)
        ro = sample(model, tokens, mask, keys[np.asarray(rows)], sampling_cfg)
        tok, lens, fin = jax.device_get((ro.tokens, ro.lengths, ro.finish_reason))
        keep = len(real) * n
        texts.extend(decode_responses(tokenizer, tok[:keep], lens[:keep]))
        lengths.append(lens[:keep])
        finish.append(fin[:keep])
    return texts, np.concatenate(lengths), np.concatenate(finish)


def evaluate_policy(
    model: Any,
    tokenizer: Any,
    task: Any,
    examples: Sequence[Any],
    *,
    key: jax.Array,
    max_new_tokens: int,
    batch_prompts: int = 32,
    greedy: bool = True,
    n_samples: int = 0,
    ks: Sequence[int] = (1,),
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    stop_token_ids: Sequence[int] | None = None,
    pad_token_id: int | None = None,
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Evaluates ``model`` on ``examples`` of ``task`` (greedy and/or sampled; see module doc).

    Args:
      model: a :class:`jaxrl_reason.models.Transformer` (not modified).
      tokenizer: its tokenizer (chat template applied to ``task.build_prompt(example)``).
      task: a :class:`jaxrl_reason.data.base.Task`: prompts, ``verify_batch`` and
        ``verify_format`` (the extraction format used for coverage and answer keys).
      examples: the :class:`~jaxrl_reason.data.base.Example` s to evaluate (``P`` prompts).
      key: a PRNG key; only the sampled pass uses randomness.
      max_new_tokens: response length limit ``R``.
      batch_prompts: prompts per greedy sampler call; the sampled pass uses
        ``max(batch_prompts // n_samples, 1)`` prompts per call (about the same rows).
      greedy: run the greedy pass (``accuracy``, ``extraction_coverage``, ...).
      n_samples: samples per prompt for the sampled pass (0 = no sampled pass).
      ks: the k of pass@k / maj@k, each in ``[1, n_samples]``.
      temperature, top_p, top_k: sampling options of the sampled pass.
      stop_token_ids: end-of-response ids (default
        :func:`jaxrl_reason.rollout.chat.stop_token_ids`).
      pad_token_id: padding id (default the tokenizer's, then the model config's, then 0).

    Returns:
      ``(metrics, records)``. ``metrics`` (floats): ``num_prompts``; greedy pass:
      ``accuracy``, ``extraction_coverage``, ``extraction/<method>`` (fraction found by each
      extractor), ``response_length``, ``truncated_rate``; sampled pass: ``n_samples``,
      ``sample/accuracy`` (mean over all samples = mean pass@1), ``pass@k`` and ``maj@k`` for
      each k, ``distinct_answers`` (per prompt, "no answer" not counted), ``no_answer_rate``,
      ``sample/extraction_coverage``, ``sample/response_length``, ``sample/truncated_rate``;
      ``time_s`` and ``tokens_per_s`` (generated tokens over wall time, compile included).
      ``records``: one JSON-serialisable dict per example: ``index``, ``id``, ``prompt``,
      ``gold``, and ``greedy`` (``response``, ``answer``, ``method``, ``correct``, ``length``,
      ``truncated``) and/or ``samples`` (a list of ``response``, ``answer``, ``key``,
      ``correct``, ``length``, ``truncated``).

    Raises:
      ValueError: no examples, or bad settings (:func:`validate_eval`; names the ``eval.*``
        config field).
    """
    from jaxrl_reason.eval.metrics import summarize
    from jaxrl_reason.rewards.canonical import NONE_KEY, canonical_keys
    from jaxrl_reason.rewards.extract import extract_answer, extraction_stats
    from jaxrl_reason.rollout import SamplingConfig, bucket_length, chat

    examples = list(examples)
    if not examples:
        raise ValueError("evaluate_policy: no examples (eval.num_prompts must be >= 1)")
    validate_eval(greedy=greedy, n_samples=n_samples, ks=ks, temperature=temperature)
    if batch_prompts < 1:
        raise ValueError(f"eval.batch_prompts={batch_prompts}: must be >= 1")
    t_start = time.perf_counter()
    fmt = getattr(task, "verify_format", "auto")
    if stop_token_ids is None:
        stop_token_ids = chat.stop_token_ids(tokenizer, model)
    if pad_token_id is None:
        pad_token_id = getattr(tokenizer, "pad_token_id", None)
    if pad_token_id is None:
        mcfg = getattr(model, "config", None) or getattr(model, "cfg", None)
        pad_token_id = getattr(mcfg, "pad_token_id", None)
    pad_token_id = 0 if pad_token_id is None else int(pad_token_id)

    ids = chat.chat_prompt_ids(tokenizer, task, examples)
    # One width for the whole evaluation (rounded up like the sampler does): one compile.
    width = bucket_length(max(len(x) for x in ids))
    num = len(examples)
    records: list[dict[str, Any]] = [
        {"index": i, "id": ex.id, "prompt": ex.prompt, "gold": ex.answer}
        for i, ex in enumerate(examples)
    ]
    metrics: dict[str, float] = {"num_prompts": float(num)}
    n_tokens = 0

    def per_prompt_keys(stream: int) -> jax.Array:
        base = jax.random.fold_in(key, stream)
        return jax.vmap(lambda i: jax.random.fold_in(base, i))(np.arange(num, dtype=np.uint32))

    if greedy:
        cfg = SamplingConfig(
            max_new_tokens=max_new_tokens,
            greedy=True,
            n=1,
            stop_token_ids=tuple(stop_token_ids),
            pad_token_id=pad_token_id,
        )
        texts, lengths, finish = _run_pass(
            model,
            tokenizer,
            ids,
            per_prompt_keys(_GREEDY_STREAM),
            chunk=min(batch_prompts, num),
            width=width,
            pad_id=pad_token_id,
            sampling_cfg=cfg,
        )
        correct = np.asarray(task.verify_batch(texts, examples), np.float64)
        stats = extraction_stats(texts, fmt)
        metrics["accuracy"] = float(correct.mean())
        metrics["extraction_coverage"] = stats["coverage"]
        metrics.update(
            {
                f"extraction/{k[len('method/') :]}": v
                for k, v in stats.items()
                if k.startswith("method/")
            }
        )
        metrics["response_length"] = float(lengths.mean())
        metrics["truncated_rate"] = float(np.mean(finish == 1))
        n_tokens += int(lengths.sum())
        for i, t in enumerate(texts):
            ans, method = extract_answer(t, fmt)
            records[i]["greedy"] = {
                "response": t,
                "answer": ans,
                "method": method,
                "correct": bool(correct[i]),
                "length": int(lengths[i]),
                "truncated": bool(finish[i] == 1),
            }

    if n_samples >= 1:
        n = int(n_samples)
        cfg = SamplingConfig(
            max_new_tokens=max_new_tokens,
            temperature=float(temperature),
            top_p=float(top_p),
            top_k=int(top_k),
            greedy=False,
            n=n,
            stop_token_ids=tuple(stop_token_ids),
            pad_token_id=pad_token_id,
        )
        texts, lengths, finish = _run_pass(
            model,
            tokenizer,
            ids,
            per_prompt_keys(_SAMPLED_STREAM),
            chunk=min(max(batch_prompts // n, 1), num),
            width=width,
            pad_id=pad_token_id,
            sampling_cfg=cfg,
        )
        row_examples = [examples[r // n] for r in range(len(texts))]
        correct = np.asarray(task.verify_batch(texts, row_examples), np.float64)
        extracted = [extract_answer(t, fmt) for t in texts]
        keys = canonical_keys([a for a, _ in extracted])
        per_prompt = [
            [(keys[r], bool(correct[r])) for r in range(i * n, (i + 1) * n)] for i in range(num)
        ]
        per_len = [lengths[i * n : (i + 1) * n].tolist() for i in range(num)]
        summary = summarize(
            per_prompt, ks=tuple(int(k) for k in ks), lengths=per_len, none_key=NONE_KEY
        )
        metrics["n_samples"] = float(n)
        metrics["sample/accuracy"] = summary["accuracy"]
        for k in ks:
            metrics[f"pass@{k}"] = summary[f"pass@{k}"]
            metrics[f"maj@{k}"] = summary[f"maj@{k}"]
        metrics["distinct_answers"] = summary["distinct_answers"]
        metrics["no_answer_rate"] = summary["no_answer_rate"]
        metrics["sample/extraction_coverage"] = float(
            np.mean([a is not None for a, _ in extracted])
        )
        metrics["sample/response_length"] = summary["mean_length"]
        metrics["sample/truncated_rate"] = float(np.mean(finish == 1))
        n_tokens += int(lengths.sum())
        for i in range(num):
            records[i]["samples"] = [
                {
                    "response": texts[r],
                    "answer": extracted[r][0],
                    "key": keys[r],
                    "correct": bool(correct[r]),
                    "length": int(lengths[r]),
                    "truncated": bool(finish[r] == 1),
                }
                for r in range(i * n, (i + 1) * n)
            ]

    elapsed = time.perf_counter() - t_start
    metrics["time_s"] = float(elapsed)
    metrics["tokens_per_s"] = float(n_tokens / max(elapsed, 1e-9))
    return metrics, records
