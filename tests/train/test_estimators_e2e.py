"""Every registered estimator is reachable from a config: one full step, or a documented
rejection at validation when its rollout strategy is not built yet (none today: the vine
strategy made vineppo and spo_chain runnable).

For each name in ``credit.names()`` the first config under ``experiments/configs/`` that
selects it runs with the tiny random model (tiny_debug's shapes) for one
collect -> score -> credit -> update step: the loss is finite and the advantages are zero off
the loss mask. A config whose strategy is not registered must fail validation, before any
model loads, with the message that names the estimator, its missing input and the strategy
that supplies it.
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from jaxrl_reason import credit
from jaxrl_reason.rollout import strategies
from jaxrl_reason.train.config import ConfigError, load_config

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
CONFIGS = os.path.join(ROOT, "experiments", "configs")
TINY = [
    "--config.model.name=tiny_debug",
    "--config.total_steps=1",
    "--config.eval_every=0",
    "--config.checkpoint_every=0",
    "--config.export=False",
    "--config.rollout.batch_prompts=2",
    "--config.rollout.n_samples=2",
    "--config.rollout.max_new_tokens=8",
    "--config.train.mini_batch_size=4",
    "--config.train.micro_batch_size=2",
    "--config.optim.trainable=all",
    # The random model earns no verifier reward and always reaches the length limit; its
    # self-certainty gives every row a different reward, so advantages are not trivially 0.
    "--config.reward.weights.self_certainty=1.0",
]


def _configs_by_estimator() -> dict[str, str]:
    """The first config selecting each estimator: the default first, then by name, skipping
    configs that need a dataset directory (GSM8K)."""
    out: dict[str, str] = {}
    paths = sorted(glob.glob(os.path.join(CONFIGS, "*.py")))
    paths.sort(key=lambda p: not p.endswith("smollm2_arith_grpo.py"))
    for path in paths:
        name = os.path.basename(path)
        if name in ("__init__.py", "common.py"):
            continue
        cfg = load_config(path, validate_config=False)
        if cfg.task.name == "gsm8k":
            continue
        out.setdefault(cfg.algo.estimator, path)
    return out


BY_ESTIMATOR = _configs_by_estimator()


def test_every_estimator_has_a_config():
    assert set(credit.names()) <= set(BY_ESTIMATOR), sorted(set(credit.names()) - set(BY_ESTIMATOR))


@pytest.mark.parametrize("name", credit.names())
def test_estimator_runs_one_step_or_is_rejected_at_validation(name, tmp_path):
    path = BY_ESTIMATOR[name]
    raw = load_config(path, TINY, validate_config=False)
    strategy = raw.rollout.get("strategy", "group")
    if strategy not in strategies.strategy_names():
        with pytest.raises(ConfigError) as e:
            load_config(path, TINY)
        msg = str(e.value)
        missing = next(f for f in credit.inputs(name).values() if f in msg)
        assert msg.startswith(f"algo.estimator={name!r} needs the input {missing!r}")
        assert f"rollout.strategy={strategy!r} is not a registered strategy" in msg
        return
    from jaxrl_reason.train.loop import Trainer

    cfg = load_config(path, TINY)
    trainer = Trainer(cfg, str(tmp_path))
    try:
        m = trainer.train_step()
        traj = trainer.last_trajectories
    finally:
        trainer.ckpt.close()
    assert np.isfinite(m["loss"]) and np.isfinite(m["grad_norm"])
    adv, mask = np.asarray(traj.advantages), np.asarray(traj.loss_mask)
    assert np.all(adv[mask == 0] == 0.0)
    assert np.all(np.isfinite(adv))
    assert np.any(adv[mask > 0] != 0.0), "varying rewards should give non-zero advantages"
    for field in credit.inputs(name).values():
        assert getattr(traj, field) is not None
    if cfg.implicit_prm.online:  # PRIME's online PRM scored the rows and logged its training
        pr = np.asarray(traj.process_rewards)
        assert pr.shape == mask.shape and np.all(pr[mask == 0] == 0.0)
        assert np.isfinite(m["prm/loss"]) and 0.0 <= m["prm/accuracy"] <= 1.0
        assert m["prm/reward_mean"] == pytest.approx(float(pr.sum(-1).mean()), abs=1e-6)
    if strategy == "tree":  # the strategy's budget stats reach the step metrics
        assert m["rollout/leaves"] == traj.batch_size
        assert 0 < m["rollout/decoded_tokens"] <= m["rollout/leaf_tokens"]
    if strategy == "group":  # i.i.d. samples: every leaf token was decoded once
        assert m["rollout/leaves"] == traj.batch_size
        assert m["rollout/decoded_tokens"] == m["rollout/leaf_tokens"] == traj.lengths.sum()
    if strategy == "vine":  # vineppo, spo_chain: Monte Carlo values from continuations
        assert m["rollout/continuations"] == raw.rollout.vine.k * m["rollout/states"]
        assert m["rollout/continuation_tokens"] > 0
        assert m["rollout/decoded_tokens"] == (
            np.asarray(traj.lengths).sum() + m["rollout/continuation_tokens"]
        )
        assert np.asarray(traj.step_value_mask)[:, 0].all()  # V(prompt) always estimated
    if cfg.task.name == "arith_chain":  # oracle steps: the credit-vs-first-error metric
        assert 0.0 <= m["credit/first_error_hit"] <= 1.0 and m["credit/first_error_n"] >= 0
    if name == "spo_chain":  # SPO trains on p < rho only
        p = np.exp(np.asarray(traj.old_logprobs))
        want = (mask > 0) & (p < raw.rollout.vine.rho)
        np.testing.assert_array_equal(np.asarray(traj.update_mask) > 0, want)
        assert np.all(adv[~want] == 0.0)


def test_prime_config_runs_online_and_offline_on_tiny_debug(tmp_path):
    """The prime config trains its online PRM (the parametrised test above runs it); with
    ``implicit_prm.online=False`` the policy is its own implicit PRM: no second model, no
    ``process_rewards``, no ``prm/*`` metrics, and the advantages are prime's on the
    behaviour/reference log-ratio."""
    import jax.numpy as jnp

    from jaxrl_reason.train.loop import Trainer

    path = os.path.join(CONFIGS, "smollm2_arith_chain_prime.py")
    assert load_config(path, TINY).implicit_prm.online is True
    cfg = load_config(path, [*TINY, "--config.implicit_prm.online=False"])
    trainer = Trainer(cfg, str(tmp_path))
    try:
        m = trainer.train_step()
        traj = trainer.last_trajectories
    finally:
        trainer.ckpt.close()
    assert "prm" not in trainer.state and traj.process_rewards is None
    assert not any(k.startswith("prm/") for k in m)
    adv, _ = credit.get("prime")(
        jnp.asarray(traj.token_rewards),
        jnp.asarray(traj.loss_mask),
        jnp.asarray(traj.group_id),
        logp=jnp.asarray(traj.old_logprobs),
        ref_logp=jnp.asarray(traj.ref_logprobs),
        beta=0.05,
    )
    np.testing.assert_allclose(
        np.asarray(traj.advantages), np.asarray(adv) * np.asarray(traj.loss_mask), atol=1e-6
    )


def _print_config(*overrides):
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.train",
            "--config",
            os.path.join(CONFIGS, "tiny_debug.py"),
            "--print-config",
            *overrides,
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=dict(os.environ, JAX_PLATFORMS="cpu"),
        timeout=120,
    )


def test_print_config_validates_and_prints_json_without_a_model():
    import json

    out = _print_config("--config.algo.estimator=rloo")
    assert out.returncode == 0, out.stderr
    cfg = json.loads(out.stdout)
    assert cfg["algo"]["estimator"] == "rloo" and cfg["model"]["name"] == "tiny_debug"
    assert "Loading" not in out.stderr
    bad = _print_config("--config.algo.estimator=pure")
    assert bad.returncode == 2 and bad.stdout == ""
    assert "algo.estimator='pure' needs the input 'step_scores'" in bad.stderr


ALL_CONFIGS = sorted(
    p
    for p in glob.glob(os.path.join(CONFIGS, "*.py"))
    if os.path.basename(p) not in ("__init__.py", "common.py")
)


def _data_overrides(path):
    cfg = load_config(path, validate_config=False)
    if cfg.task.name != "gsm8k":
        return []
    from tests.shared_data import require

    return ["--config.task.source=local", f"--config.task.data_dir={require('gsm8k')}"]


@pytest.mark.parametrize("path", ALL_CONFIGS, ids=os.path.basename)
def test_every_config_validates_with_tiny_debug_or_names_its_missing_strategy(path):
    raw = load_config(path, TINY + _data_overrides(path), validate_config=False)
    if raw.rollout.get("strategy", "group") in strategies.strategy_names():
        load_config(path, TINY + _data_overrides(path))
    else:
        with pytest.raises(ConfigError, match="is not a registered strategy"):
            load_config(path, TINY + _data_overrides(path))


@pytest.mark.slow
@pytest.mark.parametrize("path", ALL_CONFIGS, ids=os.path.basename)
def test_every_runnable_config_trains_one_step_with_tiny_debug(path, tmp_path):
    from jaxrl_reason.train.loop import run_experiment

    raw = load_config(path, TINY + _data_overrides(path), validate_config=False)
    if raw.rollout.get("strategy", "group") not in strategies.strategy_names():
        pytest.skip(f"rollout.strategy={raw.rollout.strategy!r} is not built yet")
    rows = run_experiment(load_config(path, TINY + _data_overrides(path)), str(tmp_path))
    assert len(rows) == 1
    if rows[0].get("star/skipped") or rows[0].get("dpo/skipped"):
        # The random model verifies nothing: STaR keeps no row and DPO finds no pair, so the
        # step runs no update (the tests above run both with a stand-in verifier).
        assert "loss" not in rows[0] and rows[0].get("star/kept", 0) == rows[0].get("dpo/pairs", 0)
    else:
        assert np.isfinite(rows[0]["loss"])


def test_multiturn_runs_are_evaluated_on_held_out_episodes(tmp_path):
    """An env config evaluates greedy episodes in the held-out split's own environment: the
    eval metrics are the episodes' (turns, tool calls), not single-turn responses'."""
    from jaxrl_reason.train.loop import Trainer

    path = os.path.join(CONFIGS, "smollm2_search_grpo.py")
    cfg = load_config(
        path,
        [
            *TINY,
            "--config.rollout.max_new_tokens=48",
            "--config.eval.num_prompts=3",
            "--config.eval.batch_prompts=2",
        ],
    )
    trainer = Trainer(cfg, str(tmp_path))
    try:
        m = trainer.evaluate(0)
        strat = trainer._eval_strategy
    finally:
        trainer.ckpt.close()
    assert strat.settings.task is trainer.eval_task and strat.settings.sampling.greedy
    assert strat.settings.sampling.n == 1
    for k in ("eval/accuracy", "eval/turns_mean", "eval/tool_calls", "eval/obs_tokens"):
        assert k in m, k
    assert 1.0 <= m["eval/turns_mean"] <= cfg.rollout.env.max_turns
    assert 0.0 <= m["eval/accuracy"] <= 1.0
    # The random model never answers, so no held-out episode can be right.
    assert m["eval/answered"] == 0.0 and m["eval/accuracy"] == 0.0


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["--config.rollout.env.branch_turn=3"], "rollout.env.branch_turn=3: episodes branch"),
        (
            ["--config.rollout.env.branch_turn=0", "--config.rollout.env.branches=3"],
            "rollout.env.branches=3 with rollout.n_samples=8",
        ),
        (
            ["--config.rollout.env.branch_turn=-1"],
            "algo.estimator='tree_grpo' with rollout.strategy='env' needs episode trees",
        ),
    ],
)
def test_episode_tree_settings_are_validated(overrides, message):
    path = os.path.join(CONFIGS, "smollm2_search_tree_grpo.py")
    load_config(path)  # the shipped config is valid
    with pytest.raises(ConfigError, match=message):
        load_config(path, overrides)


# -- self-training and preference objectives (algo.objective = "sft" / "dpo") ----------------

HINT = "(The answer is"


def _fake_verifier(rule):
    """A verifier that marks rows by ``rule(row_index, example)`` (the random model never
    answers right, so the kept / paired rows are chosen here)."""

    def verify_batch(responses, examples):
        return np.array([float(rule(i, ex)) for i, ex in enumerate(examples)], np.float32)

    return verify_batch


def _one_step(cfg, tmp_path, rule):
    from jaxrl_reason.train.loop import Trainer

    trainer = Trainer(cfg, str(tmp_path))
    trainer.train_task.verify_batch = _fake_verifier(rule)  # the scorer's task too
    seen = []
    apply = trainer._apply_update
    trainer._apply_update = lambda mb: (seen.append(mb), apply(mb))[1]
    before = jax.device_get(trainer.state["params"])
    try:
        m = trainer.train_step()
    finally:
        trainer.ckpt.close()
    after = jax.device_get(trainer.state["params"])
    moved = any(
        not np.array_equal(a, b)
        for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after), strict=True)
    )
    return trainer, m, seen, moved


def test_star_config_runs_one_step_on_tiny_debug_with_rationalisation(tmp_path):
    """Row 0 is verified (group 0 kept), group 1 fails and is re-sampled with the hint; both
    hinted samples verify, so 3 rows are trained on, the 2 rationalisations under group 1's
    hint-free prompt."""
    cfg = load_config(os.path.join(CONFIGS, "smollm2_arith_chain_star.py"), TINY)
    trainer, m, seen, moved = _one_step(cfg, tmp_path, lambda i, ex: i == 0 or HINT in ex.prompt)
    assert m["star/kept"] == 3 and m["star/rationalized"] == 2 and m["star/failed_prompts"] == 1
    assert m["star/skipped"] == 0.0 and moved
    for k in ("loss", "actor/sft_loss", "grad_norm", "actor/entropy"):
        assert np.isfinite(m[k]), k
    assert m["loss"] == pytest.approx(m["actor/sft_loss"]) and m["loss"] > 0
    assert len(seen) == 1 and seen[0]["sft_mask"].any(-1).sum() == 3
    prompts = trainer.tokenizer.batch_decode(seen[0]["prompt_tokens"], skip_special_tokens=True)
    assert not any(HINT in p for p in prompts)
    traj = trainer.last_trajectories
    assert np.all(np.asarray(traj.advantages) == 0.0)  # no estimator ran
    # The rationalisation's samples count against the generation budget.
    assert m["rollout/decoded_tokens"] == traj.lengths.sum() + m["star/decoded_tokens"] > 0


def test_star_step_without_a_verified_sample_runs_no_update(tmp_path):
    cfg = load_config(
        os.path.join(CONFIGS, "smollm2_arith_chain_star.py"),
        [*TINY, "--config.star.rationalize=False"],
    )
    _, m, seen, moved = _one_step(cfg, tmp_path, lambda i, ex: False)
    assert m["star/kept"] == 0 and m["star/skipped"] == 1.0
    assert seen == [] and not moved and "loss" not in m


@pytest.mark.parametrize("source", ["self", pytest.param("file", marks=pytest.mark.slow)])
def test_dpo_config_runs_one_step_on_tiny_debug(source, tmp_path):
    """Each group of two is [verified, refuted]: two pairs (or two file pairs); at step 0 the
    policy is the reference, so h = 0 and the loss is log 2."""
    import json

    extra = []
    if source == "file":
        path = tmp_path / "pairs.jsonl"
        path.write_text(
            "\n".join(
                json.dumps({"prompt": f"Start with {i}.", "chosen": f"#### {i}", "rejected": "x"})
                for i in range(3)
            )
        )
        extra = ["--config.dpo.pairs=file", f"--config.dpo.pairs_path={path}"]
    cfg = load_config(os.path.join(CONFIGS, "smollm2_arith_chain_dpo.py"), [*TINY, *extra])
    trainer, m, seen, moved = _one_step(cfg, tmp_path / "run", lambda i, ex: i % 2 == 0)
    assert m["dpo/pairs"] == 2 and m["dpo/skipped"] == 0.0 and moved
    for k in ("loss", "dpo/accuracy", "dpo/margin", "grad_norm"):
        assert np.isfinite(m[k]), k
    assert m["loss"] == pytest.approx(np.log(2.0), abs=1e-4)
    assert m["dpo/margin"] == pytest.approx(0.0, abs=1e-4)
    assert len(seen) == 1 and seen[0]["pair_weight"].tolist() == [1.0] * 4
    if source == "self":  # chosen rows are the verified ones: even rows of the batch
        traj = trainer.last_trajectories
        chosen = seen[0]["response"][0::2]
        assert all(any(np.array_equal(c, traj.tokens[r]) for r in (0, 2)) for c in chosen)


def test_sft_coef_adds_the_nll_of_verified_rows_to_an_rl_step(tmp_path):
    """algo.sft_coef > 0 in an RL run: the update batch carries the loss mask of the verified
    rows as sft_mask and logs actor/sft_loss next to the policy loss."""
    cfg = load_config(
        os.path.join(CONFIGS, "smollm2_arith_chain_grpo.py"), [*TINY, "--config.algo.sft_coef=0.5"]
    )
    trainer, m, seen, moved = _one_step(cfg, tmp_path, lambda i, ex: i == 1)
    traj = trainer.last_trajectories
    assert np.isfinite(m["actor/sft_loss"]) and m["actor/sft_loss"] > 0 and moved
    assert np.isfinite(m["actor/pg_loss"]) and np.any(np.asarray(traj.advantages) != 0)
    (mb,) = seen
    rows = mb["sft_mask"].any(-1)
    assert rows.sum() == 1  # one verified row of four
    np.testing.assert_array_equal(mb["response"][rows][0], traj.tokens[1])
    np.testing.assert_array_equal(mb["sft_mask"][rows][0], traj.loss_mask[1])
