"""The RL loop: rollout -> rewards -> advantages -> updates, with evaluation and checkpoints.

One iteration (``Trainer.train_step``)::

    prompts   = next(data)                                   host: task examples
    rollout   = rollout.sample(policy, prompts, n=G)         device: jit sampler
    rewards   = RewardMixer(decoded responses)               host: verifiers (time-limited)
    adv, ret  = credit.get(config.algo.estimator)(...)       device: jit
    for epoch, mini-batch: params = update(params, batch)    device: jit, donated

Everything that makes a step's numbers (the PRNG key, the data position, the optimiser state,
the reward tracker) is a function of the step index and the checkpointed state, so a resumed
run reproduces an uninterrupted one exactly (``tests/train/test_resume.py``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxrl_reason import credit, kernels
from jaxrl_reason.data.build import build_task
from jaxrl_reason.models.build import build_model
from jaxrl_reason.rollout.chat import chat_prompt_ids, decode_responses, stop_token_ids
from jaxrl_reason.train import rewarding
from jaxrl_reason.train import step as step_lib
from jaxrl_reason.train.step import loss_config

Array = jax.Array


# ---------------------------------------------------------------------------------------------
# The trainer.


def outcome_token_rewards(rewards: np.ndarray, lengths: np.ndarray, width: int) -> np.ndarray:
    """Places each sequence's scalar reward on its last response token (verl's layout).

    ``rewards float[B]``, ``lengths int[B]`` -> ``float32[B, width]``; empty responses get
    nothing (their mask is empty anyway).
    """
    out = np.zeros((len(rewards), width), np.float32)
    rows = np.nonzero(lengths > 0)[0]
    out[rows, np.asarray(lengths)[rows] - 1] = np.asarray(rewards, np.float32)[rows]
    return out


@dataclasses.dataclass
class StepTimes:
    """Wall-clock seconds of one step's phases (logged as ``time/*_s``)."""

    rollout_s: float = 0.0
    reward_s: float = 0.0
    train_s: float = 0.0


class Trainer:
    """Owns the model, optimiser, data, rewards, checkpoints and run directory of one run.

    Args:
      config: a validated, locked experiment ``ConfigDict``.
      workdir: run directory (config.json, metrics.jsonl, TensorBoard, plots, checkpoints).
      resume: continue from the latest checkpoint in ``workdir`` (a fresh run when none).
    """

    def __init__(self, config: Any, workdir: str, *, resume: bool = False):
        from jaxrl_reason.data.iterator import DataIterator
        from jaxrl_reason.rewards.mix import RewardMixer
        from jaxrl_reason.train.checkpoint import Checkpointer
        from jaxrl_reason.train.optim import build_optimizer

        self.config = config
        self.workdir = workdir
        self.model, self.tokenizer = build_model(config.model)
        self.graphdef, params, self.rest = nnx.split(self.model, nnx.Param, ...)
        self.train_task = build_task(config.task, "train")
        self.eval_task = build_task(config.task, "test")
        self.data = DataIterator(self.train_task, config.rollout.batch_prompts, seed=config.seed)
        weights = {k: float(v) for k, v in config.reward.weights.items() if v}
        self.rewarder = RewardMixer(
            weights,
            fmt=config.task.get("verify_format", "auto"),
            overlong_buffer=config.reward.get("overlong_buffer", 16),
        )
        self.loss_cfg = loss_config(config, self.model.config.num_layers)
        self.extra_names = [n for n in weights if n in rewarding.EXTRA_COMPONENTS]
        self.explore_cfg = rewarding.exploration_config(config) if "explore" in weights else None
        self.history = self.explore_cfg.make_history() if self.explore_cfg else None
        self.use_value_head = bool(config.algo.get("value_head", False))
        value_head = (
            step_lib.init_value_head(self.model.config.hidden_size) if self.use_value_head else None
        )
        rollouts = config.rollout.batch_prompts * config.rollout.n_samples
        mini = config.train.mini_batch_size
        self.updates_per_step = config.train.ppo_epochs * (rollouts // mini)
        optim_cfg = dict(config.optim)
        if value_head is not None and optim_cfg.get("trainable", "all") != "all":
            # The optimiser sees (policy params, value head): paths "0/..." and "1/...". A
            # trainable subset of the policy must never freeze the (fresh) value head.
            for key in ("also_train_regex", "trainable_regex"):  # last_k mode / regex mode
                extra = optim_cfg.get(key, "")
                optim_cfg[key] = f"{extra}|^1/" if extra else "^1/"
        self.optimizer = build_optimizer(
            optim_cfg,
            (params, value_head),
            total_steps=max(config.total_steps * self.updates_per_step, 1),
        )
        # One device mesh (data, fsdp, tensor) from config.mesh; parameters are placed by their
        # logical axis names and the optimiser state is built eagerly on them (so Adam moments
        # follow their parameter's sharding). A single device is the 1x1x1 mesh.
        from jax.sharding import NamedSharding, PartitionSpec

        from jaxrl_reason import parallel
        from jaxrl_reason.parallel import train_step as pts

        self.mesh = parallel.make_mesh(config.mesh)
        self.state, self.shardings = pts.shard_train_state(
            params, value_head, self.optimizer.tx, self.mesh
        )
        self.rest = jax.device_put(self.rest, NamedSharding(self.mesh, PartitionSpec()))
        self._batch_spec = pts.batch_sharding(self.mesh).spec
        self.step = 0
        self.ckpt = Checkpointer(
            os.path.join(workdir, "checkpoints"),
            save_every=config.checkpoint_every,
            max_to_keep=config.get("max_checkpoints", 3),
        )
        if resume:
            restored = self.ckpt.restore_latest(self.state)
            if restored is not None:
                self.state = restored.state
                self.step = int(restored.step)
                self.data.restore(restored.metadata["data"])
                if self.history is not None and "answer_history" in restored.metadata:
                    from jaxrl_reason.rewards.exploration import AnswerHistory

                    self.history = AnswerHistory.from_state_dict(
                        restored.metadata["answer_history"]
                    )
        # A frozen copy (the train state's buffers are donated at every update).
        self.ref_params = (
            jax.tree.map(jnp.copy, self.state["params"]) if self.loss_cfg.kl_coef > 0 else None
        )
        num_micro = mini // config.train.micro_batch_size
        update = step_lib.make_update_fn(
            self.graphdef,
            self.optimizer.tx,
            self.loss_cfg,
            num_micro,
            with_value_head=self.use_value_head,
        )
        self._update = pts.jit_sharded_update(update, self.mesh, self.shardings)
        self._estimator = credit.get(config.algo.estimator)

    # -- pieces --------------------------------------------------------------------------------

    def policy(self) -> nnx.Module:
        """The current policy as an NNX module (shares arrays with the train state)."""
        return nnx.merge(self.graphdef, self.state["params"], self.rest)

    def step_key(self, step: int, stream: int = 0) -> Array:
        """The PRNG key of ``step``: a pure function of the seed and the step index."""
        base = jax.random.key(self.config.seed)
        return jax.random.fold_in(jax.random.fold_in(base, step), stream)

    def sample(self, examples, key, *, n: int, temperature: float, greedy: bool = False):
        """Rollout of ``examples`` with ``n`` samples each (see :mod:`jaxrl_reason.rollout`)."""
        from jaxrl_reason.rollout import SamplingConfig, left_pad, sample

        ids = chat_prompt_ids(self.tokenizer, self.train_task, examples)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        tokens, mask = left_pad(ids, pad)
        cfg = SamplingConfig(
            max_new_tokens=self.config.rollout.max_new_tokens,
            temperature=temperature,
            top_k=self.config.rollout.get("top_k", 0),
            top_p=self.config.rollout.get("top_p", 1.0),
            greedy=greedy,
            n=n,
            stop_token_ids=tuple(self.stop_ids()),
            prompt_bucket=self.config.rollout.get("prompt_bucket", 16),
        )
        if self.mesh.size == 1:
            return sample(self.policy(), tokens, mask, key, cfg)
        from jaxrl_reason.parallel.train_step import sample_on_mesh

        return sample_on_mesh(self.policy(), tokens, mask, key, cfg, self.mesh)

    def stop_ids(self) -> list[int]:
        """Token ids that end a response (:func:`jaxrl_reason.rollout.chat.stop_token_ids`)."""
        return list(stop_token_ids(self.tokenizer))

    @functools.cached_property
    def _advantage_fn(self):
        kw = dict(self.config.algo.get("estimator_kwargs", {}))

        def fn(token_rewards, mask, group_ids, values):
            if self.config.algo.estimator == "gae":
                return self._estimator(token_rewards, mask, group_ids, values=values, **kw)
            return self._estimator(token_rewards, mask, group_ids, **kw)

        return jax.jit(fn)

    @functools.cached_property
    def _values_fn(self):
        def fn(params, rest, value_head, batch):
            model = nnx.merge(self.graphdef, params, rest)
            h = step_lib.response_hidden(
                model, batch["prompt_tokens"], batch["prompt_mask"], batch["response"]
            )
            return step_lib.value_forward(value_head, h) * batch["response_mask"]

        return jax.jit(fn)

    @functools.cached_property
    def _self_certainty_fn(self):
        def fn(params, rest, batch):
            model = nnx.merge(self.graphdef, params, rest)
            h = step_lib.response_hidden(
                model, batch["prompt_tokens"], batch["prompt_mask"], batch["response"]
            )
            _, _, sc = kernels.token_logprob(
                h,
                model.lm_head_weight(),
                batch["response"],
                temperature=self.loss_cfg.temperature,
                impl=self.loss_cfg.kernel_impl,
                with_self_certainty=True,
            )
            m = batch["response_mask"]
            return (sc * m).sum(-1) / jnp.maximum(m.sum(-1), 1.0)

        return jax.jit(fn)

    @functools.cached_property
    def _ref_logprobs_fn(self):
        def fn(params, rest, batch):
            model = nnx.merge(self.graphdef, params, rest)
            logp, _, _ = step_lib.sequence_logprobs(model, batch, self.loss_cfg)
            return logp * batch["response_mask"]

        return jax.jit(fn)

    def _host_rows(self, mb: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """This host's contiguous share of a mini-batch's rows (multi-host runs)."""
        n, i = jax.process_count(), jax.process_index()
        rows = next(iter(mb.values())).shape[0]
        if rows % n:
            raise ValueError(
                f"train.mini_batch_size={rows} must be divisible by the {n} hosts of the run"
            )
        k = rows // n
        return {key: v[i * k : (i + 1) * k] for key, v in mb.items()}

    # -- one RL step ---------------------------------------------------------------------------

    def train_step(self) -> dict[str, float]:
        """Runs one rollout + update iteration and returns its metrics (host floats)."""
        cfg = self.config
        times = StepTimes()
        step = self.step
        t0 = time.perf_counter()
        examples = next(self.data)
        ro = self.sample(
            examples,
            self.step_key(step),
            n=cfg.rollout.n_samples,
            temperature=cfg.rollout.temperature,
        )
        ro = jax.tree.map(np.asarray, ro)
        times.rollout_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        from jaxrl_reason.rewards.mix import RewardInputs

        texts = decode_responses(self.tokenizer, ro.tokens, ro.lengths)
        row_examples = [examples[g] for g in ro.group_ids]
        answers = [e.answer for e in row_examples]
        # The verifier's outcome is always measured (the accuracy metric, the exploration
        # gate); it enters the reward only if ``reward.weights`` names ``correct``.
        correct = self.train_task.verify_batch(texts, row_examples)
        extra = {"correct": correct}
        # Canonical final answers: exploration / label-free rewards and the diversity metric.
        keys = rewarding.answer_keys(texts)
        if self.extra_names:
            sc = None
            if "self_certainty" in self.extra_names:
                sc = np.asarray(
                    self._self_certainty_fn(
                        self.state["params"],
                        self.rest,
                        {
                            "prompt_tokens": ro.prompt_tokens,
                            "prompt_mask": ro.prompt_mask,
                            "response": ro.tokens,
                            "response_mask": ro.response_mask.astype(np.float32),
                        },
                    )
                )
            extra.update(
                rewarding.extra_components(
                    self.extra_names,
                    keys=keys,
                    prompt_ids=[e.id for e in row_examples],
                    group_ids=ro.group_ids,
                    correct=correct,
                    history=self.history,
                    explore_cfg=self.explore_cfg,
                    self_certainty=sc,
                )
            )
        total, comps = self.rewarder(
            RewardInputs(
                responses=texts,
                answers=answers,
                lengths=ro.lengths,
                group_ids=ro.group_ids,
                max_len=cfg.rollout.max_new_tokens,
            ),
            extra=extra,
        )
        times.reward_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        mask = ro.response_mask.astype(np.float32)
        batch = {
            "prompt_tokens": ro.prompt_tokens.astype(np.int32),
            "prompt_mask": ro.prompt_mask.astype(bool),
            "response": ro.tokens.astype(np.int32),
            "response_mask": mask,
            "old_logprobs": ro.logprobs.astype(np.float32),
        }
        token_rewards = outcome_token_rewards(total, ro.lengths, ro.tokens.shape[1])
        values = None
        if self.use_value_head:
            values = self._values_fn(
                self.state["params"], self.rest, self.state["value_head"], batch
            )
            batch["old_values"] = np.asarray(values)
        adv, ret = self._advantage_fn(token_rewards, mask, ro.group_ids.astype(np.int32), values)
        batch["advantages"] = np.asarray(adv)
        batch["returns"] = np.asarray(ret)
        if self.ref_params is not None:
            batch["ref_logprobs"] = np.asarray(
                self._ref_logprobs_fn(self.ref_params, self.rest, batch)
            )
        from jax.sharding import NamedSharding

        from jaxrl_reason.parallel import global_batch

        metrics_acc: list[dict[str, Array]] = []
        n_rows = mask.shape[0]
        mini = cfg.train.mini_batch_size
        perm_key = np.random.default_rng([cfg.seed, step, 1])
        for _ in range(cfg.train.ppo_epochs):
            order = (
                perm_key.permutation(n_rows)
                if cfg.train.get("shuffle", True)
                else np.arange(n_rows)
            )
            for start in range(0, n_rows, mini):
                idx = order[start : start + mini]
                mb = {k: v[idx] for k, v in batch.items()}
                if jax.process_count() == 1:
                    mb = jax.device_put(mb, NamedSharding(self.mesh, self._batch_spec))
                else:  # each host passes its own rows of the global mini-batch
                    mb = global_batch(self._host_rows(mb), self.mesh, self._batch_spec)
                params, vh, opt, m = self._update(
                    self.state["params"], self.state["value_head"], self.state["opt_state"], mb
                )
                self.state = {"params": params, "value_head": vh, "opt_state": opt}
                metrics_acc.append(m)
        metrics_acc = jax.device_get(metrics_acc)
        times.train_s = time.perf_counter() - t0

        from jaxrl_reason.train.optim import nonfinite_stats

        out: dict[str, float] = {}
        for k in metrics_acc[0]:
            out[k] = float(np.mean([m[k] for m in metrics_acc]))
        out.update(
            {
                k: float(v)
                for k, v in jax.device_get(nonfinite_stats(self.state["opt_state"])).items()
            }
        )
        n_tokens = float(mask.sum())
        out.update(
            {
                "step": step + 1,
                "reward/mean": float(np.mean(total)),
                "reward/std": float(np.std(total)),
                "accuracy": float(np.mean(correct)),
                "kl": out.get("actor/kl", 0.0),
                "entropy": out.get("actor/entropy", 0.0),
                "response_length/mean": float(np.mean(ro.lengths)),
                "response_length/clip_ratio": float(np.mean(ro.finish_reason == 1)),
                "advantage/abs_mean": float(np.abs(batch["advantages"]).sum() / max(n_tokens, 1)),
                "optim/learning_rate": float(
                    self.optimizer.schedule((step + 1) * self.updates_per_step - 1)
                ),
                "time/rollout_s": times.rollout_s,
                "time/reward_s": times.reward_s,
                "time/train_s": times.train_s,
                "time/step_s": times.rollout_s + times.reward_s + times.train_s,
                "throughput/tokens_per_s": n_tokens
                / max(times.rollout_s + times.reward_s + times.train_s, 1e-9),
            }
        )
        for name, v in comps.items():
            out[f"reward/{name}"] = float(np.mean(v))
        from jaxrl_reason.eval import distinct_answers

        per_group = [
            [k for k, g in zip(keys, ro.group_ids, strict=True) if g == j]
            for j in range(len(examples))
        ]
        out["distinct_answers"] = float(
            np.mean([distinct_answers(a, exclude=("<none>",)) for a in per_group])
        )
        self._last_samples = [
            {"prompt": examples[g].prompt, "response": t, "reward": float(r), "answer": a}
            for g, t, r, a in list(zip(ro.group_ids, texts, total, answers, strict=True))[:4]
        ]
        self.step = step + 1
        return out

    # -- evaluation ----------------------------------------------------------------------------

    def evaluate(self, step: int) -> dict[str, float]:
        """Held-out evaluation (:func:`jaxrl_reason.eval.runner.evaluate_policy`): greedy
        accuracy, answer-extraction coverage and mean length; with ``eval.n_samples > 1`` also
        pass@k / maj@k at ``eval.temperature`` and distinct answers per prompt."""
        from jaxrl_reason.eval.runner import evaluate_policy
        from jaxrl_reason.train.config import eval_kwargs_from_config

        examples = list(self.eval_task[: self.config.eval.num_prompts])
        metrics, self._last_eval_records = evaluate_policy(
            self.policy(),
            self.tokenizer,
            self.eval_task,
            examples,
            key=self.step_key(step, 7),
            stop_token_ids=self.stop_ids(),
            **eval_kwargs_from_config(self.config),
        )
        out = {f"eval/{k}": v for k, v in metrics.items() if k not in ("time_s", "tokens_per_s")}
        out["time/eval_s"] = metrics["time_s"]
        return out

    # -- the loop ------------------------------------------------------------------------------

    def checkpoint_metadata(self) -> dict[str, Any]:
        """JSON state saved beside the arrays: data position and the answer history."""
        meta: dict[str, Any] = {"data": self.data.state(), "step": self.step}
        if self.history is not None:
            meta["answer_history"] = self.history.state_dict()
        return meta

    def export(self, path: str | None = None) -> str:
        """Writes the current policy as a Hugging Face checkpoint (config.json + safetensors +
        tokenizer) that :func:`jaxrl_reason.models.load_pretrained` and transformers load."""
        from jaxrl_reason.models import save_pretrained

        path = path or os.path.join(self.workdir, "export")
        save_pretrained(self.policy(), self.tokenizer, path)
        return path

    def run(self, writer=None) -> list[dict[str, float]]:
        """Trains until ``total_steps`` (or a stop signal); returns the metrics rows written."""
        from jaxrl_reason.train.logging import RunWriter, progress_bar, update_bar

        cfg = self.config
        own_writer = writer is None
        if writer is None:
            writer = RunWriter(self.workdir, resume_step=self.step if self.step else None)
        writer.write_config(cfg)
        rows = []
        bar = progress_bar(cfg.total_steps, initial=self.step)
        try:
            if self.step == 0 and cfg.get("eval_at_start", True) and cfg.eval_every:
                m = {"step": 0, **self.evaluate(0)}
                writer.write_metrics(0, m)
                rows.append(m)
            while self.step < cfg.total_steps:
                m = self.train_step()
                s = self.step
                if cfg.eval_every and (s % cfg.eval_every == 0 or s == cfg.total_steps):
                    m.update(self.evaluate(s))
                if not all(math.isfinite(v) for v in m.values() if isinstance(v, float)):
                    m["nonfinite_metrics"] = 1.0
                writer.write_metrics(s, m)
                writer.write_samples(s, self._last_samples)
                rows.append(m)
                update_bar(bar, m)
                stop = self.ckpt.stop_requested
                if self.ckpt.should_save(s) or stop or s == cfg.total_steps:
                    self.ckpt.save(s, self.state, self.checkpoint_metadata())
                if stop:
                    break
            if self.step >= cfg.total_steps and cfg.get("export", True):
                from jaxrl_reason.parallel import is_main_process

                if is_main_process():
                    self.export()
        finally:
            bar.close()
            self.ckpt.wait_until_finished()
            writer.write_plots()
            if own_writer:
                writer.close()
        return rows


def run_experiment(config: Any, workdir: str, *, resume: bool = False) -> list[dict[str, float]]:
    """Builds a :class:`Trainer` and runs it (the body of ``experiments.train``)."""
    trainer = Trainer(config, workdir, resume=resume)
    try:
        return trainer.run()
    finally:
        trainer.ckpt.close()


__all__: Sequence[str] = ["Trainer", "run_experiment"]
