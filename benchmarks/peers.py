"""TRL's GRPO step and this project's, side by side in one run: TRL, this project, TRL again.

    python -m benchmarks.peers --trl-python /work/trl-venv/bin/python [--steps 4]

The workload is :mod:`benchmarks.train_step`'s: SmolLM2-135M-Instruct, 8 prompts x 4
samples of the 2-digit sums task, at most 32 new tokens at temperature 1, float32, every
parameter trained, one optimiser step per batch, no KL term (beta 0). TRL runs
``trl.GRPOTrainer`` on the same weights, converted once to a Hugging Face directory
(``--hf-dir``, written with :func:`jaxrl_reason.models.save_pretrained`), on the same prompts
through the same chat template, with the same verifier as reward. Each side runs in its own
process (peak RSS is per process: model load and compilation included) and reports the
median step time over the steps after the first, and its split: generation (TRL: the time in
``_generate_and_score_completions``, which also scores; here: rollout + reward) and the rest
(the update).

A Python in which ``trl`` and ``torch`` import (the suite itself never needs torch)::

    python3 -m venv /work/trl-venv
    /work/trl-venv/bin/pip install torch==2.13.0      # the CPU build
    /work/trl-venv/bin/pip install "trl==1.16.*"

Without ``--trl-python`` this says so and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap

CONFIG = os.path.join(
    os.path.dirname(__file__), "..", "experiments", "configs", "smollm2_arith_grpo.py"
)

#: The TRL side: reads a JSON job (hf dir, prompts, answers, steps), writes a JSON result.
TRL_DRIVER = textwrap.dedent(
    r"""
    import json, re, resource, sys, time
    job = json.load(open(sys.argv[1]))
    import torch, trl, transformers
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(job["hf_dir"])
    model = AutoModelForCausalLM.from_pretrained(job["hf_dir"], dtype=torch.float32)
    ds = Dataset.from_list(
        [{"prompt": p, "answer": a} for p, a in zip(job["prompts"], job["answers"])]
    )

    def correct(completions, answer, **kw):
        out = []
        for c, a in zip(completions, answer):
            text = c[-1]["content"] if isinstance(c, list) else c
            m = re.findall(r"-?\d+", text.replace(",", ""))
            out.append(1.0 if m and m[-1] == str(a) else 0.0)
        return out

    args = GRPOConfig(
        output_dir=job["out_dir"], per_device_train_batch_size=32, num_generations=4,
        gradient_accumulation_steps=1, max_completion_length=32, temperature=1.0,
        beta=0.0, learning_rate=job["lr"], max_steps=job["steps"], logging_steps=1,
        save_strategy="no", report_to=[], use_cpu=True, bf16=False, fp16=False, seed=0,
        dataloader_num_workers=0, shuffle_dataset=False,
    )
    times, gen = [], []

    class Clock(TrainerCallback):
        def on_step_begin(self, a, s, c, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, a, s, c, **kw):
            times.append(time.perf_counter() - self.t0)

    trainer = GRPOTrainer(
        model=model, args=args, reward_funcs=correct, train_dataset=ds,
        processing_class=tok, callbacks=[Clock()],
    )
    inner = trainer._generate_and_score_completions

    def timed(*a, **kw):
        t0 = time.perf_counter()
        out = inner(*a, **kw)
        gen.append(time.perf_counter() - t0)
        return out

    trainer._generate_and_score_completions = timed
    trainer.train()
    json.dump({
        "step_s": times, "generate_s": gen,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "versions": {"trl": trl.__version__, "torch": torch.__version__,
                     "transformers": transformers.__version__},
        "threads": torch.get_num_threads(),
    }, open(job["result"], "w"))
    """
)


def ensure_hf_dir(path: str) -> str:
    """SmolLM2-135M-Instruct as a Hugging Face directory (written once)."""
    if os.path.isfile(os.path.join(path, "config.json")):
        return path
    import ml_collections

    from jaxrl_reason.models import save_pretrained
    from jaxrl_reason.models.build import build_model

    model, tok = build_model(ml_collections.ConfigDict({"name": "smollm2-135m-instruct"}))
    save_pretrained(model, tok, path)
    return path


def prompts_and_answers(n: int) -> tuple[list, list]:
    """The first ``n`` training prompts of the task (chat messages) and their answers."""
    from jaxrl_reason.data.build import build_task
    from jaxrl_reason.train.config import load_config

    cfg = load_config(CONFIG, [])
    task = build_task(cfg.task, "train")
    exs = [task[i] for i in range(n)]
    return [task.build_prompt(e) for e in exs], [str(e.answer) for e in exs]


def run_trl(python: str, hf_dir: str, steps: int, lr: float, tmp: str, tag: str) -> dict:
    prompts, answers = prompts_and_answers(8 * steps)
    job = {
        "hf_dir": hf_dir,
        "prompts": prompts,
        "answers": answers,
        "steps": steps,
        "lr": lr,
        "out_dir": os.path.join(tmp, f"trl_{tag}"),
        "result": os.path.join(tmp, f"trl_{tag}.json"),
    }
    job_path = os.path.join(tmp, f"job_{tag}.json")
    with open(job_path, "w") as f:
        json.dump(job, f)
    driver = os.path.join(tmp, "trl_driver.py")
    with open(driver, "w") as f:
        f.write(TRL_DRIVER)
    subprocess.run([python, driver, job_path], check=True)
    with open(job["result"]) as f:
        return json.load(f)


def run_ours(steps: int, tmp: str) -> dict:
    out = os.path.join(tmp, "ours.json")
    subprocess.run(
        [sys.executable, "-m", "benchmarks.train_step", f"--steps={steps}", f"--json={out}"],
        check=True,
        cwd=os.path.join(os.path.dirname(__file__), ".."),
    )
    with open(out) as f:
        return json.load(f)


def _median(xs: list[float]) -> float:
    steady = xs[1:] or xs
    return statistics.median(steady)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trl-python", default=None, help="a python in which trl and torch import")
    p.add_argument("--steps", type=int, default=4, help="steps per run (the first is dropped)")
    p.add_argument("--lr", type=float, default=2e-5)
    p.add_argument(
        "--hf-dir",
        default=os.path.expanduser("~/.cache/jaxrl_reason/smollm2-135m-instruct-hf"),
        help="where the converted Hugging Face copy of SmolLM2 lives (written once)",
    )
    args = p.parse_args(argv)
    if not args.trl_python:
        print(__doc__.split("A Python in which")[1].split("Without")[0].strip())
        print("benchmarks.peers: pass --trl-python PATH (a python with trl and torch); skipped.")
        return 0
    hf_dir = ensure_hf_dir(args.hf_dir)
    with tempfile.TemporaryDirectory() as tmp:
        trl_a = run_trl(args.trl_python, hf_dir, args.steps, args.lr, tmp, "a")
        ours = run_ours(args.steps, tmp)
        trl_b = run_trl(args.trl_python, hf_dir, args.steps, args.lr, tmp, "b")
    load = os.getloadavg()
    print(f"\nload average: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; {os.cpu_count()} cores")
    print(f"TRL {trl_a['versions']} ({trl_a['threads']} torch threads)")
    rows = []
    for name, r in (("TRL (before)", trl_a), ("TRL (after)", trl_b)):
        step, gen = _median(r["step_s"]), _median(r["generate_s"])
        rows.append((name, step, gen, step - gen, r["peak_rss_gib"]))
    m = ours["median"]
    gen_ours = m["time/rollout_s"] + m["time/reward_s"]
    rows.append(
        ("jaxrl_reason", m["time/step_s"], gen_ours, m["time/step_s"] - gen_ours,
         ours["peak_rss_gib"])
    )  # fmt: skip
    print("| run | step s (median) | generate + score s | update + rest s | peak RSS GiB |")
    print("|---|---|---|---|---|")
    for name, step, gen, rest, rss in rows:
        print(f"| {name} | {step:.2f} | {gen:.2f} | {rest:.2f} | {rss:.2f} |")
    trl_step = statistics.mean([rows[0][1], rows[1][1]])
    print(f"ratio TRL step / jaxrl_reason step: {trl_step / m['time/step_s']:.2f}x (goal >= 3x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
