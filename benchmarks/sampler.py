"""Decode throughput of the jitted sampler against the memory-bandwidth floor.

    python -m benchmarks.sampler                 # SmolLM2-135M-Instruct, batches 1, 16, 64
    python -m benchmarks.sampler --batches 1 4 --steps 16

Batch-1 decode of a small model is memory bound: every step streams all parameters (the tied
LM head included) from memory once. Two floors are printed, both measured in the same run:
``parameter bytes / copy bandwidth`` (a jitted copy of a large array, bytes read + bytes
written over the time) and ``parameter bytes / read bandwidth`` (the faster of a jitted sum and
a jitted matrix-vector product over a large array: bytes read over the time). Decode only reads
its weights, so the read floor is the one a decode step can reach; on this project's 2-core
CPU a copy moves ~50 GB/s counted both ways while a read-only stream gets 26-39 GB/s. Larger
batches reuse each weight for many rows, so tokens/s should grow nearly linearly until compute
bound.

Each ``--decode-layers`` variant (``rollout.SamplingConfig.decode_layers``: the stacked
weights scanned, or per-layer weights unrolled) is measured on the same prompts and keys, and
the script prints whether their tokens are identical.

Decode time per step is measured by difference, which cancels prefill and dispatch: two
programs generate ``short`` and ``short + steps`` tokens from the same prompts (no stop tokens,
so every row runs to the end), and ``step = (t_long - t_short) / steps``. Each timing is the
best of ``--repeats`` interleaved runs after a compile-and-warm-up run.

Goals (issue 2): batch-1 decode within 2x of the floor; batch 64 at least 5x the tokens/s of
batch 1.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time


def _best_times(fns, repeats: int) -> list[float]:
    """Best wall time of each function, runs interleaved so that load from other processes
    (this CPU is shared) hits all of them alike; the first call of each compiles and warms."""
    import jax

    for fn in fns:
        jax.block_until_ready(fn())
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            jax.block_until_ready(fn())
            best[i] = min(best[i], time.perf_counter() - t0)
    return best


def copy_bandwidth(nbytes: int = 512 * 2**20, repeats: int = 5) -> float:
    """Bytes per second moved (read + write) by a jitted copy of an ``nbytes`` float32 array."""
    import jax
    import jax.numpy as jnp

    # A scale, not a plain copy, so that XLA cannot elide it; the input is donated so the output
    # reuses its pages (a fresh 512 MiB output would time page faults, not DRAM bandwidth).
    copy = jax.jit(lambda a: a * jnp.float32(1.0001), donate_argnums=0)
    x = copy(jnp.ones((nbytes // 4,), jnp.float32))
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        x = copy(x)
        x.block_until_ready()
        best = min(best, time.perf_counter() - t0)
    return 2 * nbytes / best


def read_bandwidth(nbytes: int = 512 * 2**20, repeats: int = 5) -> float:
    """Bytes per second read by the faster of two jitted read-only streams over an ``nbytes``
    float32 array: a sum, and a matrix-vector product ``W[n, 1024] @ x`` (the access pattern
    of a decode step's weights at batch 1). Nothing is written but the small result.

    Decode only reads its weights, so this is the bandwidth its floor is bound by; a copy's
    figure counts the bytes written too, which a read-only stream does not get to use."""
    import jax
    import jax.numpy as jnp

    w = jnp.ones((nbytes // 4 // 1024, 1024), jnp.float32)
    x = jnp.ones((1024,), jnp.float32)
    best = float("inf")
    for fn, args in ((jax.jit(jnp.sum), (w,)), (jax.jit(jnp.matmul), (w, x))):
        fn(*args).block_until_ready()
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn(*args).block_until_ready()
            best = min(best, time.perf_counter() - t0)
    return nbytes / best


def _load(model_name: str, random_init: bool):
    from flax import nnx

    from jaxrl_reason.models import ModelConfig, Transformer

    if random_init:
        # SmolLM2-135M's architecture with random weights: the same cost per step.
        cfg = ModelConfig(
            vocab_size=49152,
            hidden_size=576,
            intermediate_size=1536,
            num_layers=30,
            num_heads=9,
            num_kv_heads=3,
            head_dim=64,
            rope_theta=100000.0,
            max_position_embeddings=8192,
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=2,
        )
        return Transformer(cfg, rngs=nnx.Rngs(0)), "SmolLM2-135M architecture, random weights"
    from jaxrl_reason.models import load_pretrained

    model, _ = load_pretrained(model_name)
    return model, model_name


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.sampler", description=__doc__)
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--random-init", action="store_true", help="skip the loader (same shapes)")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 16, 64])
    p.add_argument("--prompt-len", type=int, default=16)
    p.add_argument("--short", type=int, default=4, help="tokens of the short program")
    p.add_argument("--steps", type=int, default=32, help="extra decode steps of the long one")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--greedy", action="store_true", help="argmax instead of T=1 sampling")
    p.add_argument(
        "--decode-layers",
        nargs="+",
        default=["scan", "unrolled"],
        choices=["scan", "unrolled", "auto"],  # rollout.sampler.DECODE_LAYERS
        help="SamplingConfig.decode_layers variants, measured side by side",
    )
    args = p.parse_args(argv)

    import jax
    import numpy as np
    from flax import nnx

    from jaxrl_reason.rollout import SamplingConfig, sample

    print(
        f"device: {jax.devices()[0].device_kind} ({platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPU cores visible; shared with other jobs); jax {jax.__version__}"
    )
    model, what = _load(args.model, args.random_init)
    leaves = jax.tree.leaves(nnx.state(model))
    param_bytes = sum(x.size * x.dtype.itemsize for x in leaves)
    bw = copy_bandwidth()
    floor = param_bytes / bw
    read_bw = read_bandwidth()
    read_floor = param_bytes / read_bw
    print(f"model: {what}; parameters {param_bytes / 2**20:.1f} MiB ({model.config.param_dtype})")
    print(
        f"copy bandwidth (read + write): {bw / 1e9:.1f} GB/s -> floor {floor * 1e3:.1f} ms/step "
        f"= {1 / floor:.1f} tok/s at batch 1"
    )
    print(
        f"read bandwidth (jitted sum / matvec): {read_bw / 1e9:.1f} GB/s -> read floor "
        f"{read_floor * 1e3:.1f} ms/step = {1 / read_floor:.1f} tok/s at batch 1"
    )

    results = {}
    first_tokens = {}
    for mode in args.decode_layers:
        for batch in args.batches:
            # The same prompts for every variant (seeded by batch), so tokens can be compared.
            rng = np.random.default_rng(batch)
            tokens = rng.integers(3, model.config.vocab_size, (batch, args.prompt_len), np.int32)
            mask = np.ones_like(tokens, bool)
            key = jax.random.key(0)

            def run(r, tokens=tokens, mask=mask, key=key, mode=mode):
                cfg = SamplingConfig(
                    max_new_tokens=r,
                    greedy=args.greedy,
                    stop_token_ids=(),
                    temperature=1.0,
                    decode_layers=mode,
                )
                return sample(model, tokens, mask, key, cfg).tokens

            t0 = time.perf_counter()
            jax.block_until_ready(run(args.short))  # compiles: time it once per variant
            first_call = time.perf_counter() - t0
            t_short, t_long = _best_times(
                [lambda: run(args.short), lambda: run(args.short + args.steps)], args.repeats
            )
            step = (t_long - t_short) / args.steps
            results[mode, batch] = batch / step
            first_tokens.setdefault(batch, {})[mode] = np.asarray(run(args.short + args.steps))
            print(
                f"{mode:8s} batch {batch:3d}: decode {step * 1e3:7.1f} ms/step = "
                f"{batch / step:8.1f} tok/s  ({step / floor:.2f}x the floor; "
                f"prefill+{args.short} tokens {t_short:.2f} s; first call, compile included, "
                f"{first_call:.1f} s)",
                flush=True,
            )
    for batch, by_mode in first_tokens.items():
        toks = list(by_mode.values())
        same = all(np.array_equal(toks[0], t) for t in toks[1:])
        print(f"batch {batch}: tokens identical across {', '.join(by_mode)}: {same}")
    for mode in args.decode_layers:
        if (mode, 1) in results:
            step1 = 1 / results[mode, 1]
            print(
                f"{mode}: ratio batch-1 step / floor: {step1 / floor:.2f} (copy floor), "
                f"{step1 / read_floor:.2f} (read floor) (goal <= 2)"
            )
            for batch in args.batches:
                if batch != 1:
                    r = results[mode, batch] / results[mode, 1]
                    goal = " (goal >= 5)" if batch == 64 else ""
                    print(f"{mode}: ratio tok/s batch {batch} / batch 1: {r:.1f}{goal}")
    if len(args.decode_layers) > 1 and all((m, 1) in results for m in args.decode_layers):
        a, b = args.decode_layers[:2]
        print(f"batch-1 tok/s {b} / {a}: {results[b, 1] / results[a, 1]:.2f}x")
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
