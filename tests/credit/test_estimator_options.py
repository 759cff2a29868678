"""Estimator options the worked examples leave at their defaults, against float64 numpy ports.

GRPO's eps placement on a near-constant group (verl: ``(s - mean) / (std + eps)``, unbiased
std); PURE with a KL term, ``vr_coef`` != 1 and ``weighted=False`` (both branches); CAPO's
weights, vote rules and group normalisation; PRIME's ``beta`` / ``gamma`` / coefficients
(paper, code and verl forms). The ports follow the docstrings of ``credit/process.py`` and
``research/process_credit.md`` (sections 1b, 2b, 2c, 5), written loop by loop.
"""

import functools

import jax
import numpy as np
import pytest

from jaxrl_reason.credit import outcome as O
from jaxrl_reason.credit import process as P

# --------------------------------------------------------------------------------------------
# numpy helpers
# --------------------------------------------------------------------------------------------


def _others(gids, valid, i):
    return [j for j in range(len(gids)) if j != i and valid[j] and gids[j] == gids[i]]


def _loo(x, gids, valid, i):
    """Mean of x over the other valid rows of i's group; own value for a singleton."""
    js = _others(gids, valid, i)
    return np.mean([x[j] for j in js]) if js else x[i]


def _revcumsum(x, gamma=1.0):
    out = np.zeros_like(x, dtype=np.float64)
    acc = np.zeros(x.shape[0])
    for t in range(x.shape[1] - 1, -1, -1):
        acc = x[:, t] + gamma * acc
        out[:, t] = acc
    return out


def _whiten(x, m):
    v = x[m]
    return np.where(m, (x - v.mean()) / np.sqrt(v.var(ddof=1) + 1e-8), 0.0)


def _last(m):
    return np.array([np.flatnonzero(row)[-1] for row in m])


# --------------------------------------------------------------------------------------------
# GRPO: eps on the std, not inside the square root
# --------------------------------------------------------------------------------------------


def _verl_grpo(scores, gids, eps=1e-6):
    """numpy port of verl ``compute_grpo_outcome_advantage`` (torch.std is unbiased)."""
    scores = np.asarray(scores, np.float64)
    out = np.zeros_like(scores)
    for g in np.unique(gids):
        idx = np.flatnonzero(gids == g)
        s = scores[idx]
        mean, std = (0.0, 1.0) if len(idx) == 1 else (s.mean(), s.std(ddof=1))
        out[idx] = (s - mean) / (std + eps)
    return out


def test_grpo_near_constant_group_matches_verl_eps_placement():
    # Group 0: std ~1.3e-7, far below eps = 1e-6: (s - m) / (std + eps) ~ 0.1, while
    # (s - m) / sqrt(var + eps) ~ 1e-4 and (s - m) / std ~ 1.
    scores = np.array([0.0, 2e-7, 0.0, -1e-7, 1.0, 0.0, 0.0, 3.0], np.float32)
    gids = np.array([0, 0, 0, 0, 1, 1, 1, 2], np.int32)
    t = 3
    mask = np.ones((8, t), bool)
    mask[5, 2:] = False
    tr = np.zeros((8, t), np.float32)
    tr[np.arange(8), _last(mask)] = scores
    adv, ret = jax.jit(O.grpo)(tr, mask, gids)
    want = _verl_grpo(scores, gids)
    assert 0.05 < np.abs(want[:4]).max() < 0.5  # the regime where eps placement matters
    np.testing.assert_allclose(np.asarray(adv)[:, 0], want, rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(adv, np.where(mask, want[:, None], 0.0), rtol=1e-3, atol=1e-6)
    np.testing.assert_array_equal(adv, ret)
    # The singleton keeps its score / (1 + eps), the verl convention.
    np.testing.assert_allclose(adv[7, 0], 3.0 / (1 + 1e-6), rtol=1e-6)
    # A custom eps is honoured in the same place.
    adv2, _ = jax.jit(functools.partial(O.grpo, eps=1e-4))(tr, mask, gids)
    np.testing.assert_allclose(
        np.asarray(adv2)[:, 0], _verl_grpo(scores, gids, 1e-4), rtol=1e-3, atol=1e-7
    )


# --------------------------------------------------------------------------------------------
# PURE
# --------------------------------------------------------------------------------------------

# Two groups: rows 0-2 (K = 3), row 3 a singleton. Prefix masks, T = 7, S = 3.
PSEG = np.array(
    [
        [0, 0, 1, 1, 1, 2, 2],
        [0, 1, 1, 2, 2, -1, -1],
        [0, 0, 0, 1, 1, 1, -1],
        [0, 1, 1, 1, 2, 2, 2],
    ]
)
PMASK = PSEG >= 0
PSR = np.array(
    [[0.8, -0.6, 0.4], [0.9, 0.7, -0.2], [-0.5, 0.3, 9.0], [0.2, 0.1, -0.9]], np.float32
)  # row 2 has two steps: 9.0 is padding garbage
PO = np.array([1.0, 0.0, 1.0, 0.0], np.float32)
PG = np.array([5, 5, 5, 8], np.int32)
PKL = np.random.default_rng(4).normal(0.0, 0.5, PMASK.shape).astype(np.float32)


def _steps(seg, m, s):
    """step mask, closing-token index and token count per (row, step)."""
    b = seg.shape[0]
    sm = np.zeros((b, s), bool)
    end = np.zeros((b, s), int)
    cnt = np.zeros((b, s), int)
    for i in range(b):
        for k in range(s):
            ts = np.flatnonzero(m[i] & (seg[i] == k))
            if ts.size:
                sm[i, k], end[i, k], cnt[i, k] = True, ts[-1], ts.size
    return sm, end, cnt


def _rstar(sr, sm, weighted, temperature=0.1):
    sr = np.where(sm, sr.astype(np.float64), 0.0)
    if not weighted:
        return np.where(sm, sr / sm.sum(1, keepdims=True), 0.0)
    z = np.where(sm, -sr / temperature, -np.inf)
    w = np.exp(z - z.max(1, keepdims=True))
    return w / w.sum(1, keepdims=True) * sr


def _np_pure_main(weighted, vr_coef, kl_coef, normalize):
    m, seg = PMASK, PSEG
    b, s = PSR.shape
    valid = m.any(1)
    sm, end, cnt = _steps(seg, m, s)
    rs = _rstar(PSR, sm, weighted)
    big_o = rs.sum(1)
    length = m.sum(1).astype(np.float64)
    rtok = np.zeros(m.shape)
    closing = np.zeros(m.shape, bool)
    for i in range(b):
        js = _others(PG, valid, i)
        beta = (
            sum(big_o[j] for j in js) / sum(length[j] for j in js) if js else big_o[i] / length[i]
        )
        for k in range(s):
            if sm[i, k]:
                rtok[i, end[i, k]] = rs[i, k] - beta * (cnt[i, k] - 1)
                closing[i, end[i, k]] = True
    v = PO.astype(np.float64) - 1.0
    for i in range(b):
        rtok[i, _last(m)[i]] += vr_coef * (v[i] - _loo(v, PG, valid, i))
    rtok -= kl_coef * np.where(m, PKL, 0.0)
    g = np.where(m, _revcumsum(np.where(m, rtok, 0.0)), 0.0)
    g = np.where(closing, 0.0, g)
    if not normalize:
        return g, g
    nz = m & (g != 0)
    mu = g[m].sum() / nz.sum()
    sd = np.sqrt(((g - mu) ** 2)[m].sum() / nz.sum())
    return np.where(nz, (g - mu) / (sd + 1e-8), 0.0), g


@pytest.mark.parametrize("weighted", [False, True])
def test_pure_main_kl_vr_coef_and_weighting(weighted):
    fn = jax.jit(
        functools.partial(
            P.pure,
            weighted=weighted,
            vr_coef=0.5,
            kl_coef=0.2,
            step_rewards=PSR,
            segment_id=PSEG,
            outcome=PO,
        )
    )
    adv, g = fn(np.zeros(PMASK.shape, np.float32), PMASK, PG, kl=PKL)
    want_adv, want_g = _np_pure_main(weighted, 0.5, 0.2, True)
    np.testing.assert_allclose(g, want_g, atol=1e-5)
    np.testing.assert_allclose(adv, want_adv, atol=1e-4)
    # Each option moves the result: the port with a flipped KL sign, vr_coef 1 or the other
    # weighting is far from it.
    for alt in (
        _np_pure_main(weighted, 0.5, -0.2, False)[1],
        _np_pure_main(weighted, 1.0, 0.2, False)[1],
        _np_pure_main(not weighted, 0.5, 0.2, False)[1],
    ):
        assert np.abs(alt - want_g).max() > 1e-2
    # Unnormalised returns equal the port too.
    _, g2 = jax.jit(
        functools.partial(
            P.pure,
            weighted=weighted,
            vr_coef=0.5,
            kl_coef=0.2,
            normalize=False,
            step_rewards=PSR,
            segment_id=PSEG,
            outcome=PO,
        )
    )(np.zeros(PMASK.shape, np.float32), PMASK, PG, kl=PKL)
    np.testing.assert_allclose(g2, want_g, atol=1e-5)


def test_pure_main_kl_is_ignored_at_zero_coef_and_subtracted_otherwise():
    base = functools.partial(P.pure, step_rewards=PSR, segment_id=PSEG, outcome=PO, normalize=False)
    z = np.zeros(PMASK.shape, np.float32)
    _, g0 = jax.jit(base)(z, PMASK, PG)
    _, g_zero = jax.jit(functools.partial(base, kl_coef=0.0))(z, PMASK, PG, kl=PKL)
    np.testing.assert_allclose(g_zero, g0, atol=1e-6)
    # A constant KL of 1 on every token lowers each non-closing return by kl_coef times the
    # number of tokens from t to the end (a reverse cumsum of the penalty).
    _, g1 = jax.jit(functools.partial(base, kl_coef=0.1))(z, PMASK, PG, kl=np.ones_like(PKL))
    togo = np.where(PMASK, PMASK[:, ::-1].cumsum(1)[:, ::-1], 0)
    diff = np.asarray(g1) - np.asarray(g0)
    keep = np.asarray(g0) != 0
    np.testing.assert_allclose(diff[keep], -0.1 * togo[keep], atol=1e-5)


def _np_pure_verl(weighted, vr_coef, kl_coef):
    m, seg = PMASK, PSEG
    b, s = PSR.shape
    t = m.shape[1]
    valid = m.any(1)
    sm, end, _ = _steps(seg, m, s)
    rs = _rstar(PSR, sm, weighted)
    rew = np.zeros(m.shape)
    for i in range(b):
        for k in range(s):
            if sm[i, k]:
                rew[i, end[i, k]] += rs[i, k]
        rew[i, _last(m)[i]] += vr_coef * PO[i]
    rew -= kl_coef * np.where(m, PKL, 0.0)
    g = np.where(m, _revcumsum(np.where(m, rew, 0.0)), 0.0)
    row = g.sum(1) / t
    base = np.array([_loo(row, PG, valid, i) for i in range(b)])
    return _whiten(np.where(m, g - base[:, None], 0.0), m), g


def test_pure_verl_kl_vr_coef_unweighted():
    fn = jax.jit(
        functools.partial(
            P.pure,
            variant="verl",
            weighted=False,
            vr_coef=0.7,
            kl_coef=0.3,
            step_rewards=PSR,
            segment_id=PSEG,
            outcome=PO,
        )
    )
    adv, g = fn(np.zeros(PMASK.shape, np.float32), PMASK, PG, kl=PKL)
    want_adv, want_g = _np_pure_verl(False, 0.7, 0.3)
    np.testing.assert_allclose(g, want_g, atol=1e-5)
    np.testing.assert_allclose(adv, want_adv, atol=1e-4)
    assert np.abs(_np_pure_verl(False, 0.7, -0.3)[1] - want_g).max() > 1e-2


# --------------------------------------------------------------------------------------------
# CAPO
# --------------------------------------------------------------------------------------------

CSEG = np.array([[0, 0, 1, 1, 2, -1], [0, 1, 1, 2, 2, 2], [0, 0, 1, 2, -1, -1], [0, 1, 2, 2, 2, 2]])
CMASK = CSEG >= 0
CO = np.array([1.0, 0.0, 1.0, 1.0], np.float32)
CG = np.array([0, 0, 1, 1], np.int32)
# N = 3 critiques of S = 3 steps per response; critique 2 of row 1 did not parse.
CV = np.zeros((4, 3, 3), bool)
CV[0, 0, 1] = CV[0, 1, 1] = CV[0, 1, 2] = True  # step 1: 2/3, step 2: 1/3
CV[1, 0, 0] = CV[1, 1, 0] = CV[1, 2, 0] = True  # step 0: 3/3 (one of them invalid)
CV[1, 0, 2] = CV[1, 1, 2] = True  # step 2: 1 of the 2 parsed, 2 of all 3
CV[2, :, 2] = True  # step 2 of row 2: all
CV[3, 2, 0] = True  # step 0 of row 3: 1/3
CJ = np.ones((4, 3), bool)
CJ[1, 1] = False


def _np_vote(rule):
    out = np.zeros((4, 3), bool)
    for b in range(4):
        n = CJ[b].sum()
        for s in range(3):
            votes = sum(CV[b, k, s] for k in range(3) if CJ[b, k])
            out[b, s] = {
                "majority": votes > n / 2,
                "intersection": n > 0 and votes == n,
                "union": votes > 0,
            }[rule]
    return out


@pytest.mark.parametrize("rule", ["majority", "intersection", "union"])
def test_capo_weights_votes_and_group_normalisation(rule):
    wrong = _np_vote(rule)
    assert wrong.any()
    w_whole, w_process = 3.0, 0.75
    want_r = np.zeros(CMASK.shape)
    for b in range(4):
        for t in range(6):
            if CMASK[b, t]:
                want_r[b, t] = CO[b] * w_whole - wrong[b, CSEG[b, t]] * w_process
    want_adv = np.zeros(CMASK.shape)
    for g in (0, 1):
        sel = CMASK & (CG[:, None] == g)
        v = want_r[sel]
        want_adv[sel] = (v - v.mean()) / (v.std(ddof=1) + 1e-6)
    fn = jax.jit(
        functools.partial(
            P.capo,
            vote=rule,
            w_whole=w_whole,
            w_process=w_process,
            segment_id=CSEG,
            step_verdicts=CV,
            judge_mask=CJ,
            outcome=CO,
        )
    )
    adv, r = fn(np.zeros(CMASK.shape, np.float32), CMASK, CG)
    np.testing.assert_array_equal(P.capo_vote(CV, CJ, rule=rule), wrong)
    np.testing.assert_allclose(r, want_r, atol=1e-6)
    np.testing.assert_allclose(adv, want_adv, atol=1e-5)
    _, r_none = jax.jit(
        functools.partial(
            P.capo,
            vote=rule,
            normalize="none",
            w_whole=w_whole,
            w_process=w_process,
            segment_id=CSEG,
            step_verdicts=CV,
            judge_mask=CJ,
            outcome=CO,
        )
    )(np.zeros(CMASK.shape, np.float32), CMASK, CG)
    np.testing.assert_allclose(r_none, want_r, atol=1e-6)


def test_capo_vote_rules_differ_and_respect_judge_mask():
    maj, inter, uni = (_np_vote(r) for r in ("majority", "intersection", "union"))
    assert not np.array_equal(maj, inter) and not np.array_equal(maj, uni)
    # Row 1 step 2: 1 of the 2 parsed critiques -> not a strict majority, but a union vote.
    assert not maj[1, 2] and uni[1, 2] and not inter[1, 2]
    # Row 1 step 0: both parsed critiques flag it -> intersection (the unparsed one is ignored).
    assert inter[1, 0]
    got = P.capo_vote(CV, CJ, rule="majority")
    np.testing.assert_array_equal(got, maj)
    # Without the judge mask, row 1 step 2 is 2/3: a majority.
    assert bool(P.capo_vote(CV, rule="majority")[1, 2])


# --------------------------------------------------------------------------------------------
# PRIME
# --------------------------------------------------------------------------------------------

RNG = np.random.default_rng(11)
QM = np.arange(5)[None, :] < np.array([5, 3, 4, 2, 5, 1])[:, None]
QLP = RNG.normal(-1.0, 0.5, QM.shape).astype(np.float32)
QREF = RNG.normal(-1.0, 0.5, QM.shape).astype(np.float32)
QO = np.array([1.0, 0.0, 0.0, 1.0, 1.0, 0.0], np.float32)
QG = np.array([0, 0, 0, 1, 1, 2], np.int32)  # groups of 3, 2 and a singleton


def _np_prime_paper(beta, gamma, c_p, c_o):
    m = QM
    valid = m.any(1)
    r = np.where(m, beta * (QLP.astype(np.float64) - QREF), 0.0)
    rbar = r.sum(1) / m.sum(1)
    b_proc = np.array([_loo(rbar, QG, valid, i) for i in range(len(QG))])
    proc = _revcumsum(np.where(m, r - b_proc[:, None], 0.0), gamma)
    out = np.array([QO[i] - _loo(QO, QG, valid, i) for i in range(len(QG))])
    return np.where(m, c_p * proc + c_o * out[:, None], 0.0)


def test_prime_paper_beta_gamma_and_coefficients():
    kw = dict(logp=QLP, ref_logp=QREF, outcome=QO)
    fn = jax.jit(
        functools.partial(P.prime, beta=0.3, gamma=0.8, process_coef=2.0, outcome_coef=0.5)
    )
    adv, ret = fn(np.zeros(QM.shape, np.float32), QM, QG, **kw)
    want = _np_prime_paper(0.3, 0.8, 2.0, 0.5)
    np.testing.assert_allclose(ret, want, atol=1e-5)
    np.testing.assert_allclose(adv, want, atol=1e-5)
    for alt in (
        _np_prime_paper(0.05, 0.8, 2.0, 0.5),
        _np_prime_paper(0.3, 1.0, 2.0, 0.5),
        _np_prime_paper(0.3, 0.8, 0.5, 2.0),
    ):
        assert np.abs(alt - want).max() > 1e-2
    # whiten=True whitens those returns batch-wide.
    adv_w, _ = jax.jit(
        functools.partial(
            P.prime, beta=0.3, gamma=0.8, process_coef=2.0, outcome_coef=0.5, whiten=True
        )
    )(np.zeros(QM.shape, np.float32), QM, QG, **kw)
    np.testing.assert_allclose(adv_w, _whiten(want, QM), atol=1e-4)


def _np_prime_code(gamma, c_p, c_o, verl=False, beta=0.05):
    m = QM
    b = len(QG)
    valid = m.any(1)
    r = np.where(m, (beta if verl else 1.0) * (QLP.astype(np.float64) - QREF), 0.0)
    last = _last(m)
    if verl:
        r[np.arange(b), last] = 0.0
        gamma = 1.0
    r = r / (np.abs(_revcumsum(r)).max() + 1e-6)
    gt = np.zeros(m.shape)
    gt[np.arange(b), last] = QO
    gm = np.zeros(m.shape, bool)
    gm[np.arange(b), last] = True

    def rloo(x, mm):
        means = np.array([x[i][mm[i]].mean() for i in range(b)])
        out = np.zeros(m.shape)
        for i in range(b):
            grp = [j for j in range(b) if QG[j] == QG[i] and valid[j]]
            k = len(grp)
            if k > 1:
                val = x[i] * k / (k - 1) - sum(means[j] for j in grp) / (k - 1)
            else:
                val = x[i] - means[i]
            out[i] = np.where(mm[i], val, 0.0)
        return out

    ret = _revcumsum(c_p * rloo(r, m), gamma) + _revcumsum(c_o * rloo(gt, gm), gamma)
    ret = np.where(m, ret, 0.0)
    return _whiten(ret, m), ret


@pytest.mark.parametrize("variant", ["code", "verl"])
def test_prime_code_and_verl_coefficients_and_discount(variant):
    kw = dict(logp=QLP, ref_logp=QREF, outcome=QO)
    fn = jax.jit(
        functools.partial(
            P.prime, variant=variant, gamma=0.7, process_coef=3.0, outcome_coef=0.4, beta=0.2
        )
    )
    adv, ret = fn(np.zeros(QM.shape, np.float32), QM, QG, **kw)
    want_adv, want_ret = _np_prime_code(0.7, 3.0, 0.4, verl=variant == "verl", beta=0.2)
    np.testing.assert_allclose(ret, want_ret, atol=1e-5)
    np.testing.assert_allclose(adv, want_adv, atol=1e-4)
    if variant == "verl":
        # verl's defaults: coefficients 5 and 5 (and gamma forced to 1).
        adv5, ret5 = jax.jit(functools.partial(P.prime, variant="verl", gamma=0.5, beta=0.2))(
            np.zeros(QM.shape, np.float32), QM, QG, **kw
        )
        np.testing.assert_allclose(
            ret5, _np_prime_code(1.0, 5.0, 5.0, verl=True, beta=0.2)[1], atol=1e-5
        )
    else:
        assert np.abs(_np_prime_code(1.0, 3.0, 0.4)[1] - want_ret).max() > 1e-2
