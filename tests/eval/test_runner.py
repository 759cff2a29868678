"""evaluate_policy on the tiny random model with the real SmolLM2 tokenizer and GSM8K prompts.

The random model answers nothing right, so the aggregation is checked with a task whose
verifier is a known function of the response text (even character count = correct): every
metric must then equal the value recomputed by hand from the per-example records.
"""

import os

import jax
import ml_collections
import numpy as np
import pytest

from jaxrl_reason.eval.runner import evaluate_policy, validate_eval
from jaxrl_reason.rewards.canonical import NONE_KEY, canonical_key
from jaxrl_reason.rewards.extract import extract_answer
from jaxrl_reason.rollout.chat import stop_token_ids
from jaxrl_reason.train.config import eval_kwargs_from_config
from tests.shared_data import require

MAX_NEW = 8  # tiny_debug's rollout.max_new_tokens: shapes shared with tests/experiments


def _gsm8k_dir():
    return require("gsm8k")


@pytest.fixture(scope="module")
def tiny():
    from jaxrl_reason.models.build import build_model

    return build_model(ml_collections.ConfigDict({"name": "tiny_debug"}))


@pytest.fixture(scope="module")
def gsm8k():
    from jaxrl_reason.data.gsm8k import Gsm8kTask

    cache = os.environ.get("JAXRL_CACHE_DIR") or os.path.expanduser("~/.cache/jaxrl_reason")
    task = Gsm8kTask(
        "test", source="local", jsonl_dir=_gsm8k_dir(), cache_dir=os.path.join(cache, "gsm8k")
    )
    return task, list(task[:4])


def _parity(text: str) -> bool:
    return len(text) % 2 == 0


class ParityTask:
    """GSM8K prompts, but 'correct' means an even number of characters in the response."""

    def __init__(self, task):
        self.task = task
        self.verify_format = task.verify_format

    def build_prompt(self, example):
        return self.task.build_prompt(example)

    def verify_batch(self, responses, examples):
        assert len(responses) == len(examples)
        return np.asarray([float(_parity(r)) for r in responses], np.float32)


@pytest.fixture(scope="module")
def parity_run(tiny, gsm8k):
    model, tok = tiny
    task, examples = gsm8k
    return evaluate_policy(
        model,
        tok,
        ParityTask(task),
        examples,
        key=jax.random.key(0),
        max_new_tokens=MAX_NEW,
        batch_prompts=4,
        n_samples=2,
        ks=(1, 2),
    )


def test_metric_keys_and_records(parity_run, gsm8k):
    metrics, records = parity_run
    _, examples = gsm8k
    expected = {
        "num_prompts",
        "accuracy",
        "extraction_coverage",
        "response_length",
        "truncated_rate",
        "n_samples",
        "sample/accuracy",
        "pass@1",
        "pass@2",
        "maj@1",
        "maj@2",
        "distinct_answers",
        "no_answer_rate",
        "sample/extraction_coverage",
        "sample/response_length",
        "sample/truncated_rate",
        "time_s",
        "tokens_per_s",
    }
    assert expected <= set(metrics)
    assert {k for k in metrics if k.startswith("extraction/")} == {
        "extraction/hash",
        "extraction/boxed",
        "extraction/answer_is",
        "extraction/last_number",
    }
    assert all(isinstance(v, float) for v in metrics.values())
    assert metrics["num_prompts"] == 4 and metrics["n_samples"] == 2
    for k, v in metrics.items():
        if k not in (
            "num_prompts",
            "n_samples",
            "time_s",
            "tokens_per_s",
            "distinct_answers",
            "response_length",
            "sample/response_length",
        ):
            assert 0.0 <= v <= 1.0, k
    assert 1.0 <= metrics["response_length"] <= MAX_NEW
    assert 0.0 <= metrics["distinct_answers"] <= 2.0

    assert [r["index"] for r in records] == [0, 1, 2, 3]
    for r, ex in zip(records, examples, strict=True):
        assert (r["id"], r["prompt"], r["gold"]) == (ex.id, ex.prompt, ex.answer)
        assert len(r["samples"]) == 2
        for s in [r["greedy"], *r["samples"]]:
            assert s["correct"] == _parity(s["response"])
            assert s["answer"] == extract_answer(s["response"], "auto")[0]
            assert 1 <= s["length"] <= MAX_NEW
            assert not s["truncated"] or s["length"] == MAX_NEW
        for s in r["samples"]:
            assert s["key"] == canonical_key(s["answer"])


def test_metrics_equal_hand_computation_from_records(parity_run):
    metrics, records = parity_run
    greedy = [r["greedy"] for r in records]
    samples = [r["samples"] for r in records]
    assert metrics["accuracy"] == pytest.approx(np.mean([g["correct"] for g in greedy]))
    assert metrics["extraction_coverage"] == pytest.approx(
        np.mean([g["answer"] is not None for g in greedy])
    )
    assert metrics["response_length"] == pytest.approx(np.mean([g["length"] for g in greedy]))
    assert metrics["truncated_rate"] == pytest.approx(np.mean([g["truncated"] for g in greedy]))
    flat = [s for ss in samples for s in ss]
    acc = np.mean([s["correct"] for s in flat])
    # n = 2: pass@1 = mean correctness, pass@2 = any correct, maj@1 = maj@2 = first sample's
    # correctness (a 1-1 tie goes to the answer seen first).
    assert metrics["sample/accuracy"] == pytest.approx(acc)
    assert metrics["pass@1"] == pytest.approx(acc)
    assert metrics["pass@2"] == pytest.approx(
        np.mean([any(s["correct"] for s in ss) for ss in samples])
    )
    assert metrics["maj@1"] == pytest.approx(np.mean([ss[0]["correct"] for ss in samples]))
    assert metrics["maj@2"] == metrics["maj@1"]
    assert metrics["distinct_answers"] == pytest.approx(
        np.mean([len({s["key"] for s in ss} - {NONE_KEY}) for ss in samples])
    )
    assert metrics["no_answer_rate"] == pytest.approx(np.mean([s["key"] == NONE_KEY for s in flat]))
    assert metrics["sample/response_length"] == pytest.approx(np.mean([s["length"] for s in flat]))
    # The parity verifier must see a mix, or the checks above could not tell counts apart.
    assert 0.0 < acc < 1.0 or 0.0 < metrics["accuracy"] < 1.0


def test_greedy_matches_the_sampler_and_is_independent_of_batching(tiny, gsm8k, parity_run):
    """Rows depend only on their own prompt key: batch 2 (sampled chunk 1) == batch 4."""
    from jaxrl_reason.rollout import SamplingConfig, left_pad, sample
    from jaxrl_reason.rollout.chat import chat_prompt_ids

    model, tok = tiny
    task, examples = gsm8k
    _, records4 = parity_run
    metrics2, records2 = evaluate_policy(
        model,
        tok,
        task,
        examples,
        key=jax.random.key(0),
        max_new_tokens=MAX_NEW,
        batch_prompts=2,
        n_samples=2,
        ks=(1, 2),
    )
    for a, b in zip(records4, records2, strict=True):
        assert a["greedy"]["response"] == b["greedy"]["response"]
        assert [s["response"] for s in a["samples"]] == [s["response"] for s in b["samples"]]
    # With the real GSM8K verifier the flags are the task's own verdicts.
    texts = [r["greedy"]["response"] for r in records2]
    np.testing.assert_array_equal(
        [r["greedy"]["correct"] for r in records2], task.verify_batch(texts, examples) > 0
    )
    assert metrics2["accuracy"] == np.mean([r["greedy"]["correct"] for r in records2])
    # Greedy text = a direct greedy sampler call on the first prompt alone.
    ids = chat_prompt_ids(tok, task, examples[:1])
    tokens, mask = left_pad(ids, tok.pad_token_id or 0)
    ro = sample(
        model,
        tokens,
        mask,
        jax.random.key(1),
        SamplingConfig(
            max_new_tokens=MAX_NEW, greedy=True, stop_token_ids=stop_token_ids(tok, model)
        ),
    )
    n = int(ro.lengths[0])
    direct = tok.decode(np.asarray(ro.tokens[0, :n]).tolist(), skip_special_tokens=True)
    assert direct == records2[0]["greedy"]["response"]


def test_default_stop_ids_include_end_of_turn(tiny):
    model, tok = tiny
    ids = stop_token_ids(tok, model)
    assert tok.convert_tokens_to_ids("<|im_end|>") in ids
    assert tok.eos_token_id in ids


@pytest.mark.parametrize(
    "kw, match",
    [
        (
            dict(greedy=True, n_samples=2, ks=(1, 4), temperature=1.0),
            r"eval\.ks=\(1, 4\).*n_samples=2",
        ),
        (dict(greedy=True, n_samples=2, ks=(0,), temperature=1.0), r"eval\.ks"),
        (dict(greedy=False, n_samples=0, ks=(1,), temperature=1.0), r"eval\.n_samples"),
        (dict(greedy=True, n_samples=2, ks=(1,), temperature=0.0), r"eval\.temperature"),
    ],
)
def test_bad_settings_name_the_field(kw, match):
    with pytest.raises(ValueError, match=match):
        validate_eval(**kw)
    # evaluate_policy refuses before touching the model (None would fail anywhere else).
    with pytest.raises(ValueError, match=match):
        evaluate_policy(None, None, None, [object()], key=jax.random.key(0), max_new_tokens=4, **kw)


def test_greedy_only_ignores_ks_and_config_errors_are_config_errors():
    validate_eval(greedy=True, n_samples=0, ks=(1, 64), temperature=1.0)  # no samples: fine
    from experiments.configs.tiny_debug import get_config
    from jaxrl_reason.train.config import ConfigError

    cfg = get_config()
    kw = eval_kwargs_from_config(cfg)
    assert kw == dict(
        max_new_tokens=8,
        batch_prompts=4,
        greedy=True,
        n_samples=2,
        ks=(1, 2),
        temperature=1.0,
        top_p=1.0,
    )
    cfg.eval.ks = (1, 4)
    with pytest.raises(ConfigError, match=r"eval\.ks"):
        eval_kwargs_from_config(cfg)
