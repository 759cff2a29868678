"""Optimiser: schedules, trainable subsets without frozen state, clipping, non-finite skips."""

import math

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx

from jaxrl_reason.train import optim


def _params():
    k = jax.random.split(jax.random.key(0), 4)
    return {
        "embed": jax.random.normal(k[0], (6, 4)),
        "layers": {
            "attn": jax.random.normal(k[1], (3, 4, 4)),  # stacked [L=3, ...]
            "norm": jnp.ones((3, 4)),
        },
        "final_norm": jnp.ones((4,)),
    }


def _cfg(**kw):
    base = dict(learning_rate=0.1, schedule="constant", max_grad_norm=1.0, weight_decay=0.0)
    base.update(kw)
    return ml_collections.ConfigDict(base)


def test_warmup_cosine_schedule_values():
    s = optim.make_schedule(
        1.0, schedule="cosine", warmup_steps=2, total_steps=10, end_lr_ratio=0.1
    )
    assert float(s(0)) == 0.0
    assert float(s(1)) == pytest.approx(0.5)
    assert float(s(2)) == pytest.approx(1.0)
    # Halfway through the decay (t - w = 4 of 8): end + (peak - end) * (1 + cos(pi/2)) / 2.
    assert float(s(6)) == pytest.approx(0.1 + 0.9 * 0.5)
    assert float(s(10)) == pytest.approx(0.1)
    c = optim.make_schedule(2.0, schedule="constant", warmup_steps=4)
    assert [float(c(t)) for t in (0, 2, 4, 100)] == pytest.approx([0.0, 1.0, 2.0, 2.0])
    with pytest.raises(ValueError, match="total_steps"):
        optim.make_schedule(1.0, schedule="cosine", warmup_steps=5, total_steps=5)
    with pytest.raises(ValueError, match="'linear'"):
        optim.make_schedule(1.0, schedule="linear")


def test_trainable_spec_modes():
    p = _params()
    assert jax.tree.leaves(optim.trainable_spec(p, "all")) == [True] * 4
    spec = optim.trainable_spec(p, "regex", regex=r"^layers/attn$")
    assert spec["layers"]["attn"] is True and spec["embed"] is False
    spec = optim.trainable_spec(p, "last_k", last_k=2, also_train_regex="final_norm")
    assert spec == {
        "embed": False,
        "layers": {"attn": 1, "norm": 1},
        "final_norm": True,
    }
    assert optim.trainable_spec(p, "last_k", last_k=3)["layers"]["attn"] is True
    # Unstacked layers: a numeric path component after "layers".
    unstacked = {"layers": {str(i): {"w": jnp.ones((2, 2))} for i in range(4)}, "head": jnp.ones(2)}
    spec = optim.trainable_spec(unstacked, "last_k", last_k=1)
    assert [spec["layers"][str(i)]["w"] for i in range(4)] == [False, False, False, True]
    with pytest.raises(ValueError, match="last_k=4"):
        optim.trainable_spec(p, "last_k", last_k=4)
    with pytest.raises(ValueError, match="selects no parameter"):
        optim.trainable_spec(p, "regex", regex="nothing")
    with pytest.raises(ValueError, match="'lora'"):
        optim.trainable_spec(p, "lora")


def test_frozen_params_keep_no_optimizer_state_and_get_zero_updates():
    p = _params()
    opt = optim.build_optimizer(_cfg(trainable="last_k", last_k=1), p)
    assert opt.num_trainable == 1 * 4 * 4 + 1 * 4
    state = opt.tx.init(p)
    adam = [
        s
        for s in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, optax.ScaleByAdamState))
        if isinstance(s, optax.ScaleByAdamState)
    ][0]
    # Moments exist only for the last layer's slices: no embed, no final_norm, no layers 0-1.
    assert sorted(np.shape(m) for m in jax.tree.leaves(adam.mu)) == [(1, 4), (1, 4, 4)]
    g = jax.tree.map(jnp.ones_like, p)
    u, _ = jax.jit(opt.tx.update)(g, state, p)
    assert float(jnp.abs(u["embed"]).max()) == 0.0
    assert float(jnp.abs(u["final_norm"]).max()) == 0.0
    assert float(jnp.abs(u["layers"]["attn"][:2]).max()) == 0.0
    assert float(jnp.abs(u["layers"]["attn"][2]).min()) > 0.0


def test_trainable_update_matches_plain_optax_on_the_subset():
    """Clipping + AdamW on the selected leaves equals optax on those leaves alone."""
    p = _params()
    g = jax.tree.map(lambda x: 3.0 * jnp.ones_like(x), p)
    opt = optim.build_optimizer(
        _cfg(trainable="regex", trainable_regex="attn|final", weight_decay=0.01, max_grad_norm=0.5),
        p,
    )
    state = opt.tx.init(p)
    sub_p = {"a": p["layers"]["attn"], "f": p["final_norm"]}
    sub_g = {"a": g["layers"]["attn"], "f": g["final_norm"]}
    ref = optax.chain(
        optax.clip_by_global_norm(0.5),
        optax.adamw(0.1, weight_decay=0.01, mask={"a": True, "f": False}),
    )
    ref_state = ref.init(sub_p)
    update, ref_update = jax.jit(opt.tx.update), jax.jit(ref.update)
    for _ in range(3):
        u, state = update(g, state, p)
        ru, ref_state = ref_update(sub_g, ref_state, sub_p)
        chex.assert_trees_all_close(u["layers"]["attn"], ru["a"], rtol=1e-6)
        chex.assert_trees_all_close(u["final_norm"], ru["f"], rtol=1e-6)
        p = optax.apply_updates(p, u)
        sub_p = optax.apply_updates(sub_p, ru)


class NonFiniteTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_nonfinite_gradient_or_loss_skips_the_update(self):
        p = {"w": jnp.array([1.0, -2.0]), "b": jnp.array([0.5])}
        opt = optim.build_optimizer(_cfg(schedule="constant"), p)

        @self.variant
        def step(params, state, grads, loss):
            u, state = opt.tx.update(grads, state, params, loss=loss)
            return optax.apply_updates(params, u), state

        good = {"w": jnp.array([0.1, 0.2]), "b": jnp.array([0.3])}
        nan_grad = {"w": jnp.array([jnp.nan, 0.2]), "b": jnp.array([0.3])}
        inf_grad = {"w": jnp.array([0.1, 0.2]), "b": jnp.array([jnp.inf])}
        one = jnp.float32(1.0)

        s0 = opt.tx.init(p)
        p1, s1 = step(p, s0, good, one)
        # Bad steps: parameters and optimiser state are bit-identical to before.
        for grads, loss in ((nan_grad, one), (inf_grad, one), (good, jnp.float32(jnp.nan))):
            p_bad, s_bad = step(p1, s1, grads, loss)
            chex.assert_trees_all_equal(p_bad, p1)
            chex.assert_trees_all_equal(s_bad.inner, s1.inner)
            stats = optim.nonfinite_stats(s_bad)
            assert int(stats["optim/skipped_total"]) == 1
            assert not bool(stats["optim/update_applied"])
        # Counters accumulate, and a good step after bad ones equals a run that never saw them.
        _, s2 = step(p1, s1, nan_grad, one)
        p3, s3 = step(p1, s2, nan_grad, one)
        assert int(s3.total_skipped) == 2 and int(s3.consecutive_skipped) == 2
        p4, s4 = step(p3, s3, good, one)
        p_ref, s_ref = step(p1, s1, good, one)
        chex.assert_trees_all_close(p4, p_ref)
        assert int(s4.consecutive_skipped) == 0 and int(s4.total_skipped) == 2
        assert np.all(np.isfinite(np.asarray(p4["w"])))


def test_learning_rate_follows_applied_updates():
    p = {"w": jnp.ones(2)}
    opt = optim.build_optimizer(
        _cfg(schedule="cosine", warmup_steps=2, total_steps=4, learning_rate=1.0), p
    )
    s = opt.tx.init(p)
    assert float(optim.learning_rate(opt, s)) == 0.0
    _, s = opt.tx.update({"w": jnp.ones(2)}, s, p)
    assert float(optim.learning_rate(opt, s)) == pytest.approx(0.5)
    _, s = opt.tx.update({"w": jnp.full(2, jnp.nan)}, s, p)  # skipped: the clock stays
    assert float(optim.learning_rate(opt, s)) == pytest.approx(0.5)
    _, s = opt.tx.update({"w": jnp.ones(2)}, s, p)
    _, s = opt.tx.update({"w": jnp.ones(2)}, s, p)
    assert float(optim.learning_rate(opt, s)) == pytest.approx(0.5 * (1 + math.cos(math.pi / 2)))


def test_works_on_nnx_state_paths():
    class Block(nnx.Module):
        def __init__(self):
            self.layers = nnx.Param(jnp.ones((2, 3, 3)))
            self.embed = nnx.Param(jnp.ones((5, 3)))

    m = Block()
    params = nnx.state(m, nnx.Param)
    assert optim.leaf_paths(params) == ["embed", "layers"]
    opt = optim.build_optimizer(_cfg(trainable="last_k", last_k=1), params)
    state = opt.tx.init(params)
    grads = nnx.grad(lambda m: (m.layers[...] ** 2).sum() + m.embed[...].sum())(m)
    u, _ = jax.jit(opt.tx.update)(grads, state, params)
    nnx.update(m, optax.apply_updates(params, u))
    assert float(jnp.abs(m.embed[...] - 1).max()) == 0.0
    assert float(jnp.abs(m.layers[...][0] - 1).max()) == 0.0
    assert float(jnp.abs(m.layers[...][1] - 1).min()) > 0.0


@pytest.mark.parametrize("clip, want_norm", [(0.5, 0.5), (0.0, 200.0)])
def test_config_grad_clip_is_the_clipping_norm_and_zero_turns_it_off(clip, want_norm):
    # Experiment configs set optim.grad_clip (not max_grad_norm): it must take effect.
    params = {"w": jnp.zeros((4,))}
    opt = optim.build_optimizer(
        ml_collections.ConfigDict(
            dict(learning_rate=0.1, schedule="constant", grad_clip=clip, b1=0.0)
        ),
        params,
    )
    g = {"w": jnp.full((4,), 100.0)}  # global norm 200
    _, state = opt.tx.update(g, opt.tx.init(params), params)
    mus = [
        leaf
        for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]
        if any(getattr(k, "name", None) == "mu" for k in path)
    ]
    assert len(mus) == 1  # with b1=0 Adam's first moment is the (clipped) gradient
    np.testing.assert_allclose(float(jnp.linalg.norm(mus[0])), want_norm, rtol=1e-5)
