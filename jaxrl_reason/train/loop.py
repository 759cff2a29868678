"""The RL loop: a :class:`Trainer` that orchestrates the four phases of
:mod:`jaxrl_reason.train.phases`, with evaluation, checkpoints and export.

One iteration (``Trainer.train_step``)::

    examples      = next(data) (+ replayed prompts: curriculum)    host: task examples
    traj          = phases.collect(strategy, policy, examples)     device: rollout strategy
    traj, scored  = phases.score(traj, examples, scorer)           host: verifiers, rewards
    curriculum.observe_groups(indices, scored.correct)             host: pass-rate buffer
    traj          = + ref_logprobs / values when needed            device: jit forwards
    traj          = + process_rewards (implicit_prm.online: PRM update + forward)   device: jit
    traj          = phases.assign_credit(credit_fn, traj, bonus)   device: estimator by name
    for epoch, mini-batch: state = update(state, batch)            device: jit, donated

With ``algo.objective = "sft"`` (STaR / RAFT) or ``"dpo"`` the credit phase is skipped and the
update trains on the step's verified rows (plus STaR's rationalisations) or on preference
pairs (:mod:`jaxrl_reason.train.selftrain`; ``Trainer._sft_phase`` / ``_dpo_phase``).

Everything that makes a step's numbers (the PRNG key, the data position, the optimiser state,
the reward state, the curriculum buffer) is a function of the step index and the checkpointed
state, so a resumed run reproduces an uninterrupted one exactly (``tests/train/test_resume.py``,
``tests/train/test_curriculum_e2e.py``). The KL
reference is the policy as built from ``config.model``, never the restored weights.
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
from jaxrl_reason.models.loaders import release_loader_memo
from jaxrl_reason.parallel.host import host_tree, to_global, to_host
from jaxrl_reason.rollout.trajectories import Trajectories
from jaxrl_reason.train import implicit_prm as prm_lib
from jaxrl_reason.train import phases
from jaxrl_reason.train import state as state_lib
from jaxrl_reason.train import step as step_lib
from jaxrl_reason.train.step import loss_config

Array = jax.Array


@dataclasses.dataclass
class StepTimes:
    """Wall-clock seconds of one step's phases (logged as ``time/*_s``)."""

    rollout_s: float = 0.0
    reward_s: float = 0.0
    train_s: float = 0.0
    #: STaR's rationalisation sampling (part of rollout_s, taken out of train_s).
    star_rollout_s: float = 0.0


def reward_settings(config: Any) -> dict[str, Any]:
    """The settings reward components read (``reward.*`` besides weights, ``explore.*``)."""
    r = config.reward
    out = {k: r[k] for k in r.keys() if k not in ("weights", "step_scorer")}
    if "explore" in config:
        out["explore"] = dict(config.explore)
    for block in ("prm", "judge"):  # the prm / judge components' settings
        if block in config:
            out[block] = dict(config[block])
    return out


def needs_reference(config: Any) -> bool:
    """Whether the run keeps a frozen reference policy: a KL term, an estimator that reads
    ``ref_logprobs`` (PRIME's implicit process reward), an online PRM (its log-ratio) or DPO
    (``algo.objective="dpo"``: ``pi_ref`` of its log-ratios)."""
    est = config.algo.estimator
    return (
        float(config.loss.get("kl_coef", 0.0)) > 0
        or config.algo.get("objective", "rl") == "dpo"
        or prm_lib.prm_enabled(config)
        or "ref_logprobs"
        in (set(credit.inputs(est).values()) | set(credit.optional_inputs(est).values()))
    )


def uses_component(config: Any, name: str) -> bool:
    """Whether reward component ``name`` runs: a non-zero weight or the step scorer."""
    r = config.reward
    return r.get("step_scorer", "") == name or bool(r.weights.get(name, 0.0))


def _dtypes(config: Any) -> dict[str, Any]:
    return {k: config.model.get(k, "float32") for k in ("dtype", "param_dtype")}


def needs_field(config: Any, field: str) -> bool:
    """Whether the estimator reads the ``Trajectories`` field (as an input or optional one)."""
    est = config.algo.estimator
    return field in (set(credit.inputs(est).values()) | set(credit.optional_inputs(est).values()))


class Trainer:
    """Owns the model, optimiser, data, rewards, checkpoints and run directory of one run.

    Args:
      config: a validated, locked experiment ``ConfigDict``.
      workdir: run directory (config.json, metrics.jsonl, TensorBoard, plots, checkpoints).
      resume: continue from the latest checkpoint in ``workdir`` (a fresh run when none).
    """

    def __init__(self, config: Any, workdir: str, *, resume: bool = False):
        from jax.sharding import NamedSharding, PartitionSpec

        from jaxrl_reason import parallel
        from jaxrl_reason.data.iterator import DataIterator
        from jaxrl_reason.parallel import train_step as pts
        from jaxrl_reason.rollout import strategies
        from jaxrl_reason.train.checkpoint import Checkpointer

        self.config = config
        self.workdir = workdir
        import jaxrl_reason.envs  # noqa: F401  (registers the agent tasks with build_task)

        # Tasks first: a data mistake fails in seconds, before a model loads.
        self.train_task = build_task(config.task, "train")
        self.eval_task = build_task(config.task, "test")
        self.model, self.tokenizer = build_model(config.model)
        # The loader memoises the dequantised host weights for repeated loads in one process
        # (tests, eval); a training run holds its own copy on device, so drop the host one
        # (measured: 0.45 GiB of the train step's peak RSS for SmolLM2-135M).
        release_loader_memo()
        self.graphdef, params, self.rest = nnx.split(self.model, nnx.Param, ...)
        self.data = DataIterator(self.train_task, config.rollout.batch_prompts, seed=config.seed)
        # The replay / curriculum prompt buffer (curriculum.enabled), checkpointed with the
        # data position; None when off.
        self.curriculum = _build_curriculum(config)
        self.last_prompt_indices: np.ndarray | None = None  # the dataset indices of the batch
        self.loss_cfg = loss_config(config, self.model.config.num_layers)
        value_head = state_lib.init_value_head_for(config, self.model.config.hidden_size)
        self.use_value_head = value_head is not None
        self.updates_per_step = state_lib.updates_per_step(config)
        self.optimizer = state_lib.build_optimizer_for(config, params, value_head)
        # One device mesh (data, fsdp, tensor) from config.mesh; parameters are placed by their
        # logical axis names and the optimiser state is built eagerly on them (so Adam moments
        # follow their parameter's sharding). A single device is the 1x1x1 mesh.
        self.mesh = parallel.make_mesh(config.mesh)
        self.state, self.shardings = pts.shard_train_state(
            params, value_head, self.optimizer.tx, self.mesh
        )
        replicated = NamedSharding(self.mesh, PartitionSpec())
        self.rest = jax.tree.map(lambda x: to_global(x, replicated), self.rest)
        self._batch_spec = pts.batch_sharding(self.mesh).spec
        # The reference policy is the model as configured, copied before any restore (the
        # train state's buffers are donated at every update, and a resumed run must keep the
        # run's original reference, not its latest weights).
        self.ref_params = (
            jax.tree.map(jnp.copy, self.state["params"]) if needs_reference(config) else None
        )
        # PRIME's online PRM starts as the reference (= the initial policy): its own trainable
        # copy and optimiser state join the train state (checkpointed, sharded like the
        # policy); the reference it is measured against is self.ref_params, shared.
        self.prm_online = prm_lib.prm_enabled(config)
        if self.prm_online:
            prm_tx = prm_lib.build_prm_optimizer(config, self.state["params"]).tx
            prm_state, self._prm_shardings = pts.shard_train_state(
                jax.tree.map(jnp.copy, self.state["params"]), None, prm_tx, self.mesh
            )
            self.state["prm"] = {"params": prm_state["params"], "opt_state": prm_state["opt_state"]}
        self.step = 0
        # Tokens the sampler has generated since step 0 (``train.token_budget`` stops on it;
        # saved with each checkpoint so that a resumed run stops where the straight one does).
        self.decoded_total = 0.0
        # Training wall-clock since step 0 (the sum of ``time/step_s``, evaluation excluded;
        # ``train.time_budget_s`` stops on it, and it is checkpointed like decoded_total).
        self.train_wall_total = 0.0
        self.stopped_by_signal: str | None = None
        self._eval_strategy = None  # the episode evaluator (env strategy), built on first use
        self.ckpt = Checkpointer(
            os.path.join(workdir, "checkpoints"),
            save_every=config.checkpoint_every,
            max_to_keep=config.get("max_checkpoints", 3),
            handle_signals=False,  # run() owns the signals (StopSignal)
        )
        weights = {k: float(v) for k, v in config.reward.weights.items()}
        scorer_name = config.reward.get("step_scorer", "")
        self.scorer = phases.Scorer(
            tokenizer=self.tokenizer,
            task=self.train_task,
            weights=weights,
            settings=reward_settings(config),
            max_len=int(config.rollout.max_new_tokens),
            max_steps=int(config.rollout.get("max_steps", 8)),
            also=(scorer_name,) if scorer_name else (),
            placement={
                n: config.explore.get("placement", "advantage")
                for n in ("explore", "batch_penalty")
                if "explore" in config
            },
            self_certainty_fn=self._self_certainty,
            judge_fn=self._judge if uses_component(config, "judge") else None,
        )
        self._judge_model = None
        if uses_component(config, "judge") and config.judge.get("path", ""):
            import ml_collections

            self._judge_model, _ = build_model(
                ml_collections.ConfigDict({"name": config.judge.path, **_dtypes(config)})
            )
        if resume:
            restored = self.ckpt.restore_latest(self.state)
            if restored is not None:
                self.state = restored.state
                self.step = int(restored.step)
                self.data.restore(restored.metadata["data"])
                self.decoded_total = float(restored.metadata.get("decoded_tokens_total", 0.0))
                self.train_wall_total = float(restored.metadata.get("train_wall_total_s", 0.0))
                if self.curriculum is not None and "curriculum" in restored.metadata:
                    self.curriculum.restore(restored.metadata["curriculum"])
                if "answer_history" in restored.metadata:
                    from jaxrl_reason.rewards.exploration import AnswerHistory

                    self.scorer.state["answer_history"] = AnswerHistory.from_state_dict(
                        restored.metadata["answer_history"]
                    )
        self.strategy = strategies.get_strategy(config.rollout.get("strategy", "group"))(
            strategies.RolloutSettings(
                tokenizer=self.tokenizer,
                task=self.train_task,
                sampling=strategies.sampling_config(config.rollout, self.tokenizer),
                step_rule=config.rollout.get("step_rule", "auto"),
                max_steps=int(config.rollout.get("max_steps", 8)),
                sample_fn=self._sample_fn(),
                options={
                    name: config.rollout[name].to_dict()
                    for name in ("env", "tree", "vine")
                    if name in config.rollout
                }
                | {"answer_probs": needs_field(config, "answer_probs")},
            )
        )
        self.objective = self.loss_cfg.objective
        # DPO from a file: the pairs are tokenized once; step s trains on the next
        # rollout.batch_prompts * n_samples / 2 of them (cycling), a function of s (resumable).
        self._pair_data = None
        if self.objective == "dpo" and config.dpo.pairs == "file":
            from jaxrl_reason.train import selftrain

            self._pair_data = selftrain.tokenize_pairs(
                self.tokenizer,
                self.train_task,
                selftrain.load_pair_records(config.dpo.pairs_path),
                int(config.rollout.max_new_tokens),
                bucket=int(config.rollout.get("prompt_bucket", 16)),
            )
        self.credit_fn = phases.make_credit_fn(
            config.algo.estimator, dict(config.algo.get("estimator_kwargs", {}))
        )
        num_micro = config.train.mini_batch_size // config.train.micro_batch_size
        update = step_lib.make_update_fn(
            self.graphdef,
            self.optimizer.tx,
            self.loss_cfg,
            num_micro,
            with_value_head=self.use_value_head,
        )
        self._update = pts.jit_sharded_update(update, self.mesh, self.shardings)
        if self.prm_online:
            prm_update = step_lib.make_update_fn(
                self.graphdef,
                prm_tx,
                self.loss_cfg,
                num_micro,
                loss_fn=functools.partial(
                    prm_lib.prm_loss, cfg=self.loss_cfg, beta=float(config.implicit_prm.beta)
                ),
            )
            self._prm_update = pts.jit_sharded_update(prm_update, self.mesh, self._prm_shardings)

    # -- pieces --------------------------------------------------------------------------------

    def policy(self) -> nnx.Module:
        """The current policy as an NNX module (shares arrays with the train state)."""
        return nnx.merge(self.graphdef, self.state["params"], self.rest)

    def step_key(self, step: int, stream: int = 0) -> Array:
        """The PRNG key of ``step``: a pure function of the seed and the step index."""
        base = jax.random.key(self.config.seed)
        return jax.random.fold_in(jax.random.fold_in(base, step), stream)

    def _sample_fn(self):
        from jaxrl_reason.rollout import sample, sample_on_mesh

        if self.mesh.size == 1:
            return sample
        return functools.partial(sample_on_mesh, mesh=self.mesh)

    def stop_ids(self) -> list[int]:
        """Token ids that end a response (:func:`jaxrl_reason.rollout.chat.stop_token_ids`)."""
        from jaxrl_reason.rollout.chat import stop_token_ids

        return list(stop_token_ids(self.tokenizer))

    @staticmethod
    def _model_batch(traj: Trajectories) -> dict[str, np.ndarray]:
        return {
            "prompt_tokens": np.asarray(traj.prompt_tokens, np.int32),
            "prompt_mask": np.asarray(traj.prompt_mask, bool),
            "response": np.asarray(traj.tokens, np.int32),
            "response_mask": np.asarray(traj.loss_mask, np.float32),
        }

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

    def _self_certainty(self, traj: Trajectories) -> np.ndarray:
        """Mean self-certainty of each row under the current policy, ``float32[B]``."""
        return to_host(
            self._self_certainty_fn(self.state["params"], self.rest, self._model_batch(traj))
        )

    def _judge(self, prompts: Sequence[str]) -> list[list[str]]:
        """CAPO judgements (``config.judge``): the policy itself unless ``judge.path`` names
        another checkpoint; the key is a function of the step (resumable)."""
        from jaxrl_reason.rollout.judge import sample_judgements

        j = self.config.judge
        return sample_judgements(
            self._judge_model if self._judge_model is not None else self.policy(),
            self.tokenizer,
            prompts,
            self.step_key(self.step, 5),
            num_judgements=int(j.num_judgements),
            temperature=float(j.temperature),
            max_new_tokens=int(j.max_new_tokens),
        )

    # -- one RL step ---------------------------------------------------------------------------

    def train_step(self) -> dict[str, float]:
        """Runs one collect -> score -> credit -> update iteration; returns its metrics."""
        times = StepTimes()
        step = self.step
        t0 = time.perf_counter()
        indices, replayed = self._draw_prompts(step)
        examples = [self.train_task[int(i)] for i in indices]
        self.last_prompt_indices = indices
        traj = phases.collect(self.strategy, self.policy(), examples, self.step_key(step))
        times.rollout_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        # Environment episodes are verified on their final answers, not on the transcript.
        answers = getattr(self.strategy, "last_answers", None)
        traj, scored = phases.score(traj, examples, self.scorer, answers=answers)
        prof_dropped = None
        if int(self.config.get("prof", {}).get("n_remove", 0)) > 0:
            traj, prof_dropped = phases.prof_filter(traj, scored.correct, self.config.prof)
        times.reward_s = time.perf_counter() - t0
        if self.curriculum is not None:
            self.curriculum.observe_groups(indices, scored.correct, np.asarray(traj.group_id))
        dyn_metrics: dict[str, float] = {}
        if self.config.rollout.get("dynamic_sampling", False):
            traj, scored, examples, dyn_metrics = self._dynamic_sampling(
                traj, scored, examples, step, times
            )
        self.last_scored = scored

        t0 = time.perf_counter()
        batch = self._model_batch(traj)
        if self.ref_params is not None and self._pair_data is None:
            traj = traj.replace(
                ref_logprobs=to_host(self._ref_logprobs_fn(self.ref_params, self.rest, batch))
            )
        prm_metrics: dict[str, float] = {}
        if self.prm_online:
            process_rewards, prm_metrics = self._prm_phase(traj, scored.correct, step)
            traj = traj.replace(process_rewards=process_rewards)
        if self.use_value_head:
            traj = traj.replace(
                values=to_host(
                    self._values_fn(
                        self.state["params"], self.rest, self.state["value_head"], batch
                    )
                )
            )
        obj_metrics: dict[str, float] = {}
        stats = dict(getattr(self.strategy, "last_stats", None) or {})
        if self.objective == "rl":
            traj = phases.assign_credit(self.credit_fn, traj, scored.bonus)
            self.last_trajectories = traj
            sft_rows = scored.correct if self.loss_cfg.sft_coef else None
            metrics_acc = self._update_phase(traj, step, sft_rows=sft_rows)
        else:
            # No estimator runs: the update reads the verifier's outcomes, not advantages.
            zeros = np.zeros(np.shape(traj.loss_mask), np.float32)
            traj = traj.replace(advantages=zeros, returns=zeros)
            self.last_trajectories = traj
            if self.objective == "sft":
                metrics_acc, obj_metrics = self._sft_phase(traj, scored, examples, step, times)
                # Rationalisation samples count against the generation budget.
                stats["decoded_tokens"] = stats.get("decoded_tokens", 0.0) + obj_metrics.get(
                    "star/decoded_tokens", 0.0
                )
            else:
                metrics_acc, obj_metrics = self._dpo_phase(traj, scored, step)
        times.train_s = time.perf_counter() - t0 - times.star_rollout_s
        out = self._step_metrics(traj, scored, metrics_acc, times, step, examples)
        out.update(dyn_metrics)
        if self.curriculum is not None:
            out["curriculum/replayed"] = float(replayed)
            out["curriculum/buffer_size"] = float(len(self.curriculum))
            out["curriculum/mean_priority"] = self.curriculum.mean_priority()
        out.update(obj_metrics)
        if prof_dropped is not None:
            out["batch/prof_dropped"] = float(prof_dropped)
        if self.objective == "rl":
            out.update(self._credit_metrics(traj, scored))
        out.update(prm_metrics)
        # Strategy statistics: env/* for episodes (already prefixed), rollout/* otherwise.
        out.update({(k if "/" in k else f"rollout/{k}"): float(v) for k, v in stats.items()})
        self.decoded_total += float(stats.get("decoded_tokens", 0.0))
        out["rollout/decoded_tokens_total"] = self.decoded_total
        self._last_samples = [
            {
                "prompt": ex.prompt,
                "response": t,
                "reward": float(r),
                "answer": ex.answer,
            }
            for ex, t, r in list(
                zip(scored.examples, scored.texts, np.asarray(traj.reward), strict=True)
            )[:4]
        ]
        transcripts = getattr(self.strategy, "last_transcripts", None)
        if transcripts:  # whole episodes, observations between <obs> markers
            for rec, text in zip(self._last_samples, transcripts, strict=False):
                rec["transcript"] = text
        self.step = step + 1
        return out

    def _draw_prompts(self, step: int) -> tuple[np.ndarray, int]:
        """The dataset indices ``int64[rollout.batch_prompts]`` of this step's prompts and how
        many of them the curriculum buffer replayed (0 when it is off: the plain iterator).

        With ``curriculum.enabled`` (:func:`jaxrl_reason.data.curriculum.mix_batch`) the
        replayed ones are drawn by priority ``p (1 - p)`` with the generator
        ``default_rng([seed, step, 3])`` (a pure function of the step, like the update's
        shuffle ``[seed, step, 1]``), the fresh ones from ``self.data``."""
        if self.curriculum is None:
            return self.data.next_indices(), 0
        from jaxrl_reason.data.curriculum import mix_batch

        cfg = self.config
        return mix_batch(
            self.curriculum,
            self.data.next_indices,
            int(cfg.rollout.batch_prompts),
            float(cfg.curriculum.replay_fraction),
            np.random.default_rng([cfg.seed, step, 3]),
        )

    def _dynamic_sampling(self, traj, scored, examples, step, times):
        """DAPO dynamic sampling (Yu et al. 2025, arXiv 2503.14476; verl's
        ``RayDAPOTrainer.fit``): drop the groups whose metric is the same on every row
        (:func:`phases.informative_groups`; ``rollout.dynamic_metric``: ``"acc"``, the
        verifier, DAPO's default, or ``"reward"``), draw ``rollout.batch_prompts`` more prompts
        from the run's data iterator and roll them out, until the batch holds that many
        informative groups or ``rollout.max_resample_rounds`` extra rounds are spent; surplus
        groups are discarded. If the cap is hit, the batch is completed with dropped groups
        whose ``loss_mask`` is zeroed (the shapes stay fixed; no all-equal group is trained on).

        The extra prompts come from ``self.data``, so the checkpointed iterator position
        includes them and a resumed run draws exactly what the uninterrupted one drew. Round
        ``r >= 1`` samples with ``step_key(step, 1000 + r)``.

        Returns ``(traj, scored, examples, metrics)`` with ``batch/groups_dropped`` (all-equal
        groups seen this step), ``batch/prompts_sampled`` (prompts rolled out this step),
        ``batch/resample_rounds`` and ``batch/groups_masked`` (filler groups).
        """
        cfg = self.config.rollout
        want = int(cfg.batch_prompts)
        metric = cfg.get("dynamic_metric", "acc")
        parts, exs_of, kept, dropped = [], [], [], []
        sampled, rnd = 0, 0
        # Every round's tokens count against the generation budget (train.token_budget).
        decoded = float(self.strategy.last_stats.get("decoded_tokens", 0.0))
        while True:
            parts.append((traj, scored))
            exs_of.append(list(examples))
            sampled += len(examples)
            values = scored.correct if metric == "acc" else np.asarray(traj.reward)
            keep = phases.informative_groups(values, np.asarray(traj.group_id), len(examples))
            p = len(parts) - 1
            kept += [(p, g) for g in range(len(examples)) if keep[g]]
            dropped += [(p, g) for g in range(len(examples)) if not keep[g]]
            if len(kept) >= want or rnd >= int(cfg.get("max_resample_rounds", 0)):
                break
            rnd += 1
            t0 = time.perf_counter()
            indices = self.data.next_indices()
            examples = [self.train_task[int(i)] for i in indices]
            key = self.step_key(step, 1000 + rnd)
            traj = phases.collect(self.strategy, self.policy(), examples, key)
            times.rollout_s += time.perf_counter() - t0
            decoded += float(self.strategy.last_stats.get("decoded_tokens", 0.0))
            t0 = time.perf_counter()
            traj, scored = phases.score(traj, examples, self.scorer)
            times.reward_s += time.perf_counter() - t0
            if self.curriculum is not None:  # dropped groups' pass rates count too
                self.curriculum.observe_groups(indices, scored.correct, np.asarray(traj.group_id))
        picks = kept[:want]
        filler = dropped[: want - len(picks)]
        masked = [False] * len(picks) + [True] * len(filler)
        picks = picks + filler
        traj, scored = phases.select_groups(parts, picks, masked=masked)
        examples = [exs_of[p][g] for p, g in picks]
        self.strategy.last_stats = {**self.strategy.last_stats, "decoded_tokens": decoded}
        metrics = {
            "batch/groups_dropped": float(len(dropped)),
            "batch/prompts_sampled": float(sampled),
            "batch/resample_rounds": float(rnd),
            "batch/groups_masked": float(len(filler)),
        }
        return traj, scored, examples, metrics

    def _place_batch(self, mb: dict[str, np.ndarray]) -> dict[str, Array]:
        """A host mini-batch on the mesh, rows over the batch axes. Every host holds the whole
        mini-batch (the same data, keys and rollouts), so on several hosts each builds the
        rows its own devices hold (:func:`jaxrl_reason.parallel.to_global`), whatever the
        mesh's device order."""
        from jax.sharding import NamedSharding

        rows = NamedSharding(self.mesh, self._batch_spec)
        return {k: to_global(v, rows) for k, v in mb.items()}

    def _prm_rewards(self, traj: Trajectories) -> np.ndarray:
        """The current PRM's token rewards ``implicit_prm.beta * (log pi_prm - log pi_ref)``,
        ``float32[B, R]``, 0 off the loss mask (the reference log-probs are the step's)."""
        logp = self._ref_logprobs_fn(
            self.state["prm"]["params"], self.rest, self._model_batch(traj)
        )
        rewards = prm_lib.prm_token_rewards(
            logp, traj.ref_logprobs, traj.loss_mask, beta=float(self.config.implicit_prm.beta)
        )
        return to_host(rewards).astype(np.float32)

    def _prm_phase(
        self, traj: Trajectories, correct: np.ndarray, step: int
    ) -> tuple[np.ndarray, dict[str, float]]:
        """PRIME's online PRM for one step (:mod:`jaxrl_reason.train.implicit_prm`): one pass of
        cross-entropy updates on the verifier's labels ``correct float32[B]`` and a scoring
        forward, in the order ``implicit_prm.update_order`` says.

        Returns ``(process_rewards float32[B, R], prm/* metrics as host floats)``."""
        cfg = self.config
        if cfg.implicit_prm.update_order == "after":
            rewards = self._prm_rewards(traj)
        n_rows = traj.batch_size
        mini = cfg.train.mini_batch_size
        order = (
            np.random.default_rng([cfg.seed, step, 2]).permutation(n_rows)
            if cfg.train.get("shuffle", True)
            else np.arange(n_rows)
        )
        outcome = np.asarray(correct, np.float32)
        acc: list[dict[str, Array]] = []
        for start in range(0, n_rows, mini):
            idx = order[start : start + mini]
            r = traj.rows(idx)
            mb = {
                "prompt_tokens": r["prompt_tokens"].astype(np.int32),
                "prompt_mask": r["prompt_mask"].astype(bool),
                "response": r["tokens"].astype(np.int32),
                "response_mask": r["loss_mask"].astype(np.float32),
                "ref_logprobs": r["ref_logprobs"].astype(np.float32),
                "outcome": outcome[idx],
            }
            prm = self.state["prm"]
            params, _, opt, m = self._prm_update(
                prm["params"], None, prm["opt_state"], self._place_batch(mb)
            )
            self.state["prm"] = {"params": params, "opt_state": opt}
            acc.append(m)
        if cfg.implicit_prm.update_order == "before":
            rewards = self._prm_rewards(traj)
        acc = host_tree(acc)
        metrics = {
            "prm/loss": float(np.mean([m["loss"] for m in acc])),
            "prm/accuracy": float(np.mean([m["accuracy"] for m in acc])),
            "prm/grad_norm": float(np.mean([m["grad_norm"] for m in acc])),
            "prm/nonfinite": float(np.sum([m["update/nonfinite"] for m in acc])),
            "prm/reward_mean": float(np.mean(rewards.sum(-1))),
        }
        return rewards, metrics

    def _update_phase(
        self, traj: Trajectories, step: int, *, sft_rows: np.ndarray | None = None
    ) -> list[dict[str, Any]]:
        """Phase 4: ``train.ppo_epochs`` passes of shuffled mini-batches through the jitted,
        donated, sharded update; returns the per-update metrics (host floats). ``sft_rows``
        (``float32[B]``): the rows of the auxiliary NLL term (``algo.sft_coef``)."""
        cfg = self.config
        metrics_acc: list[dict[str, Array]] = []
        n_rows = traj.batch_size
        mini = cfg.train.mini_batch_size
        perm_key = np.random.default_rng([cfg.seed, step, 1])
        for _ in range(cfg.train.ppo_epochs):
            order = (
                perm_key.permutation(n_rows)
                if cfg.train.get("shuffle", True)
                else np.arange(n_rows)
            )
            for start in range(0, n_rows, mini):
                rows = order[start : start + mini]
                metrics_acc.append(
                    self._apply_update(phases.update_batch(traj, rows, sft_rows=sft_rows))
                )
        return host_tree(metrics_acc)

    def _apply_update(self, host_batch: dict[str, np.ndarray]) -> dict[str, Array]:
        """One jitted, donated update of the policy's train state on a host mini-batch."""
        mb = self._place_batch(host_batch)
        params, vh, opt, m = self._update(
            self.state["params"], self.state["value_head"], self.state["opt_state"], mb
        )
        # Other entries (the online PRM's state) are kept as they are.
        self.state = {**self.state, "params": params, "value_head": vh, "opt_state": opt}
        return m

    def _epoch_updates(self, step: int, minibatches) -> list[dict[str, Any]]:
        """``train.ppo_epochs`` passes of donated updates over ``minibatches(rng)`` (host
        mini-batches; ``rng`` seeded by (seed, step, epoch), None without ``train.shuffle``)."""
        cfg = self.config
        acc = []
        for epoch in range(cfg.train.ppo_epochs):
            shuffle = cfg.train.get("shuffle", True)
            rng = np.random.default_rng([cfg.seed, step, 1, epoch]) if shuffle else None
            acc.extend(self._apply_update(mb) for mb in minibatches(rng))
        return acc

    def _sft_phase(
        self, traj: Trajectories, scored: phases.Scored, examples, step: int, times: StepTimes
    ) -> tuple[list[dict[str, Any]], dict[str, float]]:
        """STaR / RAFT's fine-tuning step (``algo.objective = "sft"``,
        :mod:`jaxrl_reason.train.selftrain`): keep the verified rows; with ``star.rationalize``
        re-sample the prompts that got none with the answer as a hint (``star.hint_template``,
        key ``step_key(step, 11)``) and keep the verified ones under their hint-free prompt;
        then ``train.ppo_epochs`` passes of the NLL over the kept rows. Fewer than
        ``star.min_correct`` kept rows: no update.

        Returns the per-update metrics and ``star/kept``, ``star/rationalized`` (kept
        rationalisations), ``star/failed_prompts``, ``star/skipped`` (1.0: no update this step)
        and ``star/decoded_tokens`` (tokens the rationalisation sampled).
        """
        from jaxrl_reason.rollout.chat import decode_responses
        from jaxrl_reason.train import selftrain

        cfg = self.config
        rtraj = rcorrect = None
        groups = np.zeros(0, np.int64)
        decoded = 0.0
        if cfg.star.rationalize:
            groups = selftrain.failed_groups(scored.correct, traj.group_id, len(examples))
            if len(groups):
                t0 = time.perf_counter()
                hinted = selftrain.hinted_examples(examples, groups, cfg.star.hint_template)
                rtraj = phases.collect(
                    self.strategy, self.policy(), hinted, self.step_key(step, 11)
                )
                decoded = float(self.strategy.last_stats.get("decoded_tokens", 0.0))
                texts = decode_responses(
                    self.tokenizer, np.asarray(rtraj.tokens), np.asarray(rtraj.lengths)
                )
                # Verified against the hinted problem: the same answer as the original.
                rcorrect = np.asarray(
                    self.train_task.verify_batch(
                        texts, [hinted[int(g)] for g in np.asarray(rtraj.group_id)]
                    ),
                    np.float32,
                )
                times.star_rollout_s = time.perf_counter() - t0
                times.rollout_s += times.star_rollout_s
        rows = selftrain.star_rows(traj, scored.correct, rtraj, rcorrect, groups)
        kept = len(rows["sft_mask"])
        metrics = {
            "star/kept": float(kept),
            "star/rationalized": float(rows["rationalized"].sum()),
            "star/failed_prompts": float(len(groups)),
            "star/decoded_tokens": decoded,
            "star/skipped": 0.0,
        }
        if kept < int(cfg.star.min_correct):
            metrics["star/skipped"] = 1.0
            return [], metrics
        acc = self._epoch_updates(
            step, lambda rng: selftrain.sft_minibatches(rows, cfg.train.mini_batch_size, rng)
        )
        return host_tree(acc), metrics

    def _dpo_phase(
        self, traj: Trajectories, scored: phases.Scored, step: int
    ) -> tuple[list[dict[str, Any]], dict[str, float]]:
        """DPO's update (``algo.objective = "dpo"``, Rafailov et al. 2023 eq. 7): pairs from
        the step's own groups (``dpo.pairs = "self"``: a verified and a refuted response of one
        prompt, :func:`selftrain.self_pairs`) or the next ``B / 2`` pairs of ``dpo.pairs_path``
        (``"file"``; their reference log-probs are computed here), then ``train.ppo_epochs``
        passes over them. No pair: no update.

        Returns the per-update metrics (``dpo/accuracy``, ``dpo/margin``, ...) and
        ``dpo/pairs``, ``dpo/skipped``.
        """
        from jaxrl_reason.train import selftrain

        cfg = self.config
        if self._pair_data is None:
            pairs = selftrain.self_pairs(
                scored.correct,
                traj.group_id,
                int(cfg.rollout.n_samples),
                valid=np.asarray(traj.loss_mask).any(-1),
            )
            data = {
                "prompt_tokens": np.asarray(traj.prompt_tokens, np.int32),
                "prompt_mask": np.asarray(traj.prompt_mask, bool),
                "response": np.asarray(traj.tokens, np.int32),
                "response_mask": np.asarray(traj.loss_mask, np.float32),
                "ref_logprobs": np.asarray(traj.ref_logprobs, np.float32),
            }
        else:
            pd = self._pair_data
            per_step = traj.batch_size // 2
            chosen = (step * per_step + np.arange(per_step)) % len(pd["pairs"])
            rows = pd["pairs"][chosen].reshape(-1)
            data = {
                k: pd[k][rows]
                for k in ("prompt_tokens", "prompt_mask", "response", "response_mask")
            }
            data["ref_logprobs"] = to_host(
                self._ref_logprobs_fn(self.ref_params, self.rest, data)
            ).astype(np.float32)
            pairs = np.arange(len(rows), dtype=np.int64).reshape(-1, 2)
        metrics = {"dpo/pairs": float(len(pairs)), "dpo/skipped": float(len(pairs) == 0)}
        acc = self._epoch_updates(
            step,
            lambda rng: selftrain.dpo_minibatches(data, pairs, cfg.train.mini_batch_size, rng),
        )
        return host_tree(acc), metrics

    def _credit_metrics(self, traj: Trajectories, scored: phases.Scored) -> dict[str, float]:
        """``credit/first_error_hit``, ``credit/first_error_n``, ``credit/first_error_tied``
        (:func:`jaxrl_reason.eval.credit_metrics.first_error_hit`) on tasks with oracle steps
        (``task.first_error_step``); empty otherwise. Environment episodes are skipped (their
        text is a transcript, not a solution the oracle reads)."""
        task = self.train_task
        if not hasattr(task, "first_error_step") or self.strategy.name == "env":
            return {}
        from jaxrl_reason.eval.credit_metrics import first_error_hit
        from jaxrl_reason.rollout.steps import response_segment_ids

        max_steps = int(self.config.rollout.get("max_steps", 8))
        rule = self.config.rollout.get("step_rule", "auto")
        if rule in ("auto", "task") and getattr(self.strategy, "segments_follow_step_rule", True):
            seg = np.asarray(traj.segment_id)
        else:  # the oracle numbers the task's own steps
            seg = response_segment_ids(
                self.tokenizer,
                np.asarray(traj.tokens),
                np.asarray(traj.lengths),
                rule="task",
                task=task,
                max_steps=max_steps,
            )
        first = np.array(
            [
                task.first_error_step(t, ex)
                for t, ex in zip(scored.texts, scored.examples, strict=True)
            ],
            np.int64,
        )
        mask = traj.update_mask if traj.update_mask is not None else traj.loss_mask
        return first_error_hit(
            np.asarray(traj.advantages),
            np.asarray(mask),
            seg,
            scored.correct,
            first,
            num_steps=max_steps,
        )

    def _step_metrics(self, traj, scored, metrics_acc, times, step, examples) -> dict[str, float]:
        from jaxrl_reason.eval import distinct_answers
        from jaxrl_reason.train.optim import nonfinite_stats

        out: dict[str, float] = {}
        # No update ran (STaR / DPO with nothing kept): no loss metrics this step.
        for k in metrics_acc[0] if metrics_acc else ():
            out[k] = float(np.mean([m[k] for m in metrics_acc]))
        out.update(
            {k: float(v) for k, v in host_tree(nonfinite_stats(self.state["opt_state"])).items()}
        )
        mask = np.asarray(traj.loss_mask)
        n_tokens = float(mask.sum())
        total = np.asarray(traj.reward)
        lengths = np.asarray(traj.lengths)
        step_s = times.rollout_s + times.reward_s + times.train_s
        out.update(
            {
                "step": step + 1,
                "reward/mean": float(np.mean(total)),
                "reward/std": float(np.std(total)),
                "accuracy": float(np.mean(scored.correct)),
                "kl": out.get("actor/kl", 0.0),
                "entropy": out.get("actor/entropy", 0.0),
                "response_length/mean": float(np.mean(lengths)),
                "response_length/clip_ratio": float(np.mean(np.asarray(traj.finish_reason) == 1)),
                "response_steps/mean": float(np.mean(np.asarray(traj.segment_id).max(-1) + 1)),
                "advantage/abs_mean": float(
                    np.abs(np.asarray(traj.advantages)).sum() / max(n_tokens, 1)
                ),
                "optim/learning_rate": float(
                    self.optimizer.schedule((step + 1) * self.updates_per_step - 1)
                ),
                "time/rollout_s": times.rollout_s,
                "time/reward_s": times.reward_s,
                "time/train_s": times.train_s,
                "time/step_s": step_s,
                "throughput/tokens_per_s": n_tokens / max(step_s, 1e-9),
            }
        )
        if np.any(scored.bonus):
            out["reward/advantage_bonus"] = float(np.mean(scored.bonus))
        for name, v in scored.components.items():
            out[f"reward/{name}"] = float(np.mean(v))
        gids = np.asarray(traj.group_id)
        per_group = [
            [k for k, g in zip(scored.keys, gids, strict=True) if g == j]
            for j in range(len(examples))
        ]
        out["distinct_answers"] = float(
            np.mean([distinct_answers(a, exclude=("<none>",)) for a in per_group])
        )
        return out

    # -- evaluation ----------------------------------------------------------------------------

    def evaluate(self, step: int) -> dict[str, float]:
        """Held-out evaluation (:func:`jaxrl_reason.eval.runner.evaluate_policy`): greedy
        accuracy, answer-extraction coverage and mean length; with ``eval.n_samples > 1`` also
        pass@k / maj@k at ``eval.temperature`` and distinct answers per prompt."""
        from jaxrl_reason.eval.runner import evaluate_policy
        from jaxrl_reason.train.config import eval_kwargs_from_config

        if self.strategy.name == "env":
            return self.evaluate_episodes(step)
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

    def evaluate_episodes(self, step: int) -> dict[str, float]:
        """Held-out evaluation of a multi-turn agent: one greedy episode per held-out prompt in
        the training environment (same tools, turn and token limits), built on the held-out
        split of the task (for ``multihop``: its own entities, documents and BM25 index).

        Returns ``eval/accuracy`` (the task verifier on each episode's final answer, as in
        training), ``eval/answered``, ``eval/turns_mean``, ``eval/tool_calls``,
        ``eval/tool_errors``, ``eval/obs_tokens``, ``eval/truncated`` (means over episodes)
        and ``time/eval_s``. ``eval.n_samples`` is not used for episodes (greedy only).
        """
        t0 = time.perf_counter()
        cfg = self.config.eval
        base = self.strategy.settings
        settings = dataclasses.replace(
            base,
            task=self.eval_task,
            sampling=dataclasses.replace(base.sampling, n=1, greedy=True),
            options={k: v for k, v in base.options.items() if k != "answer_probs"},
        )
        if self._eval_strategy is None:  # built once: the held-out corpus index is cached
            self._eval_strategy = type(self.strategy)(settings)
        strat = self._eval_strategy
        examples = list(self.eval_task[: cfg.num_prompts])
        size = max(1, int(cfg.get("batch_prompts", 32)))
        sums: dict[str, float] = {}
        correct_all: list[float] = []
        for i in range(0, len(examples), size):
            batch = examples[i : i + size]
            strat.collect(self.policy(), batch, self.step_key(step, 7 + i))
            correct = self.eval_task.verify_batch(list(strat.last_answers), batch)
            correct_all.extend(float(c) for c in correct)
            for k, v in strat.last_stats.items():
                if not k.startswith("env/"):
                    continue
                sums[k] = sums.get(k, 0.0) + float(v) * len(batch)
        n = max(len(examples), 1)
        out = {"eval/accuracy": float(np.mean(correct_all)) if correct_all else 0.0}
        out.update({f"eval/{k.split('/', 1)[-1]}": v / n for k, v in sums.items()})
        out["time/eval_s"] = time.perf_counter() - t0
        return out

    # -- the loop ------------------------------------------------------------------------------

    def checkpoint_metadata(self) -> dict[str, Any]:
        """JSON state saved beside the arrays: data position, the answer history and the
        curriculum buffer (dataset indices, pass rates, visits)."""
        meta: dict[str, Any] = {
            "data": self.data.state(),
            "step": self.step,
            "decoded_tokens_total": self.decoded_total,
            "train_wall_total_s": self.train_wall_total,
        }
        history = self.scorer.state.get("answer_history")
        if history is not None:
            meta["answer_history"] = history.state_dict()
        if self.curriculum is not None:
            meta["curriculum"] = self.curriculum.state_dict()
        return meta

    def export(self, path: str | None = None) -> str:
        """Writes the current policy as a Hugging Face checkpoint (config.json + safetensors +
        tokenizer) that :func:`jaxrl_reason.models.load_pretrained` and transformers load.
        Call it on every process of a multi-host run: all gather the weights, process 0
        writes."""
        from jaxrl_reason.models import save_pretrained
        from jaxrl_reason.parallel import is_main_process

        path = path or os.path.join(self.workdir, "export")
        policy = self.policy()
        if jax.process_count() > 1:
            # Every process gathers the weights (a collective); only process 0 writes them.
            policy = nnx.merge(self.graphdef, host_tree(self.state["params"]), host_tree(self.rest))
        if is_main_process():
            save_pretrained(policy, self.tokenizer, path)
        return path

    def run(self, writer=None) -> list[dict[str, float]]:
        """Trains until ``total_steps`` (or, with ``train.token_budget > 0``, until the
        sampler has generated that many tokens in all, or, with ``train.time_budget_s > 0``,
        until the training steps have taken that many seconds of wall-clock, evaluation
        excluded; whichever comes first: the last step is evaluated, saved and exported like
        step ``total_steps``); returns the metrics rows.

        A SIGTERM or SIGINT (:class:`jaxrl_reason.train.preemption.StopSignal`) finishes the
        current step, saves a checkpoint, flushes the metrics and returns; a second signal
        stops at once. ``train.max_nonfinite_updates`` consecutive skipped (non-finite)
        updates stop the run with :class:`NonFiniteError` before anything is saved, so the
        last checkpoint is the last good state.
        """
        from jaxrl_reason.train.logging import RunWriter, progress_bar, update_bar
        from jaxrl_reason.train.preemption import StopSignal

        cfg = self.config
        own_writer = writer is None
        if writer is None:
            from jaxrl_reason.parallel import is_main_process

            writer = RunWriter(
                self.workdir,
                is_main_process=is_main_process(),  # one writer per run, on process 0
                resume_step=self.step if self.step else None,
            )
        writer.write_config(cfg)
        rows = []
        bar = progress_bar(cfg.total_steps, initial=self.step)
        max_bad = int(cfg.train.get("max_nonfinite_updates", 3))
        budget = float(cfg.train.get("token_budget", 0))
        time_budget = float(cfg.train.get("time_budget_s", 0))

        def out_of_budget() -> bool:
            return (0 < budget <= self.decoded_total) or (0 < time_budget <= self.train_wall_total)

        finished = self.step >= cfg.total_steps or out_of_budget()
        bad_run = 0
        self.stopped_by_signal = None
        try:
            with StopSignal() as stop:
                if self.step == 0 and cfg.get("eval_at_start", True) and cfg.eval_every:
                    m = {"step": 0, **self.evaluate(0)}
                    writer.write_metrics(0, m)
                    rows.append(m)
                while self.step < cfg.total_steps and not finished:
                    m = self.train_step()
                    s = self.step
                    self.train_wall_total += float(m.get("time/step_s", 0.0))
                    m["time/train_wall_total_s"] = self.train_wall_total
                    finished = s == cfg.total_steps or out_of_budget()
                    bad_run = bad_run + 1 if m.get("update/nonfinite", 0.0) > 0 else 0
                    if cfg.eval_every and (s % cfg.eval_every == 0 or finished):
                        m.update(self.evaluate(s))
                    if not all(math.isfinite(v) for v in m.values() if isinstance(v, float)):
                        m["nonfinite_metrics"] = 1.0
                    writer.write_metrics(s, m)
                    writer.write_samples(s, self._last_samples)
                    rows.append(m)
                    update_bar(bar, m)
                    if max_bad and bad_run >= max_bad:
                        raise NonFiniteError(
                            f"step {s}: {bad_run} consecutive RL steps produced non-finite "
                            "updates (skipped; the weights are those of step "
                            f"{s - bad_run}). The last checkpoint "
                            f"({self.ckpt.latest_step()}) holds finite weights; lower "
                            "optim.learning_rate or check the rewards, then --resume"
                        )
                    requested = stop.poll()
                    if self.ckpt.should_save(s) or requested or finished:
                        self.ckpt.save(s, self.state, self.checkpoint_metadata())
                    if requested:
                        self.stopped_by_signal = stop.signal_name or "stop request"
                        break
            if finished and cfg.get("export", True):
                self.export()
        finally:
            bar.close()
            self.ckpt.wait_until_finished()
            writer.write_plots()
            if own_writer:
                writer.close()
        return rows


def _build_curriculum(config: Any):
    """The :class:`jaxrl_reason.data.curriculum.PromptBuffer` of ``config.curriculum`` when
    ``curriculum.enabled``, else None (configs without the block: None)."""
    cur = config.get("curriculum", None)
    if cur is None or not cur.get("enabled", False):
        return None
    from jaxrl_reason.data.curriculum import PromptBuffer

    return PromptBuffer(
        int(cur.capacity), ema=float(cur.ema), max_visits=int(cur.get("max_visits", 4))
    )


class NonFiniteError(RuntimeError):
    """Too many consecutive non-finite updates; the message names the step and the fix."""


def run_experiment(config: Any, workdir: str, *, resume: bool = False, return_trainer=False):
    """Builds a :class:`Trainer` and runs it (the body of ``experiments.train``).

    Returns the metrics rows, or ``(rows, trainer)`` with ``return_trainer``.
    """
    trainer = Trainer(config, workdir, resume=resume)
    try:
        rows = trainer.run()
    finally:
        trainer.ckpt.close()
    return (rows, trainer) if return_trainer else rows


__all__: Sequence[str] = ["NonFiniteError", "Trainer", "run_experiment"]
