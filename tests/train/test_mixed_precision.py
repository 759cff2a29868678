"""Mixed precision (``model.dtype``): bf16 compute on float32 master weights and Adam state.

``"auto"`` is bf16 on GPU / TPU and f32 on CPU; a bf16 run's log-probs stay within bf16
tolerance of the f32 run on the same weights, and its train state never leaves float32.
"""

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from jaxrl_reason.models.build import build_model, resolve_compute_dtype
from jaxrl_reason.train.config import ConfigError, load_config
from jaxrl_reason.train.loop import Trainer

CONFIG = os.path.join(
    os.path.dirname(__file__), "..", "..", "experiments", "configs", "tiny_debug.py"
)


def test_auto_is_bf16_on_accelerators_and_f32_on_cpu():
    assert resolve_compute_dtype("auto", "gpu") == "bfloat16"
    assert resolve_compute_dtype("auto", "tpu") == "bfloat16"
    assert resolve_compute_dtype("auto", "cpu") == "float32"
    assert resolve_compute_dtype("float32", "gpu") == "float32"
    assert resolve_compute_dtype("bfloat16", "cpu") == "bfloat16"
    # This suite runs on CPU: the default config computes in float32.
    model, _ = build_model(ml_collections.ConfigDict({"name": "tiny_debug", "dtype": "auto"}))
    assert model.config.dtype == ("bfloat16" if jax.default_backend() != "cpu" else "float32")


def test_bf16_compute_log_probs_within_bf16_tolerance_of_f32():
    m32, _ = build_model(ml_collections.ConfigDict({"name": "tiny_debug", "dtype": "float32"}))
    m16, _ = build_model(ml_collections.ConfigDict({"name": "tiny_debug", "dtype": "bfloat16"}))
    # Same float32 master weights (same init seed): only the compute dtype differs.
    p32, p16 = nnx.state(m32, nnx.Param), nnx.state(m16, nnx.Param)
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(p16))
    for a, b in zip(jax.tree.leaves(p32), jax.tree.leaves(p16), strict=True):
        np.testing.assert_array_equal(a, b)
    tokens = jax.random.randint(jax.random.key(0), (4, 24), 3, 200)

    def logp(model):
        logits = model(tokens)
        assert logits.dtype == jnp.float32  # logits (and so log-softmax) are always f32
        lp = jax.nn.log_softmax(logits[:, :-1], -1)
        return np.asarray(jnp.take_along_axis(lp, tokens[:, 1:, None], -1)[..., 0])

    l32, l16 = logp(m32), logp(m16)
    diff = np.abs(l16 - l32)
    # bf16 keeps 8 significant bits (relative step 2^-8 = 0.0039) per rounding; the tests'
    # scale-aware bf16 tolerance of 1e-2 (kernels) on |log p| ~ 5.6 for a 49k vocabulary.
    assert diff.max() <= 1e-2 * (np.abs(l32) + np.abs(l32).max()).min()
    assert diff.max() > 0  # the bf16 path really ran


def test_bf16_training_step_keeps_master_weights_and_adam_state_f32(tmp_path):
    cfg = load_config(
        CONFIG,
        ["--config.model.dtype=bfloat16", "--config.total_steps=1", "--config.eval_every=0",
         "--config.export=False", "--config.reward.weights.self_certainty=1.0",
         "--config.loss.entropy_coef=0.01"],
    )  # fmt: skip
    tr = Trainer(cfg, str(tmp_path))
    try:
        m = tr.train_step()
        assert np.isfinite(m["loss"]) and np.isfinite(m["grad_norm"]) and m["grad_norm"] > 0
        floats = [x for x in jax.tree.leaves(tr.state) if jnp.issubdtype(x.dtype, jnp.floating)]
        assert floats and all(x.dtype == jnp.float32 for x in floats)
        assert tr.policy().config.dtype == "bfloat16"
    finally:
        tr.ckpt.close()


def test_unknown_dtype_is_refused_before_anything_loads():
    with pytest.raises(ConfigError, match=r"model.dtype='float16': must be 'auto'"):
        load_config(CONFIG, ["--config.model.dtype=float16"])
