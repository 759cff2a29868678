"""A pure, jitted sampler for decoder-only language models: prefill + on-device decode loop.

One call of :func:`sample` runs one compiled XLA program:

1. **Prefill.** The left-padded prompts go through the model once, writing the KV cache and
   giving the next-token distribution at the last (always real) prompt column.
2. **Decode.** A ``lax.while_loop`` feeds one token per row per step through the model with the
   cache, samples the next token and stops as soon as every row has emitted a stop token (or
   after ``max_new_tokens``). Nothing leaves the device inside the loop.

The model is split with ``nnx.split`` into a static ``GraphDef`` and a ``State`` pytree, so the
compiled program is a pure function of ``(state, arrays)``; ``jax.jit`` caches one executable
per (graphdef, bucketed prompt length, batch, static sampling options). Prompt lengths are
rounded up (more left padding) to a few buckets so that callers with ragged prompts, tree
rollouts and Monte Carlo continuations rarely trigger a recompile.

Behaviour log-probs. Every sampled token's log-prob is returned under
``log_softmax(logits / temperature)``: the distribution the trainer recomputes from the same
hidden states and LM head (``kernels.token_logprob(..., temperature=T)``; verl likewise
recomputes old log-probs with the actor at the rollout temperature and no truncation), so the
PPO ratio is exactly 1 before the first update. Top-k / top-p change which tokens *can* be
drawn, but the returned log-prob is **not** renormalised over the kept set; the truncation is
a small, known bias of the behaviour policy that this convention ignores. Greedy decoding
reports log-probs at temperature 1.

Drawing a token. ``jax.random.categorical`` adds V Gumbel variates per row; on the CPU backend
the threefry bits alone cost ~180 ms per step at batch 64 x 49k vocabulary, more than the
model. The sampler instead inverts the CDF with one uniform per row (two-level cumulative sums)
and finds the top-k / top-p thresholds by exact bisection on the float bits (``lax.top_k`` and
``jnp.sort`` over the vocabulary cost ~1 s per step there). Both are exact up to float32
rounding of the cumulative sums.

Randomness is per row: row ``b * n + j`` (sample ``j`` of prompt ``b``) draws its step-``t``
token with ``fold_in(fold_in(prompt_key[b], j), t)``. Given per-prompt keys, a row's tokens do
not depend on the other rows in the batch, on ``n`` or on the padding bucket.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, struct

__all__ = [
    "SamplingConfig",
    "Rollout",
    "sample",
    "sample_token",
    "left_pad",
    "bucket_length",
    "trace_count",
]


# --------------------------------------------------------------------------------------------
# Configuration and result
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    """Options of :func:`sample`.

    Attributes:
      max_new_tokens: response length ``R`` (tokens generated per row at most), >= 1.
      temperature: softmax temperature ``T > 0`` (ignored when ``greedy``). Changing it does
        not recompile.
      top_k: keep only the ``k`` most likely tokens before sampling; 0 disables.
      top_p: nucleus sampling: keep the smallest set of most likely tokens whose probability
        (after temperature and top-k) reaches ``top_p``; 1.0 disables. Its value is traced
        (no recompile); switching between 1.0 and < 1.0 compiles another program.
      greedy: take the argmax (log-probs then use temperature 1).
      n: samples per prompt; the output has ``B * n`` rows, groups contiguous.
      stop_token_ids: a row finishes right after emitting any of these ids (the stop token is
        part of the response and of ``response_mask``). ``None`` means the model config's
        ``eos_token_id``; ``()`` means generate exactly ``max_new_tokens``.
      pad_token_id: id written after a row finishes; ``None`` means the model config's
        ``pad_token_id`` (0 if it has none).
      prompt_bucket: prompt-length bucketing for compile reuse. Lengths are rounded up to a
        power of two (>= 16) below ``prompt_bucket`` and to a multiple of ``prompt_bucket``
        above it. 0 disables bucketing (exact lengths; one compile per length).
      decode_layers: how the decode loop walks the layer stack: ``"scan"`` (default: one
        ``lax.scan`` over the stacked ``[L, ...]`` weights), ``"unrolled"`` (the weights cut
        into per-layer arrays once per call, before the decode loop, and the layers unrolled
        in the loop body) or ``"auto"`` (unrolled on CPU, scan elsewhere). XLA CPU copies
        each layer's slice of the stacked weights on every step of a scan (a decode step then
        reads every weight twice and writes it once); per-layer buffers are read in place:
        SmolLM2 batch-1 decode on the 2-core CPU went from 33.9 to 24.4 ms per step, batch 8
        from 69.9 to 43.8 ms (docs/performance.md), at 3-4x the compile time (2 s -> 6-8 s).
        The two are different XLA programs, so log-probs agree to float32 rounding (3e-5 on
        SmolLM2), not bitwise; a sampled token can flip where two tokens' cumulative
        probabilities straddle the draw, which is why ``"scan"`` stays the default.
    """

    max_new_tokens: int = 32
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    greedy: bool = False
    n: int = 1
    stop_token_ids: tuple[int, ...] | None = None
    pad_token_id: int | None = None
    prompt_bucket: int = 128
    decode_layers: str = "scan"

    def __post_init__(self):
        if self.decode_layers not in DECODE_LAYERS:
            raise ValueError(
                f"SamplingConfig.decode_layers={self.decode_layers!r}: use one of {DECODE_LAYERS}"
            )
        if self.stop_token_ids is not None:
            ids = self.stop_token_ids
            if isinstance(ids, int | np.integer):
                ids = (ids,)
            object.__setattr__(self, "stop_token_ids", tuple(int(i) for i in ids))
        if int(self.max_new_tokens) < 1:
            raise ValueError(
                f"SamplingConfig.max_new_tokens must be >= 1, got {self.max_new_tokens}."
            )
        if not self.greedy and not float(self.temperature) > 0.0:
            raise ValueError(
                f"SamplingConfig.temperature must be > 0 when sampling, got {self.temperature}; "
                "use greedy=True for argmax decoding."
            )
        if int(self.top_k) < 0:
            raise ValueError(f"SamplingConfig.top_k must be >= 0 (0 = off), got {self.top_k}.")
        if not 0.0 < float(self.top_p) <= 1.0:
            raise ValueError(f"SamplingConfig.top_p must be in (0, 1], got {self.top_p}.")
        if int(self.n) < 1:
            raise ValueError(f"SamplingConfig.n must be >= 1, got {self.n}.")
        if int(self.prompt_bucket) < 0:
            raise ValueError(
                f"SamplingConfig.prompt_bucket must be >= 0 (0 = off), got {self.prompt_bucket}."
            )


@struct.dataclass
class Rollout:
    """Result of :func:`sample` (a pytree). ``B' = B * n`` rows, ``R = max_new_tokens``.

    Attributes:
      prompt_tokens: int32[B', P] the caller's left-padded prompts, each repeated ``n`` times.
      prompt_mask: bool[B', P] True on real prompt tokens.
      tokens: int32[B', R] response tokens; ``pad_token_id`` after the row finished.
      response_mask: bool[B', R] True on generated tokens, up to and including the stop token.
      logprobs: float32[B', R] behaviour log-prob ``log_softmax(logits / T)[token]`` of each
        sampled token (T = 1 for greedy); 0 outside ``response_mask``.
      finish_reason: int32[B'] 0 = emitted a stop token, 1 = reached ``max_new_tokens``.
      group_ids: int32[B'] prompt index ``b`` of row ``b * n + j``.
      lengths: int32[B'] number of response tokens (``response_mask.sum(-1)``).
    """

    prompt_tokens: jax.Array
    prompt_mask: jax.Array
    tokens: jax.Array
    response_mask: jax.Array
    logprobs: jax.Array
    finish_reason: jax.Array
    group_ids: jax.Array
    lengths: jax.Array

    FINISH_STOP = 0
    FINISH_LENGTH = 1

    def response_lists(self) -> list[list[int]]:
        """Host-side list of each row's response token ids (stop token included)."""
        toks = np.asarray(self.tokens)
        lens = np.asarray(self.lengths)
        return [toks[i, : lens[i]].tolist() for i in range(toks.shape[0])]


# --------------------------------------------------------------------------------------------
# Host helpers
# --------------------------------------------------------------------------------------------


def left_pad(
    seqs: Sequence[Sequence[int]], pad_id: int = 0, *, length: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Left-pad token lists into a batch (the layout :func:`sample` expects).

    Continuation from partial responses is just this: pass ``prompt + prefix`` for each row.

    Args:
      seqs: ``B`` token-id sequences of any lengths.
      pad_id: id for the padding columns.
      length: total width ``P``; default the longest sequence. Must be >= every length.

    Returns:
      ``(tokens int32[B, P], mask bool[B, P])`` numpy arrays, real tokens right-aligned.
    """
    seqs = [list(map(int, s)) for s in seqs]
    longest = max((len(s) for s in seqs), default=0)
    width = longest if length is None else int(length)
    if width < longest:
        raise ValueError(
            f"left_pad: length={width} is shorter than the longest sequence "
            f"({longest} tokens); pass length >= {longest} or None."
        )
    tokens = np.full((len(seqs), width), pad_id, dtype=np.int32)
    mask = np.zeros((len(seqs), width), dtype=bool)
    for i, s in enumerate(seqs):
        if s:
            tokens[i, width - len(s) :] = s
            mask[i, width - len(s) :] = True
    return tokens, mask


def bucket_length(length: int, bucket: int = 128, minimum: int = 16) -> int:
    """Round a prompt length up to its compile bucket.

    Powers of two (at least ``minimum``) up to ``bucket``, then multiples of ``bucket``: at most
    ``log2(bucket / minimum) + 1`` shapes for short prompts, and at most ``bucket - 1`` wasted
    (masked) columns for long ones. ``bucket == 0`` returns ``length`` unchanged.
    """
    if bucket <= 0:
        return int(length)
    if length <= bucket:
        return int(min(bucket, max(minimum, 1 << max(0, int(length) - 1).bit_length())))
    return int(-(-length // bucket) * bucket)


# --------------------------------------------------------------------------------------------
# Token sampling (pure)
# --------------------------------------------------------------------------------------------


def _as_typed_keys(key: jax.Array) -> jax.Array:
    """Accept new-style typed keys or legacy raw ``uint32[..., 2]`` keys; return typed keys."""
    key = jnp.asarray(key) if not isinstance(key, jax.Array) else key
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key
    return jax.random.wrap_key_data(key)


def _ordered_bits(x: jax.Array) -> jax.Array:
    """float32 -> uint32 with the same order (so thresholds can be bisected exactly)."""
    i = jax.lax.bitcast_convert_type(x, jnp.int32)
    i = jnp.where(i >= 0, i, i ^ jnp.int32(0x7FFFFFFF))  # negative floats: reverse magnitude
    return jax.lax.bitcast_convert_type(i, jnp.uint32) ^ jnp.uint32(0x80000000)


def _largest_true(lo: jax.Array, hi: jax.Array, pred) -> jax.Array:
    """Per row, the largest ``t`` in ``[lo, hi]`` (uint32[B]) with ``pred(t)`` True, for a
    ``pred`` that is True at ``lo`` and monotone (True below some point, False above).

    Integer bisection: exact, at most 32 passes over the row, no sort. (``lax.top_k`` and
    ``jnp.sort`` over a 49k vocabulary cost ~1 s per step at batch 64 on the CPU backend.)
    """

    def body(carry):
        lo, hi = carry
        mid = lo + (hi - lo + 1) // 2
        ok = pred(mid)
        return jnp.where(ok, mid, lo), jnp.where(ok, hi, mid - 1)

    # 32 halvings close any uint32 interval (fixed trip count: no per-iteration convergence test).
    lo, _ = jax.lax.fori_loop(0, 32, lambda _, c: body(c), (lo, hi))
    return lo


def _truncation_weights(scaled: jax.Array, top_k: int, top_p: jax.Array | None) -> jax.Array:
    """Unnormalised probabilities ``exp(scaled - max)`` with tokens outside the top-k / top-p
    set zeroed. ``scaled`` float32[B, V] are the temperature-scaled logits.

    Order as in HF / vLLM: temperature, then top-k, then top-p on the renormalised top-k set
    (the smallest set of most likely tokens whose mass reaches ``top_p``). Ties at a
    threshold are all kept.
    """
    weights = jnp.exp(scaled - jnp.max(scaled, axis=-1, keepdims=True))
    vocab = scaled.shape[-1]
    use_k = 0 < top_k < vocab
    if not use_k and top_p is None:
        return weights
    bits = _ordered_bits(scaled)
    lo, hi = jnp.min(bits, axis=-1), jnp.max(bits, axis=-1)
    if use_k:
        # The k-th largest value: the largest t with #{bits >= t} >= k.
        lo = _largest_true(lo, hi, lambda t: jnp.sum(bits >= t[:, None], axis=-1) >= top_k)
        weights = jnp.where(bits >= lo[:, None], weights, 0.0)
    if top_p is not None:
        target = top_p * jnp.sum(weights, axis=-1)
        # The nucleus boundary: the largest t whose {bits >= t} holds mass >= top_p.
        lo = _largest_true(
            lo, hi, lambda t: jnp.sum(jnp.where(bits >= t[:, None], weights, 0.0), -1) >= target
        )
        weights = jnp.where(bits >= lo[:, None], weights, 0.0)
    return weights


def _categorical(weights: jax.Array, u: jax.Array, block: int = 128) -> jax.Array:
    """Inverse-CDF draw of one index per row from non-negative ``weights`` float32[B, V].

    ``u`` float32[B] uniform in [0, 1). One uniform per row instead of the V Gumbel draws of
    ``jax.random.categorical`` (whose threefry bits cost ~180 ms per step at batch 64 x 49k
    vocabulary on CPU). Two levels (blocks of ``block`` tokens, then inside the chosen block)
    keep every cumulative sum short. Never returns a zero-weight index.
    """
    rows, vocab = weights.shape
    block = min(block, vocab)
    nblocks = -(-vocab // block)
    w = jnp.pad(weights, ((0, 0), (0, nblocks * block - vocab))).reshape(rows, nblocks, block)
    mass = jnp.sum(w, axis=-1)  # [B, nb]
    cum_blocks = jnp.cumsum(mass, axis=-1)
    target = u * cum_blocks[:, -1]
    # Block b holds the target when cum[b-1] <= target < cum[b], so zero-mass blocks never do;
    # the clamps only matter when rounding puts the target at the very end.
    last_b = nblocks - 1 - jnp.argmax((mass > 0)[:, ::-1], axis=-1)
    b = jnp.minimum(jnp.sum(cum_blocks <= target[:, None], axis=-1), last_b)
    before = jnp.where(b > 0, jnp.take_along_axis(cum_blocks, (b - 1)[:, None], -1)[:, 0], 0.0)
    inner = jnp.take_along_axis(w, b[:, None, None], axis=1)[:, 0]  # [B, block]
    cum_inner = jnp.cumsum(inner, axis=-1)
    last_j = block - 1 - jnp.argmax((inner > 0)[:, ::-1], axis=-1)
    j = jnp.minimum(jnp.sum(cum_inner <= (target - before)[:, None], axis=-1), last_j)
    return (b * block + j).astype(jnp.int32)


def _sample_token(logits, keys, temperature, top_p, *, top_k: int, greedy: bool, use_top_p: bool):
    """Core of :func:`sample_token` with the static / traced split used inside the jit."""
    logits = logits.astype(jnp.float32)
    if greedy:
        tok = jnp.argmax(logits, axis=-1).astype(jnp.int32)
        lse = jax.nn.logsumexp(logits, axis=-1)
        lp = jnp.take_along_axis(logits, tok[:, None], axis=-1)[:, 0] - lse
        return tok, lp
    scaled = logits / temperature
    weights = _truncation_weights(scaled, top_k, top_p if use_top_p else None)
    u = jax.vmap(lambda k: jax.random.uniform(k, (), jnp.float32))(keys)
    tok = _categorical(weights, u)
    lse = jax.nn.logsumexp(scaled, axis=-1)
    lp = jnp.take_along_axis(scaled, tok[:, None], axis=-1)[:, 0] - lse
    return tok, lp


def sample_token(logits: jax.Array, keys: jax.Array, cfg: SamplingConfig):
    """Draw one token per row from ``logits`` with the options of ``cfg``.

    Args:
      logits: float[B, V] next-token logits.
      keys: ``B`` PRNG keys (typed ``key<impl>[B]`` or raw ``uint32[B, 2]``), one per row.
      cfg: temperature / top_k / top_p / greedy are used.

    Returns:
      ``(tokens int32[B], logprobs float32[B])`` with ``logprobs = log_softmax(logits / T)``
      at the drawn token (T = 1 when greedy; top-k / top-p truncation not renormalised).
    """
    return _sample_token(
        logits,
        _as_typed_keys(keys),
        jnp.float32(cfg.temperature),
        jnp.float32(cfg.top_p),
        top_k=int(cfg.top_k),
        greedy=bool(cfg.greedy),
        use_top_p=float(cfg.top_p) < 1.0,
    )


# --------------------------------------------------------------------------------------------
# The compiled program
# --------------------------------------------------------------------------------------------


class _Static(NamedTuple):
    """Hashable options that shape the compiled program (part of the jit cache key)."""

    max_new_tokens: int
    top_k: int
    greedy: bool
    use_top_p: bool
    n: int
    stop_token_ids: tuple[int, ...]
    pad_token_id: int


_TRACES = 0


def trace_count() -> int:
    """How many times the sampler program has been traced (= compiled) in this process."""
    return _TRACES


def _model_config(model) -> Any:
    for name in ("cfg", "config"):
        cfg = getattr(model, name, None)
        if cfg is not None:
            return cfg
    raise TypeError(
        f"sample: {type(model).__name__} has no `cfg` / `config` attribute; the sampler needs "
        "the model's ModelConfig (for the KV cache shape and default eos / pad ids)."
    )


def stop_and_pad_ids(cfg: SamplingConfig, model_cfg: Any) -> tuple[tuple[int, ...], int]:
    """``(stop token ids, pad id)`` of a sampling config, defaulting to the model config's
    EOS (no stop when it has none) and pad id (0 when it has none)."""
    stop_ids = cfg.stop_token_ids
    if stop_ids is None:
        eos = getattr(model_cfg, "eos_token_id", None)
        stop_ids = () if eos is None else (int(eos),)
    pad_id = cfg.pad_token_id
    if pad_id is None:
        pad_id = getattr(model_cfg, "pad_token_id", None)
        pad_id = 0 if pad_id is None else int(pad_id)
    return tuple(stop_ids), int(pad_id)


#: ``SamplingConfig.decode_layers`` values.
DECODE_LAYERS = ("scan", "unrolled", "auto")


def unroll_decode_layers(decode_layers: str, backend: str | None = None) -> bool:
    """Whether the decode loop runs on per-layer weights (``SamplingConfig.decode_layers``):
    ``"auto"`` unrolls on CPU only, where a scan over stacked weights copies each layer."""
    if decode_layers == "auto":
        return (backend or jax.default_backend()) == "cpu"
    return decode_layers == "unrolled"


def _head_logits(hidden: jax.Array, w: jax.Array) -> jax.Array:
    """float32 logits ``hidden[B, D] @ w[D, V]``: the same product the trainer's kernel uses."""
    return jnp.dot(hidden, w.astype(hidden.dtype), preferred_element_type=jnp.float32)


@functools.partial(jax.jit, static_argnames=("graphdef", "static"))
def _generate(
    graphdef, state, tokens, mask, prompt_keys, temperature, top_p, layers=None, *, static
):
    """Prefill + decode. tokens int32[B, P] left-padded, mask bool[B, P], prompt_keys key[B]."""
    global _TRACES
    _TRACES += 1  # runs at trace time only: counts compiles

    from jaxrl_reason.models import KVCache

    model = nnx.merge(graphdef, state)
    mcfg = _model_config(model)
    n, steps = static.n, static.max_new_tokens
    prompts, plen = tokens.shape
    batch = prompts * n
    sample_idx = jnp.tile(jnp.arange(n, dtype=jnp.uint32), prompts)
    row_keys = jax.vmap(jax.random.fold_in)(jnp.repeat(prompt_keys, n, axis=0), sample_idx)

    def draw(logits, t):
        step_keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(row_keys, t)
        return _sample_token(
            logits,
            step_keys,
            temperature,
            top_p,
            top_k=static.top_k,
            greedy=static.greedy,
            use_top_p=static.use_top_p,
        )

    stop = jnp.asarray(static.stop_token_ids or (-1,), dtype=jnp.int32)

    def is_stop(tok):
        if not static.stop_token_ids:
            return jnp.zeros(tok.shape, bool)
        return jnp.any(tok[:, None] == stop[None, :], axis=-1)

    w = model.lm_head_weight()
    # Positions count real tokens only, so a left-padded row is positioned exactly as if it
    # were alone (the same rule the model uses by default with a mask).
    positions = jnp.maximum(jnp.cumsum(mask.astype(jnp.int32), axis=1) - 1, 0)
    prompt_len = jnp.repeat(mask.astype(jnp.int32).sum(axis=1), n)
    dtype = getattr(mcfg, "dtype", "float32")
    cache = KVCache.init(mcfg, prompts, plen + steps, jnp.dtype(dtype))
    # Prefill each prompt once, then give its n samples copies of its KV cache: the prompt's
    # keys and values do not depend on the sample, and prefill is most of a short rollout.
    # Only the last column's hidden state is projected to the vocabulary: prefill logits over
    # every prompt position would cost B * P * V floats.
    hidden, cache = model(
        tokens, positions=positions, attention_mask=mask, cache=cache, return_hidden=True
    )
    last = hidden[:, -1]
    if n > 1:
        cache = cache.replace(
            k=jnp.repeat(cache.k, n, axis=1),
            v=jnp.repeat(cache.v, n, axis=1),
            key_mask=jnp.repeat(cache.key_mask, n, axis=0),
        )
        last = jnp.repeat(last, n, axis=0)
    tok0, lp0 = draw(_head_logits(last, w), 0)

    out_tok = jnp.full((batch, steps), static.pad_token_id, jnp.int32)
    out_lp = jnp.zeros((batch, steps), jnp.float32)
    out_tok = out_tok.at[:, 0].set(tok0)
    out_lp = out_lp.at[:, 0].set(lp0)
    done = is_stop(tok0)
    lengths = jnp.ones((batch,), jnp.int32)

    def cond(carry):
        t, _, _, done, *_ = carry
        return (t < steps) & ~jnp.all(done)

    def body(carry):
        t, cache, prev, done, out_tok, out_lp, lengths = carry
        feed = jnp.where(done, static.pad_token_id, prev)
        hidden, cache = model(
            feed[:, None],
            positions=(prompt_len + t - 1)[:, None],
            attention_mask=jnp.ones((batch, 1), bool),
            cache=cache,
            return_hidden=True,
            layers=layers,
        )
        tok, lp = draw(_head_logits(hidden[:, 0], w), t)
        alive = ~done
        tok = jnp.where(alive, tok, static.pad_token_id)
        lp = jnp.where(alive, lp, 0.0)
        out_tok = jax.lax.dynamic_update_slice(out_tok, tok[:, None], (0, t))
        out_lp = jax.lax.dynamic_update_slice(out_lp, lp[:, None], (0, t))
        lengths = lengths + alive.astype(jnp.int32)
        done = done | is_stop(tok)
        return t + 1, cache, tok, done, out_tok, out_lp, lengths

    carry = (jnp.int32(1), cache, tok0, done, out_tok, out_lp, lengths)
    _, _, _, done, out_tok, out_lp, lengths = jax.lax.while_loop(cond, body, carry)

    # A row that emitted a stop token is finished by it, even if that was the last step.
    finish = jnp.where(done, 0, 1).astype(jnp.int32)
    response_mask = jnp.arange(steps)[None, :] < lengths[:, None]
    group_ids = jnp.repeat(jnp.arange(batch // n, dtype=jnp.int32), n)
    return out_tok, response_mask, out_lp, finish, group_ids, lengths


# --------------------------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------------------------


def _validate_prompts(prompt_tokens, prompt_mask) -> tuple[np.ndarray, np.ndarray]:
    tokens = np.asarray(prompt_tokens)
    mask = np.asarray(prompt_mask)
    if tokens.ndim != 2:
        raise ValueError(f"sample: prompt_tokens must be int32[B, P], got shape {tokens.shape}.")
    if mask.shape != tokens.shape:
        raise ValueError(
            f"sample: prompt_mask shape {mask.shape} must equal prompt_tokens shape {tokens.shape}."
        )
    if not np.issubdtype(tokens.dtype, np.integer):
        raise ValueError(f"sample: prompt_tokens must be integer ids, got dtype {tokens.dtype}.")
    mask = mask.astype(bool)
    if tokens.shape[0] == 0 or tokens.shape[1] == 0:
        raise ValueError(f"sample: empty prompt batch (shape {tokens.shape}).")
    empty = np.flatnonzero(~mask.any(axis=1))
    if empty.size:
        raise ValueError(
            f"sample: prompt rows {empty[:8].tolist()} have no real token (prompt_mask all "
            "False); every row needs at least one token (e.g. the BOS id)."
        )
    # Left padding: once a row's mask turns True it stays True to the end.
    if np.any(mask[:, :-1] & ~mask[:, 1:]):
        bad = np.flatnonzero(np.any(mask[:, :-1] & ~mask[:, 1:], axis=1))
        raise ValueError(
            f"sample: prompt rows {bad[:8].tolist()} are not left-padded (a False follows a "
            "True in prompt_mask); build the batch with rollout.left_pad."
        )
    return tokens.astype(np.int32), mask


def _prompt_keys(key, batch: int) -> jax.Array:
    key = _as_typed_keys(key)
    if key.ndim == 0:
        return jax.random.split(key, batch)
    if key.shape == (batch,):
        return key
    raise ValueError(
        f"sample: key must be one PRNG key or one key per prompt (shape ({batch},)), got key "
        f"array of shape {key.shape}."
    )


def sample(
    model: nnx.Module,
    prompt_tokens: jax.Array | np.ndarray,
    prompt_mask: jax.Array | np.ndarray,
    key: jax.Array,
    cfg: SamplingConfig,
    *,
    place: Any = None,
) -> Rollout:
    """Generate responses for a batch of left-padded prompts (one compiled XLA program).

    Args:
      model: a ``jaxrl_reason.models.Transformer`` (anything with the contract's
        ``__call__(tokens, positions=, attention_mask=, cache=, return_hidden=True)``,
        ``lm_head_weight()`` and ``cfg``). Not modified.
      prompt_tokens: int32[B, P] left-padded prompt ids; for continuation from a partial
        response pass ``prompt + prefix`` (see :func:`left_pad`).
      prompt_mask: bool[B, P] True on real tokens; each row needs at least one.
      key: one PRNG key (split into ``B`` prompt keys), or ``B`` per-prompt keys. With per-prompt
        keys, each row's result is independent of the rest of the batch.
      cfg: :class:`SamplingConfig`.
      place: optional function applied to each ``[B, ...]`` input of the compiled program
        (bucketed prompts, mask, per-prompt keys) before the call, e.g. a ``device_put`` onto
        a row-sharded layout (:func:`sample_on_mesh`).

    Returns:
      A :class:`Rollout` with ``B * n`` rows (prompt ``b``'s samples at rows ``b*n .. b*n+n-1``).
    """
    tokens, mask = _validate_prompts(prompt_tokens, prompt_mask)
    batch, plen = tokens.shape
    mcfg = _model_config(model)

    stop_ids, pad_id = stop_and_pad_ids(cfg, mcfg)
    max_pos = getattr(mcfg, "max_position_embeddings", None)
    longest = int(mask.sum(axis=1).max())
    if max_pos is not None and longest + cfg.max_new_tokens > max_pos:
        raise ValueError(
            f"sample: longest prompt ({longest} tokens) + max_new_tokens ({cfg.max_new_tokens}) "
            f"exceeds the model's max_position_embeddings ({max_pos}); shorten one of them."
        )

    width = bucket_length(plen, cfg.prompt_bucket)
    if width > plen:
        tokens_b = np.concatenate([np.full((batch, width - plen), pad_id, np.int32), tokens], 1)
        mask_b = np.concatenate([np.zeros((batch, width - plen), bool), mask], 1)
    else:
        tokens_b, mask_b = tokens, mask

    static = _Static(
        max_new_tokens=int(cfg.max_new_tokens),
        top_k=int(cfg.top_k),
        greedy=bool(cfg.greedy),
        use_top_p=float(cfg.top_p) < 1.0,
        n=int(cfg.n),
        stop_token_ids=tuple(stop_ids),
        pad_token_id=int(pad_id),
    )
    graphdef, state = nnx.split(model)
    put = jnp.asarray if place is None else place
    out_tok, resp_mask, out_lp, finish, group_ids, lengths = _generate(
        graphdef,
        state,
        put(tokens_b),
        put(mask_b),
        put(_prompt_keys(key, batch)),
        jnp.float32(1.0 if cfg.greedy else cfg.temperature),
        jnp.float32(cfg.top_p),
        # Per-layer weight buffers, cut outside the program (SamplingConfig.decode_layers).
        model.per_layer_params() if unroll_decode_layers(cfg.decode_layers) else None,
        static=static,
    )
    n = static.n
    return Rollout(
        prompt_tokens=jnp.asarray(np.repeat(tokens, n, axis=0)),
        prompt_mask=jnp.asarray(np.repeat(mask, n, axis=0)),
        tokens=out_tok,
        response_mask=resp_mask,
        logprobs=out_lp,
        finish_reason=finish,
        group_ids=group_ids,
        lengths=lengths,
    )


def sample_on_mesh(
    model: nnx.Module,
    prompt_tokens: Any,
    prompt_mask: Any,
    key: jax.Array,
    cfg: Any,
    mesh: Any,
    rules: Any = None,
):
    """`sample` with sharded weights and a batch split over devices.

    The model's variables are placed by their logical names (FSDP / tensor parallel, as in
    training); the left-padded prompts, their masks and the per-prompt PRNG keys are split by
    rows over the ``batch`` rule's axes (``("data", "fsdp")``), dropping axes that do not
    divide the number of prompts. The compiled sampler is the same program as on one device:
    XLA propagates the row split into the KV cache and the decode loop, and each row's tokens
    are the same as on one device (same per-row keys; see the sampler's docstring).

    Args:
      model: a ``jaxrl_reason.models.Transformer`` (sharded in place).
      prompt_tokens: int32 ``[B, P]`` left-padded; ``prompt_mask`` bool ``[B, P]``.
      key: one PRNG key or ``B`` per-prompt keys.
      cfg: a :class:`SamplingConfig`.
      mesh: the device mesh. On several hosts every host must pass the same prompts.
      rules: logical -> mesh axis rules.

    Returns:
      A :class:`Rollout` (``B * n`` rows); XLA picks the layout of its
      device arrays (``parallel.to_host`` gathers them, from every host of a multi-host run).
    """
    from jaxrl_reason.parallel.host import to_global
    from jaxrl_reason.parallel.sharding import DEFAULT_RULES
    from jaxrl_reason.parallel.train_step import batch_sharding, shard_model

    rules = DEFAULT_RULES if rules is None else rules
    shard_model(model, mesh, rules)
    rows = batch_sharding(mesh, rules, batch_size=int(np.shape(prompt_tokens)[0]))
    # Every process holds the same prompts and keys, so each builds its own rows of the
    # global inputs (to_global; a plain device_put onto a mesh spanning hosts is refused).
    return sample(model, prompt_tokens, prompt_mask, key, cfg, place=lambda x: to_global(x, rows))
