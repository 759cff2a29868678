"""A decoding session that continues from its KV cache: prefill once, then decode, fork rows
and append forced tokens without ever re-prefilling a shared prefix.

The primitive under every non-i.i.d. rollout (tree branches, Monte Carlo continuations,
multi-turn episodes, search). A :class:`Session` is a pytree (the KV cache, each row's last
hidden state and its count of real tokens); the functions below are jitted, shapes are
static and ``max_len`` (the cache's slot count) is fixed by :func:`start`::

    s = start(model, prompt_tokens, prompt_mask, max_len=P + 256)
    s = fork(s, jnp.repeat(jnp.arange(B), 4))          # 4 rows per prompt, one prefill
    s, toks, lps, lens, fin = generate(model, s, keys, cfg, steps=64)
    s = extend(model, s, observation_tokens, observation_mask)
    s, toks2, *_ = generate(model, s, keys2, cfg, steps=64)

Slots. The cache index is shared by all rows, so every call consumes the same slots for all
rows: :func:`extend` with ``T`` columns uses ``T`` slots, :func:`generate` uses at most
``steps`` (one per drawn token: every drawn token, the stop token included, is fed into the
cache before returning). Masked columns and finished / inactive rows write *masked* slots,
which no later query attends to, so a row's results equal those of the row alone, unpadded.
Positions count real tokens only (``Session.num_real``), as in :func:`sample`.

Key schedule. :func:`generate` takes one key per row, ``keys key[B]``; the ``t``-th token a
call draws for row ``b`` (``t = 0 .. steps - 1``) uses ``fold_in(keys[b], step_offset[b] + t)``
(``step_offset`` defaults to 0), exactly like
:func:`~jaxrl_reason.rollout.sample` draws sample ``j`` of prompt ``b`` with
``keys[b] = fold_in(prompt_key[b], j)``. So ``start`` + ``generate(keys=fold_in(prompt_key, 0))``
reproduces ``sample(n=1)`` token for token, and a row's draws depend only on its own key,
never on the other rows, the batch size or the padding.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, struct

from jaxrl_reason.models import KVCache
from jaxrl_reason.parallel.host import to_host
from jaxrl_reason.rollout.sampler import (
    SamplingConfig,
    _as_typed_keys,
    _head_logits,
    _model_config,
    _sample_token,
    stop_and_pad_ids,
    unroll_decode_layers,
)

__all__ = [
    "FINISH_INACTIVE",
    "FINISH_LENGTH",
    "FINISH_STOP",
    "FINISH_STOP_SEQUENCE",
    "Session",
    "capacity",
    "concat",
    "extend",
    "fold_keys",
    "fork",
    "generate",
    "rewind",
    "start",
]

#: ``finish`` codes of :func:`generate`: stop token, ``steps`` exhausted, inactive row. A row
#: stopped by ``stop_sequences[i]`` reports ``FINISH_STOP_SEQUENCE + i``.
FINISH_STOP = 0
FINISH_LENGTH = 1
FINISH_INACTIVE = -1
FINISH_STOP_SEQUENCE = 2


@struct.dataclass
class Session:
    """Decoding state of ``B`` rows (a pytree; every field has the batch axis).

    Attributes:
      cache: the :class:`~jaxrl_reason.models.KVCache` (``k, v [L, B, S, KVH, Dh]``,
        ``key_mask bool[B, S]``, shared ``index int32[]`` = next free slot).
      last_hidden: ``[B, D]`` (compute dtype) final-normed hidden state at each row's last
        real token: ``last_hidden @ lm_head`` are the logits of the row's next token.
      num_real: ``int32[B]`` real tokens fed so far (= the RoPE position of the next token).
    """

    cache: KVCache
    last_hidden: jax.Array
    num_real: jax.Array

    @property
    def batch(self) -> int:
        """``B``, the number of rows."""
        return int(self.num_real.shape[0])

    @property
    def max_len(self) -> int:
        """``S``, the cache's slot count."""
        return self.cache.max_len


def fold_keys(keys: jax.Array, data) -> jax.Array:
    """Row-wise ``fold_in(keys[r], data[r])``: ``key[B]`` and ``int[B]`` -> ``key[B]`` (the
    per-row key schedules of the session strategies: sample, branch and continuation
    indices)."""
    return jax.vmap(jax.random.fold_in)(keys, jnp.asarray(data, jnp.uint32))


def capacity(session: Session) -> int:
    """Free cache slots left (host int; reads the device index)."""
    return session.max_len - int(to_host(session.cache.index))


def _check_capacity(session: Session, needed: int, what: str) -> None:
    used = int(to_host(session.cache.index))
    if used + needed > session.max_len:
        raise ValueError(
            f"session.{what}: needs {needed} more KV-cache slots but only "
            f"{session.max_len - used} of max_len={session.max_len} are free ({used} used); "
            "start the session with a larger max_len."
        )


def _check_max_pos(model, session_or_needed: int) -> None:
    max_pos = getattr(_model_config(model), "max_position_embeddings", None)
    if max_pos is not None and session_or_needed > max_pos:
        raise ValueError(
            f"session: max_len={session_or_needed} exceeds the model's "
            f"max_position_embeddings ({max_pos})."
        )


# --------------------------------------------------------------------------------------------
# start / fork / extend
# --------------------------------------------------------------------------------------------


def _last_real(hidden: jax.Array, mask: jax.Array, fallback: jax.Array) -> jax.Array:
    """``hidden [B, T, D]`` at each row's last True column of ``mask``; ``fallback`` where none."""
    T = mask.shape[1]
    last = T - 1 - jnp.argmax(mask[:, ::-1], axis=1)
    picked = jnp.take_along_axis(hidden, last[:, None, None], axis=1)[:, 0]
    return jnp.where(jnp.any(mask, axis=1)[:, None], picked, fallback.astype(picked.dtype))


@functools.partial(jax.jit, static_argnames=("graphdef", "max_len"))
def _start(graphdef, state, tokens, mask, *, max_len):
    model = nnx.merge(graphdef, state)
    mcfg = _model_config(model)
    batch = tokens.shape[0]
    positions = jnp.maximum(jnp.cumsum(mask.astype(jnp.int32), axis=1) - 1, 0)
    cache = KVCache.init(mcfg, batch, max_len, jnp.dtype(getattr(mcfg, "dtype", "float32")))
    hidden, cache = model(
        tokens, positions=positions, attention_mask=mask, cache=cache, return_hidden=True
    )
    last = _last_real(hidden, mask, jnp.zeros(hidden.shape[::2], hidden.dtype))
    return Session(cache=cache, last_hidden=last, num_real=mask.astype(jnp.int32).sum(axis=1))


def start(
    model: nnx.Module,
    tokens: jax.Array | np.ndarray,
    mask: jax.Array | np.ndarray,
    *,
    max_len: int,
) -> Session:
    """Prefill ``B`` prompts into a fresh session (one compiled program per shape).

    Args:
      model: a ``jaxrl_reason.models.Transformer`` (not modified).
      tokens: ``int32[B, P]`` prompts, normally left-padded (``rollout.left_pad``).
      mask: ``bool[B, P]`` True on real tokens. Any layout works (the next-token state is taken
        at each row's last real token); a row with no real token starts empty
        (``num_real = 0``, ``last_hidden = 0``).
      max_len: ``S``, total cache slots (prompt columns + everything later decoded or
        extended), fixed for the session's lifetime; ``>= P``.

    Returns:
      A :class:`Session` with ``cache.index = P`` and ``num_real = mask.sum(-1)``.
    """
    tokens = jnp.asarray(tokens, jnp.int32)
    mask = jnp.asarray(mask).astype(bool)
    if tokens.ndim != 2 or mask.shape != tokens.shape:
        raise ValueError(
            f"session.start: tokens {tokens.shape} and mask {mask.shape} must both be [B, P]."
        )
    if int(max_len) < tokens.shape[1]:
        raise ValueError(
            f"session.start: max_len={max_len} is smaller than the prompt width "
            f"{tokens.shape[1]}; the cache would overflow."
        )
    _check_max_pos(model, int(max_len))
    graphdef, state = nnx.split(model)
    return _start(graphdef, state, tokens, mask, max_len=int(max_len))


@jax.jit
def _fork(session: Session, rows: jax.Array) -> Session:
    c = session.cache
    cache = c.replace(
        k=jnp.take(c.k, rows, axis=1),
        v=jnp.take(c.v, rows, axis=1),
        key_mask=jnp.take(c.key_mask, rows, axis=0),
    )
    return Session(
        cache=cache,
        last_hidden=jnp.take(session.last_hidden, rows, axis=0),
        num_real=jnp.take(session.num_real, rows, axis=0),
    )


def fork(session: Session, rows: jax.Array | np.ndarray | Sequence[int]) -> Session:
    """A new session whose row ``i`` is a copy of ``session``'s row ``rows[i]``.

    A pure gather of the cache rows (``k, v`` along their batch axis, ``key_mask``) and of the
    per-row fields; the shared cache index is kept. Rows may repeat (branching) or be dropped
    (pruning).

    Args:
      session: the source :class:`Session` (``B`` rows).
      rows: ``int32[B']`` source row of each new row, each in ``[0, B)``.

    Returns:
      A :class:`Session` with ``B'`` rows.
    """
    rows_np = np.asarray(rows, dtype=np.int64)
    if rows_np.ndim != 1 or rows_np.size == 0:
        raise ValueError(f"session.fork: rows must be a non-empty int[B'], got {rows_np.shape}.")
    if rows_np.min() < 0 or rows_np.max() >= session.batch:
        raise ValueError(
            f"session.fork: rows must lie in [0, {session.batch}), got "
            f"[{rows_np.min()}, {rows_np.max()}]."
        )
    return _fork(session, jnp.asarray(rows_np, jnp.int32))


@jax.jit
def _rewind(session: Session, num_real: jax.Array) -> Session:
    km = session.cache.key_mask
    keep = km & (jnp.cumsum(km.astype(jnp.int32), axis=1) <= num_real[:, None])
    return session.replace(
        cache=session.cache.replace(key_mask=keep),
        num_real=jnp.minimum(num_real, session.num_real),
    )


def rewind(session: Session, num_real: jax.Array | np.ndarray) -> Session:
    """Forget each row's real tokens after the first ``num_real[b]`` (masks their slots).

    The freed slots are not reused (the cache index is shared and only grows), and
    ``last_hidden`` is left as it was, which is stale: follow with :func:`extend` of at least
    one real token per row (typically the last kept token re-fed, so rewind ``k`` tokens by
    ``rewind(s, n - k - 1)`` then ``extend`` the ``(n - k)``-th token), before
    :func:`generate`.

    Args:
      session: a :class:`Session` with ``B`` rows.
      num_real: ``int32[B]`` real tokens to keep per row (prompt tokens included);
        values above a row's ``num_real`` keep everything.

    Returns:
      The session with ``num_real = min(num_real, session.num_real)``.
    """
    n = jnp.broadcast_to(jnp.asarray(num_real, jnp.int32), (session.batch,))
    return _rewind(session, n)


def concat(sessions: Sequence[Session]) -> Session:
    """Stack sessions along the batch axis (rows of ``sessions[0]`` first).

    All must share ``max_len`` (start them with the same value). The shared index becomes the
    largest one: slots a session never wrote are masked, so its rows are unaffected.
    """
    if not sessions:
        raise ValueError("session.concat: no sessions given.")
    lens = {s.max_len for s in sessions}
    if len(lens) != 1:
        raise ValueError(f"session.concat: sessions have different max_len {sorted(lens)}.")
    index = jnp.max(jnp.stack([s.cache.index for s in sessions]))
    cache = sessions[0].cache.replace(
        k=jnp.concatenate([s.cache.k for s in sessions], axis=1),
        v=jnp.concatenate([s.cache.v for s in sessions], axis=1),
        key_mask=jnp.concatenate([s.cache.key_mask for s in sessions], axis=0),
        index=index,
    )
    return Session(
        cache=cache,
        last_hidden=jnp.concatenate([s.last_hidden for s in sessions], axis=0),
        num_real=jnp.concatenate([s.num_real for s in sessions], axis=0),
    )


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _extend(graphdef, state, session: Session, tokens, mask):
    model = nnx.merge(graphdef, state)
    counts = jnp.cumsum(mask.astype(jnp.int32), axis=1)
    positions = jnp.maximum(session.num_real[:, None] + counts - 1, 0)
    hidden, cache = model(
        tokens, positions=positions, attention_mask=mask, cache=session.cache, return_hidden=True
    )
    return Session(
        cache=cache,
        last_hidden=_last_real(hidden, mask, session.last_hidden),
        num_real=session.num_real + counts[:, -1],
    )


def extend(
    model: nnx.Module,
    session: Session,
    tokens: jax.Array | np.ndarray,
    mask: jax.Array | np.ndarray,
) -> Session:
    """Teacher-force tokens (observations, forced prefixes) into every row.

    Args:
      model: the session's model.
      session: a :class:`Session` with ``B`` rows and at least ``T`` free slots.
      tokens: ``int32[B, T]``; row ``b`` appends ``tokens[b, mask[b]]`` in order (the real
        tokens may sit anywhere among the ``T`` columns, e.g. left- or right-padded).
      mask: ``bool[B, T]``; False columns write masked slots (never attended to). A row with
        no True column is unchanged (it keeps its ``last_hidden``).

    Returns:
      The session with ``cache.index + T``, ``num_real + mask.sum(-1)`` and ``last_hidden`` at
      each row's last real token of this call.
    """
    tokens = jnp.asarray(tokens, jnp.int32)
    mask = jnp.asarray(mask).astype(bool)
    if tokens.shape != mask.shape or tokens.ndim != 2 or tokens.shape[0] != session.batch:
        raise ValueError(
            f"session.extend: tokens {tokens.shape} and mask {mask.shape} must both be "
            f"[B={session.batch}, T]."
        )
    _check_capacity(session, tokens.shape[1], "extend")
    graphdef, state = nnx.split(model)
    return _extend(graphdef, state, session, tokens, mask)


# --------------------------------------------------------------------------------------------
# generate
# --------------------------------------------------------------------------------------------


class _GenStatic(NamedTuple):
    steps: int
    top_k: int
    greedy: bool
    use_top_p: bool
    stop_token_ids: tuple[int, ...]
    stop_sequences: tuple[tuple[int, ...], ...]
    pad_token_id: int


@functools.partial(jax.jit, static_argnames=("graphdef", "static"))
def _generate(
    graphdef,
    state,
    session: Session,
    keys,
    active,
    offset,
    limit,
    temperature,
    top_p,
    layers=None,
    *,
    static,
):
    model = nnx.merge(graphdef, state)
    w = model.lm_head_weight()
    steps, pad = static.steps, static.pad_token_id
    batch = session.num_real.shape[0]
    stop_ids = jnp.asarray(static.stop_token_ids or (-1,), jnp.int32)
    hist_len = max((len(s) for s in static.stop_sequences), default=1)

    def draw(hidden, t):
        step_keys = jax.vmap(jax.random.fold_in)(keys, (offset + t).astype(jnp.uint32))
        return _sample_token(
            _head_logits(hidden, w),
            step_keys,
            temperature,
            top_p,
            top_k=static.top_k,
            greedy=static.greedy,
            use_top_p=static.use_top_p,
        )

    def stop_code(tok, hist):
        """int32[B]: -1 if not stopped, FINISH_STOP, or FINISH_STOP_SEQUENCE + i."""
        code = jnp.full((batch,), -1, jnp.int32)
        # Later entries first so that the lowest matching sequence index wins.
        for i in reversed(range(len(static.stop_sequences))):
            seq = static.stop_sequences[i]
            hit = jnp.all(hist[:, hist_len - len(seq) :] == jnp.asarray(seq, jnp.int32), axis=1)
            code = jnp.where(hit, FINISH_STOP_SEQUENCE + i, code)
        if static.stop_token_ids:
            hit = jnp.any(tok[:, None] == stop_ids[None, :], axis=-1)
            code = jnp.where(hit, FINISH_STOP, code)
        return code

    def step(t, hidden, carry):
        """Draw token ``t`` for the rows still running."""
        done, finish, hist, out_tok, out_lp, lengths = carry
        tok, lp = draw(hidden, t)
        alive = ~done
        tok = jnp.where(alive, tok, pad)
        lp = jnp.where(alive, lp, 0.0)
        out_tok = jax.lax.dynamic_update_slice(out_tok, tok[:, None], (0, t))
        out_lp = jax.lax.dynamic_update_slice(out_lp, lp[:, None], (0, t))
        hist = jnp.where(alive[:, None], jnp.concatenate([hist[:, 1:], tok[:, None]], 1), hist)
        code = jnp.where(alive, stop_code(tok, hist), -1)
        finish = jnp.where(code >= 0, code, finish)
        lengths = lengths + alive.astype(jnp.int32)
        done = done | (code >= 0) | (lengths >= limit)
        return tok, alive, (done, finish, hist, out_tok, out_lp, lengths)

    def feed(cache, last, num_real, tok, valid):
        hidden, cache = model(
            tok[:, None],
            positions=num_real[:, None],
            attention_mask=valid[:, None],
            cache=cache,
            return_hidden=True,
            layers=layers,
        )
        h = hidden[:, 0]
        last = jnp.where(valid[:, None], h, last)
        return cache, last, num_real + valid.astype(jnp.int32), h

    carry0 = (
        ~active,
        jnp.where(active, FINISH_LENGTH, FINISH_INACTIVE).astype(jnp.int32),
        jnp.full((batch, hist_len), -1, jnp.int32),
        jnp.full((batch, steps), pad, jnp.int32),
        jnp.zeros((batch, steps), jnp.float32),
        jnp.zeros((batch,), jnp.int32),
    )
    tok0, valid0, carry = step(0, session.last_hidden, carry0)

    def cond(c):
        t, _, _, _, _, _, inner = c
        return (t < steps) & ~jnp.all(inner[0])

    def body(c):
        t, cache, last, num_real, prev, prev_valid, inner = c
        cache, last, num_real, h = feed(cache, last, num_real, prev, prev_valid)
        tok, valid, inner = step(t, h, inner)
        return t + 1, cache, last, num_real, tok, valid, inner

    c = (jnp.int32(1), session.cache, session.last_hidden, session.num_real, tok0, valid0, carry)
    _, cache, last, num_real, prev, prev_valid, inner = jax.lax.while_loop(cond, body, c)
    # Feed the last drawn tokens too, so the session continues right after them.
    cache, last, num_real, _ = feed(cache, last, num_real, prev, prev_valid)
    _, finish, _, out_tok, out_lp, lengths = inner
    return (
        Session(cache=cache, last_hidden=last, num_real=num_real),
        out_tok,
        out_lp,
        lengths,
        finish,
    )


def generate(
    model: nnx.Module,
    session: Session,
    keys: jax.Array,
    cfg: SamplingConfig,
    *,
    steps: int,
    active: jax.Array | np.ndarray | None = None,
    stop_sequences: Sequence[Sequence[int]] = (),
    step_offset: int | jax.Array | np.ndarray = 0,
    limit: jax.Array | np.ndarray | None = None,
) -> tuple[Session, jax.Array, jax.Array, jax.Array, jax.Array]:
    """Sample up to ``steps`` tokens per row, continuing from the session (the sampler's decode
    loop: same temperature / top-k / top-p semantics and behaviour log-probs as
    :func:`~jaxrl_reason.rollout.sample`).

    Key schedule: the ``t``-th token of this call for row ``b`` is drawn with
    ``fold_in(keys[b], step_offset[b] + t)``, ``t = 0 .. steps - 1`` (``sample`` uses
    ``keys[b] = fold_in(prompt_key, sample_index)`` and offset 0). Continuing a row with the
    same key and ``step_offset`` = the number of tokens it already drew reproduces the draws
    of one long call; branches that must differ from their parent need other keys.

    A row stops right after emitting one of ``cfg.stop_token_ids`` (``None``: the model's
    ``eos_token_id``; ``()``: never) or after its last generated tokens equal one of
    ``stop_sequences`` (matched against the tokens generated in *this* call only). Every drawn
    token, the stop token included, is fed into the cache before returning, so the returned
    session continues right after the response; finished and inactive rows write masked slots.
    The call uses at most ``steps`` slots (fewer when every row stops early).

    Args:
      model: the session's model.
      session: a :class:`Session` with ``B`` rows and at least ``steps`` free slots.
      keys: ``key[B]`` one PRNG key per row (typed or raw ``uint32[B, 2]``).
      cfg: a :class:`~jaxrl_reason.rollout.SamplingConfig`; ``max_new_tokens`` and ``n`` are
        ignored (``steps`` and the session's rows decide).
      steps: static maximum number of tokens drawn per row (>= 1).
      active: ``bool[B]``; False rows draw nothing (length 0, ``finish = -1``) and their cache
        is unchanged except for masked slots. Default all True.
      stop_sequences: static tuple of non-empty token-id tuples.
      step_offset: ``int32[B]`` or a scalar (traced: no recompile) added to the step index
        in the key schedule; default 0.
      limit: optional ``int32[B]`` per-row cap on drawn tokens (traced); a row that reaches
        it finishes with ``FINISH_LENGTH``. Rows with ``limit <= 0`` are inactive.

    Returns:
      ``(session, tokens int32[B, steps], logprobs float32[B, steps], lengths int32[B],
      finish int32[B])``: ``tokens`` holds the pad id after a row finished; ``logprobs`` is
      ``log_softmax(logits / T)`` at each drawn token (0 after the end); ``lengths`` counts the
      drawn tokens (stop token included); ``finish`` is ``FINISH_STOP`` (0),
      ``FINISH_LENGTH`` (1), ``FINISH_STOP_SEQUENCE + i`` (2 + i) or ``FINISH_INACTIVE`` (-1).
    """
    steps = int(steps)
    if steps < 1:
        raise ValueError(f"session.generate: steps must be >= 1, got {steps}.")
    seqs = tuple(tuple(int(t) for t in s) for s in stop_sequences)
    if any(len(s) == 0 for s in seqs):
        raise ValueError("session.generate: stop_sequences must be non-empty token-id tuples.")
    batch = session.batch
    keys = _as_typed_keys(keys)
    if keys.shape != (batch,):
        raise ValueError(
            f"session.generate: keys must be one PRNG key per row, shape ({batch},), got "
            f"{keys.shape}."
        )
    active = jnp.ones((batch,), bool) if active is None else jnp.asarray(active).astype(bool)
    if active.shape != (batch,):
        raise ValueError(f"session.generate: active must be bool[{batch}], got {active.shape}.")
    offset = jnp.broadcast_to(jnp.asarray(step_offset, jnp.int32), (batch,))
    if limit is None:
        limit = jnp.full((batch,), steps, jnp.int32)
    else:
        limit = jnp.broadcast_to(jnp.asarray(limit, jnp.int32), (batch,))
        active = active & (limit > 0)
    _check_capacity(session, steps, "generate")
    mcfg = _model_config(model)
    stop_ids, pad_id = stop_and_pad_ids(cfg, mcfg)
    static = _GenStatic(
        steps=steps,
        top_k=int(cfg.top_k),
        greedy=bool(cfg.greedy),
        use_top_p=float(cfg.top_p) < 1.0,
        stop_token_ids=tuple(stop_ids),
        stop_sequences=seqs,
        pad_token_id=int(pad_id),
    )
    graphdef, state = nnx.split(model)
    return _generate(
        graphdef,
        state,
        session,
        keys,
        active,
        offset,
        limit,
        jnp.float32(1.0 if cfg.greedy else cfg.temperature),
        jnp.float32(cfg.top_p),
        # Per-layer weight buffers for the decode loop (SamplingConfig.decode_layers).
        model.per_layer_params() if unroll_decode_layers(cfg.decode_layers) else None,
        static=static,
    )
