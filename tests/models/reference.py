"""An independent NumPy float64 reference of the decoder for one unpadded sequence.

Written from the Hugging Face Llama / Qwen2 modelling code (``repeat_kv``, ``rotate_half``,
``LlamaRMSNorm``), with a plain Python loop over layers: no scan, no masks beyond causal, no
cache. Tests compare the scanned JAX model with it.
"""

import numpy as np
from flax import nnx


def _rms(x, w, eps):
    return w * (x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps))


def _rotate_half(x):
    half = x.shape[-1] // 2
    return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def reference_logits(cfg, params, tokens):
    """``tokens int[T]`` -> float64 logits ``[T, V]``.

    ``params``: ``embed [V, D]``, ``final_norm [D]``, optional ``lm_head [D, V]`` and the
    stacked layer arrays (``q_proj [L, D, H, Dh]`` ...), any float dtype.
    """
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    T = len(tokens)
    H, K, Dh = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    x = p["embed"][np.asarray(tokens)]
    pos = np.arange(T, dtype=np.float64)
    inv = 1.0 / cfg.rope_theta ** (np.arange(0, Dh, 2) / Dh)
    emb = np.concatenate([np.outer(pos, inv)] * 2, axis=-1)  # [T, Dh]
    cos, sin = np.cos(emb)[None], np.sin(emb)[None]  # [1, T, Dh]
    causal = np.tril(np.ones((T, T), bool))
    for layer in range(cfg.num_layers):
        lp = {k: v[layer] for k, v in p.items() if v.ndim >= 2 and k not in ("embed", "lm_head")}
        h = _rms(x, lp["attn_norm"], cfg.rms_norm_eps)
        q = (h @ lp["q_proj"].reshape(-1, H * Dh)).reshape(T, H, Dh).transpose(1, 0, 2)
        k = (h @ lp["k_proj"].reshape(-1, K * Dh)).reshape(T, K, Dh).transpose(1, 0, 2)
        v = (h @ lp["v_proj"].reshape(-1, K * Dh)).reshape(T, K, Dh).transpose(1, 0, 2)
        if cfg.attention_bias:
            q = q + lp["q_bias"][:, None, :]
            k = k + lp["k_bias"][:, None, :]
            v = v + lp["v_bias"][:, None, :]
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        k = np.repeat(k, H // K, axis=0)  # HF repeat_kv: head h reads kv head h // (H/K)
        v = np.repeat(v, H // K, axis=0)
        s = q @ k.transpose(0, 2, 1) / np.sqrt(Dh)
        s = np.where(causal, s, -np.inf)
        a = np.exp(s - s.max(-1, keepdims=True))
        a = a / a.sum(-1, keepdims=True)
        o = (a @ v).transpose(1, 0, 2).reshape(T, H * Dh)
        x = x + o @ lp["o_proj"].reshape(H * Dh, -1)
        h = _rms(x, lp["mlp_norm"], cfg.rms_norm_eps)
        g = h @ lp["gate_proj"]
        x = x + ((g / (1 + np.exp(-g))) * (h @ lp["up_proj"])) @ lp["down_proj"]
    x = _rms(x, p["final_norm"], cfg.rms_norm_eps)
    head = p["embed"].T if cfg.tie_word_embeddings else p["lm_head"]
    return x @ head


def model_params(model):
    """The model's parameters as the flat dict ``reference_logits`` takes."""
    out = {"embed": model.embed[...], "final_norm": model.final_norm[...]}
    out.update(model.stacked_layer_params())
    if not model.config.tie_word_embeddings:
        out["lm_head"] = model.lm_head[...]
    return out


def randomize(model, seed=0, scale=0.1):
    """Replace every parameter by random values (norm weights around 1, biases non-zero),
    so tests exercise every weight, not HF's zeros/ones initialisation."""
    rng = np.random.default_rng(seed)
    state = nnx.state(model, nnx.Param)
    flat = nnx.to_flat_state(state)
    for path, var in flat:
        value = var.get_value()
        noise = rng.normal(size=value.shape) * scale
        if str(path[-1]).endswith("norm"):
            noise = noise + 1.0
        var.set_value(np.asarray(noise, dtype=value.dtype))
    nnx.update(model, nnx.from_flat_state(flat))
    return model


# Compiled once per shape: eager calls re-trace the layer scan every time (~1 s each on CPU).
@nnx.jit
def fwd(model, tokens, attention_mask=None, positions=None):
    """``model(tokens, attention_mask=..., positions=...)`` under ``nnx.jit``."""
    return model(tokens, attention_mask=attention_mask, positions=positions)


@nnx.jit
def fwd_cache(model, tokens, cache, attention_mask=None):
    """``model(tokens, attention_mask=..., cache=cache)`` under ``nnx.jit``."""
    return model(tokens, attention_mask=attention_mask, cache=cache)
