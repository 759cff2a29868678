"""experiments.train_prm on tiny_debug: the loss falls, the checkpoint reloads to equal scores."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from jaxrl_reason.train.config import load_config

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
CONFIG = os.path.join(ROOT, "experiments", "configs", "smollm2_arith_chain_prm.py")
TINY = [
    "--config.model.name=tiny_debug",
    "--config.rollout.n_samples=2",
    "--config.train.mini_batch_size=4",
    "--config.train.micro_batch_size=2",
    "--config.rollout.max_new_tokens=8",
    "--config.prm.num_prompts=4",
    "--config.prm.eval_prompts=2",
    "--config.prm.train_steps=8",
    "--config.prm.batch_size=4",
    "--config.prm.learning_rate=0.05",
    "--config.prm.balance=False",
]


@pytest.mark.parametrize("last_k", [0, pytest.param(1, marks=pytest.mark.slow)])
def test_train_prm_loss_falls_and_checkpoint_reloads(tmp_path, last_k):
    from jaxrl_reason.models.prm import load_prm
    from jaxrl_reason.train.prm import run_train_prm

    cfg = load_config(CONFIG, [*TINY, f"--config.prm.last_k={last_k}"])
    out = run_train_prm(cfg, str(tmp_path))
    losses = out["losses"]
    assert len(losses) == 8 and all(np.isfinite(losses))
    # Zero-initialised head: the first loss is log 2 (every step scored 0.5).
    assert losses[0] == pytest.approx(np.log(2.0), abs=1e-5)
    assert losses[-1] < losses[0] - 0.05
    # Reload: same scores as the trained PRM on the held-out responses.
    prm = load_prm(out["path"])
    assert prm.meta["last_k"] == last_k and prm.meta["with_decoder"] == (last_k > 0)
    h = out["heldout"]
    got = prm.scores(h.prompt_tokens, h.prompt_mask, h.tokens, h.segment_id, 8)
    from jaxrl_reason.models.prm import step_scores

    want = np.asarray(
        step_scores(
            out["model"], out["head"], h.prompt_tokens, h.prompt_mask, h.tokens, h.segment_id,
            num_steps=8,
        )
    )  # fmt: skip
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert np.any(got != 0.5)
    ev = json.load(open(os.path.join(tmp_path, "prm_eval.json")))
    assert set(ev["eval_after"]) >= {"f1", "acc_err", "acc_cor", "step_acc"}
    lines = open(os.path.join(tmp_path, "prm_metrics.jsonl")).read().splitlines()
    assert json.loads(lines[-1]) == {"step": 8, "prm/loss": losses[-1]}


def test_balanced_prm_weights_its_classes_by_the_label_rate(tmp_path):
    from jaxrl_reason.losses.prm import balanced_weights
    from jaxrl_reason.train.prm import run_train_prm

    cfg = load_config(CONFIG, [*TINY, "--config.prm.balance=True"])
    out = run_train_prm(cfg, str(tmp_path))
    r = out["label_rate"]  # the tiny model gets every step wrong: r = 0, clipped to 1e-3
    assert out["class_weights"] == pytest.approx(list(balanced_weights(r)))
    # Both classes carry half the weight: w+ r' = w- (1 - r') = 1/2 at the clipped rate r'.
    rc = min(max(r, 1e-3), 1 - 1e-3)
    assert out["class_weights"][0] * rc == pytest.approx(0.5)
    assert out["class_weights"][1] * (1 - rc) == pytest.approx(0.5)
    assert out["losses"][-1] < out["losses"][0]
