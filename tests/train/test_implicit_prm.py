"""PRIME's online implicit PRM (jaxrl_reason.train.implicit_prm): its loss, its updates, its rewards
reaching the prime estimator, and the config rules."""

from __future__ import annotations

import functools
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxrl_reason import credit
from jaxrl_reason.models import ModelConfig, Transformer
from jaxrl_reason.train import implicit_prm as prm_lib
from jaxrl_reason.train.config import ConfigError, load_config
from jaxrl_reason.train.step import LossConfig, make_update_fn, sequence_logprobs

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
TINY_CONFIG = os.path.join(ROOT, "experiments", "configs", "tiny_debug.py")
ONLINE = ["--config.algo.estimator=prime", "--config.implicit_prm.online=True"]


def _independent_logprobs(model, prompt, prompt_mask, response, temperature):
    """``log softmax(logits / T)[y_t]`` of each response token from the model's full logits
    (no hidden-state slicing, no token log-prob kernel): the reference for the PRM's path."""
    p, r = prompt.shape[1], response.shape[1]
    tokens = jnp.concatenate([prompt, response], axis=1)
    mask = jnp.concatenate([prompt_mask, jnp.ones(response.shape, bool)], axis=1)
    positions = jnp.maximum(jnp.cumsum(mask.astype(jnp.int32), axis=1) - 1, 0)
    logits = model(tokens, positions=positions, attention_mask=mask)
    logits = logits[:, p - 1 : p + r - 1].astype(jnp.float32) / temperature
    logp = jax.nn.log_softmax(logits, axis=-1)
    return np.asarray(jnp.take_along_axis(logp, response[..., None], axis=-1)[..., 0])


def _toy_batch():
    """Four responses of a tiny random model's vocabulary, two labelled correct."""
    rng = np.random.default_rng(0)
    cfg = ModelConfig.tiny_debug()
    b, p, r = 4, 5, 6
    prompt = rng.integers(3, cfg.vocab_size, (b, p)).astype(np.int32)
    prompt_mask = np.ones((b, p), bool)
    prompt_mask[1, :2] = False  # one left-padded prompt
    response = rng.integers(3, cfg.vocab_size, (b, r)).astype(np.int32)
    lengths = np.array([6, 4, 5, 3])
    mask = (np.arange(r)[None, :] < lengths[:, None]).astype(np.float32)
    outcome = np.array([1.0, 0.0, 1.0, 0.0], np.float32)
    return {
        "prompt_tokens": prompt,
        "prompt_mask": prompt_mask,
        "response": response,
        "response_mask": mask,
        "outcome": outcome,
    }


def test_prm_loss_falls_and_its_parameters_move_on_a_fixed_batch():
    """A few PRM updates on fixed labelled responses: the loss starts at log 2 (PRM ==
    reference, so every r_phi(y) = 0), falls strictly at each update, the parameters move,
    and prm_loss equals BCE(sigmoid(beta * sum_t log-ratio), o) from independent log-probs."""
    cfg = load_config(TINY_CONFIG, [*ONLINE, "--config.implicit_prm.lr=1e-2"])
    model = Transformer(ModelConfig.tiny_debug(), rngs=nnx.Rngs(0))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    ref_params = jax.tree.map(jnp.copy, params)
    loss_cfg = LossConfig()  # temperature 1
    beta = float(cfg.implicit_prm.beta)
    batch = _toy_batch()
    ref_model = nnx.merge(graphdef, ref_params, rest)
    ref_logp, _, _ = sequence_logprobs(ref_model, batch, loss_cfg)
    batch["ref_logprobs"] = np.asarray(ref_logp)

    tx = prm_lib.build_prm_optimizer(cfg, params).tx
    update = jax.jit(
        make_update_fn(
            graphdef,
            tx,
            loss_cfg,
            num_micro=2,
            loss_fn=functools.partial(prm_lib.prm_loss, cfg=loss_cfg, beta=beta),
        )
    )
    opt_state = tx.init((params, None))
    losses, accs = [], []
    for _ in range(5):
        params, _, opt_state, m = update(params, None, opt_state, batch)
        losses.append(float(m["loss"]))
        accs.append(float(m["accuracy"]))
        assert float(m["update/nonfinite"]) == 0.0
    # r_phi(y) = 0 for every row at the start (up to rounding, which decides the sign and so
    # the first accuracy): loss = log 2.
    assert losses[0] == pytest.approx(math.log(2.0), abs=1e-6)
    assert accs[-1] == 1.0  # the four fixed responses are separated by the fourth update
    assert all(b < a for a, b in zip(losses, losses[1:], strict=False)), losses
    moved = [
        float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
        for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(ref_params), strict=True)
    ]
    assert max(moved) > 1e-4

    # The loss of the trained PRM against a direct numpy computation of PRIME's CE.
    prm_model = nnx.merge(graphdef, params, rest)
    loss, metrics = prm_lib.prm_loss(prm_model, batch, loss_cfg, beta=beta)
    logp = _independent_logprobs(
        prm_model, batch["prompt_tokens"], batch["prompt_mask"], batch["response"], 1.0
    )
    ref_ind = _independent_logprobs(
        ref_model, batch["prompt_tokens"], batch["prompt_mask"], batch["response"], 1.0
    )
    z = beta * np.sum((logp - ref_ind) * batch["response_mask"], axis=-1).astype(np.float64)
    o = batch["outcome"]
    sig = 1.0 / (1.0 + np.exp(-z))
    want = -np.mean(o * np.log(sig) + (1 - o) * np.log(1 - sig))
    assert float(loss) == pytest.approx(want, rel=1e-4)
    assert float(loss) < losses[-1]  # one more update's worth of progress
    assert float(metrics["accuracy"]) == np.mean((z > 0) == (o > 0.5)) == 1.0


def test_prm_token_rewards_are_beta_times_the_log_ratio_on_the_mask():
    logp = np.array([[-1.0, -0.5, -2.0, -0.1]], np.float32)
    ref = np.array([[-1.2, -0.5, -1.5, -0.3]], np.float32)
    mask = np.array([[1, 1, 1, 0]], np.float32)
    r = np.asarray(prm_lib.prm_token_rewards(logp, ref, mask, beta=0.05))
    np.testing.assert_allclose(r, [[0.01, 0.0, -0.025, 0.0]], atol=1e-7)


# -- config rules ----------------------------------------------------------------------------


def test_the_default_config_keeps_the_policy_as_its_own_implicit_prm():
    cfg = load_config(TINY_CONFIG, ["--config.algo.estimator=prime"])
    assert cfg.implicit_prm.online is False and not prm_lib.prm_enabled(cfg)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["--config.implicit_prm.online=True"],  # tiny_debug trains GRPO
            "implicit_prm.online=True but algo.estimator='grpo' does not read the PRM's "
            "process_rewards",
        ),
        (
            [*ONLINE, "--config.implicit_prm.lr=-1e-6"],
            "implicit_prm.lr=-1e-06: must be a finite number > 0",
        ),
        (
            [*ONLINE, "--config.implicit_prm.beta=0.0"],
            "implicit_prm.beta=0.0: must be a finite number > 0",
        ),
        (
            [*ONLINE, "--config.implicit_prm.update_order=during"],
            "implicit_prm.update_order='during': must be one",
        ),
        (
            [*ONLINE, "--config.implicit_prm.grad_clip=-1.0"],
            "implicit_prm.grad_clip=-1.0: must be a finite",
        ),
    ],
)
def test_bad_prm_configs_fail_validation_naming_the_field(overrides, message):
    with pytest.raises(ConfigError) as e:
        load_config(TINY_CONFIG, overrides)
    assert str(e.value).startswith(message), str(e.value)
    assert "\n" not in str(e.value)


def test_a_second_disagreeing_beta_is_rejected():
    path = os.path.join(ROOT, "experiments", "configs", "smollm2_arith_chain_prime.py")
    load_config(path)  # the shipped config agrees with itself
    with pytest.raises(
        ConfigError, match=r"algo.estimator_kwargs.beta=0.05 differs from implicit_prm"
    ):
        load_config(path, ["--config.implicit_prm.beta=0.1"])


def test_prime_declares_process_rewards_and_the_online_prm_supplies_them():
    from jaxrl_reason.train.config import available_fields

    assert credit.optional_inputs("prime") == {"process_rewards": "process_rewards"}
    assert "process_rewards" in available_fields(load_config(TINY_CONFIG, ONLINE))
    assert "process_rewards" not in available_fields(load_config(TINY_CONFIG))


# -- in the trainer --------------------------------------------------------------------------


def _prm_trainer(tmp_path, update_order):
    from jaxrl_reason.train.loop import Trainer

    cfg = load_config(
        TINY_CONFIG,
        [
            *ONLINE,
            "--config.implicit_prm.lr=1e-2",
            f"--config.implicit_prm.update_order={update_order}",
            "--config.eval_every=0",
            "--config.checkpoint_every=0",
            "--config.export=False",
            "--config.reward.weights.self_certainty=1.0",
        ],
    )
    return Trainer(cfg, str(tmp_path))


def _expected_rewards(trainer, traj, prm_params):
    """beta * (log pi_prm - log pi_ref) on the loss mask, from the models' full logits."""
    temp = float(trainer.config.rollout.temperature)
    args = (
        jnp.asarray(traj.prompt_tokens),
        jnp.asarray(traj.prompt_mask, bool),
        jnp.asarray(traj.tokens),
        temp,
    )
    prm = _independent_logprobs(nnx.merge(trainer.graphdef, prm_params, trainer.rest), *args)
    ref = _independent_logprobs(
        nnx.merge(trainer.graphdef, trainer.ref_params, trainer.rest), *args
    )
    return float(trainer.config.implicit_prm.beta) * (prm - ref) * np.asarray(traj.loss_mask)


def _prime_advantages(traj, **kw):
    adv, _ = credit.get("prime")(
        jnp.asarray(traj.token_rewards),
        jnp.asarray(traj.loss_mask),
        jnp.asarray(traj.group_id),
        beta=0.05,
        **kw,
    )
    return np.asarray(adv) * np.asarray(traj.loss_mask)


def _check_estimator_got(traj, *, distinct=True):
    """The advantages are prime's on the PRM's rewards, not on the policy's own log-ratio
    (``distinct``: at step 1 the behaviour policy is the reference, and so is an untrained
    PRM, so the two coincide there)."""
    np.testing.assert_allclose(
        np.asarray(traj.advantages),
        _prime_advantages(traj, process_rewards=jnp.asarray(traj.process_rewards)),
        atol=1e-6,
    )
    if not distinct:
        return
    own = _prime_advantages(
        traj, logp=jnp.asarray(traj.old_logprobs), ref_logp=jnp.asarray(traj.ref_logprobs)
    )
    assert np.max(np.abs(own - np.asarray(traj.advantages))) > 1e-4


@pytest.mark.slow
def test_update_order_after_scores_with_the_prm_of_the_previous_step(tmp_path):
    """``after``: step 1 is scored by the untrained PRM (= the reference: rewards exactly 0),
    step 2 by the PRM as step 1 left it; the prime estimator gets those rewards."""
    trainer = _prm_trainer(tmp_path, "after")
    try:
        m1 = trainer.train_step()
        t1 = trainer.last_trajectories
        np.testing.assert_array_equal(np.asarray(t1.process_rewards), 0.0)
        assert m1["prm/reward_mean"] == 0.0 and m1["prm/loss"] == pytest.approx(math.log(2))
        _check_estimator_got(t1, distinct=False)
        after_1 = jax.tree.map(np.asarray, trainer.state["prm"]["params"])
        m2 = trainer.train_step()
        t2 = trainer.last_trajectories
    finally:
        trainer.ckpt.close()
    want = _expected_rewards(trainer, t2, after_1)
    assert np.max(np.abs(want)) > 1e-4  # the PRM moved away from the reference
    np.testing.assert_allclose(np.asarray(t2.process_rewards), want, atol=2e-6)
    assert m2["prm/reward_mean"] == pytest.approx(float(np.mean(want.sum(-1))), abs=1e-5)
    _check_estimator_got(t2)


def test_update_order_before_scores_with_the_just_updated_prm(tmp_path):
    trainer = _prm_trainer(tmp_path, "before")
    try:
        m = trainer.train_step()
        traj = trainer.last_trajectories
        now = jax.tree.map(np.asarray, trainer.state["prm"]["params"])
    finally:
        trainer.ckpt.close()
    want = _expected_rewards(trainer, traj, now)
    assert np.max(np.abs(want)) > 1e-4
    np.testing.assert_allclose(np.asarray(traj.process_rewards), want, atol=2e-6)
    assert m["prm/loss"] == pytest.approx(math.log(2), abs=1e-6)  # measured before the update
    _check_estimator_got(traj)


_MESH_CHECK = """
import json, tempfile
import jax
from jaxrl_reason.train.config import load_config
from jaxrl_reason.train.loop import Trainer
cfg = load_config(CONFIG, OVERRIDES + ["--config.mesh.fsdp=2", "--config.eval_every=0",
    "--config.checkpoint_every=0", "--config.export=False"])
tr = Trainer(cfg, tempfile.mkdtemp())
m = tr.train_step()
def same(a, b):
    pairs = zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    return all(x.sharding == y.sharding for x, y in pairs)
prm, pol = tr.state["prm"], tr.state
leaves = jax.tree.leaves(prm["params"])
print(json.dumps({
    "devices": jax.device_count(),
    "prm_loss": m["prm/loss"],
    "params_like_policy": same(prm["params"], pol["params"]),
    "opt_like_policy": same(prm["opt_state"], pol["opt_state"]),
    "split": sum(x.addressable_shards[0].data.shape != x.shape for x in leaves),
}))"""


@pytest.mark.slow  # a fresh interpreter with two simulated devices: ~40 s of CPU
def test_the_prm_is_sharded_like_the_policy_on_an_fsdp_mesh():
    import json
    import subprocess
    import sys

    code = f"CONFIG = {TINY_CONFIG!r}\nOVERRIDES = {[*ONLINE, '--config.implicit_prm.lr=1e-2']!r}\n"
    env = dict(
        os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=2"
    )
    out = subprocess.run(
        [sys.executable, "-c", code + _MESH_CHECK],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    rep = json.loads(out.stdout.strip().splitlines()[-1])
    assert rep["devices"] == 2 and rep["prm_loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert rep["params_like_policy"] and rep["opt_like_policy"]
    assert rep["split"] > 0  # FSDP really splits the PRM's weights
