"""The RL loss against an independent recomputation, ``loss_config``'s mapping, and the
sampler / trainer log-prob contract.

Nothing here compares ``rl_loss`` with its own metrics: the expected loss is rebuilt from the
model's full logits with plain formulas (float64 numpy for values, a separate jnp port for the
gradient), with asymmetric clips, dual clip, ``seq-mean-token-sum``, KL and entropy on, and the
default kernel.
"""

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxrl_reason.models import ModelConfig, Transformer
from jaxrl_reason.rollout import SamplingConfig, left_pad, sample
from jaxrl_reason.train import step as step_lib
from jaxrl_reason.train.config import load_config

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "..", "experiments", "configs")

T = 0.7
CLIP_LOW, CLIP_HIGH, DUAL = 0.1, 0.3, 3.0
KL_COEF, ENT_COEF = 0.3, 0.05
# Ratios chosen around every boundary: 1.2 / 0.8 sit between the two epsilons (1 + 0.1 and
# 1 + 0.3, 1 - 0.1 and 1 - 0.3), so swapping or equating clip_low and clip_high moves them;
# 4.5 with A < 0 is past the dual clip c = 3; the rest are inside or far outside.
RATIOS = np.array([1.2, 0.8, 1.5, 0.5, 4.5, 1.0, 1.05, 0.95, 0.6, 2.0])


@pytest.fixture(scope="module")
def model():
    """tiny_debug with larger weights: peaked next-token distributions (a temperature error
    or a truncation error then shows at the 1e-2 level, not 1e-6)."""

    @nnx.jit
    def make():
        m = Transformer(ModelConfig.tiny_debug(num_layers=2), rngs=nnx.Rngs(3))
        for name in m.layers.keys():
            if not name.endswith("norm"):
                m.layers[name][...] = m.layers[name][...] * 4.0
        m.embed[...] = m.embed[...] * 8.0
        return m

    return make()


def _full_logits(model, batch, temperature):
    """Response-position logits / T from a plain forward pass over prompt + response."""
    tokens = np.concatenate([batch["prompt_tokens"], batch["response"]], 1)
    mask = np.concatenate([batch["prompt_mask"], np.ones_like(batch["response"], bool)], 1)
    pos = np.maximum(np.cumsum(mask, 1) - 1, 0)
    logits = model(jnp.asarray(tokens), positions=jnp.asarray(pos), attention_mask=mask)
    p = batch["prompt_tokens"].shape[1]
    return logits[:, p - 1 : -1] / temperature


def _np_log_softmax(z):
    z = np.asarray(z, np.float64)
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def _batch(model, seed=0, b=4, p=5, r=10):
    rng = np.random.default_rng(seed)
    v = model.config.vocab_size
    prompt = rng.integers(3, v, (b, p)).astype(np.int32)
    pmask = np.ones((b, p), bool)
    pmask[0, :2] = False  # a left-padded row
    prompt[0, :2] = 0
    resp = rng.integers(3, v, (b, r)).astype(np.int32)
    rmask = np.ones((b, r), np.float32)
    rmask[1, 6:] = 0  # ragged rows: seq-mean-token-sum weighs them differently
    rmask[3, 3:] = 0
    batch = {
        "prompt_tokens": prompt,
        "prompt_mask": pmask,
        "response": resp,
        "response_mask": rmask,
    }
    lsm = _np_log_softmax(_full_logits(model, batch, T))
    logp = np.take_along_axis(lsm, resp[..., None], -1)[..., 0]
    # old = logp - log(ratio) with the ratios above (shifted per row), so the importance
    # ratio exp(logp - old) is exactly RATIOS in each row.
    log_ratio = np.stack([np.roll(np.log(RATIOS), i) for i in range(b)])
    adv = np.where(np.arange(r)[None, :] % 3 == 1, -1.0, 1.0) * rng.uniform(0.5, 2.0, (b, r))
    adv[:, 4] = -np.abs(adv[:, 4])  # ratio 4.5 in row 0 has A < 0: the dual clip binds
    batch["old_logprobs"] = (logp - log_ratio).astype(np.float32)
    batch["advantages"] = adv.astype(np.float32)
    batch["ref_logprobs"] = (logp + rng.normal(0.0, 0.3, (b, r))).astype(np.float32)
    return batch, lsm


def _np_loss(lsm, batch, clip_low=CLIP_LOW, clip_high=CLIP_HIGH, dual=DUAL):
    """float64 PPO + dual clip + k3 KL - entropy, all aggregated with seq-mean-token-sum."""
    m = batch["response_mask"].astype(np.float64)
    logp = np.take_along_axis(lsm, batch["response"][..., None], -1)[..., 0]
    a = batch["advantages"].astype(np.float64)
    ratio = np.exp(logp - batch["old_logprobs"])
    l1 = -a * ratio
    l2 = -a * np.clip(ratio, 1 - clip_low, 1 + clip_high)
    pg = np.maximum(l1, l2)
    if dual is not None:
        pg = np.where(a < 0, np.minimum(pg, -a * dual), pg)
    d = logp - batch["ref_logprobs"]
    k3 = np.exp(-d) - 1 + d
    ent = -np.sum(np.exp(lsm) * lsm, -1)

    def agg(x):  # seq-mean-token-sum over the rows with a token
        rows = m.sum(-1) > 0
        return np.sum((x * m).sum(-1)[rows]) / rows.sum()

    return agg(pg) + KL_COEF * agg(k3) - ENT_COEF * agg(ent), agg(pg)


def _jnp_loss(model, batch):
    """The same loss in jnp from the full logits (for the gradient), independent of rl_loss."""
    z = _full_logits(model, batch, T)
    lsm = jax.nn.log_softmax(z, -1)
    m = jnp.asarray(batch["response_mask"])
    logp = jnp.take_along_axis(lsm, jnp.asarray(batch["response"])[..., None], -1)[..., 0]
    a = jnp.asarray(batch["advantages"])
    ratio = jnp.exp(logp - batch["old_logprobs"])
    l1 = -a * ratio
    l2 = -a * jnp.clip(ratio, 1 - CLIP_LOW, 1 + CLIP_HIGH)
    pg = jnp.where(l2 > l1, l2, l1)
    pg = jnp.where((a < 0) & (pg > -a * DUAL), -a * DUAL, pg)
    d = logp - batch["ref_logprobs"]
    k3 = jnp.exp(-d) - 1 + d
    ent = -jnp.sum(jnp.exp(lsm) * lsm, -1)

    def agg(x):
        return jnp.sum(x * m) / jnp.sum(jnp.sum(m, -1) > 0)

    return agg(pg) + KL_COEF * agg(k3) - ENT_COEF * agg(ent)


CFG = step_lib.LossConfig(
    clip_low=CLIP_LOW,
    clip_high=CLIP_HIGH,
    dual_clip=DUAL,
    agg_mode="seq-mean-token-sum",
    kl_coef=KL_COEF,
    kl_kind="k3",
    entropy_coef=ENT_COEF,
    temperature=T,
    kernel_impl=None,  # the backend default (xla on CPU), as training runs it
)


def test_rl_loss_equals_independent_recomputation(model):
    batch, lsm = _batch(model)
    want, want_pg = _np_loss(lsm, batch)
    loss, metrics = jax.jit(lambda b: step_lib.rl_loss(model, None, b, CFG))(batch)
    np.testing.assert_allclose(loss, want, rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(metrics["actor/pg_loss"], want_pg, rtol=2e-5, atol=2e-6)
    # The cases are live: each of these wrong losses is far from the right one.
    m = batch["response_mask"] > 0
    wrong = {
        "clips swapped": _np_loss(lsm, batch, CLIP_HIGH, CLIP_LOW)[0],
        "clip_low both sides": _np_loss(lsm, batch, CLIP_LOW, CLIP_LOW)[0],
        "clip_high both sides": _np_loss(lsm, batch, CLIP_HIGH, CLIP_HIGH)[0],
        "no dual clip": _np_loss(lsm, batch, dual=None)[0],
    }
    for name, w in wrong.items():
        assert abs(w - want) > 1e-3, name
    # Ratio metrics: token ratios are the planted RATIOS (the old log-probs are exact).
    ratios = np.stack([np.roll(RATIOS, i) for i in range(4)])
    np.testing.assert_allclose(metrics["actor/ratio_max"], ratios[m].max(), rtol=1e-4)
    np.testing.assert_allclose(metrics["actor/ratio_min"], ratios[m].min(), rtol=1e-4)
    in_range = (ratios >= 1 - CLIP_LOW) & (ratios <= 1 + CLIP_HIGH)
    a = batch["advantages"]
    clipped = ((a > 0) & (ratios > 1 + CLIP_HIGH)) | ((a < 0) & (ratios < 1 - CLIP_LOW))
    assert not np.any(clipped & in_range)
    np.testing.assert_allclose(metrics["actor/pg_clipfrac"], clipped[m].mean(), rtol=1e-5)
    lower = (a < 0) & (ratios > DUAL)
    assert lower[m].sum() >= 1
    np.testing.assert_allclose(metrics["actor/pg_clipfrac_lower"], lower[m].mean(), rtol=1e-5)


def test_rl_loss_gradient_equals_independent_gradient(model):
    batch, _ = _batch(model, seed=1)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def got(p):
        return step_lib.rl_loss(nnx.merge(graphdef, p, rest), None, batch, CFG)[0]

    def want(p):
        return _jnp_loss(nnx.merge(graphdef, p, rest), batch)

    g = jax.jit(jax.grad(got))(params)
    w = jax.jit(jax.grad(want))(params)
    gl, wl = jax.tree.leaves(g), jax.tree.leaves(w)
    gv = np.concatenate([np.ravel(x) for x in gl])
    wv = np.concatenate([np.ravel(x) for x in wl])
    assert np.linalg.norm(wv) > 1e-3
    cos = gv @ wv / (np.linalg.norm(gv) * np.linalg.norm(wv))
    assert cos > 0.9999, cos
    for a, b in zip(gl, wl, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4 * np.abs(wv).max())


# --------------------------------------------------------------------------------------------
# loss_config: config.loss.* / rollout.temperature / optim.trainable -> LossConfig
# --------------------------------------------------------------------------------------------


def _cfg(*overrides):
    return load_config(os.path.join(CONFIGS, "tiny_debug.py"), [f"--config.{o}" for o in overrides])


def test_loss_config_maps_every_field():
    c = _cfg(
        "loss.loss_type=gspo",
        "loss.clip_low=0.15",
        "loss.clip_high=0.35",
        "loss.dual_clip=0.0",
        "loss.agg_mode=seq-mean-token-sum",
        "loss.kl_coef=0.03",
        "loss.kl_kind=k2",
        "loss.entropy_coef=0.002",
        "loss.vf_coef=0.7",
        "loss.value_clip=0.3",
        "loss.kernel_impl=",
        "rollout.temperature=0.6",
        "optim.trainable=last_k",
        "optim.last_k=1",
    )
    got = step_lib.loss_config(c, num_layers=4)
    want = step_lib.LossConfig(
        loss_type="gspo",
        clip_low=0.15,
        clip_high=0.35,
        dual_clip=None,
        agg_mode="seq-mean-token-sum",
        kl_coef=0.03,
        kl_kind="k2",
        entropy_coef=0.002,
        vf_coef=0.7,
        value_clip=0.3,
        temperature=0.6,
        kernel_impl=None,
        frozen_layers=3,
        remat=step_lib.resolve_remat("auto"),  # the base config's train.remat
    )
    assert got == want, {
        f.name: (getattr(got, f.name), getattr(want, f.name))
        for f in dataclasses.fields(want)
        if getattr(got, f.name) != getattr(want, f.name)
    }
    assert isinstance(got.temperature, float)


def test_loss_config_non_zero_dual_clip_kernel_and_all_trainable():
    c = _cfg(
        "loss.dual_clip=3.0",
        "loss.kernel_impl=reference",
        "loss.clip_low=0.1",
        "loss.clip_high=0.2",
        "rollout.temperature=1.3",
        "optim.trainable=all",
        "optim.last_k=1",
    )
    got = step_lib.loss_config(c, num_layers=4)
    assert got.dual_clip == 3.0
    assert got.kernel_impl == "reference"
    assert (got.clip_low, got.clip_high) == (0.1, 0.2)
    assert got.temperature == 1.3
    assert got.frozen_layers == 0  # last_k is ignored unless trainable == "last_k"
    # The shipped defaults: off switches become None, the rollout temperature is carried.
    d = step_lib.loss_config(_cfg(), num_layers=2)
    assert d.dual_clip is None and d.kernel_impl is None
    assert d.temperature == float(_cfg().rollout.temperature) != 1.0


# --------------------------------------------------------------------------------------------
# The sampler's behaviour log-probs are what the trainer recomputes
# --------------------------------------------------------------------------------------------

SAMPLING = SamplingConfig(
    max_new_tokens=8, temperature=T, top_k=12, top_p=0.8, n=2, stop_token_ids=(), prompt_bucket=0
)


@pytest.fixture(scope="module")
def rollout(model):
    tokens, mask = left_pad([[1, 5, 6, 7], [1, 9], [3, 4, 5, 6, 7, 8], [1, 200, 17]], 0)
    ro = sample(model, tokens, mask, jax.random.key(7), SAMPLING)
    batch = {
        "prompt_tokens": np.asarray(ro.prompt_tokens),
        "prompt_mask": np.asarray(ro.prompt_mask),
        "response": np.asarray(ro.tokens),
        "response_mask": np.asarray(ro.response_mask, np.float32),
    }
    return ro, batch


def test_sampler_logprobs_are_the_untruncated_tempered_distribution(model, rollout):
    """sampler.py's contract: ``log_softmax(logits / T)[token]``, top-k / top-p not
    renormalised; the drawn tokens lie in the top-k set."""
    ro, batch = rollout
    m = batch["response_mask"] > 0
    assert m.all()
    lsm = _np_log_softmax(_full_logits(model, batch, T))
    want = np.take_along_axis(lsm, batch["response"][..., None], -1)[..., 0]
    np.testing.assert_allclose(np.asarray(ro.logprobs), want, atol=2e-5, rtol=2e-5)
    # Each drawn token is among the 12 most likely (top-k really truncates) ...
    rank = (lsm > want[..., None]).sum(-1)
    assert rank.max() < SAMPLING.top_k
    # ... and truncation is not renormalised: the truncated log-prob is far from the report.
    kth = np.sort(lsm, -1)[..., -SAMPLING.top_k][..., None]
    lse_k = np.log(np.sum(np.where(lsm >= kth, np.exp(lsm), 0.0), -1))
    assert np.max(np.abs(lse_k)) > 1e-2
    # The distribution is not degenerate, and not every step takes the argmax.
    assert (rank > 0).mean() > 0.1
    assert len(np.unique(batch["response"])) > 8


def test_trainer_recomputes_the_sampler_logprobs_and_ratio_one(model, rollout):
    ro, batch = rollout
    cfg = step_lib.LossConfig(temperature=T)  # default kernel
    logp, _, _ = jax.jit(lambda b: step_lib.sequence_logprobs(model, b, cfg))(batch)
    np.testing.assert_allclose(logp, ro.logprobs, atol=2e-5, rtol=2e-5)
    # The same recompute at temperature 1 is visibly different (the check is not vacuous).
    cold = step_lib.sequence_logprobs(model, batch, dataclasses.replace(cfg, temperature=1.0))[0]
    assert np.max(np.abs(np.asarray(cold) - np.asarray(ro.logprobs))) > 0.05
    # First on-policy update: every importance ratio is 1 and nothing is clipped.
    batch = dict(batch, old_logprobs=np.asarray(ro.logprobs))
    batch["advantages"] = np.where(np.arange(batch["response"].shape[0]) % 2, 1.0, -1.0)[
        :, None
    ] * np.ones_like(batch["response_mask"])
    _, metrics = jax.jit(lambda b: step_lib.rl_loss(model, None, b, cfg))(batch)
    for k in ("actor/ratio_mean", "actor/ratio_min", "actor/ratio_max"):
        np.testing.assert_allclose(metrics[k], 1.0, atol=5e-5, err_msg=k)
    np.testing.assert_allclose(metrics["actor/ppo_kl"], 0.0, atol=2e-5)
    assert float(metrics["actor/pg_clipfrac"]) == 0.0


def test_micro_batched_update_averages_micro_batch_gradients(model):
    """Two micro-batches: SGD moves along minus the *mean* of the two halves' gradients."""
    import optax

    batch, _ = _batch(model, seed=2)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    tx = optax.with_extra_args_support(optax.sgd(0.1))
    upd = jax.jit(step_lib.make_update_fn(graphdef, tx, CFG, 2))
    new, _, _, _ = upd(params, None, tx.init((params, None)), batch)

    def half_grad(sl):
        h = {k: v[sl] for k, v in batch.items()}
        return jax.grad(lambda p: _jnp_loss(nnx.merge(graphdef, p, rest), h))(params)

    g0, g1 = half_grad(slice(0, 2)), half_grad(slice(2, 4))
    want = jax.tree.map(lambda p, a, b: p - 0.1 * (a + b) / 2, params, g0, g1)
    for a, b, p in zip(
        jax.tree.leaves(new), jax.tree.leaves(want), jax.tree.leaves(params), strict=True
    ):
        step = np.abs(np.asarray(b) - np.asarray(p)).max()
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-3 * step + 1e-7)
