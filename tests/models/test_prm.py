"""The PRM head reads the decoder's hidden state at each step's last token."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxrl_reason.models import ModelConfig, Transformer
from jaxrl_reason.models.prm import PRMHead, step_end_index, step_scores


def _tiny():
    model = Transformer(ModelConfig.tiny_debug(), rngs=nnx.Rngs(0))
    head = PRMHead(64)
    k = jax.random.normal(jax.random.key(1), (64, 1)) * 0.5
    head.kernel.value = k
    head.bias.value = jnp.asarray([0.3])
    return model, head


def test_step_end_index_hand_example():
    seg = np.array([[0, 0, 1, 1, 1, 2, -1, -1], [0, 0, 0, 0, 0, 0, 0, 0], [-1] * 8], np.int32)
    end, valid = step_end_index(seg, 4)
    np.testing.assert_array_equal(end, [[1, 4, 5, 0], [7, 0, 0, 0], [0, 0, 0, 0]])
    np.testing.assert_array_equal(valid, [[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]])


def test_scores_equal_a_direct_forward_at_step_ends():
    model, head = _tiny()
    rng = np.random.default_rng(0)
    # Row 0: a 3-token prompt left-padded to 5; row 1: a full 5-token prompt.
    prompt = rng.integers(3, 250, (2, 5)).astype(np.int32)
    pmask = np.array([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]], bool)
    prompt[0, :2] = 0
    resp = rng.integers(3, 250, (2, 7)).astype(np.int32)
    seg = np.array([[0, 0, 1, 1, 2, -1, -1], [0, 1, 1, 1, 1, 1, 1]], np.int32)
    got = np.asarray(step_scores(model, head, prompt, pmask, resp, seg, num_steps=4))
    # Direct: each row alone, unpadded, positions 0.., the head at the step ends by hand.
    ends = {0: [1, 3, 4], 1: [0, 6]}
    for b in range(2):
        toks = np.concatenate([prompt[b][pmask[b]], resp[b]])[None]
        h = model(jnp.asarray(toks), return_hidden=True)[0]
        n_p = int(pmask[b].sum())
        want = [
            float(jax.nn.sigmoid(h[n_p + e] @ head.kernel.value[:, 0] + head.bias.value[0]))
            for e in ends[b]
        ]
        np.testing.assert_allclose(got[b, : len(want)], want, rtol=1e-5, atol=1e-6)
        assert np.all(got[b, len(want) :] == 0.0)
    assert len(np.unique(got[got > 0])) == 5  # the scores really differ by position
