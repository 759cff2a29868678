"""Time of the token-level advantage scans (GAE), side by side.

    python -m benchmarks.scan                    # CPU: xla (lax.scan) vs associative
    python -m benchmarks.scan --impl xla associative pallas   # GPU/TPU

The Python-loop reference unrolls T steps at trace time, so it is left out by default.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax

from jaxrl_reason.kernels import gae


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--b", type=int, default=256)
    p.add_argument("--t", type=int, default=4096)
    p.add_argument("--impl", nargs="+", default=["xla", "associative"])
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    k = jax.random.split(jax.random.key(0), 3)
    r = jax.random.normal(k[0], (args.b, args.t))
    v = jax.random.normal(k[1], (args.b, args.t))
    m = jax.random.bernoulli(k[2], 0.9, (args.b, args.t))
    print(f"device: {jax.devices()[0].device_kind}, B={args.b}, T={args.t}")
    base = None
    for impl in args.impl:
        fn = jax.jit(lambda r, v, m, impl=impl: gae(r, v, m, gamma=1.0, lam=0.95, impl=impl))
        jax.block_until_ready(fn(r, v, m))
        ts = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            jax.block_until_ready(fn(r, v, m))
            ts.append(time.perf_counter() - t0)
        t = statistics.median(ts)
        base = base or t
        print(f"{impl:12s} {t * 1e3:9.2f} ms  {t / base:5.2f}x")


if __name__ == "__main__":
    main()
