"""jaxrl_reason.envs: batched text environments for multi-turn tool use (bottom layer).

```python
from jaxrl_reason.envs import SearchEnv, MultiHopTask
env = SearchEnv(MultiHopTask("train"), k=3, max_turns=5)
states = env.reset(batch)                         # list[EpisodeState]
prompts = [env.build_prompt(s.example) for s in states]
# sample until one of env.stop_strings (kept in the text), then:
res = env.step(states, actions)                   # observations / dones / rewards / infos
```

Imports only :mod:`jaxrl_reason.data` and :mod:`jaxrl_reason.rewards` (never train, rollout,
credit or losses). See :mod:`jaxrl_reason.envs.base` for the text protocol and
:mod:`jaxrl_reason.envs.sandbox` for how Python code is contained.
"""

from jaxrl_reason.envs.base import (
    Environment,
    EpisodeState,
    ParsedAction,
    StepResult,
    ToolCallEnv,
    anchor_key,
    format_observation,
    parse_action,
)
from jaxrl_reason.envs.environments import SEARCH_R1_INSTRUCTION, SearchEnv, ToolEnv
from jaxrl_reason.envs.retrieval import BM25Retriever, Passage, format_passages, load_corpus
from jaxrl_reason.envs.sandbox import SandboxResult, run_python, sandbox_capabilities
from jaxrl_reason.envs.tasks import (
    ArithChainTask,
    MultiHopTask,
    MultiHopWorld,
    exact_match,
    extract_tagged_answer,
    normalize_answer,
)
from jaxrl_reason.envs.tools import (
    CalculatorError,
    Tool,
    ToolOutput,
    calculator,
    calculator_tool,
    python_tool,
    safe_eval,
    search_tool,
)

__all__ = [
    "SEARCH_R1_INSTRUCTION",
    "ArithChainTask",
    "BM25Retriever",
    "CalculatorError",
    "Environment",
    "EpisodeState",
    "MultiHopTask",
    "MultiHopWorld",
    "ParsedAction",
    "Passage",
    "SandboxResult",
    "SearchEnv",
    "StepResult",
    "Tool",
    "ToolCallEnv",
    "ToolEnv",
    "ToolOutput",
    "anchor_key",
    "calculator",
    "calculator_tool",
    "exact_match",
    "extract_tagged_answer",
    "format_observation",
    "format_passages",
    "load_corpus",
    "normalize_answer",
    "parse_action",
    "python_tool",
    "run_python",
    "safe_eval",
    "sandbox_capabilities",
    "search_tool",
]
