"""Peak memory and time of the token log-prob implementations, side by side.

    python -m benchmarks.token_logprob                       # CPU: reference vs xla
    python -m benchmarks.token_logprob --impl pallas         # GPU/TPU: adds the Pallas kernel
    python -m benchmarks.token_logprob --shapes smollm2 --n 1024 --chunk 4096

Memory is the compiled executable's ``memory_analysis().temp_size_in_bytes``: the scratch an
executable needs on top of its arguments and outputs (so the inputs and the gradient buffers
are excluded, as the goal asks). On GPU/TPU the device's ``peak_bytes_in_use`` after the runs
is printed as well. Time is the median wall time of ``--repeats`` runs after one warm-up.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import time

import jax
import jax.numpy as jnp

from jaxrl_reason.kernels import token_logprob

SHAPES = {
    # name: (D, V)
    "qwen2.5-0.5b": (896, 151936),
    "smollm2": (576, 49152),
}


def _fns(impl, temperature, block_sizes, self_certainty=False):
    def fwd(h, w, y):
        return token_logprob(
            h,
            w,
            y,
            temperature=temperature,
            impl=impl,
            block_sizes=block_sizes,
            with_self_certainty=self_certainty,
        )

    def loss(h, w, y):
        out = fwd(h, w, y)
        # Every output carries gradient, as in training with a self-certainty reward/loss.
        return jnp.sum(out[0]) + 0.01 * sum(jnp.sum(o) for o in out[1:])

    return {"fwd": jax.jit(fwd), "fwd+bwd": jax.jit(jax.grad(loss, argnums=(0, 1)))}


def _time(fn, args, repeats):
    jax.block_until_ready(fn(*args))
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def _rss_gib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=4096, help="tokens N")
    p.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    p.add_argument("--impl", nargs="+", default=None, help="implementations after 'reference'")
    p.add_argument("--dtype", default=None, help="float32 (CPU default) or bfloat16 (GPU/TPU)")
    p.add_argument("--modes", nargs="+", default=["fwd", "fwd+bwd"])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--chunk", type=int, default=None, help="xla vocabulary chunk")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument(
        "--self-certainty",
        action="store_true",
        help="also time each impl with the self-certainty output (INTUITOR) switched on",
    )
    p.add_argument(
        "--memory-only", action="store_true", help="compile and report memory; skip timing"
    )
    args = p.parse_args(argv)

    backend = jax.default_backend()
    dtype = jnp.dtype(args.dtype or ("float32" if backend == "cpu" else "bfloat16"))
    impls = ["reference"] + (args.impl or ["xla"])
    dev = jax.devices()[0]
    print(
        f"device: {dev.device_kind} ({backend}), {os.cpu_count()} CPUs visible, "
        f"jax {jax.__version__}, dtype {dtype.name}, N={args.n}"
    )
    header = f"{'shape':14s} {'mode':8s} {'impl':12s} {'temp MiB':>10s} {'time s':>9s}"
    print(header + f" {'mem ratio':>10s} {'time ratio':>10s}")
    for name in args.shapes:
        d, v = SHAPES[name]
        k = jax.random.split(jax.random.key(0), 3)
        h = jax.random.normal(k[0], (args.n, d), jnp.float32).astype(dtype)
        w = (jax.random.normal(k[1], (d, v), jnp.float32) * d**-0.5).astype(dtype)
        y = jax.random.randint(k[2], (args.n,), 0, v, jnp.int32)
        for mode in args.modes:
            base = None
            variants = [(i, False) for i in impls]
            if args.self_certainty:
                variants += [(i, True) for i in impls]
            for impl, sc in variants:
                bs = args.chunk if impl == "xla" else None
                fn = _fns(impl, args.temperature, bs, sc)[mode]
                label = impl + ("+sc" if sc else "")
                try:
                    compiled = fn.lower(h, w, y).compile()
                except Exception as e:  # e.g. Pallas where it does not lower
                    print(f"{name:14s} {mode:8s} {label:12s} did not compile: {type(e).__name__}")
                    continue
                mem = compiled.memory_analysis().temp_size_in_bytes
                t = float("nan") if args.memory_only else _time(compiled, (h, w, y), args.repeats)
                if base is None:
                    base = (mem, t)
                line = f"{name:14s} {mode:8s} {label:12s} {mem / 2**20:10.1f} {t:9.3f}"
                mem_ratio = base[0] / max(mem, 1)
                print(line + f" {mem_ratio:9.1f}x {t / base[1]:9.2f}x", flush=True)
    if backend != "cpu":
        stats = dev.memory_stats() or {}
        print(f"device peak_bytes_in_use: {stats.get('peak_bytes_in_use', 0) / 2**30:.2f} GiB")
    print(f"process max RSS: {_rss_gib():.2f} GiB")
    print("mem ratio = reference temp / impl temp (higher is better);")
    print("time ratio = impl time / reference time (lower is better)")


if __name__ == "__main__":
    main()
