"""search.prm_scorer: the min over a response's step scores of a PRM, on re-tokenised text."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxrl_reason.data.arith_chain import ArithChainTask
from jaxrl_reason.models.build import build_model
from jaxrl_reason.models.prm import PRM, PRMHead
from jaxrl_reason.rollout.chat import chat_prompt_ids
from jaxrl_reason.rollout.steps import response_segment_ids
from jaxrl_reason.search import prm_scorer


def test_prm_scorer_is_the_min_over_steps_of_a_direct_prm_call():
    model, tok = build_model(ml_collections.ConfigDict({"name": "tiny_debug"}))
    head = PRMHead(model.config.hidden_size)
    head.kernel.value = jax.random.normal(jax.random.key(1), (model.config.hidden_size, 1))
    head.bias.value = jnp.asarray([0.3])
    prm = PRM(model, head, tok, {})
    task = ArithChainTask("test", num_examples=4)
    exs = list(task[:3])
    texts = ["3 + 4 = 7\n7 - 2 = 5\n#### 5", "2 + 2 = 4", ""]
    got = prm_scorer(prm, tok, task, max_steps=4, batch=2)(exs, texts)
    assert got.shape == (3,) and got.dtype == np.float32
    assert got[2] == 0.5  # no step yet
    # Direct: one row at a time, unpadded, the same step rule.
    for i in range(2):
        p = np.asarray([chat_prompt_ids(tok, task, [exs[i]])[0]], np.int32)
        r = np.asarray([tok.encode(texts[i], add_special_tokens=False)], np.int32)
        seg = response_segment_ids(
            tok, r, np.asarray([r.shape[1]]), rule="auto", task=task, max_steps=4
        )
        s = prm.scores(p, np.ones_like(p, bool), r, seg, 4)[0]
        steps = sorted(set(seg[0].tolist()) - {-1})
        assert len(steps) == (2 if i == 0 else 1)  # one step per computed line
        np.testing.assert_allclose(got[i], min(s[k] for k in steps), atol=1e-5)
    assert 0.0 < got[0] < 1.0 and got[0] != got[1]
