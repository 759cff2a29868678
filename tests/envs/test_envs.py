"""Environments (scripted actions), the action parser, anchor keys, the multi-hop world,
BM25 retrieval and its cache."""

from __future__ import annotations

import json

import pytest

from jaxrl_reason.data.base import Example
from jaxrl_reason.envs import (
    ArithChainTask,
    BM25Retriever,
    MultiHopTask,
    MultiHopWorld,
    SearchEnv,
    Tool,
    ToolCallEnv,
    ToolEnv,
    anchor_key,
    format_observation,
    parse_action,
)


@pytest.fixture(scope="module")
def world():
    return MultiHopWorld(0)


@pytest.fixture(scope="module")
def search_env(world, tmp_path_factory):
    return SearchEnv(MultiHopTask("train", world=world), cache_dir=tmp_path_factory.mktemp("c"))


def test_envs_import_no_upper_layers():
    import subprocess
    import sys

    code = (
        "import sys, jaxrl_reason.envs\n"
        "bad = [m for m in sys.modules if m.split('.')[:2] in "
        "(['jaxrl_reason','train'],['jaxrl_reason','rollout'],['jaxrl_reason','credit'],"
        "['jaxrl_reason','losses'])]\n"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- parsing -------------------------------------------------------------------------------
def test_parse_action_forms():
    tools = ["search", "calculator"]
    p = parse_action("<think>hmm</think> <search> Zorvex Labs </search> trailing", tools)
    assert (p.kind, p.tool, p.argument.strip()) == ("tool", "search", "Zorvex Labs")
    assert p.end == len("<think>hmm</think> <search> Zorvex Labs </search>")
    p = parse_action("<tool>calculator: 3*(4+5)</tool>", tools)
    assert (p.kind, p.tool, p.argument) == ("tool", "calculator", "3*(4+5)")
    p = parse_action('<tool>{"name": "search", "arguments": {"query": "x"}}</tool>', tools)
    assert (p.kind, p.tool, p.argument) == ("tool", "search", "x")
    assert parse_action("so <answer> Paris </answer>", tools).answer == "Paris"
    assert parse_action("work...\n#### 42", tools).answer == "#### 42"
    assert parse_action("#### 42", tools, allow_hash_answer=False).kind == "invalid"
    for bad, msg in [
        ("<search> unterminated", "unclosed <search>"),
        ("<tool>nosuchtool: 1</tool>", "unknown tool"),
        ("<tool>no colon here</tool>", "malformed"),
        ('<tool>{"name": 3}</tool>', "malformed"),
        ("I think the answer is 4.", "no tool call"),
        ("", "no tool call"),
    ]:
        p = parse_action(bad, tools)
        assert p.kind == "invalid" and msg in p.error, (bad, p)
    assert parse_action(None, tools).kind == "invalid"  # type: ignore[arg-type]


def test_format_observation():
    o = format_observation("x" * 100, max_chars=30)
    assert o.startswith("\n<result>\n") and o.endswith("\n</result>\n") and "[truncated]" in o
    assert len(o) < 30 + 25
    o = format_observation("a </result> b", tag="result")
    assert o.count("</result>") == 1


def test_anchor_keys():
    a, b = anchor_key("\n<result>\n27\n</result>\n"), anchor_key("\n<result>\n27\n</result>\n")
    assert a == b and 0 <= a < 2**63
    assert anchor_key("\n<result>\n28\n</result>\n") != a
    assert anchor_key(None) == anchor_key("")
    # stable across processes (not Python's salted hash)
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", "from jaxrl_reason.envs import anchor_key; print(anchor_key('s0'))"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert int(out.stdout) == anchor_key("s0")


# --- ToolEnv -------------------------------------------------------------------------------
def _ex(prompt="Compute 2 * 21.", answer="42"):
    return Example(id="t", prompt=prompt, answer=answer)


def test_tool_env_scripted_episode():
    env = ToolEnv(ArithChainTask("train", num_examples=4), max_turns=4)
    assert env.stop_strings == ("</calculator>", "</tool>", "</answer>")
    s = env.reset([_ex(), _ex(), _ex(), _ex()])
    assert len({st.anchor for st in s}) == 1
    r = env.step(
        s,
        [
            "<calculator>2*21</calculator>",
            "<calculator>2*</calculator>",
            "<calculater>2*21</calculater>",
            "<answer>42</answer>",
        ],
    )
    assert r.observations[0] == "\n<result>\n42\n</result>\n"
    assert r.infos[0]["tool"] == "calculator" and not r.infos[0]["error"]
    assert r.observations[1].startswith("\n<result>\nerror:") and r.infos[1]["error"]
    assert "error: no tool call" in r.observations[2] and r.infos[2]["invalid"]
    assert r.observations[3] is None and r.dones == [False, False, False, True]
    assert r.rewards == [0.0, 0.0, 0.0, 1.0] and s[3].reward == 1.0
    r = env.step(s, ["#### 42", "<answer>41</answer>", "<tool>calculator: 6*7</tool>", "x"])
    assert r.dones == [True, True, False, True]
    assert r.rewards[:2] == [1.0, 0.0] and r.infos[3]["skipped"]
    assert r.observations[2] == "\n<result>\n42\n</result>\n"
    # identical observations -> identical anchors; the anchor of action t is the pre-action state
    assert s[0].anchors == [anchor_key(_ex().prompt), anchor_key(s[0].observations[0])]
    assert s[2].anchor == anchor_key(r.observations[2])
    assert s[0].transcript() == "<calculator>2*21</calculator>\n<result>\n42\n</result>\n#### 42"


def test_max_turns_truncates():
    env = ToolEnv(ArithChainTask("train", num_examples=2), max_turns=2)
    s = env.reset([_ex()])
    assert not env.step(s, ["<calculator>1+1</calculator>"]).dones[0]
    r = env.step(s, ["<calculator>1+1</calculator>"])
    assert r.dones == [True] and r.observations == [None] and r.rewards == [0.0]
    assert r.infos[0]["truncated"] and s[0].truncated and s[0].tool_calls == 1


def test_invalid_action_finish_mode_and_throwing_tool():
    def boom(_):
        raise OSError("disk on fire")

    env = ToolCallEnv(
        ArithChainTask("train", num_examples=2),
        [Tool("boom", boom)],
        invalid_action="finish",
    )
    s = env.reset([_ex(), _ex()])
    r = env.step(s, ["<boom>x</boom>", "The answer is 42."])
    assert r.observations[0] == "\n<result>\nerror: OSError: disk on fire\n</result>\n"
    assert r.infos[0]["error"] and not r.dones[0]
    assert r.dones[1] and r.rewards[1] == 1.0 and r.infos[1]["invalid"]


def test_tool_env_python():
    env = ToolEnv(ArithChainTask("train", num_examples=2), tools=("calculator", "python"),
                  python_timeout_s=3.0)  # fmt: skip
    assert "</python>" in env.stop_strings
    s = env.reset([_ex(), _ex()])
    r = env.step(s, ["<python>\n```python\nprint(6*7)\n```\n</python>",
                     "<python>while True: pass</python>"])  # fmt: skip
    assert r.observations[0] == "\n<result>\n42\n\n</result>\n" or "42" in r.observations[0]
    assert r.infos[1]["error"] and "timeout" in r.observations[1]


def test_arith_chain_splits():
    tr, te = ArithChainTask("train", num_examples=300), ArithChainTask("test", num_examples=50)
    assert not {e.id for e in tr} & {e.id for e in te}
    e = tr[0]
    assert tr.verify(f"<answer>{e.answer}</answer>", e) == 1.0 or tr.verify(e.answer, e) == 1.0
    assert ArithChainTask("train", num_examples=5)[3] == ArithChainTask("train", num_examples=5)[3]


# --- multi-hop world and SearchEnv ----------------------------------------------------------
def test_world_deterministic_and_disjoint(world):
    again = MultiHopWorld(0)
    assert again.documents == world.documents
    assert MultiHopWorld(1).documents != world.documents
    tr, te = MultiHopTask("train", world=world), MultiHopTask("test", world=world)
    assert len(tr) > 100 and len(te) > 100
    assert not tr.entities() & te.entities()
    assert [e.id for e in tr][:20] == [e.id for e in MultiHopTask("train", world=again)][:20]
    assert {e.meta["hops"] for e in tr} == {2, 3}
    assert all(e.split == "train" for n in tr.entities() for e in [world.entities[n]])
    titles = [d["title"] for d in world.documents]
    assert len(set(titles)) == len(titles)


def test_multihop_verify(world):
    t = MultiHopTask("train", world=world)
    e = t[0]
    assert t.verify(f"<answer> {e.answer.upper()}. </answer>", e) == 1.0
    assert t.verify(f"#### {e.answer}", e) == 1.0
    assert t.verify("<answer> somewhere </answer>", e) == 0.0
    assert t.verify("no answer <b>", e) == 0.0


@pytest.mark.parametrize("split", ["train", "test"])
def test_oracle_agent_answers_every_question(world, search_env, split):
    """Searching each hop's entity name surfaces its document in the top-k, and that
    document names the next hop: every question is answerable by BM25 + the documents."""
    task = MultiHopTask(split, world=world)
    env = SearchEnv(task, search_env.retriever, k=3, max_turns=5)
    examples = list(task)
    states = env.reset(examples)
    hops = max(e.meta["hops"] for e in examples)
    for h in range(hops):
        acts = []
        for st in states:
            chain = st.example.meta["chain"]
            acts.append(f"<search> {chain[h]} </search>" if h < len(chain) - 1 else "x")
        res = env.step(states, acts)
        for st, o in zip(states, res.observations, strict=True):
            chain = st.example.meta["chain"]
            if h < len(chain) - 1:
                assert f"(Title: {chain[h]})" in o, (chain, o)
                assert chain[h + 1] in o
    # the oracle then answers from the last observation
    res = env.step(states, [f"<answer> {st.example.meta['chain'][-1]} </answer>" for st in states])
    assert all(res.dones) and sum(res.rewards) == len(states)


def test_search_env_protocol(search_env):
    assert search_env.stop_strings == ("</search>", "</tool>", "</answer>")
    assert "<search> query </search>" in search_env.system_prompt
    s = search_env.reset([search_env.task[0]])
    r = search_env.step(s, ["<search>   </search>"])
    assert "error: empty search query" in r.observations[0]
    r = search_env.step(s, ["<search> qqqzzz nothing </search>"])
    assert r.observations[0] == "\n<information>\nno results\n</information>\n"
    assert s[0].tool_calls == 2 and s[0].tool_errors == 1


def test_retrieval_cache(tmp_path):
    corpus = tmp_path / "c.jsonl"
    docs = [
        {"id": "1", "title": "Zorvex Labs", "text": "Zorvex Labs makes robots in Velmora."},
        {"id": "2", "title": "Velmora", "text": "Velmora is a city in Quandor."},
        {"id": "3", "title": "Quandor", "text": "Quandor is a country."},
    ]
    corpus.write_text("".join(json.dumps(d) + "\n" for d in docs))
    r1 = BM25Retriever(corpus, cache_dir=tmp_path / "idx")
    assert r1.built and (tmp_path / "idx" / r1.fingerprint).is_dir()
    r2 = BM25Retriever(corpus, cache_dir=tmp_path / "idx")
    assert not r2.built and r2.fingerprint == r1.fingerprint
    for r in (r1, r2):
        hits = r.search("where is Velmora", k=2)
        assert hits[0].title == "Velmora" and len(hits) == 2
        assert r.search("unknownword", k=3) == []
        assert len(r.search("Velmora", k=50)) <= 3
    with open(corpus, "a") as f:
        f.write(json.dumps({"id": "4", "title": "New", "text": "A new doc."}) + "\n")
    r3 = BM25Retriever(corpus, cache_dir=tmp_path / "idx")
    assert r3.built and r3.fingerprint != r1.fingerprint and len(r3) == 4
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n")
    with pytest.raises(ValueError, match="bad.jsonl:1"):
        BM25Retriever(bad)
