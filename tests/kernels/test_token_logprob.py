"""Fused token log-prob: every implementation against the plain-jnp reference.

Tolerances (scale-aware: ``|a - b| <= rtol * (|b| + max|b|)``): float32 1e-5, bfloat16 1e-2.
Pallas runs in interpret mode on CPU; GPU (Triton) and TPU (Mosaic) tilings are both checked,
and their lowering for the real backends is checked without a device.
"""

import dataclasses
import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_reason.kernels import token_logprob
from jaxrl_reason.kernels.token_logprob import _common, _pallas, pallas_gpu, pallas_tpu, xla
from jaxrl_reason.kernels.token_logprob.reference import token_logprob_reference

# Small tiles so the odd sizes below span several blocks and a ragged last block.
SMALL_GPU = pallas_gpu.GpuBlocks(block_n=16, block_v=64, max_block_d=16, backward_chunk=32)
SMALL_TPU = pallas_tpu.TpuBlocks(block_n=16, block_v=128, backward_chunk=32)


@functools.partial(jax.jit, static_argnums=(0, 4, 5))
def _run(impl, h, w, y, temperature, with_sc):
    """Outputs of one implementation; ``impl`` names a (module, blocks) pair or the api."""
    if impl == "reference":
        return token_logprob_reference(
            h, w, y, temperature=temperature, with_self_certainty=with_sc
        )
    if impl == "xla":
        plan = xla.plan(temperature, with_sc, 64)
    elif impl == "pallas_gpu":
        plan = pallas_gpu.plan(temperature, with_sc, SMALL_GPU)
    elif impl == "pallas_tpu":
        plan = pallas_tpu.plan(temperature, with_sc, SMALL_TPU)
    h2 = h.reshape(-1, h.shape[-1])
    out = _common.fused(h2, w, y.reshape(-1), plan)
    out = tuple(o.reshape(y.shape) for o in out)
    return out if with_sc else out[:2]


def _inputs(key, batch, d, v, dtype):
    k = jax.random.split(key, 3)
    h = jax.random.normal(k[0], (*batch, d), jnp.float32).astype(dtype)
    w = (jax.random.normal(k[1], (d, v), jnp.float32) * 2.0 / math.sqrt(d)).astype(dtype)
    y = jax.random.randint(k[2], batch, 0, v, jnp.int32)
    return h, w, y


def _close(a, b, rtol):
    a = np.asarray(jnp.asarray(a, jnp.float32))
    b = np.asarray(jnp.asarray(b, jnp.float32))
    assert a.shape == b.shape
    scale = np.max(np.abs(b)) + 1e-30
    np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * scale)


def _loss_fn(impl, y, temperature, with_sc, weights):
    def loss(h, w):
        outs = _run(impl, h, w, y, temperature, with_sc)
        return sum(jnp.sum(o * c) for o, c in zip(outs, weights, strict=False))

    return jax.jit(jax.grad(loss, (0, 1)))


IMPLS = ["xla", "pallas_gpu", "pallas_tpu"]
# (batch shape, D, V): V not a multiple of any tile, N not a multiple of any block.
ODD = ((37,), 40, 203)
BATCHED = ((3, 7), 24, 130)
F32, BF16 = (jnp.float32, 1e-5), (jnp.bfloat16, 1e-2)
# The fast set covers every implementation x dtype with self-certainty, plus the path without
# it; the full cross product runs with `-m slow` (interpret mode is slow on 2 shared cores).
_FAST = [(F32, ODD, True), (BF16, ODD, True), (F32, BATCHED, False)]
_FAST_TPU = _FAST[:2]  # the TPU tiling shares every kernel with the GPU one
_ALL = [(dt, c, sc) for dt in (F32, BF16) for c in (ODD, BATCHED) for sc in (True, False)]
MATRIX = [
    pytest.param(
        impl,
        *dt,
        c,
        sc,
        marks=()
        if (dt, c, sc) in (_FAST_TPU if impl == "pallas_tpu" else _FAST)
        else pytest.mark.slow,
    )
    for impl in IMPLS
    for dt, c, sc in _ALL
]


@pytest.mark.parametrize("impl,dtype,rtol,case,with_sc", MATRIX)
def test_values_and_grads_match_reference(impl, dtype, rtol, case, with_sc):
    batch, d, v = case
    key = jax.random.key(hash((impl, str(dtype), case, with_sc)) % 2**31)
    h, w, y = _inputs(key, batch, d, v, dtype)
    temperature = 0.7
    got = _run(impl, h, w, y, temperature, with_sc)
    want = _run("reference", h, w, y, temperature, with_sc)
    assert len(got) == (3 if with_sc else 2)
    for g, r in zip(got, want, strict=True):
        assert g.dtype == jnp.float32 and g.shape == batch
        _close(g, r, rtol)

    # Random cotangent weights exercise every output's gradient path at once.
    weights = tuple(jax.random.normal(jax.random.key(7), (3,)).tolist())
    gh, gw = _loss_fn(impl, y, temperature, with_sc, weights)(h, w)
    rh, rw = _loss_fn("reference", y, temperature, with_sc, weights)(h, w)
    assert gh.dtype == h.dtype and gw.dtype == w.dtype
    _close(gh, rh, rtol)
    _close(gw, rw, rtol)


@pytest.mark.parametrize(
    "impl,which",
    [pytest.param(i, k, marks=() if k == 1 else pytest.mark.slow) for i in IMPLS for k in range(3)],
)
def test_each_output_gradient_separately(impl, which):
    """Each output's VJP alone (a wrong term could cancel in a weighted sum)."""
    h, w, y = _inputs(jax.random.key(3), (20,), 32, 100, jnp.float32)
    weights = tuple(1.0 if i == which else 0.0 for i in range(3))
    g = _loss_fn(impl, y, 1.3, True, weights)(h, w)
    r = _loss_fn("reference", y, 1.3, True, weights)(h, w)
    for a, b in zip(g, r, strict=True):
        _close(a, b, 1e-5)


class TestPublicApi(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_default_impl_matches_reference(self):
        h, w, y = _inputs(jax.random.key(11), (2, 9), 16, 77, jnp.float32)
        f = self.variant(lambda h, w: token_logprob(h, w, y, temperature=2.0))
        got = f(h, w)
        want = token_logprob_reference(h, w, y, temperature=2.0)
        for g, r in zip(got, want, strict=True):
            _close(g, r, 1e-5)

    def test_impl_pallas_through_api(self):
        h, w, y = _inputs(jax.random.key(12), (5,), 16, 40, jnp.float32)
        f = functools.partial(token_logprob, impl="pallas", with_self_certainty=True)
        got = jax.jit(f)(h, w, y)
        want = token_logprob(h, w, y, impl="reference", with_self_certainty=True)
        for g, r in zip(got, want, strict=True):
            _close(g, r, 1e-5)


def test_hand_derived_self_certainty_and_entropy():
    """|V| = 3 worked example of research/exploration_labelfree_eval.md section 3(d)."""
    logits = jnp.array([[2.0, 1.0, 0.0], [0.0, 0.0, 0.0], [5.0, 0.0, 0.0]])
    eye = jnp.eye(3)
    labels = jnp.array([0, 1, 2])
    for impl in ["reference", "xla", "pallas"]:
        f = jax.jit(
            functools.partial(token_logprob, impl=impl, with_self_certainty=True),
            static_argnames="temperature",
        )
        lp, ent, sc = f(logits, eye, labels)
        np.testing.assert_allclose(sc, [0.308994, 0.0, 2.248107], atol=1e-6)
        np.testing.assert_allclose(ent[1], math.log(3), rtol=1e-6)  # uniform row
        np.testing.assert_allclose(lp[1], -math.log(3), rtol=1e-6)
        # logprob of label 2 under [5, 0, 0]: -log(e^5 + 2)
        np.testing.assert_allclose(lp[2], -math.log(math.exp(5) + 2), rtol=1e-6)
        # verl divides by the temperature first: code form lse - mean = KL + log 3.
        _, _, sc2 = f(logits, eye, labels, temperature=2.0)
        np.testing.assert_allclose(sc2 + math.log(3), [1.180270, 1.098612, 1.818675], atol=1e-6)


def test_xla_peak_memory_is_tiled():
    """The compiled fwd+bwd scratch is far below the [N, V] logits the reference needs."""
    h, w, y = _inputs(jax.random.key(0), (256,), 64, 8192, jnp.float32)

    def grad_fn(impl, chunk=None):
        def loss(h, w):
            lp, ent = token_logprob(h, w, y, impl=impl, block_sizes=chunk)
            return jnp.sum(lp) + jnp.sum(ent)

        return jax.jit(jax.grad(loss, (0, 1)))

    ref = grad_fn("reference").lower(h, w).compile().memory_analysis().temp_size_in_bytes
    got = grad_fn("xla", 256).lower(h, w).compile().memory_analysis().temp_size_in_bytes
    logits_bytes = 256 * 8192 * 4
    assert ref >= logits_bytes
    assert got * 10 <= ref, (got, ref)


@pytest.mark.parametrize(
    "platform,module,blocks",
    [
        ("cuda", pallas_gpu, pallas_gpu.GpuBlocks()),
        ("tpu", pallas_tpu, pallas_tpu.TpuBlocks()),
    ],
)
@pytest.mark.parametrize("d", [896, 576, 40])
@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32])
def test_kernels_lower_for_real_backends(platform, module, blocks, d, dtype):
    """Lowering to Triton IR / Mosaic runs in Python: catches block-shape errors (e.g. a
    non-power-of-two Triton load) without a device. Compilation to PTX is not covered."""
    n, v = 100, 300
    h = jnp.zeros((n, d), dtype)
    w = jnp.zeros((d, v), dtype)
    y = jnp.zeros((n,), jnp.int32)
    tl = module.tiling(n, d, blocks, interpret=False)
    g = jnp.ones((n,), jnp.float32)

    def fwd(h, w, y):
        return _pallas.forward_stats(h, w, y, tl=tl, inv_temp=0.5)

    def bwd(h, w, y):
        return _pallas.backward(h, w, y, g, g, g, g, g, tl=tl, inv_temp=0.5)

    for fn in (fwd, bwd):
        jax.jit(fn).trace(h, w, y).lower(lowering_platforms=(platform,))


def test_gpu_tiling_is_triton_legal():
    for d, bd in [(896, 128), (576, 64), (40, 16), (24, 32), (4096, 128)]:
        tl = pallas_gpu.tiling(4096, d, pallas_gpu.GpuBlocks(), interpret=False)
        assert tl.bd == bd
        assert _pallas.round_up(d, 16) % tl.bd == 0
        for s in (tl.bn, tl.bv, tl.bd):
            assert s >= 16 and s & (s - 1) == 0
    with pytest.raises(ValueError, match="power of two"):
        pallas_gpu.GpuBlocks(block_v=96)
    with pytest.raises(ValueError, match="block_n % 8"):
        pallas_tpu.TpuBlocks(block_n=12)


@pytest.mark.parametrize(
    "args,err",
    [
        (((4, 8), (9, 10), (4,)), "last axis"),
        (((4, 8), (8, 10), (5,)), "labels must have shape"),
        (((4, 8), (8,), (4,)), r"\[D, V\]"),
    ],
)
def test_bad_shapes_raise_clear_errors(args, err):
    hs, ws, ys = args
    with pytest.raises(ValueError, match=err):
        token_logprob(jnp.zeros(hs), jnp.zeros(ws), jnp.zeros(ys, jnp.int32))


def test_bad_dtype_temperature_and_impl():
    h, w, y = jnp.zeros((2, 4)), jnp.zeros((4, 6)), jnp.zeros((2,), jnp.int32)
    with pytest.raises(TypeError, match="integer"):
        token_logprob(h, w, y.astype(jnp.float32))
    with pytest.raises(ValueError, match="temperature"):
        token_logprob(h, w, y, temperature=0.0)
    with pytest.raises(ValueError, match="impl"):
        token_logprob(h, w, y, impl="cuda")


def test_vocab_smaller_than_chunk_and_single_token():
    h, w, y = _inputs(jax.random.key(5), (1,), 8, 5, jnp.float32)
    for impl in ["xla", "pallas"]:
        got = jax.jit(functools.partial(token_logprob, impl=impl, with_self_certainty=True))(
            h, w, y
        )
        want = token_logprob(h, w, y, impl="reference", with_self_certainty=True)
        for g, r in zip(got, want, strict=True):
            _close(g, r, 1e-5)


def test_plan_is_static_and_hashable():
    p = xla.plan(1.0, False, 64)
    assert hash(p) == hash(dataclasses.replace(p))


@pytest.mark.parametrize("impl", [None, "reference", "xla"])
def test_self_certainty_against_numpy_on_random_logits(impl):
    """Third output = ``mean_v KL(U || p) = -log V - mean_v log p_v`` (float64 numpy), at a
    temperature != 1, and it is not the entropy (which it would equal by a wrong index)."""
    rng = np.random.default_rng(0)
    n, d, v, temp = 24, 16, 300, 0.8
    h = rng.normal(size=(n, d)).astype(np.float32)
    w = (rng.normal(size=(d, v)) * 1.5 / math.sqrt(d)).astype(np.float32)
    w[:, :5] *= 4.0  # a few dominant tokens: far from uniform
    y = rng.integers(0, v, n).astype(np.int32)
    lp, ent, sc = jax.jit(
        functools.partial(token_logprob, impl=impl, with_self_certainty=True, temperature=temp)
    )(h, w, y)
    z = (h.astype(np.float64) @ w.astype(np.float64)) / temp
    logp = z - z.max(-1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
    want_sc = -np.log(v) - logp.mean(-1)
    want_ent = -(np.exp(logp) * logp).sum(-1)
    np.testing.assert_allclose(sc, want_sc, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ent, want_ent, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(lp, logp[np.arange(n), y], rtol=1e-5, atol=1e-5)
    # Entropy and self-certainty differ by much more than the tolerance on every row.
    assert np.min(np.abs(want_sc - want_ent)) > 0.1
    assert np.all(want_sc > 0)
