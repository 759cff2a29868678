"""Evaluate a pretrained model or a training checkpoint on a task's held-out split.

    python -m experiments.eval --config experiments/configs/smollm2_gsm8k_grpo.py \
        --workdir runs/eval_gsm8k --config.task.data_dir=../shared/data/gsm8k
    python -m experiments.eval --config experiments/configs/smollm2_arith_grpo.py \
        --workdir runs/arith --checkpoint latest          # the run's newest checkpoint
    python -m experiments.eval ... --checkpoint 40        # step 40 of --workdir's run
    python -m experiments.eval ... --checkpoint runs/other_run [--model /path/to/hf_dir]

The model is ``config.model.name`` (or ``--model``); with ``--checkpoint`` its parameters are
replaced by a run's saved policy (``DIR`` = a run directory, its ``checkpoints/`` folder or one
step folder; ``STEP`` / ``latest`` = in ``--workdir/checkpoints``). The prompts are the first
``config.eval.num_prompts`` of ``config.task``'s ``test`` split; greedy accuracy, answer-extraction
coverage and (with ``config.eval.n_samples > 1``) pass@k / maj@k / distinct answers come from
:func:`jaxrl_reason.eval.runner.evaluate_policy`, the routine the training loop evaluates with.

``--search greedy,sample,bon,beam,mcts`` runs inference-time search instead
(:mod:`jaxrl_reason.search`, knobs ``--n --beam-width --expansions --simulations --max-depth
--step-tokens --scorer``): ``eval.json`` then holds ``search = {mode: {accuracy,
tokens_generated, score_mean}}`` (and ``metrics["<mode>/accuracy"]`` ...); ``--plot`` adds
``search_plot.png``, accuracy against tokens generated.

Writes ``eval.json`` (metrics + a config summary) and ``eval_samples.jsonl`` (one record per
prompt) to ``--workdir`` and prints a summary table. Config errors (unknown key, wrong type,
``eval.ks`` above ``eval.n_samples``, no checkpoint to load) exit with status 2 before anything
compiles.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

#: Config fields that must agree between the run that saved a checkpoint and this evaluation:
#: they decide the saved tree's structure (model shapes, value head, optimiser state).
_RUN_KEYS = ("model.name", "algo.value_head", "optim.trainable", "optim.last_k")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m experiments.eval",
        allow_abbrev=False,
        description="Evaluate a model or checkpoint; overrides: --config.KEY=VALUE",
    )
    p.add_argument("--config", required=True, help="Python config file (get_config())")
    p.add_argument("--workdir", required=True, help="where eval.json / eval_samples.jsonl go")
    p.add_argument(
        "--checkpoint",
        default=None,
        help="'latest', a step of --workdir's run, or a run / checkpoints / step directory",
    )
    p.add_argument("--model", default=None, help="overrides config.model.name (name or HF dir)")
    p.add_argument("--split", default="test", help="task split to evaluate (default: test)")
    g = p.add_argument_group("search (jaxrl_reason.search), instead of the standard evaluation")
    g.add_argument(
        "--search",
        default=None,
        help="comma-separated modes among " + ",".join(SEARCH_MODES) + " (e.g. greedy,bon,beam)",
    )
    g.add_argument("--n", type=int, default=4, help="bon: samples per problem")
    g.add_argument("--beam-width", type=int, default=2, help="beam: beams kept (B)")
    g.add_argument("--expansions", type=int, default=2, help="beam / mcts: steps per expansion")
    g.add_argument("--simulations", type=int, default=8, help="mcts: simulations per problem")
    g.add_argument("--max-depth", type=int, default=4, help="beam / mcts: steps before the end")
    g.add_argument("--step-tokens", type=int, default=32, help="most tokens of one step")
    g.add_argument(
        "--scorer",
        default="oracle",
        choices=("oracle", "outcome", "prm"),
        help="oracle: arith_chain's step oracle; outcome: the task's verifier; prm: the trained "
        "PRM given by --prm (min over step scores)",
    )
    g.add_argument(
        "--plot", action="store_true", help="also write search_plot.png (accuracy vs tokens)"
    )
    g.add_argument(
        "--search-chunk",
        type=int,
        default=8,
        help="problems searched at once (each branch holds a KV cache; memory grows with it)",
    )
    p.add_argument(
        "--prm",
        default=None,
        help="a train_prm checkpoint: also report its ProcessBench first-error F1 on the "
        "policy's sampled responses (tasks with oracle step labels: arith_chain)",
    )
    return p


#: ``--search`` modes: greedy decoding, one sample, majority vote of ``--n`` samples (maj@n,
#: self-consistency), best-of-N, step beam search, MCTS*.
SEARCH_MODES = ("greedy", "sample", "maj", "bon", "beam", "mcts")


def parse_search(spec: str | None) -> list[str]:
    """The ``--search`` modes in order; raises ConfigError on an unknown one."""
    from jaxrl_reason.train.config import ConfigError

    if spec is None:
        return []
    modes = [m.strip() for m in spec.split(",") if m.strip()]
    bad = [m for m in modes if m not in SEARCH_MODES]
    if bad or not modes:
        raise ConfigError(f"--search {spec}: use modes among {', '.join(SEARCH_MODES)}")
    return modes


def run_searches(config, args, model, tokenizer, task, examples, modes) -> dict[str, dict]:
    """Runs each ``--search`` mode on ``examples``; returns ``{mode: {"accuracy",
    "tokens_generated", "score_mean"}}``. Every mode decodes with
    :class:`jaxrl_reason.search.SessionExpander` at ``config.rollout.temperature`` (greedy
    mode: argmax), budget ``config.rollout.max_new_tokens``; accuracy is the task's verifier
    on the chosen response."""
    import jax
    import numpy as np

    from jaxrl_reason import search
    from jaxrl_reason.rollout import SamplingConfig
    from jaxrl_reason.rollout.chat import stop_token_ids

    if args.scorer == "oracle":
        score_fn = search.arith_chain_oracle_scorer()
    elif args.scorer == "prm":
        from jaxrl_reason.models.prm import load_prm

        score_fn = search.prm_scorer(
            load_prm(args.prm),
            tokenizer,
            task,
            max_steps=int(config.rollout.get("max_steps", 8)),
        )
    else:
        score_fn = search.outcome_scorer(task)
    stops = stop_token_ids(tokenizer, model)
    out: dict[str, dict] = {}
    for i, mode in enumerate(modes):
        cfg = SamplingConfig(
            greedy=mode == "greedy",
            temperature=float(config.rollout.temperature),
            top_p=float(config.rollout.top_p),
            top_k=int(config.rollout.top_k),
            stop_token_ids=stops,
        )
        exp = search.SessionExpander(
            model,
            tokenizer,
            task,
            sampling=cfg,
            max_new_tokens=int(config.rollout.max_new_tokens),
            step_tokens=args.step_tokens,
        )
        # Problems go through in chunks of --search-chunk: every branch of a chunk holds a KV
        # cache of the whole stack (BoN over 50 problems x 4 samples at once needed > 12 GB).
        texts, scores, tokens = [], [], 0
        chunk = max(int(args.search_chunk), 1)
        for c0 in range(0, len(examples), chunk):
            part = examples[c0 : c0 + chunk]
            key = jax.random.fold_in(jax.random.fold_in(jax.random.key(config.seed), i), c0)
            res = _run_one_search(search, mode, exp, score_fn, part, key, args)
            texts += list(res.texts)
            scores += list(np.asarray(res.scores).tolist())
            tokens += int(res.tokens_generated)
        res = search.SearchResult(texts, np.asarray(scores, np.float32), tokens, np.zeros(0))
        correct = np.asarray(task.verify_batch(res.texts, examples), np.float64)
        out[mode] = {
            "accuracy": float(correct.mean()),
            "tokens_generated": int(res.tokens_generated),
            "score_mean": float(np.mean(res.scores)),
        }
    return out


def _run_one_search(search, mode, exp, score_fn, examples, key, args):
    """One ``--search`` mode on a chunk of problems: a ``jaxrl_reason.search.SearchResult``."""
    if mode in ("greedy", "sample"):
        return search.best_of_n(exp, score_fn, examples, key, n=1)
    if mode == "maj":
        return search.best_of_n(
            exp, score_fn, examples, key, n=args.n, vote="majority", answer_fn=answer_key
        )
    if mode == "bon":
        return search.best_of_n(exp, score_fn, examples, key, n=args.n)
    if mode == "beam":
        return search.beam_search(
            exp,
            score_fn,
            examples,
            key,
            beam_width=args.beam_width,
            expansions=args.expansions,
            max_depth=args.max_depth,
        )
    return search.mcts(
        exp,
        score_fn,
        examples,
        key,
        simulations=args.simulations,
        expansions=args.expansions,
        max_depth=args.max_depth,
    )


def answer_key(text: str):
    """The canonical final answer of a response for majority voting: the extracted answer
    (``#### x``, ``\\boxed{x}``, ...) as an exact fraction where it parses, else its stripped
    text; None without one (never wins a vote)."""
    from fractions import Fraction

    from jaxrl_reason.rewards.extract import extract_answer

    ans, _ = extract_answer(text)
    if ans is None:
        return None
    try:
        return Fraction(ans.replace(",", "").strip())
    except (ValueError, ZeroDivisionError):
        return ans.strip()


def plot_search(results: dict[str, dict], path: str) -> None:
    """Accuracy against tokens generated, one labelled point per search mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for mode, r in results.items():
        ax.scatter([r["tokens_generated"]], [r["accuracy"]])
        ax.annotate(mode, (r["tokens_generated"], r["accuracy"]))
    ax.set_xscale("log")
    ax.set_xlabel("tokens generated (all problems)")
    ax.set_ylabel("accuracy")
    ax.set_title("search: accuracy vs compute")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def resolve_checkpoint(spec: str, workdir: str) -> tuple[str, int, str | None]:
    """``(checkpoints directory, step, run directory or None)`` for a ``--checkpoint`` value.

    Raises:
      ConfigError: no such directory, no checkpoint in it, or an unsaved step.
    """
    from jaxrl_reason.train.checkpoint import Checkpointer
    from jaxrl_reason.train.config import ConfigError

    step: int | None = None
    if spec == "latest" or spec.isdigit():
        ckpt_dir, run_dir = os.path.join(workdir, "checkpoints"), workdir
        step = None if spec == "latest" else int(spec)
    elif os.path.isdir(os.path.join(spec, "checkpoints")):
        ckpt_dir, run_dir = os.path.join(spec, "checkpoints"), spec
    elif os.path.basename(os.path.normpath(spec)).isdigit() and os.path.isdir(spec):
        ckpt_dir = os.path.dirname(os.path.normpath(spec))
        step = int(os.path.basename(os.path.normpath(spec)))
        run_dir = os.path.dirname(ckpt_dir)
    elif os.path.isdir(spec):
        ckpt_dir, run_dir = spec, os.path.dirname(os.path.normpath(spec))
    else:
        raise ConfigError(
            f"--checkpoint {spec}: not 'latest', a step number, or an existing directory"
        )
    if not os.path.isdir(ckpt_dir):
        raise ConfigError(f"--checkpoint {spec}: no checkpoints directory {ckpt_dir}")
    ckpt = Checkpointer(ckpt_dir, save_every=0, handle_signals=False, async_save=False)
    try:
        steps = ckpt.all_steps()
    finally:
        ckpt.close()
    if not steps:
        raise ConfigError(f"--checkpoint {spec}: no saved checkpoint in {ckpt_dir}")
    if step is None:
        step = max(steps)
    elif step not in steps:
        raise ConfigError(f"--checkpoint {spec}: step {step} not saved in {ckpt_dir}; have {steps}")
    has_config = os.path.isfile(os.path.join(run_dir, "config.json"))
    return ckpt_dir, int(step), run_dir if has_config else None


def check_run_config(config: Any, run_dir: str | None) -> None:
    """Raises ConfigError when ``config`` differs from the saving run's in :data:`_RUN_KEYS`."""
    from jaxrl_reason.train.config import ConfigError

    if run_dir is None:
        return
    with open(os.path.join(run_dir, "config.json")) as f:
        saved = json.load(f)
    for dotted in _RUN_KEYS:
        mine, theirs = config, saved
        try:
            for part in dotted.split("."):
                mine, theirs = mine[part], theirs[part]
        except (KeyError, TypeError):
            continue
        if mine != theirs:
            raise ConfigError(
                f"config.{dotted}={mine!r} but the checkpoint's run ({run_dir}) used {theirs!r}; "
                f"pass --config.{dotted}={theirs} (or the run's config file)"
            )


def load_policy(config: Any, checkpoint: str | None, workdir: str):
    """``(model, tokenizer, checkpoint info or None)``: the pretrained model or a run's policy."""
    from jaxrl_reason.models.build import build_model

    resolved = None
    if checkpoint is not None:
        resolved = resolve_checkpoint(checkpoint, workdir)
        check_run_config(config, resolved[2])
    model, tokenizer = build_model(config.model)
    if resolved is None:
        return model, tokenizer, None
    ckpt_dir, step, run_dir = resolved
    from jaxrl_reason.train.state import restore_policy

    model = restore_policy(config, model, ckpt_dir, step)
    return model, tokenizer, {"directory": ckpt_dir, "step": step, "run_dir": run_dir}


def format_table(metrics: dict[str, float]) -> str:
    """Two-column text table of the metrics (rates as percentages)."""
    lines = []
    for k, v in metrics.items():
        pct = (
            k.endswith("/accuracy")
            or k
            in (
                "accuracy",
                "extraction_coverage",
                "truncated_rate",
                "no_answer_rate",
            )
            or (
                k.startswith(
                    ("pass@", "maj@", "sample/acc", "sample/ext", "sample/trunc", "extraction/")
                )
            )
        )
        lines.append(f"  {k:<28} {100 * v:8.1f} %" if pct else f"  {k:<28} {v:10.2f}")
    return "\n".join(lines)


def prm_metrics(config, path: str, policy, tokenizer, task, examples) -> dict[str, float]:
    """``prm/*``: first-error F1 (threshold ``prm.threshold``), its two accuracies and the
    step accuracy of the PRM at ``path`` on ``rollout.n_samples`` responses per prompt sampled
    from the policy, against the task's oracle step labels
    (:func:`jaxrl_reason.eval.process.evaluate_prm`)."""
    import jax

    from jaxrl_reason.eval.process import evaluate_prm, sample_step_batch
    from jaxrl_reason.models.prm import load_prm
    from jaxrl_reason.rollout.strategies import sampling_config

    prm = load_prm(path)
    s = int(config.rollout.get("max_steps", 8))
    batch = sample_step_batch(
        policy,
        tokenizer,
        task,
        examples,
        jax.random.fold_in(jax.random.key(config.seed), 11),
        sampling_config(config.rollout, tokenizer),
        step_rule=config.rollout.get("step_rule", "auto"),
        num_steps=s,
    )
    out = evaluate_prm(
        lambda pt, pm, tok, seg: prm.scores(pt, pm, tok, seg, s),
        batch,
        task,
        num_steps=s,
        threshold=float(config.prm.threshold),
    )
    return {
        "prm/first_error_f1": out["f1"],
        "prm/acc_err": out["acc_err"],
        "prm/acc_cor": out["acc_cor"],
        "prm/step_acc": out["step_acc"],
        "prm/num_samples": out["num_samples"],
    }


def main(argv: list[str] | None = None) -> int:
    """Parses ``argv``, evaluates, writes ``eval.json`` / ``eval_samples.jsonl``; exit status."""
    from jaxrl_reason.train.config import ConfigError, load_config, parse_flags, to_json_dict

    args, rest = _parser().parse_known_args(sys.argv[1:] if argv is None else argv)
    try:
        # parse_flags turns the remaining --config.KEY=VALUE (or KEY VALUE) into overrides.
        launch = parse_flags(
            ["--config", args.config, "--workdir", args.workdir, *rest], prog="experiments.eval"
        )
        config = load_config(args.config, launch.overrides)
        if args.model is not None:
            config.model.name = args.model
        from jaxrl_reason.train.config import eval_kwargs_from_config

        eval_kw = eval_kwargs_from_config(config)
        num_prompts = int(config.eval.num_prompts)
        if num_prompts < 1:
            raise ConfigError(f"eval.num_prompts={num_prompts}: must be >= 1")
        import jax

        from jaxrl_reason.train.config import validate

        validate(config, num_devices=jax.device_count())
        if args.checkpoint is not None:  # fail on a missing checkpoint before building anything
            resolve_checkpoint(args.checkpoint, args.workdir)
        modes = parse_search(args.search)
        if modes and args.scorer == "oracle" and config.task.name != "arith_chain":
            raise ConfigError(
                f"--scorer oracle is arith_chain's step oracle; task.name={config.task.name!r}: "
                "pass --scorer outcome"
            )
        if modes and args.scorer == "prm" and args.prm is None:
            raise ConfigError("--scorer prm needs --prm <train_prm workdir>/prm")
        if args.prm is not None and not os.path.isfile(os.path.join(args.prm, "prm.json")):
            raise ConfigError(
                f"--prm {args.prm}: not a PRM checkpoint (no prm.json); python -m "
                "experiments.train_prm writes one to <workdir>/prm"
            )
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2

    import jax

    from jaxrl_reason.eval.runner import evaluate_policy
    from jaxrl_reason.rollout.chat import stop_token_ids

    t0 = time.perf_counter()
    try:
        model, tokenizer, ckpt_info = load_policy(config, args.checkpoint, args.workdir)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    from jaxrl_reason.data.build import build_task

    # TFDS catalog, or a local JSONL folder in task.data_dir (e.g. ../shared/data/gsm8k).
    task = build_task(config.task, args.split)
    examples = list(task[: min(num_prompts, len(task))])
    t_load = time.perf_counter() - t0
    searches = None
    if modes:
        searches = run_searches(config, args, model, tokenizer, task, examples, modes)
        metrics = {f"{mode}/{k}": v for mode, r in searches.items() for k, v in r.items()}
        records = []
    else:
        metrics, records = evaluate_policy(
            model,
            tokenizer,
            task,
            examples,
            key=jax.random.key(config.seed),
            stop_token_ids=stop_token_ids(tokenizer, model),
            **eval_kw,
        )

    if args.prm is not None:
        metrics.update(prm_metrics(config, args.prm, model, tokenizer, task, examples))

    os.makedirs(args.workdir, exist_ok=True)
    summary = {
        "metrics": metrics,
        "model": config.model.name,
        "checkpoint": ckpt_info,
        "task": {
            "name": config.task.name,
            "split": args.split,
            "num_prompts": len(examples),
            "verify_format": getattr(task, "verify_format", None),
        },
        "eval": {k: list(v) if isinstance(v, tuple) else v for k, v in eval_kw.items()},
        "seed": config.seed,
        "search": searches,
        "search_args": None
        if searches is None
        else {
            k: getattr(args, k)
            for k in (
                "n",
                "beam_width",
                "expansions",
                "simulations",
                "max_depth",
                "step_tokens",
                "scorer",
            )
        },
        "load_s": t_load,
        "config": to_json_dict(config),
    }
    with open(os.path.join(args.workdir, "eval.json"), "w") as f:
        json.dump(summary, f, indent=2)
    with open(os.path.join(args.workdir, "eval_samples.jsonl"), "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")

    source = (
        config.model.name
        if ckpt_info is None
        else (f"{config.model.name} @ step {ckpt_info['step']} ({ckpt_info['directory']})")
    )
    print(f"[eval] {source} on {config.task.name}/{args.split}, {len(examples)} prompts")
    print(format_table(metrics))
    if searches is not None and args.plot:
        plot_search(searches, os.path.join(args.workdir, "search_plot.png"))
    print(f"[eval] wrote {os.path.join(args.workdir, 'eval.json')}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
