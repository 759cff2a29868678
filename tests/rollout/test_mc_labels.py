"""Math-Shepherd MC step labels from sessions equal a direct sample() per step prefix."""

import dataclasses

import jax
import numpy as np
import pytest

from jaxrl_reason.rollout import SamplingConfig, left_pad, sample
from jaxrl_reason.rollout.mc_labels import mc_step_labels, step_key
from tests.rollout.tiny import scaled_tiny_model

CFG = SamplingConfig(max_new_tokens=6, temperature=1.0, stop_token_ids=(), prompt_bucket=0)
K = 4


@pytest.fixture(scope="module")
def model():
    return scaled_tiny_model(head_scale=3.0)


def _even_sum(rows, seqs):
    """A stand-in verifier that depends on every continuation token."""
    return np.asarray([float(sum(s) % 2 == 0) for s in seqs], np.float32)


def test_mc_labels_equal_direct_sampling(model):
    prompts = [[1, 5, 6, 7], [1, 9]]
    ptoks, pmask = left_pad(prompts)
    resp = np.array([[11, 12, 13, 14, 15, 0], [21, 22, 23, 24, 25, 26]], np.int32)
    seg = np.array([[0, 0, 1, 1, 2, -1], [0, 1, 1, 1, 1, 1]], np.int32)
    lengths = np.array([5, 6])
    key = jax.random.key(7)
    out = mc_step_labels(
        model, ptoks, pmask, resp, seg, lengths, key, CFG,
        num_rollouts=K, num_steps=4, correct_fn=_even_sum,
    )  # fmt: skip
    ends = {0: [2, 4], 1: [1]}  # prefix lengths of the steps that get continuations
    soft = np.zeros((2, 4), np.float32)
    for b, prefix_lens in ends.items():
        for s, n in enumerate(prefix_lens):
            tok, msk = left_pad([prompts[b] + resp[b, :n].tolist()])
            ref = sample(model, tok, msk, step_key(key, b, s)[None], dataclasses.replace(CFG, n=K))
            ref_tok, ref_len = np.asarray(ref.tokens), np.asarray(ref.lengths)
            np.testing.assert_array_equal(out.continuations[(b, s)], ref_tok)
            np.testing.assert_array_equal(out.lengths[(b, s)], ref_len)
            seqs = [resp[b, :n].tolist() + ref_tok[j, : ref_len[j]].tolist() for j in range(K)]
            soft[b, s] = _even_sum(None, seqs).mean()
    # Last steps: the response's own outcome (sum 65 odd -> 0; sum 141 odd -> 0).
    np.testing.assert_array_equal(out.valid, [[1, 1, 1, 0], [1, 1, 0, 0]])
    np.testing.assert_allclose(out.soft, soft)
    np.testing.assert_allclose(out.hard, (soft > 0).astype(np.float32))
    assert 0 < soft[out.valid].sum() < out.valid.sum()  # labels are not all equal


def test_mc_labels_last_step_is_the_outcome(model):
    ptoks, pmask = left_pad([[1, 5]])
    resp = np.array([[10, 12, 0]], np.int32)  # even sum: "correct"
    seg = np.array([[0, 0, -1]], np.int32)
    out = mc_step_labels(
        model, ptoks, pmask, resp, seg, np.array([2]), jax.random.key(0), CFG,
        num_rollouts=K, num_steps=2, correct_fn=_even_sum,
    )  # fmt: skip
    np.testing.assert_array_equal(out.soft, [[1.0, 0.0]])
    assert out.continuations == {}
