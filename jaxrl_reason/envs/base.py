"""Batched, host-side, text environments for multi-turn tool use.

Protocol (one episode = a task example; one turn = one model action):

* ``reset(examples) -> list[EpisodeState]``; the rollout builds the first prompt with
  ``env.build_prompt(example)`` (system turn = the tool instructions).
* The sampler generates an action and stops on any of ``env.stop_strings`` (the closing tags
  ``</tool>``, ``</search>``, ``</python>``, ``</answer>`` ...), **keeping the stop string
  in the action text** (token-in/token-out: cut at the token that closes the tag).
* ``step(states, actions) -> StepResult``: per row, the observation to append to the context
  (``None`` when the episode is over), done flags, per-turn rewards and an info dict.

Action text (tagged calls, the first complete block wins; text after it is ignored and
``info["consumed"]`` says how many characters were used):

* ``<search>query</search>``: Search-R1 (Jin et al., arXiv 2503.09516).
* ``<python>code</python>``, ``<calculator>3*(4+5)</calculator>``: one tag per tool, as in
  ARTIST (arXiv 2505.01441) / ToRL (arXiv 2503.23383) tool-integrated reasoning.
* ``<tool>name: argument</tool>``: the generic form for any tool.
* ``<answer>...</answer>`` (Search-R1), or a ``#### 42`` line (the task's GSM8K format): the
  final answer; the episode ends and the final reward is the task's verifier on it.

Observation text: ``"\\n<result>\\n...\\n</result>\\n"`` (the tag is ``obs_tag``: Search-R1
uses ``information``), truncated to ``max_obs_chars`` / ``max_obs_tokens``. A malformed call
(unclosed tag, unknown tool, no call and no answer) or a failing tool is an observation
``"\\n<result>\\nerror: ...\\n</result>\\n"``, never an exception. The rollout masks
observation tokens out of the loss (Search-R1 ``info_mask``; ARTIST ``<output>`` masking).

Rewards: ``rewards[i]`` is the turn reward ``r_t``: 0 on non-final turns (override
:meth:`ToolCallEnv.turn_reward` to shape), the verifier's score on the final turn, so
``sum_t r_t`` is the episode return of GiGPO (arXiv 2505.10978) Eq. 3/5. GiGPO's anchor
states: ``state.anchors[t]`` is :func:`anchor_key` of the observation in which action ``t``
was taken (the prompt for ``t = 0``).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from jaxrl_reason.data.base import Example, Task
from jaxrl_reason.envs.tools import Tool, ToolOutput

__all__ = [
    "Environment",
    "EpisodeState",
    "ParsedAction",
    "StepResult",
    "ToolCallEnv",
    "anchor_key",
    "format_observation",
    "parse_action",
]

_TRUNC = "\n...[truncated]"


def anchor_key(observation: str | None) -> int:
    """A stable 63-bit key of an observation (BLAKE2b of its UTF-8 bytes; ``None`` -> key of
    ``""``), equal across processes and runs, unlike ``hash()``. Fits ``int64``.

    Used for GiGPO's anchor-state groups (exact-match ``G_S(s)``, arXiv 2505.10978 Eq. 6).
    """
    data = ("" if observation is None else observation).encode("utf-8", "surrogatepass")
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little") & (2**63 - 1)


def format_observation(
    content: str,
    *,
    tag: str = "result",
    max_chars: int | None = None,
    max_tokens: int | None = None,
    tokenizer: Any = None,
) -> str:
    """Wraps tool output as ``"\\n<tag>\\n{content}\\n</tag>\\n"``.

    The content is cut to ``max_chars`` characters and then (when a ``tokenizer`` with
    ``encode``/``decode`` is given) ``max_tokens`` tokens, each with a ``"...[truncated]"``
    marker; the closing tag inside the content is defused (``</tag>`` -> ``</ tag>``) so the
    block always ends where the environment ended it.
    """
    text = str(content)
    if max_chars is not None and len(text) > max_chars:
        text = text[: max(0, max_chars - len(_TRUNC))] + _TRUNC
    if max_tokens is not None and tokenizer is not None:
        ids = tokenizer.encode(text, add_special_tokens=False)
        if len(ids) > max_tokens:
            text = tokenizer.decode(ids[:max_tokens]) + _TRUNC
    text = text.replace(f"</{tag}>", f"</ {tag}>")
    return f"\n<{tag}>\n{text.strip(chr(10))}\n</{tag}>\n"


@dataclasses.dataclass
class EpisodeState:
    """One episode's state (mutated in place by ``step``).

    Attributes:
      example: the task example (question, gold answer).
      turn: actions taken so far.
      done: the episode is over.
      actions: the action texts (as consumed: cut after the first complete call).
      observations: the observation returned after each action (``None`` after the last).
      anchors: ``anchors[t]`` = :func:`anchor_key` of the state action ``t`` was taken in.
      answer: the final answer text, when the model gave one.
      reward: the final (verifier) reward once done, else None.
      tool_calls, tool_errors, invalid_actions: counters.
      truncated: ended by ``max_turns`` rather than by an answer.
      extra: environment-specific data.
    """

    example: Example
    turn: int = 0
    done: bool = False
    actions: list[str] = dataclasses.field(default_factory=list)
    observations: list[str | None] = dataclasses.field(default_factory=list)
    anchors: list[int] = dataclasses.field(default_factory=list)
    anchor: int = 0
    answer: str | None = None
    reward: float | None = None
    tool_calls: int = 0
    tool_errors: int = 0
    invalid_actions: int = 0
    truncated: bool = False
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def transcript(self) -> str:
        """The response side of the episode: actions and observations interleaved."""
        return "".join(a + (o or "") for a, o in zip(self.actions, self.observations, strict=False))


@dataclasses.dataclass
class StepResult:
    """The outcome of one batched ``step``; all lists have the batch's length.

    Attributes:
      observations: text to append after each action; ``None`` = the episode is done.
      dones: ``True`` when the episode ended at this step (or was already over).
      rewards: the turn reward ``r_t`` (the verifier's score on the final turn).
      infos: per row ``{"tool": name | None, "error": bool, "invalid": bool,
        "truncated": bool, "answer": str | None, "turn": int, "consumed": int,
        "anchor": int, "skipped": bool}``.
      states: the (updated) episode states.
    """

    observations: list[str | None]
    dones: list[bool]
    rewards: list[float]
    infos: list[dict[str, Any]]
    states: list[EpisodeState]


@dataclasses.dataclass(frozen=True)
class ParsedAction:
    """An action after parsing: ``kind`` is ``"tool"``, ``"answer"`` or ``"invalid"``.

    ``tool``/``argument`` for a call, ``answer`` for an answer, ``error`` for an invalid
    action, ``end``: characters of the action consumed (through the closing tag).
    """

    kind: str
    tool: str | None = None
    argument: str = ""
    answer: str | None = None
    error: str = ""
    end: int = 0


_HASH_RE = re.compile(r"####\s*([^\n]+)")
_GENERIC_RE = re.compile(r"^\s*([A-Za-z_][\w.\-]*)\s*(?::|\n)\s?(.*)\Z", re.DOTALL)


def _parse_generic(body: str, tools: Sequence[str]) -> tuple[str | None, str, str]:
    """``name: arg`` or ``{"name": ..., "arguments": ...}`` -> (tool, argument, error)."""
    s = body.strip()
    if s.startswith("{"):
        try:
            obj = json.loads(s)
        except json.JSONDecodeError:
            return None, "", "malformed tool call: invalid JSON"
        if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
            return None, "", 'malformed tool call: JSON needs a "name"'
        name, arg = obj["name"], obj.get("arguments", obj.get("argument", ""))
        if isinstance(arg, dict) and len(arg) == 1:
            arg = next(iter(arg.values()))
        arg = arg if isinstance(arg, str) else json.dumps(arg)
    else:
        m = _GENERIC_RE.match(body)
        if not m:
            return None, "", "malformed tool call: write <tool>name: argument</tool>"
        name, arg = m.group(1), m.group(2)
    if name not in tools:
        return None, "", f"unknown tool {name!r}; available: {', '.join(tools)}"
    return name, arg, ""


def parse_action(
    action: str,
    tools: Sequence[str],
    *,
    answer_tag: str = "answer",
    allow_hash_answer: bool = True,
) -> ParsedAction:
    """Parses one model action (never raises).

    Looks for the first complete ``<t>...</t>`` block with ``t`` in ``tools``, ``"tool"``
    or ``answer_tag``; without one, a ``#### x`` line is an answer (if
    ``allow_hash_answer``); anything else is ``"invalid"`` with a message for the model
    (unclosed tag, unknown tool, no call).
    """
    if not isinstance(action, str):
        return ParsedAction("invalid", error="the action is not text")
    tags = [re.escape(t) for t in (*tools, "tool", answer_tag)]
    block = re.compile(r"<(" + "|".join(tags) + r")\s*>(.*?)</\1\s*>", re.DOTALL)
    m = block.search(action)
    if m:
        tag, body, end = m.group(1), m.group(2), m.end()
        if tag == answer_tag:
            return ParsedAction("answer", answer=body.strip(), end=end)
        if tag == "tool" and "tool" not in tools:
            name, arg, err = _parse_generic(body, tools)
            if err:
                return ParsedAction("invalid", error=err, end=end)
            return ParsedAction("tool", tool=name, argument=arg, end=end)
        return ParsedAction("tool", tool=tag, argument=body.strip("\n"), end=end)
    if allow_hash_answer:
        h = _HASH_RE.search(action)
        if h and h.group(1).strip():
            return ParsedAction("answer", answer="#### " + h.group(1).strip(), end=h.end())
    opened = re.search(r"<(" + "|".join(tags) + r")\s*>", action)
    if opened:
        t = opened.group(1)
        return ParsedAction(
            "invalid", error=f"unclosed <{t}> tag: close it with </{t}>", end=len(action)
        )
    calls = ", ".join(f"<{t}>...</{t}>" for t in tools)
    return ParsedAction(
        "invalid",
        error=f"no tool call and no answer: call a tool ({calls}) or answer with "
        f"<{answer_tag}>...</{answer_tag}>",
        end=len(action),
    )


class Environment:
    """Base class of batched text environments (see the module docstring for the protocol).

    Subclasses implement :meth:`step`. Attributes: ``task`` (verifies answers),
    ``max_turns``, ``stop_strings`` (what the sampler must stop on, kept in the action),
    ``system_prompt``.
    """

    stop_strings: tuple[str, ...] = ()

    def __init__(self, task: Task, *, max_turns: int = 4, system_prompt: str | None = None):
        if max_turns < 1:
            raise ValueError(f"{type(self).__name__}: max_turns={max_turns} must be >= 1")
        self.task = task
        self.max_turns = int(max_turns)
        self.system_prompt = system_prompt if system_prompt is not None else task.system_prompt

    def build_prompt(self, example: Example) -> list[dict[str, str]]:
        """Chat messages ``[system (tool instructions), user (the question)]``."""
        msgs = []
        if self.system_prompt:
            msgs.append({"role": "system", "content": self.system_prompt})
        msgs.append({"role": "user", "content": example.prompt})
        return msgs

    def reset(self, examples: Sequence[Example]) -> list[EpisodeState]:
        """Fresh episode states, one per example; the initial anchor is the prompt's key."""
        return [EpisodeState(example=ex, anchor=anchor_key(ex.prompt)) for ex in examples]

    def final_reward(self, state: EpisodeState) -> float:
        """The task verifier on the final answer (0.0 without an answer)."""
        if state.answer is None:
            return 0.0
        return float(self.task.verify(state.answer, state.example))

    def step(self, states: Sequence[EpisodeState], actions: Sequence[str]) -> StepResult:
        """Applies one action per episode (see the module docstring)."""
        raise NotImplementedError


class ToolCallEnv(Environment):
    """An environment whose actions are tagged tool calls or a final answer.

    Args:
      task: a :class:`~jaxrl_reason.data.base.Task` (prompts and the verifier).
      tools: the tools (each callable as ``<name>...</name>`` and ``<tool>name: ...</tool>``).
      max_turns: most actions per episode; a tool call as action ``max_turns`` ends the
        episode unexecuted (``truncated``, reward 0). Search-R1's extra answer-only turn
        after B searches is ``max_turns = B + 1``.
      max_obs_chars / max_obs_tokens (+ ``tokenizer``): observation length limits.
      obs_tag: the observation wrapper tag (``"result"``; Search-R1: ``"information"``).
      answer_tag: the final-answer tag.
      allow_hash_answer: a ``#### x`` line without any call is also a final answer.
      invalid_action: ``"retry"`` (Search-R1: an error observation, the episode goes on) or
        ``"finish"`` (the action is the final answer, e.g. ToRL-style "no call = done").
      system_prompt: overrides the generated tool instructions.
      max_workers: threads running one step's tool calls concurrently.
    """

    def __init__(
        self,
        task: Task,
        tools: Sequence[Tool] | Mapping[str, Tool],
        *,
        max_turns: int = 4,
        max_obs_chars: int | None = 2000,
        max_obs_tokens: int | None = None,
        tokenizer: Any = None,
        obs_tag: str = "result",
        answer_tag: str = "answer",
        allow_hash_answer: bool = True,
        invalid_action: str = "retry",
        system_prompt: str | None = None,
        max_workers: int = 4,
    ):
        tools = list(tools.values()) if isinstance(tools, Mapping) else list(tools)
        if not tools:
            raise ValueError(f"{type(self).__name__}: need at least one tool")
        self.tools = {t.name: t for t in tools}
        if len(self.tools) != len(tools):
            raise ValueError(f"{type(self).__name__}: duplicate tool names")
        bad = [n for n in self.tools if n in (answer_tag, obs_tag) or not re.fullmatch(r"\w+", n)]
        if bad:
            raise ValueError(f"{type(self).__name__}: bad tool names {bad}")
        if invalid_action not in ("retry", "finish"):
            raise ValueError(f"invalid_action={invalid_action!r}; use 'retry' or 'finish'")
        if max_obs_tokens is not None and tokenizer is None:
            raise ValueError("max_obs_tokens needs a tokenizer (with encode/decode)")
        self.max_obs_chars, self.max_obs_tokens, self.tokenizer = (
            max_obs_chars,
            max_obs_tokens,
            tokenizer,
        )
        self.obs_tag, self.answer_tag = obs_tag, answer_tag
        self.allow_hash_answer, self.invalid_action = allow_hash_answer, invalid_action
        self.max_workers = max(1, int(max_workers))
        self.max_turns = int(max_turns)  # tool_prompt() mentions it
        super().__init__(
            task,
            max_turns=max_turns,
            system_prompt=system_prompt if system_prompt is not None else self.tool_prompt(),
        )
        self.stop_strings = (
            *(f"</{n}>" for n in self.tools),
            *(() if "tool" in self.tools else ("</tool>",)),
            f"</{answer_tag}>",
        )

    def tool_prompt(self) -> str:
        """The system instruction: how to call each tool and how to answer."""
        lines = [
            "Solve the task step by step. You can call tools; each result is shown between "
            f"<{self.obs_tag}> and </{self.obs_tag}>. Tools:"
        ]
        for t in self.tools.values():
            lines.append(f"- {t.name}: {t.description}. Call: <{t.name}>{t.example}</{t.name}>")
        lines.append(
            f"Make one call at a time; you have at most {self.max_turns} turns. When "
            f"you know the answer, write it as <{self.answer_tag}>...</{self.answer_tag}>."
        )
        return "\n".join(lines)

    def turn_reward(self, state: EpisodeState, parsed: ParsedAction, output: ToolOutput | None):
        """The reward of a non-final turn (0.0; override to shape, e.g. a tool-success term)."""
        return 0.0

    def observe(self, text: str) -> str:
        """Wraps tool output with this environment's tag and length limits."""
        return format_observation(
            text,
            tag=self.obs_tag,
            max_chars=self.max_obs_chars,
            max_tokens=self.max_obs_tokens,
            tokenizer=self.tokenizer,
        )

    def _run_tools(self, calls: list[tuple[int, str, str]]) -> dict[int, ToolOutput]:
        if len(calls) > 1 and self.max_workers > 1:
            with concurrent.futures.ThreadPoolExecutor(min(self.max_workers, len(calls))) as ex:
                futs = {i: ex.submit(self.tools[name], arg) for i, name, arg in calls}
                return {i: f.result() for i, f in futs.items()}
        return {i: self.tools[name](arg) for i, name, arg in calls}

    def _finish(self, state: EpisodeState, answer: str | None) -> float:
        state.answer = answer
        state.done = True
        state.reward = self.final_reward(state)
        return state.reward

    def step(self, states: Sequence[EpisodeState], actions: Sequence[str]) -> StepResult:
        """One turn for every row (rows already done are skipped: ``None``, done, 0 reward).

        See the module docstring for the action / observation text protocol.
        """
        if len(states) != len(actions):
            raise ValueError(f"step: {len(states)} states but {len(actions)} actions")
        n = len(states)
        obs: list[str | None] = [None] * n
        dones = [True] * n
        rewards = [0.0] * n
        infos: list[dict[str, Any]] = [{} for _ in range(n)]
        parsed: list[ParsedAction | None] = [None] * n
        calls = []
        for i, (st, act) in enumerate(zip(states, actions, strict=True)):
            infos[i] = {"tool": None, "error": False, "invalid": False, "truncated": False,
                        "answer": None, "turn": st.turn, "consumed": 0, "anchor": st.anchor,
                        "skipped": st.done}  # fmt: skip
            if st.done:
                continue
            p = parse_action(
                act if isinstance(act, str) else "",
                list(self.tools),
                answer_tag=self.answer_tag,
                allow_hash_answer=self.allow_hash_answer,
            )
            parsed[i] = p
            infos[i]["consumed"] = p.end
            st.anchors.append(st.anchor)
            st.actions.append(act[: p.end] if isinstance(act, str) and p.end else str(act))
            st.turn += 1
            if p.kind == "tool":
                infos[i]["tool"] = p.tool
                if st.turn < self.max_turns:
                    calls.append((i, p.tool, p.argument))
        outputs = self._run_tools(calls)
        for i, st in enumerate(states):
            p = parsed[i]
            if p is None:
                continue
            out = outputs.get(i)
            text: str | None = None
            if p.kind == "answer":
                infos[i]["answer"] = p.answer
                rewards[i] = self._finish(st, p.answer)
            elif p.kind == "invalid" and self.invalid_action == "finish":
                infos[i]["invalid"] = True
                st.invalid_actions += 1
                rewards[i] = self._finish(st, st.actions[-1])
            elif st.turn >= self.max_turns:
                st.truncated = st.done = True
                st.reward = 0.0
                infos[i]["truncated"] = True
                infos[i]["invalid"] = p.kind == "invalid"
                st.invalid_actions += p.kind == "invalid"
            elif p.kind == "invalid":
                infos[i]["invalid"] = infos[i]["error"] = True
                st.invalid_actions += 1
                text = self.observe(f"error: {p.error}")
            else:
                st.tool_calls += 1
                st.tool_errors += out.error
                infos[i]["error"] = out.error
                text = self.observe(out.text)
                rewards[i] = float(self.turn_reward(st, p, out))
            st.observations.append(text)
            obs[i] = text
            dones[i] = st.done
            if text is not None:
                st.anchor = anchor_key(text)
        return StepResult(obs, dones, rewards, infos, list(states))
