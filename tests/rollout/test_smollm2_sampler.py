"""The sampler and the generation CLI on the real SmolLM2-135M-Instruct (float32)."""

import jax
import numpy as np
import pytest

from experiments import generate
from jaxrl_reason.rollout import SamplingConfig, left_pad, sample

QUESTION = "What is the capital of France?"


@pytest.fixture(scope="module")
def smollm2():
    from jaxrl_reason.models import load_pretrained
    from jaxrl_reason.models.loaders import gguf_path

    try:
        gguf_path("smollm2-135m-instruct")
    except FileNotFoundError as e:
        pytest.skip(str(e))
    return load_pretrained("smollm2-135m-instruct")


def test_greedy_chat_completion_says_paris(smollm2):
    model, tok = smollm2
    ids = tok.apply_chat_template(
        [{"role": "user", "content": QUESTION}], add_generation_prompt=True, tokenize=False
    )
    ids = tok(ids, add_special_tokens=False)["input_ids"]
    assert ids == generate.encode_chat(tok, [QUESTION])[0]
    stops = generate.stop_ids_for(model, tok)
    assert 2 in stops  # <|im_end|> ends the assistant turn
    tokens, mask = left_pad([ids], pad_id=model.config.pad_token_id)
    cfg = SamplingConfig(max_new_tokens=16, greedy=True, stop_token_ids=stops, pad_token_id=2)
    out = sample(model, tokens, mask, jax.random.key(0), cfg)
    text = tok.decode(out.response_lists()[0], skip_special_tokens=True)
    assert "Paris" in text, text
    # The answer is short: the row ends on the end-of-turn token, not on the length limit.
    assert int(out.finish_reason[0]) == 0 and out.response_lists()[0][-1] in stops
    lp = np.asarray(out.logprobs[0, : int(out.lengths[0])])
    assert np.all(lp <= 0) and np.all(np.isfinite(lp))


def test_generate_cli_prints_paris_and_timing(smollm2, capsys):
    # Same shapes and options as the test above: in one process the compiled program is reused.
    assert generate.main(["--prompt", QUESTION, "--max-new-tokens", "16"]) == 0
    out = capsys.readouterr().out
    assert "Paris" in out and "tok/s" in out, out
