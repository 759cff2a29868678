"""Per-device parameter + AdamW memory: FSDP over 8 devices versus replicated.

Qwen2.5-0.5B shapes (vocab 151,936, hidden 896, MLP 4,864, 24 layers, 14 heads, 2 KV heads,
head_dim 64, tied embeddings, q/k/v bias), float32 parameters and float32 Adam moments, on 8
simulated CPU devices. Nothing of model size is allocated: the model is built with
``nnx.eval_shape`` (abstract arrays that keep their logical names), the optimiser state with
``jax.eval_shape(tx.init, ...)``, and each leaf's bytes on one device come from its
``NamedSharding.shard_shape``. The moments get their parameter's sharding, which is what the
eager ``tx.init`` in :func:`jaxrl_reason.parallel.train_step.shard_train_state` produces.

``--check`` also materialises ``tiny_debug`` through ``shard_train_state`` and checks that the
bytes of the real addressable shards on device 0 equal this abstract count (so the numbers
below describe what the trainer actually allocates).

Run: ``python benchmarks/sharding.py [--mesh fsdp=8] [--check]``.
"""

from __future__ import annotations

import argparse
import math
import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")
if "--xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    )
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec  # noqa: E402

from jaxrl_reason import parallel  # noqa: E402
from jaxrl_reason.models import ModelConfig, Transformer  # noqa: E402
from jaxrl_reason.parallel import train_step  # noqa: E402
from jaxrl_reason.train.optim import build_optimizer  # noqa: E402

QWEN2_5_0_5B = ModelConfig(
    vocab_size=151936,
    hidden_size=896,
    intermediate_size=4864,
    num_layers=24,
    num_heads=14,
    num_kv_heads=2,
    head_dim=64,
    rope_theta=1_000_000.0,
    rms_norm_eps=1e-6,
    tie_word_embeddings=True,
    attention_bias=True,
    max_position_embeddings=32768,
)

OPTIM = {"learning_rate": 1e-6, "max_grad_norm": 1.0}


def abstract_train_state(cfg: ModelConfig, mesh):
    """``(params, opt_state)`` abstract trees and their shardings on ``mesh`` (no allocation)."""
    model = nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0)))
    _, params, _ = nnx.split(model, nnx.Param, ...)
    arrays, names = parallel.split_logical(params)
    p_sh = parallel.shardings_for(arrays, names, mesh)
    tx = build_optimizer(OPTIM, (arrays, None)).tx
    opt = jax.eval_shape(tx.init, (arrays, None))
    # Moments follow their parameter (eager init on sharded params); the rest is replicated.
    by_shape = {}
    for a, s in zip(jax.tree.leaves(arrays), jax.tree.leaves(p_sh), strict=True):
        by_shape.setdefault((a.shape, a.dtype), s)
    replicated = NamedSharding(mesh, PartitionSpec())
    o_sh = jax.tree.map(lambda x: by_shape.get((x.shape, x.dtype), replicated), opt)
    return arrays, p_sh, opt, o_sh


def bytes_per_device(tree, shardings) -> int:
    """Bytes one device holds: ``prod(shard_shape) * itemsize`` summed over leaves."""
    total = 0
    for x, s in zip(jax.tree.leaves(tree), jax.tree.leaves(shardings), strict=True):
        total += math.prod(s.shard_shape(x.shape)) * np.dtype(x.dtype).itemsize
    return total


def measure(cfg: ModelConfig, mesh_cfg: dict) -> dict:
    mesh = parallel.make_mesh(mesh_cfg)
    arrays, p_sh, opt, o_sh = abstract_train_state(cfg, mesh)
    n_params = sum(math.prod(x.shape) for x in jax.tree.leaves(arrays))
    return {
        "params": n_params,
        "param_bytes": bytes_per_device(arrays, p_sh),
        "opt_bytes": bytes_per_device(opt, o_sh),
    }


def check_against_real(mesh_cfg: dict) -> tuple[int, int]:
    """tiny_debug through shard_train_state: (real bytes on device 0, abstract prediction)."""
    cfg = ModelConfig.tiny_debug()
    mesh = parallel.make_mesh(mesh_cfg)
    model = Transformer(cfg, rngs=nnx.Rngs(0))
    _, params, _ = nnx.split(model, nnx.Param, ...)
    tx = build_optimizer(OPTIM, (params, None)).tx
    state, _ = train_step.shard_train_state(params, None, tx, mesh)
    dev0 = mesh.devices.flat[0]
    real = 0
    for leaf in jax.tree.leaves((state["params"], state["opt_state"])):
        for shard in leaf.addressable_shards:
            if shard.device == dev0:
                real += shard.data.nbytes
    m = measure(cfg, mesh_cfg)
    return real, m["param_bytes"] + m["opt_bytes"]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mesh", default="fsdp=8", help="sharded mesh, e.g. fsdp=4,tensor=2")
    ap.add_argument("--check", action="store_true", help="cross-check on a real tiny model")
    args = ap.parse_args(argv)
    sharded_cfg = {k: int(v) for k, v in (kv.split("=") for kv in args.mesh.split(","))}
    n = jax.device_count()
    rep = measure(QWEN2_5_0_5B, {"data": n})
    sh = measure(QWEN2_5_0_5B, sharded_cfg)
    gib = 2.0**30
    print(f"Qwen2.5-0.5B shapes: {rep['params'] / 1e6:.1f}M parameters, float32, AdamW")
    print(f"{'mesh':<22}{'params GiB':>12}{'opt GiB':>10}{'total GiB':>11}  per device")
    for name, m in ((f"replicated (data={n})", rep), (args.mesh, sh)):
        total = m["param_bytes"] + m["opt_bytes"]
        print(
            f"{name:<22}{m['param_bytes'] / gib:>12.3f}{m['opt_bytes'] / gib:>10.3f}"
            f"{total / gib:>11.3f}"
        )
    ratio = (sh["param_bytes"] + sh["opt_bytes"]) / (rep["param_bytes"] + rep["opt_bytes"])
    print(f"ratio sharded / replicated = {ratio:.6f} (1/{n} = {1 / n:.4f})")
    if args.check:
        real, predicted = check_against_real(sharded_cfg)
        print(
            f"check (tiny_debug, {args.mesh}): device 0 holds {real} bytes, abstract count "
            f"{predicted} -> {'match' if real == predicted else 'MISMATCH'}"
        )


if __name__ == "__main__":
    main()
