"""credit/first_error_hit on a hand-made batch (every row's outcome derived by hand)."""

import numpy as np

from jaxrl_reason.eval.credit_metrics import first_error_hit, step_mean_advantages

S = 4


def _batch():
    # 6 rows x 8 tokens; segment ids (-1 = padding)
    seg = np.array(
        [
            [0, 0, 1, 1, 2, 2, -1, -1],  # 0: wrong, first error 1; step means [0, -1, -0.5]: hit
            [0, 0, 1, 1, 2, 2, -1, -1],  # 1: wrong, first error 2; lowest is step 0: miss
            [0, 0, 1, 1, 1, 1, 1, 1],  # 2: wrong, first error 1; all steps tie -> step 0: miss
            [0, 0, 1, 1, 2, 2, 3, 3],  # 3: right answer: not eligible
            [0, 0, 1, 1, -1, -1, -1, -1],  # 4: wrong, first error 3 (a missing step): skip
            [0, 1, 2, 3, 3, 3, 3, 3],  # 5: wrong, first error 6 -> folded into S-1 = 3
        ]
    )
    adv = np.array(
        [
            [0.0, 0.0, -1.0, -1.0, -0.25, -0.75, 0, 0],
            [-2.0, 0.0, 0.5, 0.5, 0.0, 0.0, 0, 0],
            [-0.3, -0.3, -0.3, -0.3, -0.3, -0.3, -0.3, -0.3],
            [0.0, 0.0, -5.0, 0.0, 0.0, 0.0, 0.0, 0.0],
            [1.0, 1.0, -1.0, -1.0, 0, 0, 0, 0],
            [0.2, 0.1, 0.0, -0.1, 9.0, -0.6, -0.1, -0.1],
        ]
    )
    mask = (seg >= 0).astype(np.float32)
    mask[5, 4] = 0.0  # the update does not train on this token: step 3 = mean(-0.1,-0.6,-0.1,-0.1)
    correct = np.array([0, 0, 0, 1, 0, 0], np.float32)
    first = np.array([1, 2, 1, 0, 3, 6])
    return adv, mask, seg, correct, first


def test_first_error_hit_hand_made_batch():
    adv, mask, seg, correct, first = _batch()
    m = first_error_hit(adv, mask, seg, correct, first, num_steps=S)
    # eligible: rows 0, 1, 2, 5 (3 is right, 4's first error has no step); hits: 0 and 5
    assert m["credit/first_error_n"] == 4.0
    assert m["credit/first_error_hit"] == 0.5
    assert m["credit/first_error_tied"] == 0.25  # row 2
    # blame-the-first-step baseline: no eligible row's first error is its step 0
    assert m["credit/first_error_first_step"] == 0.0
    m0 = first_error_hit(adv, mask, seg, correct, np.array([0, 0, 1, 0, 3, 6]), num_steps=S)
    assert m0["credit/first_error_first_step"] == 0.5  # rows 0 and 1 of 0, 1, 2, 5
    means, has = step_mean_advantages(adv, mask, seg, S)
    np.testing.assert_allclose(means[5], [0.2, 0.1, 0.0, -0.225])
    np.testing.assert_allclose(means[0, :3], [0.0, -1.0, -0.5])
    assert has[0].tolist() == [True, True, True, False]


def test_ties_go_to_the_earliest_step_and_no_eligible_row_gives_zero():
    seg = np.array([[0, 0, 1, 1, 2, 2]])
    adv = np.full((1, 6), -0.7, np.float32)  # an outcome estimator: every step ties
    adv[0, 4:] += 1e-8  # float noise within the tolerance is still a tie
    for first, hit in ((0, 1.0), (2, 0.0)):
        m = first_error_hit(adv, seg >= 0, seg, np.zeros(1), np.array([first]), num_steps=S)
        assert m["credit/first_error_hit"] == hit and m["credit/first_error_tied"] == 1.0
    m = first_error_hit(adv, seg >= 0, seg, np.ones(1), np.array([0]), num_steps=S)
    assert m == {
        "credit/first_error_hit": 0.0,
        "credit/first_error_n": 0.0,
        "credit/first_error_tied": 0.0,
        "credit/first_error_first_step": 0.0,
    }
