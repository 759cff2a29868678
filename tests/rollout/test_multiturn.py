"""The ``env`` strategy: multi-turn episodes decoded from one KV-cache session.

A tiny random model (tiny_debug shapes, SmolLM2 tokenizer) and a scripted environment whose
observations depend only on the turn (so episodes share anchor states) make everything
deterministic.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxrl_reason.data.base import Example, Task
from jaxrl_reason.envs import Environment, StepResult, anchor_key
from jaxrl_reason.rollout import left_pad, sample
from jaxrl_reason.rollout.multiturn import (
    EnvStrategy,
    answer_token_ids,
    closing_tag_sequences,
)
from jaxrl_reason.rollout.sampler import SamplingConfig
from jaxrl_reason.rollout.strategies import RolloutSettings, get_strategy

BUDGET = 48
STEPS = 6
OBS = ["\n<result>\nalpha beta\n</result>\n", "\n<result>\ngamma\n</result>\n"]


class _Task(Task):
    name = "scripted"

    def __init__(self):
        super().__init__(system_prompt="Use tools.")
        self._ex = [
            Example(id=f"q{i}", prompt=f"Question {i}?", answer=f"Ans{i}") for i in range(3)
        ]

    def __len__(self):
        return len(self._ex)

    def _get(self, i):
        return self._ex[i]


class ScriptedEnv(Environment):
    """Turn k < 2 of every episode answers with ``OBS[k]``; turn 2 ends the episode with the
    answer ``"Ans<i>"`` for rows whose example id ends in an even digit (reward 1)."""

    stop_strings = ("</tool>", "</answer>")
    answer_tag = "answer"

    def step(self, states, actions):
        obs, dones, rewards, infos = [], [], [], []
        for st, act in zip(states, actions, strict=True):
            if st.done:
                obs.append(None), dones.append(True), rewards.append(0.0)
                infos.append({"skipped": True})
                continue
            st.anchors.append(st.anchor)
            st.actions.append(act)
            st.turn += 1
            if st.turn <= len(OBS):
                text = OBS[st.turn - 1]
                st.tool_calls += 1
                st.observations.append(text)
                st.anchor = anchor_key(text)
                obs.append(text), dones.append(False), rewards.append(0.0)
            else:
                st.done = True
                st.answer = st.example.answer if int(st.example.id[-1]) % 2 == 0 else "no"
                st.reward = float(st.answer == st.example.answer)
                st.observations.append(None)
                obs.append(None), dones.append(True), rewards.append(st.reward)
            infos.append({"error": False})
        return StepResult(obs, dones, rewards, infos, list(states))


@pytest.fixture(scope="module")
def model_tok():
    from jaxrl_reason.models.build import build_model

    return build_model(ml_collections.ConfigDict({"name": "tiny_debug"}))


def _strategy(tok, *, n=2, answer_probs=False, budget=BUDGET, env_opts=None):
    env = ScriptedEnv(_Task(), max_turns=3)
    cfg = SamplingConfig(
        max_new_tokens=budget, temperature=1.0, n=n, stop_token_ids=(), prompt_bucket=16
    )
    settings = RolloutSettings(
        tokenizer=tok,
        task=env.task,
        sampling=cfg,
        max_steps=4,
        options={
            "env_object": env,
            "env": {"max_turn_tokens": STEPS, "max_obs_tokens": 16, **(env_opts or {})},
            "answer_probs": answer_probs,
        },
    )
    return get_strategy("env")(settings)


def test_registered_and_stop_sequences_catch_tags_in_context(model_tok):
    _, tok = model_tok
    assert get_strategy("env") is EnvStrategy
    seqs = closing_tag_sequences(tok, ("</search>", "</answer>"))
    for text in ("x </search>", "Paris</answer>", "a</answer>.", '"</search>', "(</answer>,"):
        ids = tok.encode(text, add_special_tokens=False)
        assert any(tuple(ids[-len(s) :]) == s for s in seqs), (text, ids)


def test_episode_layout(model_tok):
    model, tok = model_tok
    st = _strategy(tok)
    examples = list(st.settings.task[:2])
    traj = st.collect(model, examples, jax.random.key(0)).check()
    b = traj.batch_size
    assert b == 4 and traj.response_width == BUDGET
    np.testing.assert_array_equal(traj.group_id, [0, 0, 1, 1])
    obs_ids = [tok.encode(o, add_special_tokens=False) for o in OBS]
    for i in range(b):
        seg, lm = traj.segment_id[i], traj.loss_mask[i]
        n = int(traj.lengths[i])
        assert traj.attention_mask[i, :n].all() and not traj.attention_mask[i, n:].any()
        assert (seg[n:] == -1).all() and (lm[n:] == 0).all()
        # a_0 (6 tokens) o_0 a_1 o_1 a_2: observation spans are exactly the env's tokens.
        pos = 0
        for k in range(3):
            assert (lm[pos : pos + STEPS] == 1).all() and (seg[pos : pos + STEPS] == k).all()
            assert (traj.old_logprobs[i, pos : pos + STEPS] < 0).all()
            pos += STEPS
            if k < 2:
                m = len(obs_ids[k])
                np.testing.assert_array_equal(traj.tokens[i, pos : pos + m], obs_ids[k])
                assert (lm[pos : pos + m] == 0).all() and (seg[pos : pos + m] == k).all()
                assert (traj.old_logprobs[i, pos : pos + m] == 0).all()
                pos += m
        assert pos == n
    assert traj.turn_mask[:, :3].all() and not traj.turn_mask[:, 3:].any()
    np.testing.assert_array_equal(traj.finish_reason, 0)
    # GiGPO anchors: turn 0 = each prompt (shared by its 2 episodes); turns 1, 2 = OBS[0],
    # OBS[1], identical across every episode of the batch.
    a = traj.anchor_ids
    assert a[0, 0] == a[1, 0] and a[2, 0] == a[3, 0] and a[0, 0] != a[2, 0]
    assert len(set(a[:, 1])) == 1 and len(set(a[:, 2])) == 1 and a[0, 1] != a[0, 2]
    assert st.last_answers == ["Ans0", "Ans0", "no", "no"]
    assert st.last_stats["env/turns_mean"] == 3.0 and st.last_stats["env/tool_calls"] == 2.0
    assert st.last_stats["env/obs_tokens"] == float(sum(len(x) for x in obs_ids))
    assert st.last_transcripts[0].count("<obs>") == 2
    # Budget: only the policy's tokens were decoded (observations are prefilled).
    assert st.last_stats["decoded_tokens"] == float(traj.loss_mask.sum())
    assert st.last_stats["leaves"] == 4.0 and st.last_stats["env_time_s"] >= 0.0


def test_tokens_equal_a_reprefilled_turn_by_turn_reference(model_tok):
    """The session never re-prefills; re-prefilling the full history each turn with
    ``sample(n=1)`` and the turn's key gives the same tokens and log-probs."""
    model, tok = model_tok
    st = _strategy(tok)
    examples = list(st.settings.task[:2])
    key = jax.random.key(3)
    traj = st.collect(model, examples, key)
    rkeys = EnvStrategy.row_keys(key, len(examples), 2)
    prompts = st._prompt_ids(examples)
    cfg = SamplingConfig(max_new_tokens=STEPS, temperature=1.0, n=1, stop_token_ids=())
    for i in range(traj.batch_size):
        history = list(prompts[i // 2])
        got_t, got_lp = [], []
        for k in range(3):
            tk, mk = left_pad([history], 2)
            ro = sample(model, tk, mk, jax.random.fold_in(rkeys[i], k)[None], cfg)
            toks = np.asarray(ro.tokens[0, : int(ro.lengths[0])]).tolist()
            got_t += toks
            got_lp += np.asarray(ro.logprobs[0, : len(toks)]).tolist()
            history += toks
            if k < 2:
                obs = tok.encode(OBS[k], add_special_tokens=False)
                got_t += obs
                got_lp += [0.0] * len(obs)
                history += obs
        n = int(traj.lengths[i])
        np.testing.assert_array_equal(traj.tokens[i, :n], got_t)
        np.testing.assert_allclose(traj.old_logprobs[i, :n], got_lp, rtol=1e-4, atol=1e-4)


def test_budget_truncates_the_episode(model_tok):
    model, tok = model_tok
    st = _strategy(tok, n=1, budget=10)
    traj = st.collect(model, list(st.settings.task[:1]), jax.random.key(1)).check()
    assert int(traj.lengths[0]) == 10 and traj.finish_reason[0] == 1
    assert traj.loss_mask[0, :STEPS].all() and not traj.loss_mask[0, STEPS:].any()
    assert traj.turn_mask[0].tolist() == [True, False, False, False]
    assert st.last_answers == [""]


def test_observation_tokens_get_exactly_zero_gradient(model_tok, monkeypatch):
    """d loss / d logp is exactly 0 on every observation token (and so are the loss and the
    parameter gradients' dependence on anything placed there)."""
    from jaxrl_reason.train import phases
    from jaxrl_reason.train import step as step_lib

    model, tok = model_tok
    st = _strategy(tok)
    traj = st.collect(model, list(st.settings.task[:2]), jax.random.key(0))
    rng = np.random.default_rng(0)
    adv = rng.normal(size=traj.tokens.shape).astype(np.float32)
    traj = traj.replace(
        advantages=adv * traj.loss_mask,
        returns=np.zeros_like(adv),
        ref_logprobs=(traj.old_logprobs - 0.1) * traj.loss_mask,
    )
    batch = phases.update_batch(traj, np.arange(traj.batch_size))
    obs = np.asarray(traj.attention_mask) & (np.asarray(traj.loss_mask) == 0)
    assert obs.sum() > 0
    cfg = step_lib.LossConfig(kl_coef=0.1, entropy_coef=0.01, clip_high=0.28)
    orig = step_lib.sequence_logprobs

    def patched(model, batch, cfg):
        logp, ent, h = orig(model, batch, cfg)
        return logp + batch["delta"], ent, h

    monkeypatch.setattr(step_lib, "sequence_logprobs", patched)

    def loss_fn(delta, b):
        return step_lib.rl_loss(model, None, {**b, "delta": delta}, cfg)[0]

    delta = jnp.zeros(traj.tokens.shape, jnp.float32)
    jb = jax.tree.map(jnp.asarray, batch)
    loss, g = jax.value_and_grad(loss_fn)(delta, jb)
    g = np.asarray(g)
    assert np.all(g[obs] == 0.0)
    assert np.any(g[np.asarray(traj.loss_mask) > 0] != 0.0)
    # Garbage on observation positions changes nothing.
    junk = {k: np.asarray(v).copy() for k, v in batch.items()}
    for k in ("advantages", "old_logprobs", "ref_logprobs"):
        junk[k][obs] = 1e3
    loss2, g2 = jax.value_and_grad(loss_fn)(delta, jax.tree.map(jnp.asarray, junk))
    assert float(loss) == float(loss2)
    np.testing.assert_array_equal(g, np.asarray(g2))


def test_igpo_answer_probs_by_hand(model_tok):
    """``answer_probs[b, k]`` = exp(mean log p(gold tokens | prompt + turns < k +
    "<answer>")) from a plain full forward, and IGPO's turn rewards are their differences
    with the verifier's score on the last turn."""
    from jaxrl_reason import credit

    model, tok = model_tok
    st = _strategy(tok, answer_probs=True)
    examples = list(st.settings.task[:2])
    traj = st.collect(model, examples, jax.random.key(0)).check()
    assert traj.answer_probs.shape == (4, 4)
    for i in range(traj.batch_size):
        prompt = np.asarray(traj.prompt_tokens[i])[np.asarray(traj.prompt_mask[i])].tolist()
        prefix, ans = answer_token_ids(tok, examples[i // 2].answer)
        forced = tok.encode(f"<answer> {examples[i // 2].answer}", add_special_tokens=False)
        assert prefix + ans == forced
        starts = [0]
        seg = np.asarray(traj.segment_id[i])
        starts += [int(np.argmax(seg == k)) for k in (1, 2)]
        for k, s in enumerate(starts):
            # "<answer>" is forced after the history; only the gold tokens are scored.
            seq = prompt + np.asarray(traj.tokens[i, :s]).tolist() + forced
            logits = model(jnp.asarray([seq], jnp.int32))
            lp = jax.nn.log_softmax(logits[0].astype(jnp.float32), -1)
            first = len(seq) - len(ans)
            want = np.exp(np.mean([float(lp[first + j - 1, t]) for j, t in enumerate(ans)]))
            np.testing.assert_allclose(traj.answer_probs[i, k], want, rtol=2e-4)
        assert np.all(traj.answer_probs[i, 3:] == 0.0)
    final = np.array([1.0, 1.0, 0.0, 0.0], np.float32)
    r = np.asarray(credit.igpo_turn_rewards(traj.answer_probs, traj.turn_mask, final))
    p = traj.answer_probs
    np.testing.assert_allclose(r[:, 0], p[:, 1] - p[:, 0], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(r[:, 1], p[:, 2] - p[:, 1], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(r[:, 2], final)


def test_gigpo_groups_identical_states(model_tok):
    """GiGPO's step advantages from the strategy's anchors: turns 1 and 2 of all four
    episodes share one anchor state each, so their step groups span the whole prompt group."""
    from jaxrl_reason import credit

    model, tok = model_tok
    st = _strategy(tok)
    traj = st.collect(model, list(st.settings.task[:2]), jax.random.key(0))
    step_rewards = np.zeros((4, 4), np.float32)
    step_rewards[:, 2] = [1.0, 0.0, 1.0, 1.0]
    # One episode group of all four rows (as for one task seed): the anchor groups are then
    # the prompt pairs at turn 0 and all four episodes at turns 1 and 2 (equal observations).
    adv, _ = credit.gigpo_step_advantages(
        step_rewards,
        traj.turn_mask,
        np.zeros(4, np.int32),
        traj.anchor_ids,
        gamma=1.0,
        omega=1.0,
        mode="mean_norm",
    )
    adv = np.asarray(adv)
    a_e = np.array([0.25, -0.75, 0.25, 0.25])  # R - mean(R), R = (1, 0, 1, 1)
    np.testing.assert_allclose(adv[:, 0], a_e + [0.5, -0.5, 0.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(adv[:, 1], a_e + a_e, atol=1e-6)
    np.testing.assert_allclose(adv[:, 2], a_e + a_e, atol=1e-6)
    assert np.all(adv[:, 3] == 0.0)


def test_episode_trees_branch_at_a_turn_boundary(model_tok):
    """Tree-GRPO over agent steps: 2 roots per question run turn 0 (action + observation),
    then each forks into 2 children. Children copy their root's episode up to the fork and
    then draw their own actions; tree_id names the root; the tree estimator runs on it."""
    from jaxrl_reason import credit

    model, tok = model_tok
    st = _strategy(tok, n=4, env_opts={"branch_turn": 0, "branches": 2})
    examples = list(st.settings.task[:2])
    traj = st.collect(model, examples, jax.random.key(3)).check()
    assert traj.batch_size == 8
    np.testing.assert_array_equal(traj.group_id, [0, 0, 0, 0, 1, 1, 1, 1])
    np.testing.assert_array_equal(traj.tree_id, [0, 0, 1, 1, 2, 2, 3, 3])
    obs0 = tok.encode(OBS[0], add_special_tokens=False)
    fork = STEPS + len(obs0)  # a_0 (6 tokens) + o_0: the shared prefix of siblings
    for r in range(0, 8, 2):
        a, b = traj.tokens[r], traj.tokens[r + 1]
        np.testing.assert_array_equal(a[:fork], b[:fork])
        np.testing.assert_array_equal(traj.old_logprobs[r, :fork], traj.old_logprobs[r + 1, :fork])
    # after the fork the siblings sample with different keys
    assert any(
        not np.array_equal(
            traj.tokens[r, fork : fork + STEPS], traj.tokens[r + 1, fork : fork + STEPS]
        )
        for r in range(0, 8, 2)
    )
    # different roots differ already in their first action
    assert not np.array_equal(traj.tokens[0, :STEPS], traj.tokens[2, :STEPS])
    reward = np.where(np.arange(8) < 4, 1.0, 0.0).astype(np.float32)
    reward[1] = 0.0  # one child of tree 0 fails: its tree gets a non-zero tree advantage
    tr = np.zeros(traj.loss_mask.shape, np.float32)
    tr[np.arange(8), traj.lengths - 1] = reward
    adv, _ = credit.get("tree_grpo")(
        jnp.asarray(tr),
        jnp.asarray(traj.loss_mask),
        jnp.asarray(traj.group_id),
        tree_ids=jnp.asarray(traj.tree_id),
    )
    adv = np.asarray(adv)
    assert adv[0][traj.loss_mask[0] > 0].mean() > 0 > adv[1][traj.loss_mask[1] > 0].mean()
