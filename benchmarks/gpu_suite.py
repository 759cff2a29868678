"""Every GPU measurement of issue 17 in one run, one table: the ceilings, the token log-prob
kernel, the policy-update MFU and batch-1 decode.

    python -m benchmarks.gpu_suite                 # on the GPU: the issue's shapes, bf16
    python -m benchmarks.gpu_suite --dry-run       # anywhere (CPU): tiny shapes, same code path

Rows (each measured in this process, after a compile-and-warm-up call; a row that fails prints
its error and the others still run):

* ``matmul ceiling``: bf16 ``M x M @ M x M`` (M = 8192; dry run 512), TFLOP/s = 2 M^3 / t.
* ``copy bandwidth``: bytes read + written by copying a 4 GiB array (dry run 64 MiB), GB/s.
* ``token_logprob <impl> fwd / fwd+bwd``: N = 16,384 tokens, D = 896, V = 151,936 (the
  Qwen2.5-0.5B head), bf16 ``h`` and ``W``; time, ratio to the matmul floor
  ``2 N D V`` (fwd) or ``6 N D V`` (fwd+bwd) FLOPs at the measured ceiling, and the compiled
  program's scratch memory (``memory_analysis().temp_size_in_bytes``) against the naive path
  (``reference``: ``h @ W``, log-softmax, gather). Goals: fwd+bwd within 1.2x of the floor,
  scratch at least 10x below naive.
* ``policy update MFU``: one jitted PPO/GRPO update (``train.step.make_update_fn``: the
  decoder forward and backward, the fused log-prob, AdamW) on a Qwen2.5-0.5B-shaped model
  with random weights (24 layers, D 896, 14 / 2 heads, F 4864, V 151,936), bf16 compute on
  f32 master weights, ``--update-batch x --update-len`` tokens; MFU = ``6 P T + 12 L T S D``
  FLOPs (Kaplan et al.'s estimate with attention) / t / the measured ceiling. Goal >= 40 %.
* ``decode batch 1 (scan | unrolled)``: the sampler's per-token step time on the same model
  (difference of two generation lengths, cancelling prefill), with the decode loop scanning
  the stacked layer weights or unrolled over per-layer copies (``rollout.decode_layers``),
  against the floor ``stored parameter bytes / copy
  bandwidth`` (the f32 master weights: a bf16 copy for decoding would halve it). Goal <= 1.5x.

Everything runs through the library's public entry points; the dry run only shrinks shapes.
"""

from __future__ import annotations

import argparse
import statistics
import time
import traceback


def _time(fn, *args, repeats: int = 5) -> float:
    """Median wall time of ``fn(*args)`` after a warm-up (``benchmarks.token_logprob``'s)."""
    from benchmarks.token_logprob import _time as median_time

    return median_time(fn, args, repeats)


def matmul_ceiling(m: int, dtype, repeats: int) -> float:
    """bf16 (or ``dtype``) square matmul FLOP/s: ``2 m^3 / t``."""
    import jax
    import jax.numpy as jnp

    k = jax.random.split(jax.random.key(0))
    a = jax.random.normal(k[0], (m, m), jnp.float32).astype(dtype)
    b = jax.random.normal(k[1], (m, m), jnp.float32).astype(dtype)
    f = jax.jit(lambda x, y: jnp.dot(x, y, preferred_element_type=jnp.float32))
    return 2 * m**3 / _time(f, a, b, repeats=repeats)


def copy_bandwidth(nbytes: int, repeats: int) -> float:
    """Bytes read + written per second by an elementwise copy of ``nbytes``."""
    import jax
    import jax.numpy as jnp

    x = jnp.ones((nbytes // 4,), jnp.float32)
    f = jax.jit(lambda v: v + 1.0)
    return 2 * nbytes / _time(f, x, repeats=repeats)


def token_logprob_rows(n, d, v, dtype, impls, flops_per_s, repeats):
    """``[(row name, seconds, ratio to floor, scratch MiB, scratch ratio vs reference)]``."""
    import jax
    import jax.numpy as jnp

    from jaxrl_reason.kernels import token_logprob

    k = jax.random.split(jax.random.key(0), 3)
    h = jax.random.normal(k[0], (n, d), jnp.float32).astype(dtype)
    w = (jax.random.normal(k[1], (d, v), jnp.float32) * d**-0.5).astype(dtype)
    y = jax.random.randint(k[2], (n,), 0, v, jnp.int32)
    rows = []
    for mode, mult in (("fwd", 2), ("fwd+bwd", 6)):
        base_mem = None
        for impl in impls:

            def fwd(h, w, y, impl=impl):
                return token_logprob(h, w, y, impl=impl)

            def loss(h, w, y, impl=impl):
                lp, ent = token_logprob(h, w, y, impl=impl)
                return jnp.sum(lp) + 0.01 * jnp.sum(ent)

            fn = jax.jit(fwd) if mode == "fwd" else jax.jit(jax.grad(loss, argnums=(0, 1)))
            name = f"token_logprob {impl} {mode}"
            try:
                compiled = fn.lower(h, w, y).compile()
                mem = compiled.memory_analysis().temp_size_in_bytes
                t = _time(compiled, h, w, y, repeats=repeats)
            except Exception as e:  # e.g. a Pallas backend that does not lower here
                rows.append((name, f"failed: {type(e).__name__}: {str(e)[:80]}"))
                continue
            base_mem = mem if base_mem is None else base_mem
            floor = mult * n * d * v / flops_per_s
            rows.append(
                (
                    name,
                    f"{t * 1e3:9.2f} ms  {t / floor:5.2f}x floor  scratch {mem / 2**20:9.1f} MiB"
                    f"  ({base_mem / max(mem, 1):6.1f}x below reference)",
                )
            )
    return rows


def model_config(dry: bool, dtype: str):
    """A Qwen2.5-0.5B-shaped config (random weights), or a small one for the dry run."""
    from jaxrl_reason.models import ModelConfig

    if dry:
        return ModelConfig(
            vocab_size=4096, hidden_size=128, intermediate_size=512, num_layers=2,
            num_heads=4, num_kv_heads=2, tie_word_embeddings=True, attention_bias=True,
            dtype=dtype, param_dtype="float32",
        )  # fmt: skip
    return ModelConfig(
        vocab_size=151936, hidden_size=896, intermediate_size=4864, num_layers=24,
        num_heads=14, num_kv_heads=2, tie_word_embeddings=True, attention_bias=True,
        rope_theta=1e6, rms_norm_eps=1e-6, dtype=dtype, param_dtype="float32",
    )  # fmt: skip


def update_mfu(cfg, batch: int, length: int, flops_per_s: float, repeats: int) -> str:
    """One jitted policy update (:func:`jaxrl_reason.train.step.make_update_fn`) and its MFU."""
    import jax
    import jax.numpy as jnp
    import ml_collections
    from flax import nnx

    from jaxrl_reason.models import Transformer
    from jaxrl_reason.train.optim import build_optimizer
    from jaxrl_reason.train.step import LossConfig, make_update_fn

    model = Transformer(cfg, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model)
    opt_cfg = ml_collections.ConfigDict(
        {"learning_rate": 1e-6, "total_steps": 10, "grad_clip": 1.0, "trainable": "all"}
    )
    tx = build_optimizer(opt_cfg, (params, None)).tx
    opt_state = tx.init((params, None))
    p, r = 16, length - 16
    k = jax.random.split(jax.random.key(1), 3)
    b = {
        "prompt_tokens": jax.random.randint(k[0], (batch, p), 3, cfg.vocab_size),
        "prompt_mask": jnp.ones((batch, p), bool),
        "response": jax.random.randint(k[1], (batch, r), 3, cfg.vocab_size),
        "response_mask": jnp.ones((batch, r), jnp.float32),
        "old_logprobs": jnp.full((batch, r), -5.0, jnp.float32),
        "advantages": jax.random.normal(k[2], (batch, r), jnp.float32),
    }
    update = jax.jit(make_update_fn(graphdef, tx, LossConfig(), 1), donate_argnums=(0, 2))

    def step(params, opt_state):
        params, _, opt_state, m = update(params, None, opt_state, b)
        return params, opt_state, m

    params, opt_state, m = step(params, opt_state)  # compile + warm-up
    jax.block_until_ready(m["loss"])
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        params, opt_state, m = step(params, opt_state)
        jax.block_until_ready(m["loss"])
        ts.append(time.perf_counter() - t0)
    t = statistics.median(ts)
    n_params = sum(x.size for x in jax.tree.leaves(params))
    tokens = batch * length
    flops = 6 * n_params * tokens + 12 * cfg.num_layers * tokens * length * cfg.hidden_size
    return (
        f"{t * 1e3:9.1f} ms/update  {tokens} tokens  {n_params / 1e6:.0f}M params  "
        f"MFU {flops / t / flops_per_s * 100:5.1f} %  (loss {float(m['loss']):.3f})"
    )


def decode_batch1(
    cfg, bandwidth: float, steps: int, repeats: int, decode_layers: str = "scan"
) -> str:
    """Batch-1 decode step time (difference of two lengths) against the bandwidth floor, with
    the decode loop walking the layers as ``decode_layers`` says (``SamplingConfig``)."""
    import jax
    import numpy as np
    from flax import nnx

    from jaxrl_reason.models import Transformer
    from jaxrl_reason.rollout import SamplingConfig, sample

    model = Transformer(cfg, rngs=nnx.Rngs(0))
    # The floor streams every stored weight byte once per token (f32 master weights here).
    leaves = jax.tree.leaves(nnx.state(model, nnx.Param))
    nbytes = sum(x.size * x.dtype.itemsize for x in leaves)
    floor = nbytes / bandwidth
    tokens = np.random.default_rng(0).integers(3, cfg.vocab_size, (1, 16), dtype=np.int32)
    mask = np.ones_like(tokens, bool)

    def run(r):
        sc = SamplingConfig(
            max_new_tokens=r, stop_token_ids=(), temperature=1.0, decode_layers=decode_layers
        )
        return sample(model, tokens, mask, jax.random.key(0), sc).tokens

    t_short = _time(lambda: run(4), repeats=repeats)
    t_long = _time(lambda: run(4 + steps), repeats=repeats)
    step = (t_long - t_short) / steps
    return (
        f"{step * 1e3:9.3f} ms/token  floor {floor * 1e3:.3f} ms ({nbytes / 2**20:.0f} MiB at "
        f"{bandwidth / 1e9:.0f} GB/s)  {step / floor:5.2f}x floor"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dry-run", action="store_true", help="tiny shapes (CPU check of the path)")
    p.add_argument("--n", type=int, default=None, help="token_logprob tokens (default 16384)")
    p.add_argument("--impls", nargs="+", default=None, help="default: reference xla pallas")
    p.add_argument("--update-batch", type=int, default=None, help="default 16 (dry run 2)")
    p.add_argument("--update-len", type=int, default=None, help="default 1024 (dry run 48)")
    p.add_argument("--decode-steps", type=int, default=None, help="default 64 (dry run 8)")
    p.add_argument("--repeats", type=int, default=None, help="default 5 (dry run 2)")
    args = p.parse_args(argv)

    import jax
    import jax.numpy as jnp

    dry = args.dry_run
    dtype = "float32" if dry and jax.default_backend() == "cpu" else "bfloat16"
    reps = args.repeats or (2 if dry else 5)
    impls = args.impls or ["reference", "xla", "pallas"]
    dev = jax.devices()[0]
    print(
        f"device: {dev.device_kind} ({jax.default_backend()}), jax {jax.__version__}, "
        f"compute {dtype}{', DRY RUN (tiny shapes)' if dry else ''}"
    )
    rows: list[tuple[str, str]] = []

    def attempt(name, fn):
        try:
            out = fn()
        except Exception as e:
            traceback.print_exc()
            out = f"failed: {type(e).__name__}: {str(e)[:100]}"
        if isinstance(out, list):
            rows.extend(out)
        else:
            rows.append((name, out))
        print(f"  done: {name}", flush=True)
        return out

    ceil = {"flops": float("nan"), "bw": float("nan")}

    def _ceiling():
        ceil["flops"] = matmul_ceiling(512 if dry else 8192, jnp.dtype(dtype), reps)
        return f"{ceil['flops'] / 1e12:9.2f} TFLOP/s"

    def _bandwidth():
        ceil["bw"] = copy_bandwidth((64 if dry else 4096) * 2**20, reps)
        return f"{ceil['bw'] / 1e9:9.1f} GB/s"

    attempt("matmul ceiling", _ceiling)
    attempt("copy bandwidth", _bandwidth)
    n = args.n or (256 if dry else 16384)
    d, v = (128, 4096) if dry else (896, 151936)
    attempt(
        "token_logprob",
        lambda: token_logprob_rows(n, d, v, jnp.dtype(dtype), impls, ceil["flops"], reps),
    )
    cfg = model_config(dry, dtype)
    attempt(
        "policy update MFU",
        lambda: update_mfu(
            cfg,
            args.update_batch or (2 if dry else 16),
            args.update_len or (48 if dry else 1024),
            ceil["flops"],
            reps,
        ),
    )
    for layers in ("scan", "unrolled"):
        attempt(
            f"decode batch 1 ({layers})",
            lambda layers=layers: decode_batch1(
                cfg, ceil["bw"], args.decode_steps or (8 if dry else 64), reps, layers
            ),
        )
    if jax.default_backend() != "cpu":
        stats = dev.memory_stats() or {}
        rows.append(("device peak memory", f"{stats.get('peak_bytes_in_use', 0) / 2**30:.2f} GiB"))
    width = max(len(r[0]) for r in rows)
    print("\n| measurement | result |\n|---|---|")
    for name, res in rows:
        print(f"| {name:{width}s} | {res} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
