"""Mutation check: plant known bugs in a temporary copy of the repository, run the tests that
should catch each one, and report which survive.

    .venv/bin/python tests/mutation/run_mutations.py            # every mutant
    .venv/bin/python tests/mutation/run_mutations.py --list     # names only
    .venv/bin/python tests/mutation/run_mutations.py --only grpo_eps_in_sqrt pure_kl_sign
    .venv/bin/python tests/mutation/run_mutations.py --no-baseline --timeout 300

Each mutant is ``(name, file, exact old text, new text, test files)``. The old text must occur
exactly once in the file at run time; a mutant whose text is gone (the code moved, e.g. the
``train/loop.py`` restructuring) is reported ``STALE``, not killed, so update it by hand.
The working tree is never modified: the repository is copied once to a temporary directory
(without ``.git`` / caches; ``.venv`` is used from where it is), each mutant is written into
the copy, its tests run there with ``pytest -x -q``, and the file is restored.

Killed = the tests failed (or timed out); survived = they passed. A baseline run of every
named test file on the unmutated copy comes first (``--no-baseline`` skips it): a failing
baseline makes every "killed" meaningless.

Not collected by pytest (not named ``test_*.py``; ``tests/conftest.py`` also ignores the
folder).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import NamedTuple

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Mutant(NamedTuple):
    name: str
    file: str
    old: str
    new: str
    tests: tuple[str, ...]


STEP = "jaxrl_reason/train/step.py"
LOOP = "jaxrl_reason/train/loop.py"
POLICY = "jaxrl_reason/losses/policy.py"
AGG = "jaxrl_reason/losses/aggregation.py"
REG = "jaxrl_reason/losses/regularizers.py"
VALUE = "jaxrl_reason/losses/value.py"
OUTCOME = "jaxrl_reason/credit/outcome.py"
PROCESS = "jaxrl_reason/credit/process.py"
SEGMENTS = "jaxrl_reason/credit/segments.py"

T_CONTRACT = "tests/train/test_loss_contract.py"
T_STEP = "tests/train/test_step.py"
T_LOSSES = "tests/losses/test_losses.py"
T_LOSSES_VERL = "tests/losses/test_losses_verl.py"
T_OPTIONS = "tests/credit/test_estimator_options.py"
T_PROCESS = "tests/credit/test_process.py"
T_OUTCOME = "tests/credit/test_outcome.py"
T_OUTCOME_VERL = "tests/credit/test_outcome_verl.py"
T_KERNEL = "tests/kernels/test_token_logprob.py"
# The loop test that runs a tiny experiment with exploration, TTRL and self-certainty rewards,
# then resumes a Trainer from its checkpoint.
T_LOOP = "tests/train/test_loop.py::test_tiny_run_with_exploration_and_ttrl_resumes_history"
T_RESUME = "tests/train/test_resume.py"

MUTANTS: list[Mutant] = [
    # ---- the reviewer's six --------------------------------------------------------------
    Mutant(
        "rl_loss_clip_low_as_clip_high",
        STEP,
        "clip_high=cfg.clip_high,",
        "clip_high=cfg.clip_low,",
        (T_CONTRACT, T_STEP),
    ),
    Mutant(
        "trainer_logprobs_at_temperature_1",
        STEP,
        "        temperature=cfg.temperature,\n        impl=cfg.kernel_impl,",
        "        temperature=1.0,\n        impl=cfg.kernel_impl,",
        (T_CONTRACT, T_STEP),
    ),
    Mutant(
        "loop_self_certainty_is_entropy",
        LOOP,
        "_, _, sc = kernels.token_logprob(",
        "_, sc, _ = kernels.token_logprob(",
        (T_LOOP,),
    ),
    Mutant(
        "grpo_eps_in_sqrt",
        OUTCOME,
        "adv = adv / (std + jnp.asarray(eps, jnp.float32))",
        "adv = adv / jnp.sqrt(jnp.square(std) + jnp.asarray(eps, jnp.float32))",
        (T_OPTIONS, T_OUTCOME, T_OUTCOME_VERL),
    ),
    Mutant(
        "pure_main_kl_sign",
        PROCESS,
        "rtok = rtok + jnp.where(_onehot_last(m), vr[:, None], 0.0) - kl_term",
        "rtok = rtok + jnp.where(_onehot_last(m), vr[:, None], 0.0) + kl_term",
        (T_OPTIONS, T_PROCESS),
    ),
    Mutant(
        "loop_resume_drops_answer_history",
        LOOP,
        'if "answer_history" in restored.metadata:',
        'if False and "answer_history" in restored.metadata:',
        (T_LOOP, T_RESUME),
    ),
    Mutant(
        # The KL reference must be the configured model, never the restored weights: the bug
        # of a resumed run with KL on took its reference from the restored weights.
        "loop_kl_reference_from_restored_weights",
        LOOP,
        "                self.step = int(restored.step)\n",
        "                self.step = int(restored.step)\n"
        "                if self.ref_params is not None:\n"
        '                    self.ref_params = jax.tree.map(jnp.copy, self.state["params"])\n',
        (T_RESUME,),
    ),
    Mutant(
        "bonus_added_before_the_estimator",
        "jaxrl_reason/train/phases.py",
        "        adv = adv + np.asarray(bonus, np.float32)[:, None] * np.asarray(traj.loss_mask)",
        "        adv = adv + 0.5 * np.asarray(bonus, np.float32)[:, None]"
        " * np.asarray(traj.loss_mask)",
        ("tests/train/test_phases.py",),
    ),
    Mutant(
        "credit_advantages_not_masked",
        "jaxrl_reason/train/phases.py",
        "        return adv.astype(jnp.float32) * m, ret.astype(jnp.float32) * m",
        "        return adv.astype(jnp.float32) + (1 - m), ret.astype(jnp.float32) * m",
        ("tests/train/test_phases.py",),
    ),
    Mutant(
        "kernel_self_certainty_drops_log_v",
        "jaxrl_reason/kernels/token_logprob/_common.py",
        "sc = lse - stats.zsum / vocab - math.log(vocab)",
        "sc = lse - stats.zsum / vocab",
        (T_KERNEL + "::test_self_certainty_against_numpy_on_random_logits",),
    ),
    # ---- train/step.py -------------------------------------------------------------------
    Mutant(
        "loss_config_ignores_rollout_temperature",
        STEP,
        'kw["temperature"] = float(config.rollout.temperature)',
        'kw["temperature"] = 1.0',
        (T_CONTRACT,),
    ),
    Mutant(
        "loss_config_frozen_layers_off_by_one",
        STEP,
        'kw["frozen_layers"] = num_layers - int(config.optim.last_k)',
        'kw["frozen_layers"] = num_layers - int(config.optim.last_k) - 1',
        (T_CONTRACT,),
    ),
    Mutant(
        "loss_config_keeps_dual_clip_zero",
        STEP,
        'kw["dual_clip"] = kw.get("dual_clip") or None',
        'kw["dual_clip"] = kw.get("dual_clip")',
        (T_CONTRACT,),
    ),
    Mutant(
        "rl_loss_entropy_bonus_sign",
        STEP,
        "loss = loss - cfg.entropy_coef * entropy",
        "loss = loss + cfg.entropy_coef * entropy",
        (T_CONTRACT, T_STEP),
    ),
    Mutant(
        "rl_loss_kl_sign",
        STEP,
        "loss = loss + cfg.kl_coef * kl",
        "loss = loss - cfg.kl_coef * kl",
        (T_CONTRACT, T_STEP),
    ),
    Mutant(
        "response_hidden_off_by_one",
        STEP,
        "jax.lax.dynamic_slice_in_dim(hidden, p - 1, r, axis=1)",
        "jax.lax.dynamic_slice_in_dim(hidden, p, r, axis=1)",
        (T_CONTRACT, T_STEP),
    ),
    Mutant(
        "micro_batch_grads_summed_not_averaged",
        STEP,
        "acc = jax.tree.map(lambda a, b: a + b / num_micro, acc, g)",
        "acc = jax.tree.map(lambda a, b: a + b, acc, g)",
        (T_CONTRACT, T_STEP),
    ),
    # ---- losses ----------------------------------------------------------------------------
    Mutant(
        "dual_clip_on_positive_advantages",
        POLICY,
        "lower = (per_token > loss3) & (adv < 0)",
        "lower = (per_token > loss3) & (adv > 0)",
        (T_LOSSES, T_CONTRACT),
    ),
    Mutant(
        "ppo_optimistic_min_instead_of_max",
        POLICY,
        "clipped = loss2 > loss1",
        "clipped = loss2 < loss1",
        (T_LOSSES, T_CONTRACT),
    ),
    Mutant(
        "ppo_kl_sign",
        POLICY,
        "ppo_kl = masked_mean(-log_ratio, mask)",
        "ppo_kl = masked_mean(log_ratio, mask)",
        (T_LOSSES, T_LOSSES_VERL),
    ),
    Mutant(
        "ppo_ratio_swapped_arguments",
        POLICY,
        "log_ratio = jnp.clip(logp - old, -_LOG_RATIO_CLAMP, _LOG_RATIO_CLAMP)",
        "log_ratio = jnp.clip(old - logp, -_LOG_RATIO_CLAMP, _LOG_RATIO_CLAMP)",
        (T_LOSSES, T_CONTRACT),
    ),
    Mutant(
        "token_mean_counts_padding",
        AGG,
        "den = jnp.sum(m) if num_tokens is None else num_tokens",
        "den = m.size if num_tokens is None else num_tokens",
        (T_LOSSES, T_LOSSES_VERL),
    ),
    Mutant(
        "seq_mean_token_mean_divides_by_padded_length",
        AGG,
        'per_seq = seq_sum if mode == "seq-mean-token-sum" else _safe_div(seq_sum, seq_len)',
        'per_seq = seq_sum if mode == "seq-mean-token-sum" else seq_sum / m.shape[-1]',
        (T_LOSSES, T_LOSSES_VERL),
    ),
    Mutant(
        "seq_mean_counts_empty_rows",
        AGG,
        "den = jnp.sum(seq_valid) if num_seqs is None else num_seqs",
        "den = m.shape[0] if num_seqs is None else num_seqs",
        (T_LOSSES, T_LOSSES_VERL, T_CONTRACT),
    ),
    Mutant(
        "k3_kl_sign",
        REG,
        "return jnp.clip(jnp.exp(neg) - neg - 1.0, -_K3_VALUE_CLAMP, _K3_VALUE_CLAMP)",
        "return jnp.clip(jnp.exp(neg) + neg - 1.0, -_K3_VALUE_CLAMP, _K3_VALUE_CLAMP)",
        (T_LOSSES, T_LOSSES_VERL, T_CONTRACT),
    ),
    Mutant(
        "value_loss_optimistic_min",
        VALUE,
        "clipped = loss2 > loss1",
        "clipped = loss2 < loss1",
        (T_LOSSES, T_LOSSES_VERL),
    ),
    # ---- credit ----------------------------------------------------------------------------
    Mutant(
        "grpo_biased_std",
        OUTCOME,
        "mean, var, count = group_moments(scores, group_ids, unbiased=True)",
        "mean, var, count = group_moments(scores, group_ids, unbiased=False)",
        (T_OPTIONS, T_OUTCOME, T_OUTCOME_VERL),
    ),
    Mutant(
        "rloo_wrong_denominator",
        OUTCOME,
        "adv = jnp.where(n > 1, n / jnp.maximum(n - 1.0, 1.0) * (scores - mean), scores)",
        "adv = jnp.where(n > 1, (scores - mean), scores)",
        (T_OUTCOME, T_OUTCOME_VERL),
    ),
    Mutant(
        "masked_whiten_dropped_eps",
        SEGMENTS,
        "out = (x - mu) * jax.lax.rsqrt(var + eps)",
        "out = (x - mu) * jax.lax.rsqrt(var)",
        (T_OUTCOME, T_OUTCOME_VERL),
    ),
    Mutant(
        "pure_vr_coef_ignored",
        PROCESS,
        "vr = vr_coef * (v - _loo_mean(v, gids, valid))",
        "vr = v - _loo_mean(v, gids, valid)",
        (T_OPTIONS, T_PROCESS),
    ),
    Mutant(
        "pure_unweighted_is_raw_sum",
        PROCESS,
        "rstar = sr / jnp.maximum(n_steps, 1.0)[:, None]",
        "rstar = sr",
        (T_OPTIONS, T_PROCESS),
    ),
    Mutant(
        "pure_verl_kl_sign",
        PROCESS,
        "rewards = rewards + jnp.where(_onehot_last(m), vr_coef * o[:, None], 0.0) - kl_term",
        "rewards = rewards + jnp.where(_onehot_last(m), vr_coef * o[:, None], 0.0) + kl_term",
        (T_OPTIONS, T_PROCESS),
    ),
    Mutant(
        "capo_weights_swapped",
        PROCESS,
        "return jnp.where(m, o[:, None] * w_whole - wrong_tok * w_process, 0.0)",
        "return jnp.where(m, o[:, None] * w_process - wrong_tok * w_whole, 0.0)",
        (T_OPTIONS, T_PROCESS),
    ),
    Mutant(
        "capo_majority_not_strict",
        PROCESS,
        "return 2 * votes > n",
        "return 2 * votes >= n",
        (T_OPTIONS, T_PROCESS),
    ),
    Mutant(
        "capo_vote_ignores_judge_mask",
        PROCESS,
        "votes = jnp.sum(v & jm[:, :, None], axis=1)",
        "votes = jnp.sum(v, axis=1)",
        (T_OPTIONS, T_PROCESS),
    ),
    Mutant(
        "prime_paper_coefs_swapped",
        PROCESS,
        "returns = jnp.where(m, c_p * proc + c_o * out[:, None], 0.0)",
        "returns = jnp.where(m, c_o * proc + c_p * out[:, None], 0.0)",
        (T_OPTIONS, T_PROCESS),
    ),
    Mutant(
        "prime_paper_ignores_gamma",
        PROCESS,
        "proc = rev_discounted_cumsum(jnp.where(m, r - b_proc[:, None], 0.0), gamma)",
        "proc = rev_discounted_cumsum(jnp.where(m, r - b_proc[:, None], 0.0), 1.0)",
        (T_OPTIONS, T_PROCESS),
    ),
    Mutant(
        "prime_ignores_beta",
        PROCESS,
        'scale = 1.0 if variant == "code" else beta',
        "scale = 1.0",
        (T_OPTIONS, T_PROCESS),
    ),
    Mutant(
        "loo_mean_off_by_one",
        PROCESS,
        "return jnp.where(cnt > 1, (tot - x) / jnp.maximum(cnt - 1.0, 1.0), x)",
        "return jnp.where(cnt > 1, (tot - x) / jnp.maximum(cnt, 1.0), x)",
        (T_OPTIONS, T_PROCESS),
    ),
    Mutant(
        "prime_code_rloo_extra_term_dropped",
        PROCESS,
        "out = x - others[:, None] + (x - mi[:, None]) * extra[:, None]",
        "out = x - others[:, None]",
        (T_OPTIONS, T_PROCESS),
    ),
]

_IGNORE = shutil.ignore_patterns(
    ".git", ".venv", "__pycache__", ".pytest_cache", ".ruff_cache", "*.egg-info", "runs", "wandb"
)


def _run_tests(root: str, tests: tuple[str, ...], timeout: int) -> tuple[str, float, str]:
    """Runs pytest in the copy; returns (outcome, seconds, last line of output)."""
    env = dict(os.environ)
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = root
    env.pop("PYTEST_ADDOPTS", None)
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    t0 = time.time()
    try:
        proc = subprocess.run(
            cmd, cwd=root, env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return "timeout", time.time() - t0, f"> {timeout} s"
    lines = [x for x in (proc.stdout + proc.stderr).strip().splitlines() if x.strip()]
    last = lines[-1] if lines else ""
    if proc.returncode == 0:
        return "passed", time.time() - t0, last
    if proc.returncode == 1:
        return "failed", time.time() - t0, last
    return f"error(rc={proc.returncode})", time.time() - t0, last


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="*", help="mutant names to run")
    ap.add_argument("--list", action="store_true", help="print the mutants and exit")
    ap.add_argument("--timeout", type=int, default=420, help="seconds per pytest run")
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the temporary copy")
    args = ap.parse_args(argv)

    mutants = MUTANTS
    if args.only:
        unknown = set(args.only) - {m.name for m in MUTANTS}
        if unknown:
            ap.error(f"unknown mutants: {sorted(unknown)}")
        mutants = [m for m in MUTANTS if m.name in args.only]
    if args.list:
        for m in mutants:
            print(f"{m.name:45s} {m.file:38s} {' '.join(m.tests)}")
        return 0

    tmp = tempfile.mkdtemp(prefix="jaxrl_mutants_")
    root = os.path.join(tmp, "repo")
    shutil.copytree(REPO, root, ignore=_IGNORE, symlinks=True)
    print(f"copy of {REPO} in {root}", flush=True)
    try:
        if not args.no_baseline:
            files = tuple(sorted({t for m in mutants for t in m.tests}))
            outcome, secs, last = _run_tests(root, files, args.timeout * 2)
            print(f"baseline ({len(files)} files): {outcome} in {secs:.0f} s: {last}", flush=True)
            if outcome != "passed":
                print("baseline fails: fix the tests first; mutant results would mean nothing")
                return 2
        rows = []
        for m in mutants:
            path = os.path.join(root, m.file)
            with open(path) as f:
                original = f.read()
            count = original.count(m.old)
            if count != 1:
                rows.append((m, "STALE", 0.0, f"old text found {count} times"))
                print(f"{m.name:45s} STALE ({count} matches)", flush=True)
                continue
            with open(path, "w") as f:
                f.write(original.replace(m.old, m.new))
            try:
                outcome, secs, last = _run_tests(root, m.tests, args.timeout)
            finally:
                with open(path, "w") as f:
                    f.write(original)
            status = "survived" if outcome == "passed" else "KILLED"
            if outcome.startswith("error"):
                status = "KILLED?"  # collection / import error: the mutant broke loading
            rows.append((m, status, secs, f"{outcome}: {last}"))
            print(f"{m.name:45s} {status:9s} {secs:5.0f} s  {last[:90]}", flush=True)
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    print()
    print(f"| {'mutant':45s} | {'file':46s} | {'result':8s} | {'s':>4s} |")
    print(f"|{'-' * 47}|{'-' * 48}|{'-' * 10}|{'-' * 6}|")
    for m, status, secs, _ in rows:
        print(f"| {m.name:45s} | {m.file:46s} | {status:8s} | {secs:4.0f} |")
    live = [r for r in rows if r[1] != "STALE"]
    killed = sum(r[1].startswith("KILLED") for r in live)
    stale = len(rows) - len(live)
    rate = killed / len(live) if live else 0.0
    print()
    print(f"killed {killed} / {len(live)} applicable mutants ({rate:.0%}); {stale} stale")
    survivors = [r[0].name for r in live if r[1] == "survived"]
    if survivors:
        print("survived: " + ", ".join(survivors))
    return 0 if not survivors and not stale else 1


if __name__ == "__main__":
    sys.exit(main())
