"""The policy side of a search on KV-cache sessions (:mod:`jaxrl_reason.rollout.session`).

:class:`SessionExpander` prefills every problem's chat prompt once (:meth:`roots`), and each
:meth:`expand` forks its handles' cache rows ``k`` times and decodes one step (until a token
whose text holds a newline, the task's step boundary for ``arith_chain`` and the line-based
step rules, or an end-of-turn token) or the rest of the response. A child continues from its
own rows, so a prefix shared by many nodes is decoded once and never re-prefilled.

Slots. A session's cache index is shared by its rows and only grows (every ``generate`` uses
up to ``steps`` slots for all rows), so a deep or long search eventually fills the cache; the
expander then *compacts*: it re-prefills the handles' prompt + response tokens into a fresh
session (counted in ``stats["prefills"]``). With the default ``slots`` a beam search of depth
``max_new_tokens / step_tokens`` compacts rarely.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from jaxrl_reason.rollout import session as ses
from jaxrl_reason.rollout.chat import chat_prompt_ids, newline_token_ids
from jaxrl_reason.rollout.sampler import SamplingConfig, left_pad
from jaxrl_reason.search.core import Child

__all__ = ["SessionExpander", "newline_token_ids"]


@dataclasses.dataclass(frozen=True, eq=False)
class _Handle:
    session: ses.Session  # holds the cache alive while any node refers to it
    row: int
    problem: int
    response: tuple[int, ...]


def _pow2(n: int, lo: int = 1) -> int:
    return max(lo, 1 << max(0, (int(n) - 1).bit_length()))


class SessionExpander:
    """An :class:`~jaxrl_reason.search.Expander` that decodes with ``model`` on sessions.

    Args:
      model: a ``jaxrl_reason.models.Transformer``.
      tokenizer: its tokenizer (chat template, decoding, the newline ids).
      task: builds the chat prompts (``task.build_prompt``).
      sampling: temperature / top-k / top-p (``greedy`` for deterministic expansions);
        ``stop_token_ids`` are the end-of-turn ids (None: the model's EOS).
      max_new_tokens: the response budget; a node that reaches it is finished.
      step_tokens: most tokens one step may take (a longer step is cut there; it still
        counts as one step).
      slots: cache slots reserved beyond ``prompt + 2 * max_new_tokens`` (default
        ``4 * step_tokens``, at least 16).
      row_bucket: decode batches are padded to a power of two >= this many rows (inactive
        rows), so a search compiles a handful of shapes, not one per batch size.

    ``stats``: ``prefills`` (session starts, compactions included), ``calls`` (decodes),
    ``tokens`` (drawn tokens, padding rows excluded).
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        task: Any,
        *,
        sampling: SamplingConfig,
        max_new_tokens: int,
        step_tokens: int = 32,
        slots: int | None = None,
        row_bucket: int = 8,
    ):
        self.model, self.tokenizer, self.task = model, tokenizer, task
        mcfg = getattr(model, "config", None) or getattr(model, "cfg", None)
        eos = sampling.stop_token_ids
        if eos is None:
            eos = (int(mcfg.eos_token_id),)
        self.eos_ids = tuple(int(i) for i in eos)
        self.step_ids = tuple(sorted(set(self.eos_ids) | set(newline_token_ids(tokenizer))))
        self.sampling = sampling
        self.max_new_tokens = int(max_new_tokens)
        self.step_tokens = int(min(step_tokens, max_new_tokens))
        self.slots = max(16, int(4 * self.step_tokens if slots is None else slots))
        self.row_bucket = int(row_bucket)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.prompts: list[list[int]] = []
        self.max_len = 0
        self.stats = {"prefills": 0, "calls": 0, "tokens": 0}

    # -- sessions ------------------------------------------------------------------------------

    def _start(self, seqs: list[list[int]]) -> ses.Session:
        rows = _pow2(len(seqs), self.row_bucket)
        seqs = seqs + [seqs[0]] * (rows - len(seqs))
        # Compactions hold prompt + response: a fine bucket keeps them inside max_len.
        width = -(-max(len(s) for s in seqs) // 16) * 16
        tokens, mask = left_pad(seqs, self.pad_id, length=width)
        self.stats["prefills"] += 1
        return ses.start(self.model, tokens, mask, max_len=self.max_len)

    def roots(self, problems: Sequence[Any]) -> list[_Handle]:
        """Prefills the problems' chat prompts into one session (one handle per problem)."""
        self.prompts = chat_prompt_ids(self.tokenizer, self.task, problems)
        width = -(-max(len(p) for p in self.prompts) // 16) * 16
        self.max_len = width + 2 * self.max_new_tokens + self.slots
        s = self._start([list(p) for p in self.prompts])
        return [_Handle(s, i, i, ()) for i in range(len(problems))]

    def _gather(self, handles: Sequence[_Handle], rows: int, need: int) -> ses.Session:
        """A session whose row ``i`` continues ``handles[i]`` (padded to ``rows``), with at
        least ``need`` free slots (compacting when the source caches are too full)."""
        if min(ses.capacity(h.session) for h in handles) >= need:
            groups: dict[int, list[int]] = {}
            srcs: dict[int, ses.Session] = {}
            for i, h in enumerate(handles):
                groups.setdefault(id(h.session), []).append(i)
                srcs[id(h.session)] = h.session
            parts, order = [], []
            for sid, idx in groups.items():
                parts.append(ses.fork(srcs[sid], [handles[i].row for i in idx]))
                order.extend(idx)
            s = parts[0] if len(parts) == 1 else ses.concat(parts)
            if ses.capacity(s) >= need:
                perm = np.argsort(np.asarray(order))
                pad = [int(perm[0])] * (rows - len(handles))
                return ses.fork(s, np.concatenate([perm, np.asarray(pad, np.int64)]))
        seqs = [list(self.prompts[h.problem]) + list(h.response) for h in handles]
        return self._start(seqs + [seqs[0]] * (rows - len(seqs)))

    # -- expansion -----------------------------------------------------------------------------

    def expand(
        self,
        handles: Sequence[_Handle],
        k: int,
        key: jax.Array,
        *,
        to_end: bool | Sequence[bool] = False,
    ) -> list[list[Child]]:
        """``k`` continuations per handle, decoded in one batch (see the module docstring).

        Row ``j`` of the batch (handle ``j // k``, sample ``j % k``) draws with
        ``fold_in(key, j)``. ``to_end`` may be one flag or one per handle; a batch that mixes
        both decodes once with the step stop ids and continues its ``to_end`` rows to the end
        in a second call.
        """
        if not handles:
            return []
        flags = [bool(to_end)] * len(handles) if isinstance(to_end, bool) else list(to_end)
        if len(set(flags)) > 1:  # split: keep the output order
            out: list[list[Child]] = [[] for _ in handles]
            for flag in (False, True):
                idx = [i for i, f in enumerate(flags) if f == flag]
                res = self.expand(
                    [handles[i] for i in idx], k, jax.random.fold_in(key, int(flag)), to_end=flag
                )
                for i, r in zip(idx, res, strict=True):
                    out[i] = r
            return out
        end = flags[0]
        rep = [h for h in handles for _ in range(k)]
        n = len(rep)
        rows = _pow2(n, self.row_bucket)
        steps = self.max_new_tokens if end else self.step_tokens
        used = np.asarray([len(h.response) for h in rep] + [0] * (rows - n), np.int32)
        limit = np.minimum(self.max_new_tokens - used, steps)
        limit[n:] = 0
        s = self._gather(rep, rows, steps)
        cfg = dataclasses.replace(
            self.sampling, stop_token_ids=self.eos_ids if end else self.step_ids
        )
        keys = jax.vmap(lambda j: jax.random.fold_in(key, j))(np.arange(rows, dtype=np.uint32))
        s, toks, _, lens, _ = ses.generate(self.model, s, keys, cfg, steps=steps, limit=limit)
        toks, lens = np.asarray(toks), np.asarray(lens)
        self.stats["calls"] += 1
        out = [[] for _ in handles]
        for j, h in enumerate(rep):
            new = toks[j, : int(lens[j])].tolist()
            self.stats["tokens"] += len(new)
            resp = h.response + tuple(new)
            full = self.tokenizer.decode(list(resp), skip_special_tokens=True)
            prev = self.tokenizer.decode(list(h.response), skip_special_tokens=True)
            text = (
                full[len(prev) :]
                if full.startswith(prev)
                else self.tokenizer.decode(new, skip_special_tokens=True)
            )
            fin = (
                end
                or len(resp) >= self.max_new_tokens
                or (bool(new) and new[-1] in self.eos_ids)
                or not new
            )
            out[j // k].append(Child(text, len(new), bool(fin), _Handle(s, j, h.problem, resp)))
        return out
