"""Training a discriminative step PRM (the body of ``python -m experiments.train_prm``).

::

    policy     = build_model(config.model)                      the response generator
    train      = sample_step_batch(policy, train prompts)       rollout.n_samples per prompt
    labels     = oracle | Math-Shepherd MC (hard / soft)        config.prm.labels
    prm        = build_model(config.model) + PRMHead             decoder + linear head
    for step:  adam on prm_bce_loss(step_logits(prm), labels)    head (+ top prm.last_k layers)
    save_prm(workdir/prm); held-out first-error F1 before and after (test split, oracle labels)

The PRM's decoder starts from the policy's weights (built by the same loader), as PRMs
fine-tuned from the generator do (Math-Shepherd trains its PRM from the generator's base
model). Labels (Math-Shepherd, Wang et al. 2023, arXiv 2312.08935, eqs. 2-4):

* ``oracle``: :func:`jaxrl_reason.eval.process.oracle_response_labels` (``arith_chain``'s true
  intermediate values);
* ``mc_hard`` / ``mc_soft``: :func:`jaxrl_reason.rollout.mc_labels.mc_step_labels` with the
  policy as the completer, ``prm.mc_rollouts`` continuations per step, verified by the task.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxrl_reason.eval.process import (
    StepBatch,
    evaluate_prm,
    oracle_response_labels,
    sample_step_batch,
)
from jaxrl_reason.losses.prm import balanced_weights, prm_bce_loss
from jaxrl_reason.models.prm import PRMHead, jit_step_scores, save_prm, step_logits

__all__ = ["LABEL_SOURCES", "label_steps", "run_train_prm"]

LABEL_SOURCES = ("oracle", "mc_hard", "mc_soft")


def label_steps(
    source: str,
    batch: StepBatch,
    task: Any,
    *,
    num_steps: int,
    policy: Any = None,
    tokenizer: Any = None,
    sampling: Any = None,
    key: jax.Array | None = None,
    mc_rollouts: int = 4,
) -> tuple[np.ndarray, np.ndarray]:
    """Step labels of a :class:`StepBatch`: ``(labels float32[B, S], valid bool[B, S])``.

    ``oracle`` needs a task with ``step_labels``; ``mc_hard`` / ``mc_soft`` need the policy,
    its tokenizer, the continuations' ``sampling`` config and a ``key``.
    """
    if source not in LABEL_SOURCES:
        raise ValueError(f"prm.labels={source!r}: use one of {LABEL_SOURCES}")
    if source == "oracle":
        pairs = [
            oracle_response_labels(task, t, ex, num_steps)
            for t, ex in zip(batch.texts, batch.examples, strict=True)
        ]
        return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
    from jaxrl_reason.rollout.mc_labels import mc_step_labels

    def correct_fn(rows, seqs):
        texts = tokenizer.batch_decode([list(s) for s in seqs], skip_special_tokens=True)
        return np.asarray(task.verify_batch(texts, [batch.examples[r] for r in rows]), np.float32)

    mc = mc_step_labels(
        policy,
        batch.prompt_tokens,
        batch.prompt_mask,
        batch.tokens,
        batch.segment_id,
        batch.lengths,
        key,
        sampling,
        num_rollouts=mc_rollouts,
        num_steps=num_steps,
        correct_fn=correct_fn,
    )
    return (mc.hard if source == "mc_hard" else mc.soft), mc.valid


def _make_train_step(
    graphdef,
    head_def,
    tx,
    *,
    num_steps: int,
    frozen_layers: int,
    train_dec,
    class_weights: tuple[float, float] = (1.0, 1.0),
):
    """A jitted Adam step on ``prm_bce_loss`` (with ``(pos, neg)`` class weights) over
    ``{"head"[, "decoder"]}``."""

    def loss_fn(trainable, frozen, batch):
        dec = trainable["decoder"] if train_dec else frozen
        model = nnx.merge(graphdef, dec)
        head = nnx.merge(head_def, trainable["head"])
        z, valid = step_logits(
            model,
            head,
            batch["prompt_tokens"],
            batch["prompt_mask"],
            batch["tokens"],
            batch["segment_id"],
            num_steps=num_steps,
            frozen_layers=frozen_layers,
        )
        return prm_bce_loss(
            z, batch["labels"], batch["valid"] & valid, class_weights[0], class_weights[1]
        )

    @jax.jit
    def step(trainable, frozen, opt_state, batch):
        loss, grads = jax.value_and_grad(loss_fn)(trainable, frozen, batch)
        updates, opt_state = tx.update(grads, opt_state, trainable)
        return optax.apply_updates(trainable, updates), opt_state, loss

    return step


def run_train_prm(config: Any, workdir: str) -> dict[str, Any]:
    """Builds the labelled step data, trains the PRM, saves it and reports held-out F1.

    Writes ``<workdir>/prm`` (the checkpoint, :func:`jaxrl_reason.models.prm.load_prm`),
    ``<workdir>/prm_metrics.jsonl`` (``prm/loss`` per step) and ``<workdir>/prm_eval.json``.

    Returns: ``{"path", "losses", "eval_before", "eval_after", "num_train", "label_rate",
    "time_s"}`` (``eval_*`` from :func:`jaxrl_reason.eval.process.evaluate_prm`) and the
    trained ``"model"`` / ``"head"`` with the ``"heldout"`` :class:`StepBatch`.
    """
    from jaxrl_reason.data.build import build_task
    from jaxrl_reason.models.build import build_model
    from jaxrl_reason.rollout.strategies import sampling_config

    t_start = time.perf_counter()
    p = config.prm
    num_steps = int(config.rollout.get("max_steps", 8))
    step_rule = config.rollout.get("step_rule", "auto")
    train_task = build_task(config.task, "train")
    test_task = build_task(config.task, "test")
    policy, tokenizer = build_model(config.model)
    sampling = sampling_config(config.rollout, tokenizer)
    key = jax.random.key(int(config.seed))
    os.makedirs(workdir, exist_ok=True)

    def sample_batch(task, num, stream):
        examples = [task[i] for i in range(min(int(num), len(task)))]
        return sample_step_batch(
            policy,
            tokenizer,
            task,
            examples,
            jax.random.fold_in(key, stream),
            sampling,
            step_rule=step_rule,
            num_steps=num_steps,
        )

    train = sample_batch(train_task, p.num_prompts, 0)
    held = sample_batch(test_task, p.eval_prompts, 1)
    mc_sampling = dataclasses.replace(
        sampling, n=1, max_new_tokens=int(p.mc_max_new_tokens or config.rollout.max_new_tokens)
    )
    labels, valid = label_steps(
        p.labels,
        train,
        train_task,
        num_steps=num_steps,
        policy=policy,
        tokenizer=tokenizer,
        sampling=mc_sampling,
        key=jax.random.fold_in(key, 2),
        mc_rollouts=int(p.mc_rollouts),
    )

    # The PRM: its own decoder (the policy's weights, loaded the same way) and a fresh head.
    prm_model, _ = build_model(config.model)
    num_layers = prm_model.config.num_layers
    last_k = min(int(p.last_k), num_layers)
    head = PRMHead(prm_model.config.hidden_size)
    graphdef, dec_params = nnx.split(prm_model)
    head_def, head_params = nnx.split(head)
    trainable = {"head": head_params}
    if last_k > 0:
        trainable["decoder"] = dec_params
    tx = optax.adam(float(p.learning_rate))
    opt_state = tx.init(trainable)
    label_rate = float(labels[valid].mean()) if valid.any() else 0.5
    class_weights = balanced_weights(label_rate) if bool(p.get("balance", False)) else (1.0, 1.0)
    step_fn = _make_train_step(
        graphdef,
        head_def,
        tx,
        num_steps=num_steps,
        frozen_layers=num_layers - last_k,
        train_dec=last_k > 0,
        class_weights=class_weights,
    )

    def score_fn_of(model, hd):
        return lambda pt, pm, tok, seg: jit_step_scores(
            model, hd, pt, pm, tok, seg, num_steps=num_steps
        )

    bs = int(p.batch_size)
    eval_before = evaluate_prm(
        score_fn_of(prm_model, head),
        held,
        test_task,
        num_steps=num_steps,
        threshold=float(p.threshold),
        batch_size=bs,
    )
    n = len(train.texts)
    bs = min(bs, n)
    rng = np.random.default_rng(int(config.seed))
    order = rng.permutation(n)
    pos = 0
    losses = []
    with open(os.path.join(workdir, "prm_metrics.jsonl"), "w") as log:
        for s in range(int(p.train_steps)):
            if pos + bs > n:
                order, pos = rng.permutation(n), 0
            idx = order[pos : pos + bs]
            pos += bs
            batch = {
                "prompt_tokens": jnp.asarray(train.prompt_tokens[idx]),
                "prompt_mask": jnp.asarray(train.prompt_mask[idx]),
                "tokens": jnp.asarray(train.tokens[idx]),
                "segment_id": jnp.asarray(train.segment_id[idx]),
                "labels": jnp.asarray(labels[idx]),
                "valid": jnp.asarray(valid[idx]),
            }
            trainable, opt_state, loss = step_fn(trainable, dec_params, opt_state, batch)
            losses.append(float(loss))
            log.write(json.dumps({"step": s + 1, "prm/loss": losses[-1]}) + "\n")

    nnx.update(head, trainable["head"])
    if last_k > 0:
        nnx.update(prm_model, trainable["decoder"])
    eval_after = evaluate_prm(
        score_fn_of(prm_model, head),
        held,
        test_task,
        num_steps=num_steps,
        threshold=float(p.threshold),
        batch_size=bs,
    )
    meta = {
        "model": dict(config.model),
        "last_k": last_k,
        "labels": p.labels,
        "step_rule": step_rule,
        "max_steps": num_steps,
        "threshold": float(p.threshold),
        "task": config.task.name,
    }
    path = save_prm(os.path.join(workdir, "prm"), prm_model, head, meta, with_decoder=last_k > 0)
    out = {
        "path": path,
        "losses": losses,
        "eval_before": eval_before,
        "eval_after": eval_after,
        "num_train": n,
        "label_rate": float(labels[valid].mean()) if valid.any() else 0.0,
        "class_weights": list(class_weights),
        "time_s": time.perf_counter() - t_start,
    }
    with open(os.path.join(workdir, "prm_eval.json"), "w") as f:
        json.dump({k: v for k, v in out.items() if k != "losses"}, f, indent=2, sort_keys=True)
    out["model"], out["head"], out["heldout"] = prm_model, head, held
    return out
