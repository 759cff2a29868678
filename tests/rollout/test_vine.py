"""rollout.vine: Monte Carlo step values with the tiny model, against direct re-sampling."""

import dataclasses

import jax
import numpy as np
import pytest

from jaxrl_reason.rollout import SamplingConfig, left_pad, sample, strategies
from jaxrl_reason.rollout import vine as vine_mod
from jaxrl_reason.rollout.sampler import _prompt_keys
from jaxrl_reason.rollout.steps import spo_chain_segment_ids
from tests.rollout.tiny import scaled_tiny_model

PROMPTS = [[1, 5, 6, 7], [1, 9], [3, 4, 5, 6, 7, 8, 9]]
R = 12
N = 2
K = 3
STEP = 3  # tokens per step of the test's step rule
S = 8


@pytest.fixture(scope="module")
def model():
    # Peaked distributions: token draws from the session and from sample() agree exactly
    # despite float rounding differences.
    return scaled_tiny_model(layer_scale=10.0, head_scale=6.0)


class _Tok:
    """One character per id (so text = ids and verify can read them back)."""

    pad_token_id = 0

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(0x100 + int(i)) for i in ids)


class _ParityTask:
    """Correct iff the ids of the whole response sum to an even number: an outcome that
    depends on every token, so continuations of a prefix disagree."""

    @staticmethod
    def ids(text):
        return [ord(c) - 0x100 for c in text]

    def verify_batch(self, texts, examples):
        return np.array([float(sum(self.ids(t)) % 2 == 0) for t in texts], np.float32)


def _strategy(stop=(), **vine):
    cfg = SamplingConfig(
        max_new_tokens=R, temperature=1.0, n=N, stop_token_ids=stop, prompt_bucket=16
    )
    settings = strategies.RolloutSettings(
        tokenizer=_Tok(),
        task=_ParityTask(),
        sampling=cfg,
        max_steps=S,
        options={"vine": {"k": K, **vine}},
    )
    strat = strategies.get_strategy("vine")(settings)
    strat.prompt_batch = lambda examples: left_pad([PROMPTS[i] for i in examples])
    strat.segment_ids = lambda t, lens: np.where(
        np.arange(t.shape[1]) < lens[:, None], np.minimum(np.arange(t.shape[1]) // STEP, S - 1), -1
    ).astype(np.int32)
    return strat, cfg


@pytest.fixture(scope="module")
def vine_all(model):
    strat, cfg = _strategy(stop=(7,), chunk_rows=16)  # chunks: several decode calls
    traj = strat.collect(model, [0, 1, 2], jax.random.key(3))
    return strat, cfg, traj.check()


def _direct_values(model, cfg, traj, states, key):
    """Re-sample each state's K continuations with sample() from prompt + prefix (its own
    prefill, no session), with the documented state keys; verify and average."""
    pk = _prompt_keys(key, len(PROMPTS))
    toks = np.asarray(traj.tokens)
    out = {}
    for pos in sorted({i for _, _, i, _ in states}):
        group = [st for st in states if st[2] == pos]
        prefixes = [PROMPTS[b] + toks[b * N + max(j, 0), :pos].tolist() for b, j, _, _ in group]
        keys = jax.numpy.stack([vine_mod.state_key(pk[b], j, pos) for b, j, _, _ in group])
        t, m = left_pad(prefixes, length=32)
        ro = sample(model, t, m, keys, dataclasses.replace(cfg, n=K, max_new_tokens=R - pos))
        cont = [toks_row for toks_row in ro.response_lists()]
        for g, (b, j, _, _) in enumerate(group):
            texts = [
                _Tok().decode(toks[b * N + max(j, 0), :pos].tolist() + cont[g * K + c])
                for c in range(K)
            ]
            out[(b, j, pos)] = float(_ParityTask().verify_batch(texts, None).mean())
    return out


def test_step_values_equal_direct_monte_carlo(model, vine_all):
    strat, cfg, traj = vine_all
    states = strat.last_states
    # the prompt state once per prompt, then one state per later step start of each response
    lens = np.asarray(traj.lengths)
    want_states = len(PROMPTS) + sum(min(-(-int(n) // STEP), S) - 1 for n in lens)
    assert len(states) == want_states
    direct = _direct_values(model, cfg, traj, states, jax.random.key(3))
    for b, j, i, v in states:
        assert v == direct[(b, j, i)], (b, j, i)
    values, known = np.asarray(traj.step_values), np.asarray(traj.step_value_mask)
    for b, j, i, v in states:
        rows = [b * N + jj for jj in range(N)] if j < 0 else [b * N + j]
        for r in rows:
            assert known[r, i // STEP] and values[r, i // STEP] == v
    assert known.sum() == want_states - len(PROMPTS) + len(PROMPTS) * N
    # not all equal: the test can tell a wrong prefix from a right one
    assert len({v for *_, v in states}) > 1
    # the responses are sample(n)'s rows
    ref = sample(model, *left_pad(PROMPTS), _prompt_keys(jax.random.key(3), 3), cfg)
    np.testing.assert_array_equal(np.asarray(traj.tokens), np.asarray(ref.tokens))
    np.testing.assert_allclose(np.asarray(traj.old_logprobs), np.asarray(ref.logprobs), atol=1e-4)


def test_continuation_from_the_cache_equals_the_tail_of_the_full_decode(model, vine_all):
    strat, cfg, traj = vine_all
    _, _, tb, mb = strat.padded_prompts([0, 1, 2])
    pk = _prompt_keys(jax.random.key(3), 3)
    lib, toks, _, lens, _ = strat.responses(model, tb, mb, pk)
    plen = mb.sum(1)
    rows, pos = [], []
    for r in range(len(lens)):
        for i in (0, 1, 4, int(lens[r]) - 1):
            if 0 <= i < lens[r]:
                rows.append(r)
                pos.append(i)
    rows, pos = np.array(rows), np.array(pos)
    b = rows // N
    feed = np.where(pos > 0, toks[rows, np.maximum(pos - 1, 0)], tb[b, -1])
    main_keys = jax.vmap(jax.random.fold_in)(pk[b], rows % N)
    ct, _, cl, _ = vine_mod.continue_rows(
        model,
        lib,
        rows,
        plen[b] + pos - 1,
        feed,
        main_keys,
        cfg,
        steps=R,
        active=np.ones(len(rows), bool),
        limit=R - pos,
        step_offset=pos,  # the same key and step index: the same draws as the full decode
    )
    for q, (r, i) in enumerate(zip(rows, pos, strict=True)):
        tail = toks[r, i : lens[r]]
        assert cl[q] == len(tail), (r, i)
        np.testing.assert_array_equal(ct[q, : cl[q]], tail)


def test_budget_stats(vine_all):
    strat, _, traj = vine_all
    st = strat.last_stats
    assert st["continuations"] == K * len(strat.last_states) == K * st["states"]
    assert st["leaves"] == traj.batch_size
    assert 0 < st["continuation_tokens"] <= st["continuations"] * R
    assert st["decoded_tokens"] == np.asarray(traj.lengths).sum() + st["continuation_tokens"]
    for k in ("time/rollout_main_s", "time/rollout_continuations_s", "time/rollout_verify_s"):
        assert st[k] >= 0


def test_max_steps_and_every_k_leave_later_states_unestimated(model):
    strat, _ = _strategy(max_steps=3, which="every_k", every=2)
    traj = strat.collect(model, [0, 2], jax.random.key(5))
    known, values = np.asarray(traj.step_value_mask), np.asarray(traj.step_values)
    steps = np.asarray(traj.segment_id).max(-1) + 1
    for r in range(traj.batch_size):
        want = [k for k in range(S) if k < min(steps[r], 3) and k % 2 == 0]
        assert np.flatnonzero(known[r]).tolist() == want
        assert np.all(values[r, ~known[r]] == 0.0)
    # two prompts, each: s_0 once + s_2 of each response that has a third step
    assert len(strat.last_states) == 2 + int(np.sum(steps >= 3))


def test_spo_cut_segments_follow_the_probability_cut_points(model):
    strat, _ = _strategy(which="spo_cut", rho=0.9, interval=2)
    assert not strat.segments_follow_step_rule
    traj = strat.collect(model, [0, 1], jax.random.key(7))
    lp, seg, lens = (np.asarray(x) for x in (traj.old_logprobs, traj.segment_id, traj.lengths))
    for r in range(traj.batch_size):
        want, _, _ = spo_chain_segment_ids(np.exp(lp[r, : lens[r]]), rho=0.9, interval=2)
        np.testing.assert_array_equal(seg[r, : lens[r]], np.minimum(want, S - 1))
        assert np.all(seg[r, lens[r] :] == -1)
    # every segment start of every response is a state (s_0 shared by the prompt's rows)
    starts = {(r, i) for r in range(traj.batch_size) for i in vine_mod.step_starts(seg[r])[1:]}
    got = {(b * N + j, i) for b, j, i, _ in strat.last_states if j >= 0}
    assert got == starts


def test_selected_states_and_step_starts():
    cfg = vine_mod.VineConfig(max_steps=5, which="every_k", every=2)
    assert vine_mod.selected_states(7, cfg) == [0, 2, 4]
    assert vine_mod.selected_states(2, cfg) == [0]
    assert vine_mod.selected_states(3, vine_mod.VineConfig(max_steps=8)) == [0, 1, 2]
    assert vine_mod.step_starts(np.array([0, 0, 1, 1, 1, 2, -1, -1])) == [0, 2, 5]
    assert vine_mod.step_starts(np.array([-1, -1])) == []
    with pytest.raises(ValueError, match="rollout.vine.which"):
        vine_mod.VineConfig.from_mapping({"which": "some"})
