"""Chat generation from the command line with the jitted sampler.

    python -m experiments.generate --prompt "What is the capital of France?"
    python -m experiments.generate --prompt "Name a colour." --temperature 0.8 --top-p 0.9 --n 3

Each prompt is wrapped in the model's chat template (user turn + generation prompt), the batch
is left-padded and sampled in one compiled call (:func:`jaxrl_reason.rollout.sample`), and every
completion is printed, followed by a timing line. ``--temperature 0`` (the default) decodes
greedily.
"""

from __future__ import annotations

import argparse
import sys
import time


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m experiments.generate", description=__doc__)
    p.add_argument("--prompt", action="append", required=True, help="user message (repeatable)")
    p.add_argument(
        "--model",
        default="smollm2-135m-instruct",
        help="registered name (smollm2-135m-instruct) or a Hugging Face checkpoint directory",
    )
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (argmax)")
    p.add_argument("--top-k", type=int, default=0, help="0 = off")
    p.add_argument("--top-p", type=float, default=1.0, help="1.0 = off")
    p.add_argument("--n", type=int, default=1, help="samples per prompt")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--raw", action="store_true", help="do not apply the chat template")
    return p


def stop_ids_for(model, tokenizer) -> tuple[int, ...]:
    """End-of-turn ids: the config's eos, the tokenizer's eos and ``<|im_end|>`` if present."""
    ids = {getattr(model.config, "eos_token_id", None), tokenizer.eos_token_id}
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if isinstance(im_end, int) and im_end != tokenizer.unk_token_id:
        ids.add(im_end)
    return tuple(sorted(i for i in ids if i is not None))


def encode_chat(tokenizer, prompts: list[str], raw: bool = False) -> list[list[int]]:
    """Token ids of each prompt as one user turn followed by the assistant generation prompt."""
    out = []
    for text in prompts:
        if not raw:
            text = tokenizer.apply_chat_template(
                [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=False
            )
        out.append(list(tokenizer(text, add_special_tokens=False)["input_ids"]))
    return out


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv``, generate, print the completions; returns the process exit status."""
    args = _parser().parse_args(argv)
    import jax

    from jaxrl_reason.models import load_pretrained
    from jaxrl_reason.rollout import SamplingConfig, left_pad, sample, trace_count

    t0 = time.perf_counter()
    model, tokenizer = load_pretrained(args.model)
    t_load = time.perf_counter() - t0

    pad_id = model.config.pad_token_id
    if pad_id is None:
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    tokens, mask = left_pad(encode_chat(tokenizer, args.prompt, args.raw), pad_id)
    try:
        cfg = SamplingConfig(
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature if args.temperature > 0 else 1.0,
            greedy=args.temperature <= 0,
            top_k=args.top_k,
            top_p=args.top_p,
            n=args.n,
            stop_token_ids=stop_ids_for(model, tokenizer),
            pad_token_id=pad_id,
        )
    except ValueError as e:
        print(f"generate: {e}", file=sys.stderr)
        return 2

    compiles = trace_count()
    t0 = time.perf_counter()
    out = sample(model, tokens, mask, jax.random.key(args.seed), cfg)
    jax.block_until_ready(out.tokens)
    elapsed = time.perf_counter() - t0
    compiled = trace_count() > compiles

    for row, ids in enumerate(out.response_lists()):
        b, j = divmod(row, args.n)
        head = f"[{b}]" if args.n == 1 else f"[{b}.{j}]"
        reason = "stop" if int(out.finish_reason[row]) == 0 else "length"
        print(f"{head} {args.prompt[b]}")
        print(f"  -> {tokenizer.decode(ids, skip_special_tokens=True).strip()}  ({reason})")
    n_tok = int(out.lengths.sum())
    note = ", first call: includes XLA compilation" if compiled else ""
    print(
        f"[generate] {len(args.prompt)} prompt(s) x {args.n}: {n_tok} tokens in {elapsed:.2f} s "
        f"({n_tok / max(elapsed, 1e-9):.1f} tok/s{note}; model load {t_load:.1f} s)",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
