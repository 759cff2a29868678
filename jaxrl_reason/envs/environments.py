"""Ready-made environments: :class:`SearchEnv` (Search-R1) and :class:`ToolEnv` (ARTIST/ToRL)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from jaxrl_reason.data.base import Task
from jaxrl_reason.envs.base import ToolCallEnv
from jaxrl_reason.envs.retrieval import BM25Retriever
from jaxrl_reason.envs.tasks import ArithChainTask, MultiHopTask
from jaxrl_reason.envs.tools import Tool, calculator_tool, python_tool, search_tool

__all__ = ["SEARCH_R1_INSTRUCTION", "SearchEnv", "ToolEnv"]

#: Search-R1's instruction (``make_prefix``, arXiv 2503.09516), with our turn budget.
SEARCH_R1_INSTRUCTION = (
    "Answer the given question. You must conduct reasoning inside <think> and </think> first "
    "every time you get new information. After reasoning, if you find you lack some "
    "knowledge, you can call a search engine by <search> query </search> and it will return "
    "the top searched results between <information> and </information>. You can search up to "
    "{searches} times. If you find no further external knowledge needed, you can directly "
    "provide the answer inside <answer> and </answer>, without detailed illustrations. For "
    "example, <answer> Beijing </answer>."
)


class SearchEnv(ToolCallEnv):
    """Multi-hop QA with a BM25 search tool (Search-R1, arXiv 2503.09516).

    Actions: ``<search> query </search>`` (or ``<tool>search: query</tool>``) and
    ``<answer> ... </answer>``. Observations: ``"\\n<information>\\nDoc 1(Title: ...) ...
    \\n</information>\\n"`` with the top-``k`` passages. Stop strings: ``("</search>",
    "</tool>", "</answer>")``. The final reward is exact match (:class:`MultiHopTask`).

    Args:
      task: the questions (default: ``MultiHopTask("train")``).
      retriever: a :class:`BM25Retriever`; None builds one over ``task.world``'s corpus,
        written to ``cache_dir`` (default: the system temp dir) and indexed there.
      k: passages per search (Search-R1: 3).
      max_turns: actions per episode (Search-R1's B=4 searches plus the answer turn: 5).
      max_obs_chars: observation limit (Search-R1 limits to 500 tokens; use
        ``max_obs_tokens`` with a ``tokenizer`` for that).
      **kwargs: see :class:`~jaxrl_reason.envs.base.ToolCallEnv`.
    """

    def __init__(
        self,
        task: Task | None = None,
        retriever: BM25Retriever | None = None,
        *,
        k: int = 3,
        max_turns: int = 5,
        max_obs_chars: int | None = 2000,
        cache_dir: str | os.PathLike | None = None,
        obs_tag: str = "information",
        system_prompt: str | None = None,
        **kwargs,
    ):
        task = task if task is not None else MultiHopTask("train")
        if retriever is None:
            world = getattr(task, "world", None)
            if world is None:
                raise ValueError("SearchEnv: pass a retriever for a task without a .world")
            root = Path(cache_dir) if cache_dir is not None else Path(tempfile.gettempdir())
            root = root / "jaxrl_reason_multihop"
            corpus = root / f"corpus_{world.fingerprint()}.jsonl"
            if not corpus.exists():
                world.write_corpus(corpus)
            retriever = BM25Retriever(corpus, cache_dir=root / "bm25")
        self.retriever = retriever
        self.k = k
        if system_prompt is None:
            system_prompt = SEARCH_R1_INSTRUCTION.format(searches=max(1, max_turns - 1))
        super().__init__(
            task,
            [search_tool(retriever, k)],
            max_turns=max_turns,
            max_obs_chars=max_obs_chars,
            obs_tag=obs_tag,
            system_prompt=system_prompt,
            **kwargs,
        )


class ToolEnv(ToolCallEnv):
    """Arithmetic with a calculator and/or a sandboxed Python tool (ARTIST / ToRL style).

    Actions: ``<calculator>expr</calculator>``, ``<python>code</python>`` (or
    ``<tool>name: arg</tool>``) and ``<answer>N</answer>`` or a ``#### N`` line.
    Observations: ``"\\n<result>\\n...\\n</result>\\n"``. Stop strings: one ``</name>`` per
    tool, ``"</tool>"``, ``"</answer>"``.

    Args:
      task: the problems (default: ``ArithChainTask("train")``).
      tools: names from ``("calculator", "python")`` or :class:`Tool` objects.
      python_timeout_s, python_memory_mb: the sandbox limits of the Python tool.
      **kwargs: see :class:`~jaxrl_reason.envs.base.ToolCallEnv`.
    """

    def __init__(
        self,
        task: Task | None = None,
        tools: Sequence[str | Tool] = ("calculator",),
        *,
        max_turns: int = 4,
        python_timeout_s: float = 5.0,
        python_memory_mb: int = 512,
        **kwargs,
    ):
        built = []
        for t in tools:
            if isinstance(t, Tool):
                built.append(t)
            elif t == "calculator":
                built.append(calculator_tool())
            elif t == "python":
                built.append(python_tool(timeout_s=python_timeout_s, memory_mb=python_memory_mb))
            else:
                raise ValueError(f"ToolEnv: unknown tool {t!r}; use 'calculator' or 'python'")
        super().__init__(
            task if task is not None else ArithChainTask("train"),
            built,
            max_turns=max_turns,
            **kwargs,
        )
