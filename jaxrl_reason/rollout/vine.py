"""Monte Carlo vines: step values from continuations of each step prefix (VinePPO, SPO-chain).

Registered as ``rollout.strategy = "vine"``; its budget lives in ``config.rollout.vine``
(:class:`VineConfig`). One :meth:`VineStrategy.collect`:

1. **Responses.** ``n`` samples per prompt, exactly :func:`~jaxrl_reason.rollout.sample`'s
   (row ``b * n + j`` draws with ``fold_in(pk[b], j)``), decoded in one
   :mod:`~jaxrl_reason.rollout.session` that keeps every response in its KV cache.
2. **Steps.** ``segment_id`` by ``rollout.step_rule`` (``which = "all" | "every_k"``), or by
   SPO-chain's cut points (``which = "spo_cut"``: every ``interval``-th token with
   ``p = exp(old_logprob) < rho``, :func:`~jaxrl_reason.rollout.steps.spo_chain_segment_ids`).
   State ``s_k`` is the prompt plus the response before step ``k``; ``s_0`` is the prompt.
3. **Vines.** For each selected state, ``K`` continuations are sampled **from the response's
   KV cache**: the session row that holds the full response is forked, rewound to the
   state's last token and that token re-fed (one cache slot: never a re-prefill of prompt +
   prefix), then decoded for at most the remaining ``max_new_tokens - i`` tokens. All
   continuations of a batch are decoded together, in chunks of ``chunk_rows`` rows (the
   forked caches are the memory bound). The prompt state ``s_0`` is the same for the ``n``
   responses of a prompt, so its ``K`` continuations are drawn once per prompt and shared.
4. **Values.** Each continuation is verified with the task's verifier on
   ``decode(response prefix + continuation)`` (the score phase's ``correct``); ``V(s_k)``
   is the mean over its ``K`` continuations (VinePPO Sec. 4: ``V(s_k) = 1/K sum_m
   R(eta_m)``, ``eta_m ~ pi(. | s_k)``; truncated continuations score what the verifier
   gives them, 0 for an unfinished answer, as VinePPO's ``unfinished_response_penalty``).

Which states are estimated (``step_value_mask[b, k]`` True): state ``k`` of a response with
``S_b`` steps when ``k < min(S_b, vine.max_steps)`` and ``which`` selects it (``all``: every
one; ``every_k``: ``k % every == 0``; ``spo_cut``: every SPO segment start, ``s_0`` included).
The others hold ``step_values = 0`` and mask False; the estimators fill them with VinePPO's
rule ``V(s_k) = r_k + V(s_{k+1})`` from the trajectory's own outcome
(:func:`jaxrl_reason.credit.mc.fill_unestimated_values`), so an unestimated step gets
advantage 0 and the span's credit goes to the estimated step before it.

Key schedule (per-prompt keys ``pk = split(key, B)``): the state key of the prompt is
``sk = fold_in(fold_in(pk[b], VINE_SALT), 0)``; of response ``j`` after its first ``i > 0``
tokens, ``sk = fold_in(fold_in(fold_in(pk[b], VINE_SALT), 1 + j), i)`` (:func:`state_key`).
Continuation ``c`` of a state draws its token ``t`` with ``fold_in(fold_in(sk, c), t)``:
exactly ``sample(prompt + prefix, sk, n=K, max_new_tokens=R - i)``'s ``K`` samples.

Budget statistics (``last_stats``, logged as ``rollout/<name>``): ``leaves`` (training rows),
``continuations`` (rows decoded from states), ``continuation_tokens`` (their tokens),
``decoded_tokens`` (response + continuation tokens), ``states`` (estimated states) and the
time split ``time/rollout_main_s``, ``time/rollout_continuations_s``,
``time/rollout_verify_s``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_reason.parallel.host import to_host
from jaxrl_reason.rollout import session as ses
from jaxrl_reason.rollout.chat import decode_responses
from jaxrl_reason.rollout.continuations import continue_rows, sample_continuations
from jaxrl_reason.rollout.sampler import _prompt_keys, bucket_length
from jaxrl_reason.rollout.steps import spo_chain_segment_ids
from jaxrl_reason.rollout.strategies import RolloutStrategy, register_strategy
from jaxrl_reason.rollout.trajectories import Trajectories

__all__ = [
    "VINE_SALT",
    "WHICH",
    "VineConfig",
    "VineStrategy",
    "continue_rows",
    "selected_states",
    "state_key",
    "step_starts",
]

#: Offset of the vine key folds (away from sample indices and the tree's ``BRANCH_SALT``).
VINE_SALT = 1 << 21
#: Valid ``rollout.vine.which`` values.
WHICH = ("all", "every_k", "spo_cut")


@dataclasses.dataclass(frozen=True)
class VineConfig:
    """``config.rollout.vine``.

    Attributes:
      k: continuations per state (VinePPO: 9; SPO-chain: 9 on GSM8K, 4 on MATH).
      max_steps: states estimated per response, ``s_0 .. s_{max_steps - 1}``; later ones
        are filled by the estimator (module docstring).
      which: ``"all"`` (every step start), ``"every_k"`` (steps ``0, every, 2 every, ...``)
        or ``"spo_cut"`` (SPO-chain's cut points; ``segment_id`` becomes SPO's segments).
      every: the stride of ``"every_k"``.
      rho: SPO's probability threshold of a cut-point candidate (0.9).
      interval: SPO keeps every ``interval``-th candidate (``int5``: 5).
      chunk_rows: continuation rows decoded per call (bounds the forked KV caches' memory).
    """

    k: int = 4
    max_steps: int = 8
    which: str = "all"
    every: int = 2
    rho: float = 0.9
    interval: int = 5
    chunk_rows: int = 256

    @classmethod
    def from_mapping(cls, m: Mapping[str, Any] | None) -> VineConfig:
        """From ``config.rollout.vine`` (a dict or ConfigDict; missing keys: defaults)."""
        m = dict(m or {})
        cfg = cls(**{f.name: m[f.name] for f in dataclasses.fields(cls) if f.name in m})
        if cfg.which not in WHICH:
            raise ValueError(f"rollout.vine.which={cfg.which!r}; use one of {WHICH}")
        if min(cfg.k, cfg.max_steps, cfg.every, cfg.interval, cfg.chunk_rows) < 1:
            raise ValueError(
                "rollout.vine: k, max_steps, every, interval and chunk_rows must be >= 1"
            )
        return cfg


def state_key(prompt_key: jax.Array, j: int, position: int) -> jax.Array:
    """The key of a state: response ``j`` of the prompt after ``position`` response tokens
    (``position = 0``: the prompt, shared by the group). Continuation ``c`` uses
    ``fold_in(state_key, c)`` as its row key (the sampler's schedule)."""
    base = jax.random.fold_in(prompt_key, VINE_SALT)
    if position == 0:
        return jax.random.fold_in(base, 0)
    return jax.random.fold_in(jax.random.fold_in(base, 1 + j), position)


def step_starts(segment_id: np.ndarray) -> list[int]:
    """Response position of the first token of each step ``0 .. S_b - 1`` of one row
    (``segment_id int[R]``, consecutive ids, -1 on padding); step 0 starts at 0."""
    seg = np.asarray(segment_id)
    valid = seg[seg >= 0]
    if valid.size == 0:
        return []
    starts = [0]
    for k in range(1, int(valid.max()) + 1):
        pos = np.flatnonzero(seg == k)
        starts.append(int(pos[0]) if pos.size else starts[-1])
    return starts


def selected_states(num_steps: int, cfg: VineConfig) -> list[int]:
    """Indices ``k`` of the states estimated for a response with ``num_steps`` steps."""
    top = min(int(num_steps), cfg.max_steps)
    if cfg.which == "every_k":
        return [k for k in range(top) if k % cfg.every == 0]
    return list(range(top))


@register_strategy
class VineStrategy(RolloutStrategy):
    """Group samples plus Monte Carlo step values (module docstring).

    ``settings.options["vine"]`` is ``config.rollout.vine``; ``settings.sampling.n`` responses
    per prompt; ``settings.task.verify_batch`` scores the continuations. Fills
    ``step_values`` float32 ``[B, S]`` and ``step_value_mask`` bool ``[B, S]``
    (``S = rollout.max_steps``).
    """

    name = "vine"
    supplies = frozenset({"step_values", "step_value_mask"})

    def __init__(self, settings):
        super().__init__(settings)
        self.vine = VineConfig.from_mapping((settings.options or {}).get("vine"))
        #: The last collect's states ``[(prompt b, response j or -1, position i, value)]``
        #: (host), for tests and debugging.
        self.last_states: list[tuple[int, int, int, float]] = []

    @property
    def segments_follow_step_rule(self) -> bool:
        """False when ``segment_id`` holds SPO segments instead of ``rollout.step_rule``'s."""
        return self.vine.which != "spo_cut"

    def _segments(self, toks: np.ndarray, lps: np.ndarray, lens: np.ndarray) -> np.ndarray:
        if self.vine.which != "spo_cut":
            return self.segment_ids(toks, lens)
        S = int(self.settings.max_steps)
        out = np.full(toks.shape, -1, np.int32)
        for r, ln in enumerate(np.asarray(lens)):
            ln = int(ln)
            if ln:
                seg, _, _ = spo_chain_segment_ids(
                    np.exp(lps[r, :ln]), rho=self.vine.rho, interval=self.vine.interval
                )
                out[r, :ln] = np.minimum(seg, S - 1)
        return out

    def responses(self, policy, tb: np.ndarray, mb: np.ndarray, pk: jax.Array):
        """Decodes ``n`` responses per prompt into a session with room for continuations.

        Row ``b * n + j`` draws with ``fold_in(pk[b], j)`` (``sample(n)``'s rows). Returns
        ``(lib, tokens, logprobs, lengths, finish)``: ``lib`` is the
        :class:`~jaxrl_reason.rollout.session.Session` holding prompt + response of every row
        (``max_len = P + 2 R + 1``: one re-fed token and ``R`` continuation tokens fit after
        the responses); the rest are NumPy arrays as :func:`session.generate` returns them.
        """
        cfg = self.settings.sampling
        n, R, B = int(cfg.n), int(cfg.max_new_tokens), tb.shape[0]
        s0 = ses.start(policy, tb, mb, max_len=tb.shape[1] + 2 * R + 1)
        lib = ses.fork(s0, np.repeat(np.arange(B), n))
        keys = ses.fold_keys(jnp.repeat(pk, n, axis=0), np.tile(np.arange(n), B))
        lib, toks, lps, lens, fin = ses.generate(policy, lib, keys, cfg, steps=R)
        return (lib, *(to_host(x) for x in (toks, lps, lens, fin)))

    def padded_prompts(self, examples) -> tuple[np.ndarray, ...]:
        """``(tokens, mask, tb, mb)``: the prompts and their copy left-padded to the
        sampler's bucket width (fewer compiled shapes)."""
        s = self.settings
        tokens, mask = self.prompt_batch(examples)
        width = bucket_length(tokens.shape[1], s.sampling.prompt_bucket)
        pad = s.tokenizer.pad_token_id if s.tokenizer.pad_token_id is not None else 0
        extra = width - tokens.shape[1]
        B = tokens.shape[0]
        tb = np.concatenate([np.full((B, extra), pad, np.int32), tokens], 1)
        mb = np.concatenate([np.zeros((B, extra), bool), mask], 1)
        return tokens, mask, tb, mb

    def collect(self, policy, examples, key) -> Trajectories:
        s, vc = self.settings, self.vine
        cfg = s.sampling
        n, R, K, S = int(cfg.n), int(cfg.max_new_tokens), vc.k, int(s.max_steps)
        tokens, mask, tb, mb = self.padded_prompts(examples)
        B = tokens.shape[0]
        plen = mb.sum(1)
        pk = _prompt_keys(key, B)

        # 1. the responses (sample(n)'s draws), kept in the library session's cache
        t0 = time.perf_counter()
        lib, toks, lps, lens, fin = self.responses(policy, tb, mb, pk)
        resp = np.arange(R)[None, :] < lens[:, None]
        lps = np.where(resp, lps, 0.0).astype(np.float32)
        seg = self._segments(toks, lps, lens)
        t_main = time.perf_counter() - t0

        # 2. the states: (prompt, response j or -1, position, training rows it fills, step)
        states: list[tuple[int, int, int]] = []
        fills: list[list[tuple[int, int]]] = []
        for b in range(B):
            if any(lens[b * n + j] > 0 for j in range(n)):
                states.append((b, -1, 0))
                fills.append([(b * n + j, 0) for j in range(n) if lens[b * n + j] > 0])
            for j in range(n):
                r = b * n + j
                starts = step_starts(seg[r])
                for k in selected_states(len(starts), vc):
                    if k > 0:
                        states.append((b, j, starts[k]))
                        fills.append([(r, k)])

        # 3.-4. K continuations per state, every state of the batch decoded together, then
        # prefix + continuation verified; V(state) = mean over its K continuations
        def verify(state_of, seqs):
            texts = decode_responses(
                s.tokenizer, [np.asarray(q, np.int32) for q in seqs], [len(q) for q in seqs]
            )
            return s.task.verify_batch(texts, [examples[states[m][0]] for m in state_of])

        cont = sample_continuations(
            policy,
            lib,
            cfg,
            src=[b * n + max(j, 0) for b, j, _ in states],
            num_real=[plen[b] + i - 1 for b, _, i in states],
            feed=[toks[b * n + max(j, 0), i - 1] if i > 0 else tb[b, -1] for b, j, i in states],
            state_keys=[state_key(pk[b], j, i) for b, j, i in states],
            limit=[R - i for _, _, i in states],
            prefixes=[toks[b * n + max(j, 0), :i].tolist() for b, j, i in states],
            k=K,
            steps=R,
            score_fn=verify,
            chunk_rows=vc.chunk_rows,
        )
        values = np.zeros((B * n, S), np.float32)
        known = np.zeros((B * n, S), bool)
        v = cont.scores.mean(-1)
        self.last_states = []
        for si, (b, j, i) in enumerate(states):
            self.last_states.append((b, j, i, float(v[si])))
            for r, k in fills[si]:
                values[r, k], known[r, k] = v[si], True
        t_cont, t_verify = cont.decode_s, cont.score_s

        cont_tokens = float(cont.lengths.sum())
        self.last_stats = {
            "leaves": float(B * n),
            "states": float(len(states)),
            "continuations": float(len(states) * K),
            "continuation_tokens": cont_tokens,
            "decoded_tokens": float(lens.sum()) + cont_tokens,
            "time/rollout_main_s": t_main,
            "time/rollout_continuations_s": t_cont,
            "time/rollout_verify_s": t_verify,
        }
        return Trajectories(
            prompt_tokens=np.repeat(tokens, n, axis=0).astype(np.int32),
            prompt_mask=np.repeat(mask, n, axis=0).astype(bool),
            tokens=toks.astype(np.int32),
            attention_mask=resp,
            loss_mask=resp.astype(np.float32),
            old_logprobs=lps,
            group_id=np.repeat(np.arange(B, dtype=np.int32), n),
            segment_id=seg,
            lengths=lens.astype(np.int32),
            finish_reason=fin.astype(np.int32),
            step_values=values,
            step_value_mask=known,
        )
