"""Self-training (STaR / RAFT, the auxiliary SFT term) and DPO: the loss terms against direct
gradients, the host-side data builders on hand-made batches, and config validation."""

from __future__ import annotations

import json
import math
import os

import jax
import numpy as np
import optax
import pytest
from flax import nnx

from jaxrl_reason import losses
from jaxrl_reason.data.base import Example
from jaxrl_reason.models import ModelConfig, Transformer
from jaxrl_reason.rollout.trajectories import Trajectories
from jaxrl_reason.train import phases, selftrain
from jaxrl_reason.train import step as step_lib
from jaxrl_reason.train.config import ConfigError, load_config

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "..", "experiments", "configs")


@pytest.fixture(scope="module")
def tiny():
    return Transformer(ModelConfig.tiny_debug(num_layers=2), rngs=nnx.Rngs(0))


def _batch(model, b=4, p=5, r=6, seed=0):
    rng = np.random.default_rng(seed)
    v = model.config.vocab_size
    pmask = np.ones((b, p), bool)
    pmask[0, :2] = False
    rmask = np.ones((b, r), np.float32)
    rmask[1, 4:] = 0
    rmask[2, 3:] = 0
    return {
        "prompt_tokens": rng.integers(0, v, (b, p)).astype(np.int32),
        "prompt_mask": pmask,
        "response": rng.integers(0, v, (b, r)).astype(np.int32),
        "response_mask": rmask,
        "old_logprobs": rng.normal(-3.0, 0.1, (b, r)).astype(np.float32),
        "advantages": np.zeros((b, r), np.float32),
    }


CORRECT = np.array([1.0, 0.0, 1.0, 0.0], np.float32)


def _grads(fn, model):
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    return jax.grad(lambda p: fn(nnx.merge(graphdef, p, rest)))(params)


# -- the auxiliary SFT term (algo.sft_coef) ---------------------------------------------------


def test_sft_term_gradient_is_the_nll_gradient_of_the_correct_rows(tiny):
    """Zero advantages switch the policy gradient off: the whole gradient is then
    sft_coef * grad NLL(correct rows), and the wrong rows' tokens do not enter it."""
    batch = _batch(tiny)
    batch["sft_mask"] = batch["response_mask"] * CORRECT[:, None]
    cfg = step_lib.LossConfig(kernel_impl="reference", sft_coef=0.7)
    g_rl = _grads(lambda m: step_lib.rl_loss(m, None, batch, cfg)[0], tiny)

    def direct(m):
        logp, _, _ = step_lib.sequence_logprobs(m, batch, cfg)
        return losses.sft_loss(logp, batch["sft_mask"])

    g_sft = _grads(direct, tiny)
    for a, b in zip(jax.tree.leaves(g_rl), jax.tree.leaves(g_sft), strict=True):
        np.testing.assert_allclose(a, 0.7 * b, rtol=1e-4, atol=1e-6)
    assert any(np.abs(x).max() > 0 for x in jax.tree.leaves(g_sft))
    # The wrong rows' responses do not matter.
    other = dict(batch, response=batch["response"].copy())
    other["response"][[1, 3]] = (other["response"][[1, 3]] + 7) % tiny.config.vocab_size
    g_other = _grads(lambda m: step_lib.rl_loss(m, None, other, cfg)[0], tiny)
    for a, b in zip(jax.tree.leaves(g_rl), jax.tree.leaves(g_other), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_sft_coef_zero_leaves_the_rl_loss_unchanged(tiny):
    batch = _batch(tiny)
    batch["advantages"] = np.random.default_rng(1).normal(size=batch["old_logprobs"].shape)
    batch["advantages"] = batch["advantages"].astype(np.float32)
    plain, m0 = step_lib.rl_loss(tiny, None, batch, step_lib.LossConfig(kernel_impl="reference"))
    assert "actor/sft_loss" not in m0
    with_mask = dict(batch, sft_mask=batch["response_mask"] * CORRECT[:, None])
    cfg0 = step_lib.LossConfig(kernel_impl="reference", sft_coef=0.0)
    loss0, m = step_lib.rl_loss(tiny, None, with_mask, cfg0)
    assert float(loss0) == float(plain)
    # The logged term is the masked NLL of the correct rows (hand-aggregated here).
    logp, _, _ = step_lib.sequence_logprobs(tiny, batch, cfg0)
    mask = with_mask["sft_mask"]
    want = -(np.asarray(logp) * mask).sum() / mask.sum()
    np.testing.assert_allclose(m["actor/sft_loss"], want, rtol=1e-5)
    cfg = step_lib.LossConfig(kernel_impl="reference", sft_coef=0.5)
    loss, _ = step_lib.rl_loss(tiny, None, with_mask, cfg)
    np.testing.assert_allclose(loss, float(plain) + 0.5 * want, rtol=1e-5)


def _traj(correct_groups=((1, 0), (0, 0)), p=3, r=4, seed=0):
    rng = np.random.default_rng(seed)
    b = sum(len(g) for g in correct_groups)
    lengths = np.full(b, r, np.int32)
    return Trajectories(
        prompt_tokens=rng.integers(1, 50, (b, p)).astype(np.int32),
        prompt_mask=np.ones((b, p), bool),
        tokens=rng.integers(1, 50, (b, r)).astype(np.int32),
        attention_mask=np.ones((b, r), bool),
        loss_mask=np.ones((b, r), np.float32),
        old_logprobs=np.zeros((b, r), np.float32),
        group_id=np.repeat(np.arange(len(correct_groups)), [len(g) for g in correct_groups]),
        segment_id=np.zeros((b, r), np.int32),
        lengths=lengths,
        finish_reason=np.zeros(b, np.int32),
        advantages=np.zeros((b, r), np.float32),
        returns=np.zeros((b, r), np.float32),
    )


def test_update_batch_sft_mask_is_the_loss_mask_of_the_correct_rows():
    traj = _traj()
    traj = traj.replace(
        loss_mask=np.array([[1, 1, 0, 0], [1, 1, 1, 0], [1, 0, 0, 0], [1] * 4], np.float32)
    )
    batch = phases.update_batch(traj, np.array([2, 0, 1]), sft_rows=np.array([1.0, 0.0, 1.0, 0.0]))
    np.testing.assert_array_equal(batch["sft_mask"], [[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0]])
    assert "sft_mask" not in phases.update_batch(traj, np.array([0]))


# -- STaR ---------------------------------------------------------------------------------------


def test_failed_groups_and_hints():
    correct = np.array([0, 1, 0, 0, 0, 0], np.float32)
    gid = np.array([0, 0, 1, 1, 2, 2])
    np.testing.assert_array_equal(selftrain.failed_groups(correct, gid, 3), [1, 2])
    exs = [Example(str(i), f"Q{i}.", str(10 + i)) for i in range(3)]
    hinted = selftrain.hinted_examples(exs, [2], "(The answer is {answer}.)")
    assert hinted[0].prompt == "Q2. (The answer is 12.)" and hinted[0].answer == "12"
    assert exs[2].prompt == "Q2."  # the originals are untouched


def test_star_rows_keep_verified_rows_and_rationalisations_under_the_plain_prompt():
    """The research notes' worked example in miniature: group 0 has a correct row (kept);
    group 1 fails, its hinted re-samples are [wrong, right]: the right one is kept with group
    1's hint-free prompt."""
    traj = _traj(((1, 0), (0, 0)))
    correct = np.array([1.0, 0.0, 0.0, 0.0], np.float32)
    hinted = _traj(((0, 0),), p=7, seed=5)  # a longer (hinted) prompt, one group of two
    rows = selftrain.star_rows(traj, correct, hinted, np.array([0.0, 1.0]), np.array([1]))
    assert rows["rationalized"].tolist() == [False, True]
    np.testing.assert_array_equal(rows["prompt_tokens"][0], traj.prompt_tokens[0])
    np.testing.assert_array_equal(rows["prompt_tokens"][1], traj.prompt_tokens[2])  # group 1
    np.testing.assert_array_equal(rows["response"][0], traj.tokens[0])
    np.testing.assert_array_equal(rows["response"][1], hinted.tokens[1])
    assert rows["prompt_tokens"].shape == (2, 3) and rows["sft_mask"].shape == (2, 4)
    # A verified row whose loss mask is empty (PROF-dropped) is not kept.
    dropped = traj.replace(loss_mask=np.where(np.arange(4)[:, None] == 0, 0.0, 1.0))
    assert len(selftrain.star_rows(dropped, correct)["sft_mask"]) == 0
    # Nothing correct and nothing rationalised: nothing kept.
    empty = selftrain.star_rows(traj, np.zeros(4, np.float32))
    assert len(empty["sft_mask"]) == 0 and selftrain.sft_minibatches(empty, 4, None) == []


def test_sft_minibatches_pack_the_kept_rows_and_pad_the_last():
    rows = {
        "prompt_tokens": np.arange(5)[:, None].repeat(2, 1).astype(np.int32),
        "prompt_mask": np.ones((5, 2), bool),
        "response": np.arange(5)[:, None].repeat(3, 1).astype(np.int32),
        "sft_mask": np.ones((5, 3), np.float32),
    }
    mbs = selftrain.sft_minibatches(rows, 4, np.random.default_rng(0))
    assert len(mbs) == 2 and all(m["response"].shape == (4, 3) for m in mbs)
    real = [
        int(r[0]) for m in mbs for r, w in zip(m["response"], m["sft_mask"], strict=True) if w.any()
    ]
    assert sorted(real) == [0, 1, 2, 3, 4]  # each kept row once with weight
    assert mbs[0]["sft_mask"].all() and mbs[1]["sft_mask"].sum() == 3  # 1 real + 3 padding


# -- DPO ----------------------------------------------------------------------------------------


def test_self_pairs_on_hand_made_groups():
    # The research notes' group: r = [1, 0, 1, 0, 0, 1] -> A = [0, 2, 5], R = [1, 3, 4].
    pairs = selftrain.self_pairs(np.array([1, 0, 1, 0, 0, 1.0]), np.zeros(6, int), 6)
    assert pairs.tolist() == [[0, 1], [2, 3], [5, 4]]
    # Group 0 all right, group 1 one right of four (cap 4 // 2 = 2 distinct pairs), group 2
    # all wrong: only group 1 gives pairs.
    correct = np.array([1, 1, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0], np.float32)
    gid = np.repeat([0, 1, 2], 4)
    assert selftrain.self_pairs(correct, gid, 4).tolist() == [[6, 4], [6, 5]]
    # One accepted, two rejected, n = 4: both distinct pairs, no repeat.
    pairs = selftrain.self_pairs(np.array([1, 0, 0, 0.0]), np.zeros(4, int), 8)
    assert pairs.tolist() == [[0, 1], [0, 2], [0, 3]]
    assert selftrain.self_pairs(np.zeros(4), np.zeros(4, int), 4).shape == (0, 2)
    # Rows without a loss mask (PROF-dropped) are neither chosen nor rejected.
    valid = np.array([True, False, True, True])
    pairs = selftrain.self_pairs(np.array([1, 0, 0, 1.0]), np.zeros(4, int), 4, valid=valid)
    assert pairs.tolist() == [[0, 2], [3, 2]]


def test_dpo_minibatches_interleave_pairs_and_weight_real_pairs():
    n = 6
    data = {
        "prompt_tokens": np.arange(n)[:, None].astype(np.int32),
        "prompt_mask": np.ones((n, 1), bool),
        "response": np.arange(n)[:, None].astype(np.int32) * 10,
        "response_mask": np.ones((n, 1), np.float32),
        "ref_logprobs": np.zeros((n, 1), np.float32),
    }
    pairs = np.array([[0, 1], [2, 3], [4, 5]])
    mbs = selftrain.dpo_minibatches(data, pairs, 4, None)
    assert [m["response"][:, 0].tolist() for m in mbs] == [[0, 10, 20, 30], [40, 50, 0, 10]]
    # 2 slots: a full mini-batch weighs its pairs 1, the last (1 real of 2) weighs it 2.
    assert [m["pair_weight"].tolist() for m in mbs] == [[1, 1, 1, 1], [2, 2, 0, 0]]
    assert selftrain.dpo_minibatches(data, np.zeros((0, 2), int), 4, None) == []


def test_dpo_update_raises_the_chosen_over_rejected_log_ratio(tiny):
    """From pi = pi_ref (h = 0, loss log 2), one SGD step on DPO makes h > 0 on every pair."""
    batch = _batch(tiny, b=4)
    cfg = step_lib.LossConfig(kernel_impl="reference", objective="dpo", dpo_beta=0.5)
    graphdef, params, rest = nnx.split(tiny, nnx.Param, ...)
    ref, _, _ = step_lib.sequence_logprobs(tiny, batch, cfg)
    batch = {k: batch[k] for k in ("prompt_tokens", "prompt_mask", "response", "response_mask")}
    batch["ref_logprobs"] = np.asarray(ref) * batch["response_mask"]
    batch["pair_weight"] = np.ones(4, np.float32)
    loss0, m0 = step_lib.dpo_objective_loss(tiny, batch, cfg)
    assert float(loss0) == pytest.approx(math.log(2.0), abs=1e-5)
    assert float(m0["dpo/margin"]) == pytest.approx(0.0, abs=1e-5)
    tx = optax.with_extra_args_support(optax.sgd(0.5))
    update = step_lib.make_update_fn(graphdef, tx, cfg, num_micro=2)
    new, _, _, m = update(params, None, tx.init((params, None)), batch)
    assert float(m["loss"]) == pytest.approx(math.log(2.0), abs=1e-5)

    def h(p):
        model = nnx.merge(graphdef, p, rest)
        logp, _, _ = step_lib.sequence_logprobs(model, batch, cfg)
        s = losses.sequence_logprob(logp, batch["response_mask"]) - losses.sequence_logprob(
            batch["ref_logprobs"], batch["response_mask"]
        )
        return np.asarray(s[0::2] - s[1::2])

    np.testing.assert_allclose(h(params), 0.0, atol=1e-4)
    assert np.all(h(new) > 1e-3), h(new)
    loss1, m1 = step_lib.dpo_objective_loss(nnx.merge(graphdef, new, rest), batch, cfg)
    assert float(loss1) < math.log(2.0) and float(m1["dpo/accuracy"]) == 1.0


def test_pair_weights_make_the_loss_the_mean_over_real_pairs(tiny):
    """A padding pair (weight 0) changes nothing; real pairs weigh slots / real."""
    batch = _batch(tiny, b=4)
    cfg = step_lib.LossConfig(kernel_impl="reference", objective="dpo")
    batch["ref_logprobs"] = batch["old_logprobs"] * batch["response_mask"]
    one = {k: v[:2] for k, v in batch.items()}
    one["pair_weight"] = np.ones(2, np.float32)
    want, _ = step_lib.dpo_objective_loss(tiny, one, cfg)
    batch["pair_weight"] = np.array([2.0, 2.0, 0.0, 0.0], np.float32)
    got, m = step_lib.dpo_objective_loss(tiny, batch, cfg)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert float(m["dpo/accuracy"]) in (0.0, 1.0)


def test_jsonl_pairs_load_and_tokenize_with_the_chat_template(tmp_path):
    from jaxrl_reason.data.arithmetic import ArithmeticTask
    from jaxrl_reason.models.build import smollm2_tokenizer

    tok = smollm2_tokenizer()
    path = tmp_path / "pairs.jsonl"
    recs = [
        {"prompt": "What is 2 + 3?", "chosen": "2 + 3 = 5\n#### 5", "rejected": "#### 6"},
        {"prompt": "What is 1 + 1?", "chosen": "#### 2", "rejected": "1 + 1 = 3\n#### 3"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in recs) + "\n\n")
    loaded = selftrain.load_pair_records(str(path))
    assert loaded == recs
    task = ArithmeticTask(system_prompt="")
    data = selftrain.tokenize_pairs(tok, task, loaded, 12, bucket=16)
    assert data["pairs"].tolist() == [[0, 1], [2, 3]]
    assert data["prompt_tokens"].shape[0] == 4 and data["prompt_tokens"].shape[1] % 16 == 0
    # Both rows of a pair share the chat prompt; it ends with the generation prompt.
    np.testing.assert_array_equal(data["prompt_tokens"][0], data["prompt_tokens"][1])
    prompt = tok.decode(data["prompt_tokens"][2][data["prompt_mask"][2]])
    assert "What is 1 + 1?" in prompt and prompt.rstrip().endswith("assistant")
    n = int(data["response_mask"][0].sum())
    assert tok.decode(data["response"][0][: n - 1]) == "2 + 3 = 5\n#### 5"
    assert data["response"][0][n - 1] == tok.eos_token_id
    assert data["response_mask"][0][n:].sum() == 0
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(recs[0]) + "\n" + json.dumps({"prompt": "x", "chosen": "y"}) + "\n")
    with pytest.raises(ValueError, match="bad.jsonl:2: a pair is"):
        selftrain.load_pair_records(str(bad))


# -- config validation --------------------------------------------------------------------------

DPO = os.path.join(CONFIGS, "smollm2_arith_chain_dpo.py")
STAR = os.path.join(CONFIGS, "smollm2_arith_chain_star.py")


@pytest.mark.parametrize(
    "path, overrides, message",
    [
        (DPO, ["--config.dpo.pairs="], r"^dpo.pairs='': algo.objective='dpo' needs a pair source"),
        (DPO, ["--config.dpo.beta=0"], r"^dpo.beta=0.0: must be a finite number > 0"),
        (DPO, ["--config.dpo.beta=-0.1"], r"^dpo.beta=-0.1: must be"),
        (DPO, ["--config.dpo.pairs=file"], r"^dpo.pairs_path='': dpo.pairs='file' needs"),
        (DPO, ["--config.dpo.label_smoothing=0.5"], r"^dpo.label_smoothing=0.5: must be in"),
        (
            DPO,
            [
                "--config.rollout.n_samples=1",
                "--config.train.mini_batch_size=8",
                "--config.train.micro_batch_size=8",
            ],
            r"^dpo.pairs='self' needs rollout.n_samples",
        ),
        (DPO, ["--config.train.micro_batch_size=1"], r"^train.micro_batch_size=1 must be even"),
        (DPO, ["--config.loss.kl_coef=0.1"], r"^loss.kl_coef=0.1 with algo.objective='dpo'"),
        (STAR, ["--config.algo.objective=ppo"], r"^algo.objective='ppo': must be one of"),
        (STAR, ["--config.algo.sft_coef=0.1"], r"^algo.sft_coef=0.1 with algo.objective='sft'"),
        (STAR, ["--config.algo.objective=rl"], r"^star.rationalize=True with algo.objective='rl'"),
        (STAR, ["--config.star.hint_template=hint"], r"^star.hint_template='hint': must be"),
        (STAR, ["--config.star.min_correct=0"], r"^star.min_correct=0: must be an int >= 1"),
        (STAR, ["--config.algo.value_head=True"], r"^algo.value_head=True with algo.objective"),
    ],
)
def test_bad_self_training_settings_fail_validation(path, overrides, message):
    load_config(path)  # the shipped config is valid
    with pytest.raises(ConfigError, match=message) as e:
        load_config(path, overrides)
    assert "\n" not in str(e.value) and "--config." in str(e.value)


def test_sft_coef_validates_in_rl_and_the_file_pair_source_needs_a_file(tmp_path):
    grpo = os.path.join(CONFIGS, "smollm2_arith_chain_grpo.py")
    assert load_config(grpo, ["--config.algo.sft_coef=0.1"]).algo.sft_coef == 0.1
    with pytest.raises(ConfigError, match=r"^algo.sft_coef=-1.0: must be"):
        load_config(grpo, ["--config.algo.sft_coef=-1"])
    f = tmp_path / "p.jsonl"
    f.write_text('{"prompt": "a", "chosen": "b", "rejected": "c"}\n')
    cfg = load_config(DPO, ["--config.dpo.pairs=file", f"--config.dpo.pairs_path={f}"])
    assert cfg.dpo.pairs_path == str(f)
    with pytest.raises(ConfigError, match="dpo.pairs_path="):
        load_config(DPO, ["--config.dpo.pairs=file", f"--config.dpo.pairs_path={f}.missing"])


def test_loss_config_reads_the_objective_and_scores_supervised_objectives_at_temperature_1():
    rl = step_lib.loss_config(
        load_config(os.path.join(CONFIGS, "smollm2_arith_chain_grpo.py"), ["algo.sft_coef=0.25"]),
        num_layers=30,
    )
    assert (rl.objective, rl.sft_coef, rl.temperature) == ("rl", 0.25, 0.8)
    dpo = step_lib.loss_config(
        load_config(DPO, ["dpo.beta=0.3", "dpo.label_smoothing=0.1"]), num_layers=30
    )
    assert (dpo.objective, dpo.dpo_beta, dpo.dpo_label_smoothing) == ("dpo", 0.3, 0.1)
    assert dpo.temperature == 1.0
    star = step_lib.loss_config(load_config(STAR), num_layers=30)
    assert (star.objective, star.temperature) == ("sft", 1.0)
