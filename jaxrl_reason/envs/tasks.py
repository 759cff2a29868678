"""Offline agent tasks: a generated multi-hop world (search) and multi-step arithmetic (tools).

:class:`MultiHopWorld` is a seeded fictional world (countries, cities, companies, people)
with one short document per entity; :class:`MultiHopTask` asks HotpotQA-like 2- and 3-hop
questions about it ("In which city was the founder of Zorvex Labs born?") whose answer
needs one search per hop. Train and test use disjoint entity sets (each split is its own
sub-world; the corpus holds both, like one Wikipedia), answers are verified by exact match
after SQuAD normalisation (Search-R1's ``compute_score_em``, arXiv 2503.09516).

:class:`ArithChainTask` is multi-step integer arithmetic with 3-4 digit operands, the kind
of problem a calculator or Python tool helps with (ToRL / ARTIST style).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import string
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from jaxrl_reason.data.base import Example, Task

__all__ = [
    "ANSWER_TAG_INSTRUCTION",
    "ArithChainTask",
    "Entity",
    "MultiHopTask",
    "MultiHopWorld",
    "exact_match",
    "extract_tagged_answer",
    "normalize_answer",
]

#: System instruction of the answer-tag format (the environments replace it with theirs).
ANSWER_TAG_INSTRUCTION = (
    "Answer the question. Write the final answer, as short as possible, between <answer> and "
    "</answer>, for example: <answer> Beijing </answer>."
)

_ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_HASH_RE = re.compile(r"####\s*([^\n]+)")


def _a(word: str) -> str:
    return ("an " if word[:1] in "aeiou" else "a ") + word


def normalize_answer(s: str) -> str:
    """SQuAD normalisation: lower case, no punctuation, no articles, single spaces."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def extract_tagged_answer(response: str) -> str | None:
    """The last ``<answer>...</answer>`` block, else the last ``#### x`` line, else the whole
    response when it has no tags at all (an environment passes the bare answer); None when
    nothing is found."""
    m = _ANSWER_RE.findall(response)
    if m:
        return m[-1].strip()
    h = _HASH_RE.findall(response)
    if h:
        return h[-1].strip()
    if "<" not in response and response.strip():
        return response.strip()
    return None


def exact_match(pred: str | None, gold: str | Sequence[str]) -> float:
    """1.0 when ``normalize_answer(pred)`` equals that of ``gold`` (or one of several)."""
    if pred is None:
        return 0.0
    golds = [gold] if isinstance(gold, str) else list(gold)
    p = normalize_answer(pred)
    return float(any(p == normalize_answer(g) for g in golds))


# --- the world ----------------------------------------------------------------------------

_ONSETS = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr",
           "gr", "kr", "tr", "th", "st", "vr", "qu", "sh", "zh", "h", "j", "y"]  # fmt: skip
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ei", "ou", "ia", "y"]
_CODAS = ["", "", "n", "r", "l", "s", "x", "th", "nd", "rk", "v", "m"]
_COMPANY_SUFFIX = ["Labs", "Dynamics", "Systems", "Works", "Industries", "Group", "Holdings"]
_COUNTRY_SUFFIX = ["ia", "land", "stan", "ora", "and"]
_INDUSTRIES = ["robotics", "shipping", "textile", "software", "mining", "biotech", "aerospace",
               "publishing", "farming", "energy"]  # fmt: skip
_PROFESSIONS = ["engineer", "chemist", "architect", "pilot", "novelist", "surgeon", "painter",
                "economist", "geologist", "composer", "lawyer", "astronomer"]  # fmt: skip
_RIVERS_ADJ = ["slow", "wide", "cold", "winding", "shallow", "swift"]


@dataclasses.dataclass(frozen=True)
class Entity:
    """One world entity: ``kind`` in person / city / company / country, its ``split`` and
    its relations in ``attrs`` (entity names or plain values)."""

    name: str
    kind: str
    split: str
    attrs: dict


class MultiHopWorld:
    """A seeded fictional world with per-split entity sets and one document per entity.

    Args:
      seed: everything (names, relations, documents) is a function of the seed and sizes.
      countries, cities, companies, people: entities per split.
      splits: the split names (each its own disjoint sub-world).

    Relations: city -> country; country -> capital (a city); company -> founder (a person,
    one company each), headquarters (city), industry, year; person -> born in (city), works
    for (a company it did not found), profession.

    Attributes:
      entities: name -> :class:`Entity`.
      documents: ``[{"id", "title", "text"}]``, one per entity (the retrieval corpus).
    """

    def __init__(
        self,
        seed: int = 0,
        *,
        countries: int = 5,
        cities: int = 15,
        companies: int = 25,
        people: int = 60,
        splits: Sequence[str] = ("train", "test"),
    ):
        if people < companies + 1 or companies < 2 or cities < countries or countries < 1:
            raise ValueError("MultiHopWorld: need people > companies >= 2, cities >= countries")
        self.seed = seed
        self.splits = tuple(splits)
        rng = np.random.default_rng([seed, 0x3017])
        self._used: set[str] = set()
        self._rng = rng
        self.entities: dict[str, Entity] = {}
        first_names = [self._stem(2).capitalize() for _ in range(40)]
        for split in self.splits:
            cn = [self._stem(2).capitalize() + str(rng.choice(_COUNTRY_SUFFIX))
                  for _ in range(countries)]  # fmt: skip
            ci = [self._stem(int(rng.integers(2, 4))).capitalize() for _ in range(cities)]
            co = [f"{self._stem(2).capitalize()} {rng.choice(_COMPANY_SUFFIX)}"
                  for _ in range(companies)]  # fmt: skip
            pe = [f"{rng.choice(first_names)} {self._stem(int(rng.integers(2, 4))).capitalize()}"
                  for _ in range(people)]  # fmt: skip
            city_country = {c: cn[i % countries] if i < countries else str(rng.choice(cn))
                            for i, c in enumerate(ci)}  # fmt: skip
            capitals = {k: next(c for c in ci if city_country[c] == k) for k in cn}
            founders = list(rng.permutation(pe)[:companies])
            founded = dict(zip(founders, co, strict=True))
            for k in cn:
                self._add(Entity(k, "country", split, {"capital": capitals[k]}))
            for c in ci:
                self._add(
                    Entity(
                        c,
                        "city",
                        split,
                        {"country": city_country[c], "river": str(rng.choice(_RIVERS_ADJ))},
                    )
                )
            for c, f in zip(co, founders, strict=True):
                self._add(Entity(c, "company", split, {
                    "founder": str(f), "hq": str(rng.choice(ci)),
                    "industry": str(rng.choice(_INDUSTRIES)),
                    "year": int(rng.integers(1890, 2015))}))  # fmt: skip
            for p in pe:
                employers = [c for c in co if founded.get(p) != c]
                self._add(Entity(p, "person", split, {
                    "born_in": str(rng.choice(ci)), "works_for": str(rng.choice(employers)),
                    "profession": str(rng.choice(_PROFESSIONS)),
                    "founded": founded.get(p)}))  # fmt: skip
        del self._rng, self._used
        self.documents = [self._document(e) for e in self.entities.values()]

    def _stem(self, syllables: int) -> str:
        while True:
            s = "".join(
                str(self._rng.choice(_ONSETS)) + str(self._rng.choice(_VOWELS))
                for _ in range(syllables)
            ) + str(self._rng.choice(_CODAS))
            if len(s) >= 4 and s not in self._used:
                self._used.add(s)
                return s

    def _add(self, e: Entity) -> None:
        assert e.name not in self.entities, e.name
        self.entities[e.name] = e

    def _document(self, e: Entity) -> dict[str, str]:
        a = e.attrs
        if e.kind == "country":
            text = f"{e.name} is a country. The capital of {e.name} is {a['capital']}."
        elif e.kind == "city":
            text = (f"{e.name} is a city in {a['country']}. {e.name} lies on a {a['river']} "
                    "river.")  # fmt: skip
        elif e.kind == "company":
            text = (f"{e.name} is {_a(a['industry'])} company founded in {a['year']} by "
                    f"{a['founder']}. The headquarters of {e.name} are in {a['hq']}.")  # fmt: skip
        else:
            last = e.name.split()[-1]
            text = (f"{e.name} is {_a(a['profession'])} who was born in {a['born_in']}. "
                    f"{last} works for {a['works_for']}.")  # fmt: skip
            if a["founded"]:
                text += f" {last} founded {a['founded']}."
        return {"id": f"{e.kind}/{e.name}", "title": e.name, "text": text}

    def write_corpus(self, path: str | os.PathLike) -> Path:
        """Writes :attr:`documents` as JSONL (atomically); returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
        with open(tmp, "w", encoding="utf-8") as f:
            for d in self.documents:
                f.write(json.dumps(d, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
        return path

    def fingerprint(self) -> str:
        """A short hash of the documents (names a corpus file)."""
        h = hashlib.sha256(json.dumps(self.documents, sort_keys=True).encode())
        return h.hexdigest()[:16]

    # --- questions ---
    def questions(self, split: str) -> list[dict]:
        """All questions of a split, in a fixed order: ``{"question", "answer", "hops",
        "chain" (entity names, start first, answer last), "template"}``."""
        E = self.entities
        out = []

        def add(template, chain, question):
            out.append({"question": question, "answer": chain[-1], "hops": len(chain) - 1,
                        "chain": chain, "template": template})  # fmt: skip

        for e in E.values():
            if e.split != split:
                continue
            if e.kind == "company":
                f = e.attrs["founder"]
                city = E[f].attrs["born_in"]
                hq = e.attrs["hq"]
                add(
                    "founder_birthplace",
                    [e.name, f, city],
                    f"In which city was the founder of {e.name} born?",
                )
                add(
                    "hq_country",
                    [e.name, hq, E[hq].attrs["country"]],
                    f"In which country are the headquarters of {e.name}?",
                )
                add(
                    "founder_birth_country",
                    [e.name, f, city, E[city].attrs["country"]],
                    f"In which country was the founder of {e.name} born?",
                )
            elif e.kind == "person":
                c = e.attrs["born_in"]
                w = e.attrs["works_for"]
                f = E[w].attrs["founder"]
                hq = E[w].attrs["hq"]
                k = E[c].attrs["country"]
                add("birth_country", [e.name, c, k], f"In which country was {e.name} born?")
                add(
                    "employer_founder",
                    [e.name, w, f],
                    f"Who founded the company that {e.name} works for?",
                )
                add(
                    "employer_hq",
                    [e.name, w, hq],
                    f"In which city are the headquarters of the company {e.name} works for?",
                )
                add(
                    "employer_founder_birthplace",
                    [e.name, w, f, E[f].attrs["born_in"]],
                    f"In which city was the founder of the company {e.name} works for born?",
                )
                add(
                    "employer_hq_country",
                    [e.name, w, hq, E[hq].attrs["country"]],
                    f"In which country are the headquarters of the company {e.name} works for?",
                )
                add(
                    "birth_capital",
                    [e.name, c, k, E[k].attrs["capital"]],
                    f"What is the capital of the country in which {e.name} was born?",
                )
        return out


class MultiHopTask(Task):
    """2- and 3-hop questions over a :class:`MultiHopWorld` (exact-match verified).

    Args:
      split: one of the world's splits (``"train"`` / ``"test"``); splits share no entity.
      seed: the world's seed (ignored when ``world`` is given) and the question order.
      world: an existing world (e.g. shared by the train and test tasks and the corpus).
      hops: which hop counts to include.
      num_examples: keep the first n after shuffling (None: all).
      world_kwargs: sizes for :class:`MultiHopWorld`.
      **task_kwargs: see :class:`~jaxrl_reason.data.base.Task`; the default system prompt
        is :data:`ANSWER_TAG_INSTRUCTION`.
    """

    name = "multihop"

    def __init__(
        self,
        split: str = "train",
        *,
        seed: int = 0,
        world: MultiHopWorld | None = None,
        hops: Sequence[int] = (2, 3),
        num_examples: int | None = None,
        world_kwargs: dict | None = None,
        **task_kwargs,
    ):
        task_kwargs.setdefault("system_prompt", ANSWER_TAG_INSTRUCTION)
        super().__init__(**task_kwargs)
        self.world = world if world is not None else MultiHopWorld(seed, **(world_kwargs or {}))
        if split not in self.world.splits:
            raise ValueError(f"MultiHopTask: split={split!r}; use one of {self.world.splits}")
        self.split = split
        self.name = f"multihop/{split}"
        qs = [q for q in self.world.questions(split) if q["hops"] in set(hops)]
        perm = np.random.default_rng([seed, 0x40B]).permutation(len(qs))
        qs = [qs[i] for i in perm]
        if num_examples is not None:
            qs = qs[:num_examples]
        self._qs = qs

    def __len__(self) -> int:
        return len(self._qs)

    def _get(self, index: int) -> Example:
        q = self._qs[index]
        return Example(
            id=f"multihop/{self.split}/{q['template']}/{q['chain'][0]}",
            prompt=q["question"],
            answer=q["answer"],
            meta={"hops": q["hops"], "chain": list(q["chain"]), "template": q["template"]},
        )

    def entities(self) -> set[str]:
        """All entity names on this task's question chains (for disjointness checks)."""
        return {name for q in self._qs for name in q["chain"]}

    def verify(self, response: str, example: Example) -> float:
        """Exact match of :func:`extract_tagged_answer` against ``example.answer``."""
        return exact_match(extract_tagged_answer(response), example.answer)

    def verify_batch(self, responses, examples) -> np.ndarray:
        """``float32[B]`` exact-match rewards."""
        return np.asarray(
            [self.verify(r, e) for r, e in zip(responses, examples, strict=True)], np.float32
        )


class ArithChainTask(Task):
    """Multi-step integer arithmetic, e.g. ``Compute (4821 * 37) - 912 * 16.``

    Args:
      split: ``"train"`` / ``"test"``; a problem's split is a hash of its text (disjoint).
      seed: problem sampling seed.
      num_examples: how many problems.
      num_ops: operations per problem (2..4 give 3..5 operands).
      low, high: operand range.
      heldout_fraction: share of the problem space in ``"test"``.
      **task_kwargs: see :class:`~jaxrl_reason.data.base.Task` (``#### N`` by default).
    """

    name = "arith_chain"

    def __init__(
        self,
        split: str = "train",
        *,
        seed: int = 0,
        num_examples: int = 1000,
        num_ops: int = 3,
        low: int = 10,
        high: int = 9999,
        heldout_fraction: float = 0.1,
        **task_kwargs,
    ):
        from jaxrl_reason.envs.tools import format_number, safe_eval

        super().__init__(**task_kwargs)
        if split not in ("train", "test"):
            raise ValueError(f"ArithChainTask: split={split!r}; use 'train' or 'test'")
        self.split, self.name = split, f"arith_chain/{split}"
        rng = np.random.default_rng([seed, 0xA12C, 0 if split == "train" else 1])
        seen, items = set(), []
        while len(items) < num_examples:
            nums = [int(x) for x in rng.integers(low, high + 1, size=num_ops + 1)]
            ops = [str(o) for o in rng.choice(["+", "-", "*"], size=num_ops)]
            expr = str(nums[0])
            for k, (o, v) in enumerate(zip(ops, nums[1:], strict=True)):
                expr = f"({expr}) {o} {v}" if k and rng.random() < 0.5 else f"{expr} {o} {v}"
            digest = hashlib.blake2b(expr.encode(), digest_size=8).digest()
            held = int.from_bytes(digest, "little") % 10_000 < round(heldout_fraction * 10_000)
            if held != (split == "test") or expr in seen:
                continue
            seen.add(expr)
            items.append((expr, format_number(safe_eval(expr))))
        self._items = items

    def __len__(self) -> int:
        return len(self._items)

    def _get(self, index: int) -> Example:
        expr, ans = self._items[index]
        return Example(id=f"arith_chain/{expr}", prompt=f"Compute {expr}.", answer=ans,
                       meta={"expression": expr})  # fmt: skip


# --- config.task builders (jaxrl_reason.data.build_task) --------------------------------------


def _num(task_cfg, split: str) -> int | None:
    return task_cfg.get(f"num_{split}", None) or None


def _build_multihop(task_cfg, split: str) -> MultiHopTask:
    """``task.name="multihop"``: ``task.seed`` (the world and question order), ``task.hops``,
    ``task.num_train`` / ``task.num_test`` (0 = all)."""
    return MultiHopTask(
        split,
        seed=int(task_cfg.get("seed", 0)),
        hops=tuple(task_cfg.get("hops", (2, 3))),
        num_examples=_num(task_cfg, split),
    )


def _build_arith_chain_tool(task_cfg, split: str) -> ArithChainTask:
    """``task.name="arith_chain_tool"``: multi-step arithmetic with large operands for the
    calculator / Python tools (``task.num_ops``, ``task.low``, ``task.high``, ``task.seed``,
    ``task.num_train`` / ``task.num_test``)."""
    n = _num(task_cfg, split)
    return ArithChainTask(
        split,
        seed=int(task_cfg.get("seed", 0)),
        num_examples=int(n or (1000 if split == "train" else 100)),
        num_ops=int(task_cfg.get("num_ops", 3)),
        low=int(task_cfg.get("low", 10)),
        high=int(task_cfg.get("high", 9999)),
    )


def _register_builders() -> None:
    from jaxrl_reason.data.build import register_task_builder

    register_task_builder("multihop", _build_multihop)
    register_task_builder("arith_chain_tool", _build_arith_chain_tool)


_register_builders()
