"""The RL update step: frozen layers, the loss against a plain-jnp recomputation, the update."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxrl_reason import losses
from jaxrl_reason.models import ModelConfig, Transformer
from jaxrl_reason.train import step as step_lib


@pytest.fixture(scope="module")
def tiny():
    cfg = ModelConfig.tiny_debug(num_layers=4)
    return Transformer(cfg, rngs=nnx.Rngs(0))


def _batch(model, b=4, p=5, r=6, seed=0):
    rng = np.random.default_rng(seed)
    v = model.config.vocab_size
    prompt = rng.integers(0, v, (b, p)).astype(np.int32)
    pmask = np.ones((b, p), bool)
    pmask[0, :2] = False  # a left-padded row
    resp = rng.integers(0, v, (b, r)).astype(np.int32)
    rmask = np.ones((b, r), np.float32)
    rmask[1, 4:] = 0
    return {
        "prompt_tokens": prompt,
        "prompt_mask": pmask,
        "response": resp,
        "response_mask": rmask,
        "old_logprobs": rng.normal(-3.0, 0.1, (b, r)).astype(np.float32),
        "advantages": rng.normal(size=(b, r)).astype(np.float32),
    }


def test_frozen_layers_same_values_no_grad_in_prefix(tiny):
    tokens = jnp.arange(12, dtype=jnp.int32).reshape(2, 6) % tiny.config.vocab_size
    full = tiny(tokens)
    np.testing.assert_allclose(tiny(tokens, frozen_layers=3), full, rtol=1e-6, atol=1e-6)
    graphdef, params = nnx.split(tiny, nnx.Param)

    def f(p, k):
        return jnp.sum(nnx.merge(graphdef, p)(tokens, frozen_layers=k) ** 2)

    g = jax.grad(f)(params, 3)
    q = g["layers"]["q_proj"][...]
    assert np.all(np.asarray(q[:3]) == 0.0)
    assert np.any(np.asarray(q[3:]) != 0.0)
    g0 = jax.grad(f)(params, 0)
    np.testing.assert_allclose(g0["layers"]["q_proj"][...][3:], q[3:], rtol=1e-5, atol=1e-7)


def test_sequence_logprobs_match_full_log_softmax(tiny):
    batch = _batch(tiny)
    cfg = step_lib.LossConfig(temperature=0.7, kernel_impl="reference")
    logp, ent, _ = step_lib.sequence_logprobs(tiny, batch, cfg)
    tokens = np.concatenate([batch["prompt_tokens"], batch["response"]], 1)
    mask = np.concatenate([batch["prompt_mask"], np.ones_like(batch["response"], bool)], 1)
    pos = np.maximum(np.cumsum(mask, 1) - 1, 0)
    logits = tiny(tokens, positions=pos, attention_mask=mask) / 0.7
    p = batch["prompt_tokens"].shape[1]
    lsm = jax.nn.log_softmax(logits[:, p - 1 : -1], -1)
    want = np.take_along_axis(np.asarray(lsm), batch["response"][..., None], -1)[..., 0]
    np.testing.assert_allclose(logp, want, rtol=1e-5, atol=1e-5)
    want_ent = -np.sum(np.exp(lsm) * lsm, -1)
    np.testing.assert_allclose(ent, want_ent, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("remat", ["dots", "full"])
def test_remat_leaves_loss_and_gradients_unchanged(tiny, remat):
    """``train.remat`` recomputes what the backward pass did not keep: same values."""
    batch = _batch(tiny)
    graphdef, params, rest = nnx.split(tiny, nnx.Param, ...)

    def loss(p, cfg):
        model = nnx.merge(graphdef, p, rest)
        logp, ent, _ = step_lib.sequence_logprobs(model, batch, cfg)
        return jnp.sum(logp) + 0.1 * jnp.sum(ent)

    base = step_lib.LossConfig(kernel_impl="reference")
    for frozen in (0, 1):
        a = dataclasses.replace(base, frozen_layers=frozen)
        b = dataclasses.replace(a, remat=remat)
        va, ga = jax.value_and_grad(loss)(params, a)
        vb, gb = jax.value_and_grad(loss)(params, b)
        np.testing.assert_allclose(vb, va, rtol=1e-6)
        for x, y in zip(jax.tree.leaves(gb), jax.tree.leaves(ga), strict=True):
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
    assert step_lib.resolve_remat("auto", "cpu") == "full"
    assert step_lib.resolve_remat("auto", "gpu") == "none"
    assert step_lib.resolve_remat("dots", "tpu") == "dots"


def test_update_applies_ppo_gradient_and_micro_batches_agree(tiny):
    batch = _batch(tiny)
    graphdef, params, rest = nnx.split(tiny, nnx.Param, ...)
    cfg = step_lib.LossConfig(kernel_impl="reference")
    tx = optax.sgd(1e-2)

    def run(num_micro):
        upd = step_lib.make_update_fn(graphdef, tx_extra, cfg, num_micro)
        st = tx_extra.init((params, None))
        return upd(params, None, st, batch)

    tx_extra = optax.with_extra_args_support(tx)
    p1, _, _, m1 = run(1)
    p2, _, _, m2 = run(2)
    # One micro-batch vs two: same rows, per-micro token-mean averaged -> compare to a
    # direct computation of each.
    model = nnx.merge(graphdef, params, rest)
    loss_full, _ = step_lib.rl_loss(model, None, batch, cfg)
    np.testing.assert_allclose(m1["loss"], loss_full, rtol=1e-6)
    halves = [jax.tree.map(lambda x, s=s: x[s], batch) for s in (slice(0, 2), slice(2, 4))]
    want2 = np.mean([step_lib.rl_loss(model, None, h, cfg)[0] for h in halves])
    np.testing.assert_allclose(m2["loss"], want2, rtol=1e-6)
    # SGD moved the parameters along -grad.
    g = jax.grad(lambda p: step_lib.rl_loss(nnx.merge(graphdef, p, rest), None, batch, cfg)[0])(
        params
    )
    np.testing.assert_allclose(
        p1["final_norm"][...],
        params["final_norm"][...] - 1e-2 * g["final_norm"][...],
        rtol=1e-5,
        atol=1e-7,
    )


def test_value_head_and_kl_terms(tiny):
    batch = _batch(tiny)
    batch["ref_logprobs"] = batch["old_logprobs"] + 0.1
    batch["returns"] = np.ones_like(batch["old_logprobs"])
    batch["old_values"] = np.zeros_like(batch["old_logprobs"])
    cfg = step_lib.LossConfig(kernel_impl="reference", kl_coef=0.5, entropy_coef=0.01, vf_coef=0.5)
    vh = step_lib.init_value_head(tiny.config.hidden_size)
    loss, m = step_lib.rl_loss(tiny, vh, batch, cfg)
    mask = batch["response_mask"]
    # Zero value head: V = 0, returns 1 -> clipped value loss 0.5 * mean(1) = 0.5.
    np.testing.assert_allclose(m["critic/vf_loss"], 0.5, rtol=1e-6)
    want = m["actor/pg_loss"] + 0.5 * m["actor/kl"] - 0.01 * m["actor/entropy"] + 0.5 * 0.5
    np.testing.assert_allclose(loss, want, rtol=1e-5)
    logp, _, _ = step_lib.sequence_logprobs(tiny, batch, cfg)
    kl = losses.aggregate(losses.kl(logp, batch["ref_logprobs"], "k3"), mask, "token-mean")
    np.testing.assert_allclose(m["actor/kl"], kl, rtol=1e-5)
    assert dataclasses.replace(cfg, kl_coef=0.0).kl_coef == 0.0
