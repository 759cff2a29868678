"""rollout.continuations: the shared vine / MC-label routine's own contract (chunking, the
empty case, the score layout); its draws against sample() are tested in test_vine.py and
test_mc_labels.py."""

import jax
import numpy as np
import pytest

from jaxrl_reason.rollout import SamplingConfig, left_pad
from jaxrl_reason.rollout import session as ses
from jaxrl_reason.rollout.continuations import sample_continuations
from tests.rollout.tiny import scaled_tiny_model

CFG = SamplingConfig(max_new_tokens=6, temperature=1.0, stop_token_ids=(), prompt_bucket=0)
K = 3


@pytest.fixture(scope="module")
def setup():
    model = scaled_tiny_model(head_scale=3.0)
    ptok, pmask = left_pad([[1, 5, 6, 7], [1, 9]])
    resp = np.array([[11, 12, 13, 14], [21, 22, 23, 0]], np.int32)
    lens = np.array([4, 3])
    lib = ses.start(model, ptok, pmask, max_len=4 + 4 + 1 + 6)
    lib = ses.extend(model, lib, resp, np.arange(4)[None, :] < lens[:, None])
    plen = pmask.sum(1)
    # states: (row, prefix length): the empty prefix re-feeds the prompt's last token
    states = [(0, 0), (0, 2), (1, 1), (1, 3), (0, 4)]
    kw = dict(
        src=[r for r, _ in states],
        num_real=[plen[r] + i - 1 for r, i in states],
        feed=[resp[r, i - 1] if i else ptok[r, -1] for r, i in states],
        state_keys=[jax.random.fold_in(jax.random.key(5), q) for q in range(len(states))],
        limit=[6 - i for _, i in states],
        prefixes=[resp[r, :i].tolist() for r, i in states],
        k=K,
        steps=6,
    )
    return model, lib, kw


def _score(state_of, seqs):
    return np.array([float(sum(s) % 2 == 0) for s in seqs], np.float32)


def test_chunking_does_not_change_the_draws(setup):
    model, lib, kw = setup
    whole = sample_continuations(model, lib, CFG, score_fn=_score, chunk_rows=256, **kw)
    # 15 rows in calls of 8: two decode calls, the second padded with an inactive row
    chunked = sample_continuations(model, lib, CFG, score_fn=_score, chunk_rows=8, **kw)
    np.testing.assert_array_equal(whole.tokens, chunked.tokens)
    np.testing.assert_array_equal(whole.lengths, chunked.lengths)
    np.testing.assert_array_equal(whole.scores, chunked.scores)
    assert whole.tokens.shape == (5 * K, 6) and whole.scores.shape == (5, K)
    # each continuation stops at its state's limit (no stop ids): R - i tokens
    np.testing.assert_array_equal(whole.lengths, np.repeat([6, 4, 5, 3, 2], K))


def test_scores_see_prefix_plus_continuation_in_state_order(setup):
    model, lib, kw = setup
    seen = []

    def record(state_of, seqs):
        seen.extend(zip(state_of, seqs, strict=True))
        return np.arange(len(seqs), dtype=np.float32)

    out = sample_continuations(model, lib, CFG, score_fn=record, **kw)
    assert [m for m, _ in seen] == np.repeat(np.arange(5), K).tolist()
    for q, (m, seq) in enumerate(seen):
        pre = kw["prefixes"][m]
        assert seq == pre + out.tokens[q, : out.lengths[q]].tolist()
    np.testing.assert_array_equal(out.scores, np.arange(5 * K).reshape(5, K))


def test_no_states_decodes_nothing():
    calls = []
    out = sample_continuations(
        None,
        None,
        CFG,
        src=[],
        num_real=[],
        feed=[],
        state_keys=[],
        limit=[],
        prefixes=[],
        k=K,
        steps=6,
        score_fn=lambda *a: calls.append(a),
    )
    assert out.tokens.shape == (0, 6) and out.lengths.shape == (0,)
    assert out.scores.shape == (0, K) and not calls
