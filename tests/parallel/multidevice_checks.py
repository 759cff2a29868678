"""Checks that need 8 devices; run in a fresh process by ``test_multidevice.py``.

``XLA_FLAGS=--xla_force_host_platform_device_count=8`` only takes effect before JAX starts, so
these checks cannot share the pytest process (whose JAX already has one CPU device). Each check
records ``{"ok": bool, "detail": str}``; the JSON report is printed as the last stdout line.

Run by hand: ``XLA_FLAGS=--xla_force_host_platform_device_count=8 python
tests/parallel/multidevice_checks.py /tmp/scratch``.
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from tests.parallel.eight_devices import MESHES, configure_process, run_all  # noqa: E402

configure_process()  # 8 CPU devices: before JAX starts

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402
from jax.sharding import NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")

from jaxrl_reason import parallel  # noqa: E402
from jaxrl_reason.train import optim  # noqa: E402
from jaxrl_reason.train.checkpoint import Checkpointer  # noqa: E402

V, D, H, DH, F, L = 16, 8, 4, 2, 16, 2


class ToyLM(nnx.Module):
    """A tiny scanned-layer LM-shaped model whose params carry logical names (NNX metadata)."""

    def __init__(self, seed: int = 0):
        # numpy init: eager jax.random calls would each compile a small program per shape.
        rng = np.random.default_rng(seed)

        def p(shape, names, scale=0.3):
            return nnx.Param(
                jnp.asarray(scale * rng.standard_normal(shape), jnp.float32),
                out_sharding=names,
                eager_sharding=False,
            )

        self.embed = p((V, D), ("vocab", "embed"))
        self.wq = p((L, D, H, DH), ("layers", "embed", "heads", "head_dim"))
        self.wo = p((L, H, DH, D), ("layers", "heads", "head_dim", "embed"))
        self.up = p((L, D, F), ("layers", "embed", "mlp"))
        self.down = p((L, F, D), ("layers", "mlp", "embed"))
        self.odd = p((6, 3), ("embed", "mlp"))  # 6 over fsdp=4 and 3 over tensor=2: replicate
        self.norm = nnx.Param(jnp.ones((D,)))  # no names: replicated

    def __call__(self, tokens):
        x = self.embed[...][tokens]  # [B, T, D]

        def layer(x, w):
            wq, wo, up, down = w
            h = jnp.einsum("btd,dhk->bthk", x, wq)
            x = x + jnp.einsum("bthk,hkd->btd", jnp.tanh(h), wo)
            return x + jnp.tanh(x @ up) @ down, None

        x, _ = jax.lax.scan(layer, x, (self.wq[...], self.wo[...], self.up[...], self.down[...]))
        x = x * self.norm[...] + self.odd[...].sum()
        return x @ self.embed[...].T  # tied head [B, T, V]


def loss_fn(model, tokens, targets):
    logits = model(tokens)
    logp = jax.nn.log_softmax(logits)
    return -jnp.take_along_axis(logp, targets[..., None], -1).mean()


def make_train_step(opt):
    def step(graphdef, params, opt_state, tokens, targets):
        def f(p):
            return loss_fn(nnx.merge(graphdef, p), tokens, targets)

        loss, grads = jax.value_and_grad(f)(params)
        updates, opt_state = opt.tx.update(grads, opt_state, params, loss=loss)
        return loss, optax.apply_updates(params, updates), opt_state

    return step


def batch():
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, V, (16, 5)).astype(np.int32)
    return tokens, np.roll(tokens, -1, axis=1)


def check_meshes(results):
    for name, cfg in MESHES.items():
        mesh = parallel.make_mesh(cfg)
        shape = dict(mesh.shape)
        ok = shape == {k: cfg[k] for k in parallel.MESH_AXES} and mesh.devices.size == 8
        results[f"mesh_{name}"] = {"ok": ok, "detail": str(shape)}
    m = parallel.make_mesh({"fsdp": -1, "tensor": 2})
    results["mesh_wildcard"] = {
        "ok": dict(m.shape) == {"data": 1, "fsdp": 4, "tensor": 2},
        "detail": str(dict(m.shape)),
    }
    try:
        parallel.make_mesh({"fsdp": 3})
        results["mesh_bad_size_rejected"] = {"ok": False, "detail": "no error"}
    except parallel.MeshConfigError as e:
        results["mesh_bad_size_rejected"] = {"ok": "8 are available" in str(e), "detail": str(e)}


def check_params_sharded(results):
    mesh = parallel.make_mesh(MESHES["fsdp4_tensor2"])
    model = ToyLM(0)
    state = parallel.shard_params(nnx.state(model), mesh)
    nnx.update(model, state)
    expect = {
        "embed": (P("tensor", "fsdp"), (8, 2)),
        "wq": (P(None, "fsdp", "tensor", None), (2, 2, 2, 2)),
        "up": (P(None, "fsdp", "tensor"), (2, 2, 8)),
        "odd": (P(None, None), (6, 3)),
        "norm": (P(), (8,)),
    }
    detail, ok = {}, True
    for name, (spec, shard_shape) in expect.items():
        arr = getattr(model, name)[...]
        got_spec = arr.sharding.spec
        got_shard = arr.addressable_shards[0].data.shape
        detail[name] = f"{got_spec} {got_shard}"
        # Compare specs modulo trailing Nones.
        pad = (None,) * arr.ndim
        ok &= (tuple(got_spec) + pad)[: arr.ndim] == (tuple(spec) + pad)[: arr.ndim]
        ok &= got_shard == shard_shape
    # Under data=2,fsdp=2,tensor=2 the "odd" [6, 3] shards its 6 over fsdp=2 (it divides).
    mesh2 = parallel.make_mesh(MESHES["data2_fsdp2_tensor2"])
    s2 = parallel.param_shardings(nnx.state(ToyLM(0)), mesh2)
    odd_spec = s2["odd"].get_value().spec
    detail["odd@2x2x2"] = str(odd_spec)
    ok &= tuple(odd_spec) == ("fsdp", None)
    # The generic (arrays, names) path gives the same shardings as the NNX path.
    arrays, names = parallel.split_logical(nnx.state(ToyLM(0)))
    generic = parallel.shardings_for(arrays, names, mesh)
    ok &= (
        generic["embed"].spec
        == parallel.param_shardings(nnx.state(ToyLM(0)), mesh)["embed"].get_value().spec
    )
    results["params_sharded"] = {"ok": bool(ok), "detail": json.dumps(detail)}


def reference_step():
    model = ToyLM(0)
    graphdef, params = nnx.split(model)
    cfg = ml_collections.ConfigDict(dict(learning_rate=0.05, max_grad_norm=1.0))
    opt = optim.build_optimizer(cfg, params)
    step = jax.jit(make_train_step(opt), static_argnums=0)
    tokens, targets = batch()
    state = (params, jax.jit(opt.tx.init)(params))
    losses = []
    for _ in range(2):
        loss, p, o = step(graphdef, *state, tokens, targets)
        state = (p, o)
        losses.append(float(loss))
    return losses, state[0], opt, graphdef


def check_sharded_step(results, ref):
    ref_losses, ref_params, opt, graphdef = ref
    tokens, targets = batch()
    for name, cfg in MESHES.items():
        mesh = parallel.make_mesh(cfg)
        _, params = nnx.split(ToyLM(0))
        p_sh = parallel.param_shardings(params, mesh)
        params = jax.device_put(params, p_sh)
        # Eager init: zeros_like(param) keeps each param's sharding (under jit XLA would be
        # free to replicate the constant moments) ...
        opt_state = opt.tx.init(params)
        o_sh = parallel.shardings_of(opt_state, mesh)  # ... and scalar counts are replicated
        opt_state = jax.device_put(opt_state, o_sh)
        tok = parallel.global_batch(tokens, mesh)
        tgt = parallel.global_batch(targets, mesh)
        b_sh = tok.sharding
        step = jax.jit(
            make_train_step(opt),
            static_argnums=0,
            in_shardings=(p_sh, o_sh, b_sh, b_sh),
            out_shardings=(NamedSharding(mesh, P()), p_sh, o_sh),
            donate_argnums=(1, 2),
        )
        losses = []
        for _ in range(2):
            loss, params, opt_state = step(graphdef, params, opt_state, tok, tgt)
            losses.append(float(loss))
        flat_ref = jax.tree.leaves(ref_params)
        flat = jax.tree.leaves(params)
        # Elementwise |a - b| <= atol + rtol * |b| (np.allclose), float32.
        excess = max(
            float(np.max(np.abs(np.asarray(a) - np.asarray(b)) - 1e-5 * np.abs(np.asarray(b))))
            for a, b in zip(flat, flat_ref, strict=True)
        )
        max_rel = max(excess, 0.0)
        loss_rel = max(abs(a - b) / abs(b) for a, b in zip(losses, ref_losses, strict=True))
        sharded = params["embed"].get_value().sharding.spec
        mu = [s for s in jax.tree.leaves(opt_state) if s.shape == (V, D)]
        ok = all(m.sharding == p_sh["embed"].get_value() for m in mu) and len(mu) == 2
        ok &= (
            loss_rel <= 1e-5 and max_rel <= 1e-6 and tok.sharding.spec == P(("data", "fsdp"), None)
        )
        results[f"step_{name}"] = {
            "ok": bool(ok),
            "detail": f"loss_rel={loss_rel:.2e} param_abs_excess={max_rel:.2e} embed={sharded}",
        }


def check_global_batch(results):
    mesh = parallel.make_mesh(MESHES["data2_fsdp2_tensor2"])
    x = np.arange(8 * 3, dtype=np.float32).reshape(8, 3)
    g = parallel.global_batch({"x": x, "y": x[:, 0]}, mesh)
    shard_rows = sorted({s.data.shape for s in g["x"].addressable_shards})
    ok = (
        g["x"].shape == (8, 3)
        and np.array_equal(np.asarray(g["x"]), x)
        and shard_rows == [(2, 3)]
        and g["y"].sharding.spec == P(("data", "fsdp"))
    )
    results["global_batch"] = {"ok": bool(ok), "detail": f"{g['x'].sharding.spec} {shard_rows}"}


def check_reshard_restore(results, workdir):
    mesh_a = parallel.make_mesh(MESHES["fsdp8"])
    mesh_b = parallel.make_mesh(MESHES["fsdp4_tensor2"])
    mesh_c = parallel.make_mesh(MESHES["data8"])
    state = nnx.state(ToyLM(3))
    saved = parallel.shard_params(state, mesh_a)
    arrays, _ = parallel.split_logical(saved)
    tree = {"params": arrays, "step": jnp.asarray(7), "rng": jax.random.key(5)}
    with Checkpointer(workdir, save_every=1, handle_signals=False) as ck:
        ck.save(7, tree, {"pos": 3})
        ck.wait_until_finished()
        detail, ok = {}, True
        for name, mesh in (("fsdp4_tensor2", mesh_b), ("data8", mesh_c)):
            a2, n2 = parallel.split_logical(state)
            target_sh = parallel.shardings_for(a2, n2, mesh)
            abstract = {
                "params": parallel.abstract_with_shardings(a2, target_sh),
                "step": jax.ShapeDtypeStruct((), jnp.int32),
                "rng": jax.eval_shape(lambda: jax.random.key(0)),
            }
            r = ck.restore_latest(abstract)
            same = all(
                np.array_equal(np.asarray(x), np.asarray(y))
                for x, y in zip(
                    jax.tree.leaves(r.state["params"]), jax.tree.leaves(arrays), strict=True
                )
            )
            on_target = all(
                x.sharding == s
                for x, s in zip(
                    jax.tree.leaves(r.state["params"]), jax.tree.leaves(target_sh), strict=True
                )
            )
            key_ok = np.array_equal(
                jax.random.key_data(r.state["rng"]), jax.random.key_data(jax.random.key(5))
            )
            detail[name] = (
                f"values={same} shardings={on_target} key={key_ok} "
                f"embed={r.state['params']['embed'].sharding.spec}"
            )
            ok &= same and on_target and key_ok and r.metadata == {"pos": 3} and r.step == 7
    results["reshard_restore"] = {"ok": bool(ok), "detail": json.dumps(detail)}


def main(workdir: str) -> dict:
    results: dict = {
        "device_count": {"ok": jax.device_count() == 8, "detail": str(jax.device_count())}
    }
    checks = [
        check_meshes,
        check_params_sharded,
        check_global_batch,
        lambda r: check_sharded_step(r, reference_step()),
        lambda r: check_reshard_restore(r, os.path.join(workdir, "ckpt")),
    ]
    return run_all(results, checks)


if __name__ == "__main__":
    out = main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/jaxrl_multidevice")
    print(json.dumps(out))
