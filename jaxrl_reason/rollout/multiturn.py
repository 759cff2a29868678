"""Multi-turn environment rollouts: the ``env`` strategy (tool calls, search, observations).

One episode per row: the policy writes an action, the environment
(:mod:`jaxrl_reason.envs`) answers with an observation, and so on until the episode ends
(a final answer, ``max_turns`` actions, or the response budget). Decoding continues from
one :class:`~jaxrl_reason.rollout.session.Session` per batch: the chat prompt is prefilled
once (and forked to the ``n`` episodes of each prompt), every action is decoded from the
KV cache, every observation is teacher-forced into it (:func:`session.extend`); the history
is never prefilled again.

Episode layout in :class:`~jaxrl_reason.rollout.trajectories.Trajectories` (one row per
episode, Search-R1's ``info_mask`` layout; ``R = rollout.max_new_tokens`` is the episode's
total response budget, actions and observations together)::

    prompt_tokens   [system + user chat prompt, left-padded]          (prefilled once)
    tokens          a_0 ... | o_0 ... | a_1 ... | o_1 ... | a_T-1 ... | pad
    attention_mask  1 ..... | 1 ..... | 1 ..... | 1 ..... | 1 .....   | 0
    loss_mask       1 ..... | 0 ..... | 1 ..... | 0 ..... | 1 .....   | 0
    old_logprobs    lp .... | 0 ..... | lp .... | 0 ..... | lp ....   | 0
    segment_id      0 ..... | 0 ..... | 1 ..... | 1 ..... | T-1 ...   | -1

* An action is the sampled token ids as drawn (token-in / token-out, nothing re-tokenized),
  up to and including the token that closes a tool tag (``</search>``, ``</answer>``, ...;
  matched on device as token-id stop sequences, :func:`closing_tag_sequences`), an
  end-of-turn token, or the turn budget ``rollout.env.max_turn_tokens``.
* An observation is the environment's text (``"\\n<information>\\n...\\n</information>\\n"``)
  tokenized and cut to ``rollout.env.max_obs_tokens``; it is part of the assistant's
  running text (no chat-role tokens), as in Search-R1. Observation tokens belong to the turn
  whose action they answer (``segment_id`` of the action before them): turn ``k`` is
  ``a_k o_k``, the segment the agent estimators (``credit.agents``) broadcast turn ``k``'s
  advantage over; the loss mask keeps it off the observation tokens.
* ``anchor_ids[b, k]``: GiGPO's anchor state of action ``k``, a dense id of
  :func:`jaxrl_reason.envs.anchor_key` of the observation it was taken in (the prompt for
  ``k = 0``); equal observations in a batch share an id. ``turn_mask[b, k]``: turn ``k``
  happened. ``answer_probs[b, k]`` (IGPO, only when requested): the policy's probability of
  the gold answer given the prompt and turns ``0 .. k-1`` (column 0: the prompt alone),
  ``exp(mean log p(answer tokens))`` teacher-forced after ``"<answer>"``.
* ``group_id`` = prompt index (``n = rollout.n_samples`` episodes per prompt), ``lengths`` =
  real tokens, ``finish_reason`` 0 when the environment ended the episode (an answer), 1 when
  ``max_turns`` or the budget did.

The reward is the environment's verifier on the final answer: the strategy exposes each row's
answer text as :attr:`EnvStrategy.last_answers`, which the trainer's score phase verifies
instead of the whole transcript (observations may contain anything, e.g. a printed
``<answer>``). :attr:`EnvStrategy.last_stats` holds per-batch metrics (``env/*``) and
:attr:`EnvStrategy.last_transcripts` each episode's text with ``<obs>...</obs>`` around
observations.

Randomness: turn ``k`` of row ``b * n + j`` is drawn exactly like
``sample(n=1)`` with the prompt key ``fold_in(fold_in(prompt_key[b], j), k)`` on the full
history (``tests/rollout/test_multiturn.py`` checks this against re-prefilled sampling).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import time
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxrl_reason.parallel.host import to_host
from jaxrl_reason.rollout import session as session_lib
from jaxrl_reason.rollout.sampler import _prompt_keys, bucket_length, left_pad
from jaxrl_reason.rollout.strategies import RolloutStrategy, register_strategy
from jaxrl_reason.rollout.trajectories import Trajectories

__all__ = [
    "ENV_NAMES",
    "EnvOptions",
    "EnvStrategy",
    "answer_token_ids",
    "closing_tag_sequences",
    "make_env",
]

#: ``rollout.env.name`` values.
ENV_NAMES = ("search", "tool")


@dataclasses.dataclass(frozen=True)
class EnvOptions:
    """``config.rollout.env`` (see ``experiments/configs/common.py``).

    Attributes:
      name: ``"search"`` (:class:`jaxrl_reason.envs.SearchEnv`, BM25 over the task's world)
        or ``"tool"`` (:class:`jaxrl_reason.envs.ToolEnv`).
      max_turns: actions per episode (the environment's ``max_turns``); ``<= rollout.max_steps``.
      max_turn_tokens: tokens one action may take (the decode budget of one turn).
      max_obs_tokens: an observation is cut to this many tokens.
      tools: the tool env's tools (``"calculator"``, ``"python"``).
      k: passages per search. corpus_path: a JSONL corpus (``""``: the task's own world).
      cache_dir: where the search env writes its corpus and BM25 index (``""``: temp dir).
      invalid_action: ``"retry"`` (an error observation) or ``"finish"``.
      answer_probs: compute ``Trajectories.answer_probs`` (IGPO); the trainer sets it when
        the estimator reads the field.
      branch_turn: ``>= 0``: tree search over agent steps (Tree-GRPO, arXiv 2509.21240;
        TreePS-RAG): ``n / branches`` root episodes per prompt run turns ``0..branch_turn``
        (action and observation), then each forks its KV cache into ``branches`` episodes
        that continue with their own keys; ``Trajectories.tree_id`` names each row's root.
        ``-1``: independent episodes.
      branches: children per root at ``branch_turn`` (``>= 2`` when branching).
    """

    name: str = "search"
    max_turns: int = 4
    max_turn_tokens: int = 64
    max_obs_tokens: int = 128
    tools: tuple[str, ...] = ("calculator",)
    k: int = 3
    corpus_path: str = ""
    cache_dir: str = ""
    invalid_action: str = "retry"
    answer_probs: bool = False
    branch_turn: int = -1
    branches: int = 1

    @classmethod
    def from_mapping(cls, m: Mapping[str, Any] | None) -> EnvOptions:
        m = dict(m or {})
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in m.items() if k in names}
        if "tools" in kw:
            kw["tools"] = tuple(kw["tools"])
        return cls(**kw)


def make_env(task: Any, opts: EnvOptions, tokenizer: Any = None) -> Any:
    """The environment named by ``opts.name`` around ``task``."""
    from jaxrl_reason import envs

    common = {"max_turns": int(opts.max_turns), "invalid_action": opts.invalid_action}
    if opts.name == "search":
        retriever = None
        if opts.corpus_path:
            retriever = envs.BM25Retriever(opts.corpus_path, cache_dir=opts.cache_dir or None)
        return envs.SearchEnv(
            task, retriever, k=int(opts.k), cache_dir=opts.cache_dir or None, **common
        )
    if opts.name == "tool":
        return envs.ToolEnv(task, tools=tuple(opts.tools), **common)
    raise ValueError(f"rollout.env.name={opts.name!r}; use one of {ENV_NAMES}")


def closing_tag_sequences(
    tokenizer: Any, stop_strings: Sequence[str]
) -> tuple[tuple[int, ...], ...]:
    """Token-id sequences that end each stop string, as a sampled action may spell them.

    A closing tag ``</tag>`` tokenizes as ``[open, *middle, close]`` (SmolLM2: ``'</'``,
    ``'search'``, ``'>'``), but in context the BPE merges its ends with the neighbouring
    text: after a space the opening piece is ``' </'``, and the closing ``'>'`` can be drawn
    as ``'>.'``, ``'>,'`` ... So every vocabulary token whose text *ends with* the first
    piece's text is an opening variant, every token whose text *starts with* the last piece's
    text a closing variant, and the stop sequences are all ``[open', *middle, close']``. A tag
    spelled some other way (rare, non-canonical splits) is not caught on device: the action
    then runs to an end-of-turn token or the turn budget and the environment still parses the
    first complete tag in it (the text after it is part of the trained action).
    """
    vocab = tokenizer.get_vocab()
    texts = {i: tokenizer.convert_tokens_to_string([t]) for t, i in vocab.items()}
    out: list[tuple[int, ...]] = []
    for s in stop_strings:
        ids = tokenizer.encode(s, add_special_tokens=False)
        if len(ids) < 2:
            out.append(tuple(ids))
            continue
        first, last = tokenizer.decode([ids[0]]), tokenizer.decode([ids[-1]])
        opens = sorted(i for i, t in texts.items() if t.endswith(first) and len(t) <= 4)
        closes = sorted(i for i, t in texts.items() if t.startswith(last) and len(t) <= 4)
        for o in opens or [ids[0]]:
            for c in closes or [ids[-1]]:
                out.append((int(o), *map(int, ids[1:-1]), int(c)))
    return tuple(dict.fromkeys(out))


def answer_token_ids(
    tokenizer: Any, answer: str, tag: str = "answer"
) -> tuple[list[int], list[int]]:
    """``(prefix_ids, answer_ids)``: ``"<tag>"`` and the gold answer's tokens as they follow
    it in ``"<tag> {answer}"`` (the answer's own tokens are the ones IGPO scores)."""
    prefix = tokenizer.encode(f"<{tag}>", add_special_tokens=False)
    full = tokenizer.encode(f"<{tag}> {answer}", add_special_tokens=False)
    if full[: len(prefix)] == prefix and len(full) > len(prefix):
        return list(prefix), list(full[len(prefix) :])
    return list(prefix), list(tokenizer.encode(f" {answer}", add_special_tokens=False))


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _answer_logprob(graphdef, state, seq, mask, pos, labels, label_mask):
    """Mean log-prob of ``labels [Q, A]`` read from the hidden states at ``pos [Q, A]``."""
    from jaxrl_reason import kernels

    model = nnx.merge(graphdef, state)
    hidden = model(seq, attention_mask=mask, return_hidden=True)
    h = jnp.take_along_axis(hidden, pos[..., None], axis=1)
    lp, _ = kernels.token_logprob(h, model.lm_head_weight(), labels)
    m = label_mask.astype(jnp.float32)
    return (lp * m).sum(-1) / jnp.maximum(m.sum(-1), 1.0)


def answer_probabilities(
    model: Any,
    prompt_tokens: np.ndarray,
    prompt_mask: np.ndarray,
    tokens: np.ndarray,
    turn_starts: Sequence[Sequence[int]],
    answers: Sequence[Sequence[int]],
    num_steps: int,
    prefixes: Sequence[Sequence[int]] | None = None,
) -> np.ndarray:
    """IGPO's ``p_k`` for every row and turn: ``float32[B, S]`` (0 where no turn).

    Query ``(b, k)`` teacher-forces ``prompt + tokens[b, :turn_starts[b][k]] + prefixes[b] +
    answers[b]`` in one batched forward (fixed shape ``[Q, P + R + A]``: the response prefix
    is masked past the turn start, so the forced tokens take the positions right after it)
    and ``p_k = exp(mean_j log p(answers[b][j] | ...))`` over the answer tokens only
    (geometric mean, IGPO's definition; the ``"<answer>"`` prefix is context), under the
    policy at temperature 1 with :func:`jaxrl_reason.kernels.token_logprob`.
    """
    b, p = prompt_tokens.shape
    r = tokens.shape[1]
    prefixes = prefixes if prefixes is not None else [[] for _ in answers]
    forced_all = [list(pf) + list(an) for pf, an in zip(prefixes, answers, strict=True)]
    a = max(1, max((len(x) for x in forced_all), default=1))
    queries = [(i, k, int(s)) for i, starts in enumerate(turn_starts) for k, s in enumerate(starts)]
    out = np.zeros((b, num_steps), np.float32)
    if not queries:
        return out
    q = -(-len(queries) // b) * b  # pad to a multiple of B: few distinct shapes
    seq = np.zeros((q, p + r + a), np.int32)
    mask = np.zeros((q, p + r + a), bool)
    pos = np.zeros((q, a), np.int32)
    labels = np.zeros((q, a), np.int32)
    lmask = np.zeros((q, a), bool)
    for j, (i, _, s) in enumerate(queries):
        ans = forced_all[i]
        seq[j, :p], mask[j, :p] = prompt_tokens[i], prompt_mask[i]
        seq[j, p : p + r], mask[j, p : p + s] = tokens[i], True
        seq[j, p + r : p + r + len(ans)] = ans
        mask[j, p + r : p + r + len(ans)] = True
        labels[j, : len(ans)] = ans
        lmask[j, len(prefixes[i]) : len(ans)] = True
        pos[j, 0] = p + s - 1  # the last real token before the answer (prompt's last column)
        pos[j, 1:] = p + r + np.arange(a - 1)
    graphdef, state = nnx.split(model)
    mean_lp = to_host(_answer_logprob(graphdef, state, seq, mask, pos, labels, lmask)).astype(
        np.float32
    )
    for j, (i, k, _) in enumerate(queries):
        if k < num_steps:
            out[i, k] = float(np.exp(mean_lp[j]))
    return out


@dataclasses.dataclass
class _Episode:
    tokens: list[int] = dataclasses.field(default_factory=list)
    logprobs: list[float] = dataclasses.field(default_factory=list)
    policy: list[bool] = dataclasses.field(default_factory=list)
    segment: list[int] = dataclasses.field(default_factory=list)
    turn_starts: list[int] = dataclasses.field(default_factory=list)
    obs_spans: list[tuple[int, int]] = dataclasses.field(default_factory=list)
    budget_cut: bool = False

    def add(self, ids, lps, policy: bool, turn: int) -> None:
        self.tokens.extend(int(t) for t in ids)
        self.logprobs.extend(float(x) for x in lps)
        self.policy.extend([policy] * len(ids))
        self.segment.extend([turn] * len(ids))


@register_strategy
class EnvStrategy(RolloutStrategy):
    """Multi-turn episodes in an environment (module docstring: loop, layout, keys).

    ``settings.options["env"]``: :class:`EnvOptions` fields (``config.rollout.env``);
    ``settings.options["answer_probs"]``: also compute ``answer_probs`` (IGPO);
    ``settings.options["env_object"]``: an already built environment (tests, custom envs).
    ``settings.sampling.max_new_tokens`` is the episode's total response budget ``R``.
    """

    name = "env"
    # tree_id only with rollout.env.branch_turn >= 0 (config validation checks it).
    supplies = frozenset({"anchor_ids", "turn_mask", "answer_probs", "tree_id"})

    def __init__(self, settings):
        super().__init__(settings)
        opts = dict(settings.options.get("env", {}) or {})
        if "answer_probs" in settings.options:
            opts["answer_probs"] = bool(settings.options["answer_probs"])
        self.opts = EnvOptions.from_mapping(opts)
        env = settings.options.get("env_object")
        self.env = (
            env if env is not None else make_env(settings.task, self.opts, settings.tokenizer)
        )
        self.stop_sequences = closing_tag_sequences(settings.tokenizer, self.env.stop_strings)
        self.last_stats: dict[str, float] = {}
        self.last_answers: list[str] = []
        self.last_transcripts: list[str] = []

    # -- helpers -----------------------------------------------------------------------------

    def _prompt_ids(self, examples) -> list[list[int]]:
        tok = self.settings.tokenizer
        out = []
        for ex in examples:
            ids = tok.apply_chat_template(
                self.env.build_prompt(ex), add_generation_prompt=True, tokenize=True
            )
            if isinstance(ids, dict) or hasattr(ids, "input_ids"):
                ids = ids["input_ids"]
            out.append(list(ids))
        return out

    def _pad_id(self) -> int:
        pad = self.settings.tokenizer.pad_token_id
        return int(pad) if pad is not None else 0

    @staticmethod
    def row_keys(key: jax.Array, num_prompts: int, n: int) -> jax.Array:
        """``key[B * n]``: ``fold_in(prompt_key[b], j)`` for row ``b * n + j`` (as ``sample``)."""
        pk = _prompt_keys(key, num_prompts)
        j = jnp.tile(jnp.arange(n, dtype=jnp.uint32), num_prompts)
        return session_lib.fold_keys(jnp.repeat(pk, n, axis=0), j)

    @staticmethod
    def turn_keys(row_keys: jax.Array, turn: int) -> jax.Array:
        """Keys of turn ``turn``: ``fold_in(fold_in(row_key, turn), 0)``, i.e. ``sample(n=1)``
        with the prompt key ``fold_in(row_key, turn)``."""
        f = jax.vmap(jax.random.fold_in, in_axes=(0, None))
        return f(f(row_keys, turn), 0)

    # -- the rollout -------------------------------------------------------------------------

    def collect(self, policy, examples, key) -> Trajectories:
        s, o, env, tok = self.settings, self.opts, self.env, self.settings.tokenizer
        n, budget, num_steps = int(s.sampling.n), int(s.sampling.max_new_tokens), int(s.max_steps)
        b0 = len(examples)
        branching = int(o.branch_turn) >= 0 and int(o.branches) > 1
        fan = int(o.branches) if branching else 1
        if n % fan:
            raise ValueError(
                f"rollout.n_samples={n} must be a multiple of rollout.env.branches={fan}"
            )
        m_roots = n // fan  # episodes per prompt before the branch turn
        b = b0 * m_roots
        pad = self._pad_id()
        ids = self._prompt_ids(examples)
        width = bucket_length(max(len(x) for x in ids), s.sampling.prompt_bucket)
        ptok, pmask = left_pad(ids, pad, length=width)
        steps = max(1, min(int(o.max_turn_tokens), budget))
        obs_cap = max(1, min(int(o.max_obs_tokens), budget))
        max_turns = int(env.max_turns)
        max_len = width + max_turns * steps + max(0, max_turns - 1) * obs_cap
        sess = session_lib.start(policy, ptok, pmask, max_len=max_len)
        rows = np.repeat(np.arange(b0), m_roots)
        if m_roots > 1:
            sess = session_lib.fork(sess, rows)
        rkeys = self.row_keys(key, b0, m_roots)
        tree = np.arange(b)  # the root episode of each row
        states = env.reset([examples[i] for i in rows])
        eps = [_Episode() for _ in range(b)]
        tool_errors = np.zeros(b)
        cfg = dataclasses.replace(s.sampling, n=1)
        self._tool_s = 0.0  # host time inside env.step (tools, retrieval, parsing)
        for turn in range(max_turns):
            active = np.array([not st.done for st in states])
            if not active.any():
                break
            sess, gtok, glp, glen, _ = session_lib.generate(
                policy,
                sess,
                self.turn_keys(rkeys, turn),
                cfg,
                steps=steps,
                active=active,
                stop_sequences=self.stop_sequences,
            )
            gtok, glp, glen = to_host(gtok), to_host(glp), to_host(glen)
            actions = [""] * b
            for i in np.flatnonzero(active):
                ep = eps[i]
                keep = min(int(glen[i]), budget - len(ep.tokens))
                ep.turn_starts.append(len(ep.tokens))
                ep.add(gtok[i, :keep], glp[i, :keep], True, turn)
                ep.budget_cut = keep < int(glen[i]) or len(ep.tokens) >= budget
                actions[i] = tok.decode(gtok[i, :keep].tolist(), skip_special_tokens=True)
            t_env = time.perf_counter()
            res = env.step(states, actions)
            self._tool_s += time.perf_counter() - t_env
            obs_ids = [[] for _ in range(b)]
            for i in np.flatnonzero(active):
                st, ep = states[i], eps[i]
                tool_errors[i] += bool(res.infos[i].get("error"))
                text = res.observations[i]
                if text is None:
                    continue
                room = budget - len(ep.tokens)
                ids_i = tok.encode(text, add_special_tokens=False)[:obs_cap]
                if ep.budget_cut or room <= len(ids_i):
                    # No room for another action: the episode ends here (truncated).
                    ids_i = ids_i[: max(room, 0)]
                    st.done = st.truncated = True
                    st.reward = 0.0
                    ep.budget_cut = True
                start = len(ep.tokens)
                ep.add(ids_i, [0.0] * len(ids_i), False, turn)
                ep.obs_spans.append((start, len(ep.tokens)))
                if not st.done:
                    obs_ids[i] = ids_i
            if any(obs_ids) and turn + 1 < max_turns:
                w = max(len(x) for x in obs_ids)
                otok = np.full((b, w), pad, np.int32)
                omask = np.zeros((b, w), bool)
                for i, x in enumerate(obs_ids):
                    otok[i, : len(x)], omask[i, : len(x)] = x, True
                sess = session_lib.extend(policy, sess, otok, omask)
            if branching and turn == int(o.branch_turn):
                # Tree-GRPO's expansion at a turn boundary: every root's cache rows, episode
                # state and transcript are copied to its children, which then draw their own
                # actions (branch j of a row folds j into the row's key).
                idx = np.repeat(np.arange(b), fan)
                sess = session_lib.fork(sess, idx)
                states = [copy.deepcopy(states[i]) for i in idx]
                eps = [copy.deepcopy(eps[i]) for i in idx]
                tool_errors, rows, tree = tool_errors[idx], rows[idx], tree[idx]
                j = jnp.tile(jnp.arange(fan, dtype=jnp.uint32), b)
                rkeys = session_lib.fold_keys(rkeys[idx], j)
                b = b * fan
        traj = self._assemble(
            ptok, pmask, rows, states, eps, tool_errors, budget, num_steps, policy
        )
        if not branching:
            return traj
        return traj.replace(tree_id=tree.astype(np.int32))

    def _assemble(self, ptok, pmask, rows, states, eps, tool_errors, budget, num_steps, policy):
        tok = self.settings.tokenizer
        b = len(eps)
        pad = self._pad_id()
        tokens = np.full((b, budget), pad, np.int32)
        attn = np.zeros((b, budget), bool)
        loss = np.zeros((b, budget), np.float32)
        lps = np.zeros((b, budget), np.float32)
        seg = np.full((b, budget), -1, np.int32)
        lengths = np.zeros((b,), np.int32)
        finish = np.ones((b,), np.int32)
        turn_mask = np.zeros((b, num_steps), bool)
        anchor_ids = np.zeros((b, num_steps), np.int32)
        dense: dict[int, int] = {}
        for i, (ep, st) in enumerate(zip(eps, states, strict=True)):
            n_tok = len(ep.tokens)
            tokens[i, :n_tok] = ep.tokens
            attn[i, :n_tok] = True
            loss[i, :n_tok] = ep.policy
            lps[i, :n_tok] = np.where(ep.policy, ep.logprobs, 0.0)
            seg[i, :n_tok] = np.minimum(ep.segment, num_steps - 1)
            lengths[i] = n_tok
            finish[i] = 0 if (st.done and not st.truncated) else 1
            n_turns = min(len(ep.turn_starts), num_steps)
            turn_mask[i, :n_turns] = True
            for k, a in enumerate(st.anchors[:n_turns]):
                anchor_ids[i, k] = dense.setdefault(int(a), len(dense))
        traj = Trajectories(
            prompt_tokens=ptok[rows].astype(np.int32),
            prompt_mask=pmask[rows].astype(bool),
            tokens=tokens,
            attention_mask=attn,
            loss_mask=loss,
            old_logprobs=lps,
            group_id=rows.astype(np.int32),
            segment_id=seg,
            lengths=lengths,
            finish_reason=finish,
            anchor_ids=anchor_ids,
            turn_mask=turn_mask,
        )
        if self.opts.answer_probs:
            tag = getattr(self.env, "answer_tag", "answer")
            pairs = [answer_token_ids(tok, st.example.answer, tag) for st in states]
            starts = [ep.turn_starts[:num_steps] for ep in eps]
            probs = answer_probabilities(
                policy,
                traj.prompt_tokens,
                traj.prompt_mask,
                tokens,
                starts,
                [x[1] for x in pairs],
                num_steps,
                prefixes=[x[0] for x in pairs],
            )
            traj = traj.replace(answer_probs=probs)
        self.last_answers = [st.answer or "" for st in states]
        self.last_transcripts = [self._transcript(ep) for ep in eps]
        obs_tokens = [sum(e - s for s, e in ep.obs_spans) for ep in eps]
        policy_tokens = float(sum(int(np.sum(ep.policy)) for ep in eps))
        self.last_stats = {
            "env/turns_mean": float(np.mean(turn_mask.sum(-1))),
            "env/tool_calls": float(np.mean([st.tool_calls for st in states])),
            "env/tool_errors": float(np.mean(tool_errors)),
            "env/obs_tokens": float(np.mean(obs_tokens)),
            "env/answered": float(np.mean([st.answer is not None for st in states])),
            "env/truncated": float(np.mean(finish == 1)),
            # Budget numbers shared with the other strategies (rollout/*): the policy's own
            # tokens (observations are prefilled, not decoded), and the host time in the env.
            "leaves": float(b),
            "decoded_tokens": policy_tokens,
            "leaf_tokens": policy_tokens,
            "env_time_s": float(getattr(self, "_tool_s", 0.0)),
        }
        return traj

    def _transcript(self, ep: _Episode) -> str:
        """The episode's text with ``<obs>...</obs>`` around each observation."""
        tok = self.settings.tokenizer
        parts, t = [], 0
        for s, e in ep.obs_spans:
            parts.append(tok.decode(ep.tokens[t:s], skip_special_tokens=True))
            parts.append("<obs>" + tok.decode(ep.tokens[s:e], skip_special_tokens=True) + "</obs>")
            t = e
        parts.append(tok.decode(ep.tokens[t:], skip_special_tokens=True))
        return "".join(parts)
