"""SessionExpander on the tiny model: step-by-step expansion from forked KV caches decodes
exactly what one sampler call on the prompt does, with and without cache compaction."""

import jax
import numpy as np
import pytest

from jaxrl_reason.data.arith_chain import ArithChainTask
from jaxrl_reason.models.build import build_model
from jaxrl_reason.rollout import SamplingConfig, left_pad, sample
from jaxrl_reason.rollout.chat import chat_prompt_ids, stop_token_ids
from jaxrl_reason.search import SessionExpander, arith_chain_oracle_scorer, beam_search
from jaxrl_reason.search.expander import newline_token_ids

R = 24


@pytest.fixture(scope="module")
def setup():
    import ml_collections

    model, tok = build_model(ml_collections.ConfigDict({"name": "tiny_debug"}))
    task = ArithChainTask("test", num_examples=4)
    return model, tok, task, list(task[:3])


def _expander(setup, **kw):
    model, tok, task, _ = setup
    cfg = SamplingConfig(greedy=True, stop_token_ids=stop_token_ids(tok, model))
    return SessionExpander(model, tok, task, sampling=cfg, max_new_tokens=R, **kw)


def _greedy_reference(setup):
    model, tok, task, exs = setup
    ids = chat_prompt_ids(tok, task, exs)
    tokens, mask = left_pad(ids, tok.pad_token_id)
    out = sample(
        model,
        tokens,
        mask,
        jax.random.key(0),
        SamplingConfig(max_new_tokens=R, greedy=True, stop_token_ids=stop_token_ids(tok, model)),
    )
    toks, lens = np.asarray(out.tokens), np.asarray(out.lengths)
    return [toks[i, : lens[i]].tolist() for i in range(len(exs))]


@pytest.mark.parametrize("compact", [False, True])
def test_stepwise_greedy_expansion_equals_one_greedy_sample(setup, compact, monkeypatch):
    """compact=True: every expansion finds the cache full (capacity patched to 0) and
    re-prefills prompt + response instead; the tokens must not change."""
    _, tok, _, exs = setup
    ref = _greedy_reference(setup)
    if compact:
        from jaxrl_reason.search import expander as expander_mod

        monkeypatch.setattr(expander_mod.ses, "capacity", lambda s: 0)
    exp = _expander(setup, step_tokens=4)
    handles = exp.roots(exs)
    texts = [""] * len(exs)
    done = [False] * len(exs)
    steps = 0
    while not all(done):
        live = [i for i in range(len(exs)) if not done[i]]
        kids = exp.expand([handles[i] for i in live], 2, jax.random.key(1))
        for i, ks in zip(live, kids, strict=True):
            a, b = ks
            assert a.handle.response == b.handle.response  # greedy: both copies agree
            texts[i] += a.text
            handles[i], done[i] = a.handle, a.finished
            assert a.num_tokens <= 4
        steps += 1
    assert steps >= R // 4
    for i in range(len(exs)):
        assert list(handles[i].response) == ref[i]
        assert texts[i] == tok.decode(ref[i], skip_special_tokens=True)
    if compact:
        assert exp.stats["prefills"] == 1 + steps
    else:
        assert exp.stats["prefills"] == 1  # one prefill, every step continued from the cache


def test_a_step_ends_at_a_newline_token(setup):
    _, tok, _, _ = setup
    nl = set(newline_token_ids(tok))
    assert tok.encode("\n", add_special_tokens=False)[0] in nl
    assert all("\n" in tok.decode([i]) for i in list(nl)[:50])


def test_beam_search_on_tiny_debug_counts_tokens(setup):
    _, _, _, exs = setup
    exp = _expander(setup, step_tokens=8)
    res = beam_search(
        exp,
        arith_chain_oracle_scorer(),
        exs,
        jax.random.key(0),
        beam_width=2,
        expansions=2,
        max_depth=2,
    )
    assert len(res.texts) == 3 and res.tokens_generated == exp.stats["tokens"]
    assert res.tokens_generated == int(res.tokens_per_problem.sum()) > 0
