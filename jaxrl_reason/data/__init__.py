"""jaxrl_reason.data: tasks (prompts + verifier), dataset readers and a resumable iterator.

```python
from jaxrl_reason.data import make_task, DataIterator
train = make_task("arithmetic", split="train", seed=0)          # the embedded default
test = make_task("gsm8k", split="test", jsonl_dir=".../gsm8k", cache_dir="/tmp/cache")
it = DataIterator(train, batch_size=8, seed=0)
batch = next(it)                                  # list[Example]
messages = [train.build_prompt(ex) for ex in batch]
rewards = train.verify_batch(responses, batch)    # float32[B]
ckpt["data"] = it.state(); it.restore(ckpt["data"])
```

Heavy dependencies (tensorflow-datasets, math-verify) are imported only by the tasks that
use them.
"""

from jaxrl_reason.data.arith_chain import ArithChainTask
from jaxrl_reason.data.arithmetic import ArithmeticTask, problem_split
from jaxrl_reason.data.base import (
    BOXED_INSTRUCTION,
    HASH_INSTRUCTION,
    PROMPT_FORMATS,
    Example,
    Task,
)
from jaxrl_reason.data.build import build_task
from jaxrl_reason.data.gsm8k import Gsm8kTask, prepare_gsm8k_local
from jaxrl_reason.data.iterator import DataIterator
from jaxrl_reason.data.math_dataset import MathTask, load_math_records

#: ``make_task`` names -> task classes.
TASKS = {
    "arithmetic": ArithmeticTask,
    "arith_chain": ArithChainTask,
    "gsm8k": Gsm8kTask,
    "math": MathTask,
}


def make_task(name: str, **kwargs) -> Task:
    """Builds a task by name (``"arithmetic"``, ``"arith_chain"``, ``"gsm8k"``, ``"math"``).

    ``kwargs`` are the task class's constructor arguments (from a config).

    Raises:
      ValueError: an unknown name (lists the known ones).
    """
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known tasks: {sorted(TASKS)}")
    return TASKS[name](**kwargs)


__all__ = [
    "BOXED_INSTRUCTION",
    "HASH_INSTRUCTION",
    "PROMPT_FORMATS",
    "TASKS",
    "ArithChainTask",
    "ArithmeticTask",
    "DataIterator",
    "Example",
    "Gsm8kTask",
    "MathTask",
    "Task",
    "build_task",
    "load_math_records",
    "make_task",
    "prepare_gsm8k_local",
    "problem_split",
]
