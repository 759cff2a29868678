"""A discriminative process reward model: the policy's decoder plus a linear step head.

Math-Shepherd (Wang et al. 2023, arXiv 2312.08935, eq. 2) scores a solution step by step: the
PRM reads the problem and the response and gives each step ``k`` a probability
``p_k = sigmoid(w . h_{e_k} + b)`` that it is right, read at the step's last token ``e_k``
(the "tag" position: Math-Shepherd reads the logits at its step tag, PURE at the step's closing
token). Here the decoder is the same Llama / Qwen2 :class:`~jaxrl_reason.models.Transformer`
the policy uses, built by :func:`~jaxrl_reason.models.build_model`, and the head is a linear
``D -> 1`` map on the final-normed hidden state (:class:`PRMHead`).

Steps come from ``segment_id int32[B, R]`` (the rollout's step ids, -1 on padding): step ``s``
ends at the last response token whose id is ``s``; a step with no token is invalid.

Checkpoints (:func:`save_prm` / :func:`load_prm`) are a directory with ``prm.json`` (the
``config.model`` block the decoder is built from, how many top layers were trained, the step
rule) and an orbax ``params`` item holding the head and, when decoder layers were trained, the
decoder's parameters. They live in this package, not in ``train.checkpoint``, because reward
components (below the train layer) load them.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

__all__ = [
    "PRM",
    "PRMHead",
    "load_prm",
    "save_prm",
    "step_end_index",
    "step_logits",
    "jit_step_scores",
    "step_scores",
]

META_FILE = "prm.json"
PARAMS_DIR = "params"


class PRMHead(nnx.Module):
    """Linear step head ``D -> 1`` (a logit; the score is its sigmoid).

    ``kernel float32[D, 1]`` starts at zero, so an untrained PRM scores every step 0.5 and the
    first gradient steps are the logistic regression on frozen features.
    """

    def __init__(self, hidden_size: int, *, rngs: nnx.Rngs | None = None):
        del rngs  # deterministic zero init; the argument keeps the NNX constructor convention
        self.kernel = nnx.Param(jnp.zeros((hidden_size, 1), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((1,), jnp.float32))

    def __call__(self, hidden: jax.Array) -> jax.Array:
        """``hidden [..., D]`` -> logits ``float32[...]``."""
        h = hidden.astype(jnp.float32)
        return (h @ self.kernel.value)[..., 0] + self.bias.value[0]


def step_end_index(segment_id: jax.Array, num_steps: int) -> tuple[jax.Array, jax.Array]:
    """Last response position of each step.

    Args:
      segment_id: ``int32[B, R]`` step of each response token, -1 on padding.
      num_steps: static ``S``.

    Returns:
      ``(end int32[B, S], valid bool[B, S])``: ``end[b, s] = max{t : segment_id[b, t] = s}``
      (0 where step ``s`` has no token, and then ``valid`` is False).
    """
    seg = jnp.asarray(segment_id, jnp.int32)
    r = seg.shape[1]
    hit = seg[:, None, :] == jnp.arange(num_steps, dtype=jnp.int32)[None, :, None]  # [B, S, R]
    end = jnp.max(jnp.where(hit, jnp.arange(r, dtype=jnp.int32), -1), axis=-1)
    return jnp.maximum(end, 0), end >= 0


def _full_hidden(model, prompt_tokens, prompt_mask, response, frozen_layers):
    """Hidden states ``[B, P + R, D]`` of ``prompt + response`` (left-padded prompt)."""
    tokens = jnp.concatenate([prompt_tokens, response], axis=1)
    mask = jnp.concatenate([jnp.asarray(prompt_mask, bool), jnp.ones(response.shape, bool)], axis=1)
    positions = jnp.maximum(jnp.cumsum(mask.astype(jnp.int32), axis=1) - 1, 0)
    return model(
        tokens,
        positions=positions,
        attention_mask=mask,
        return_hidden=True,
        frozen_layers=frozen_layers,
    )


def step_logits(
    model: nnx.Module,
    head: PRMHead,
    prompt_tokens: jax.Array,
    prompt_mask: jax.Array,
    response: jax.Array,
    segment_id: jax.Array,
    *,
    num_steps: int,
    frozen_layers: int = 0,
) -> tuple[jax.Array, jax.Array]:
    """PRM step logits ``z[b, s] = head(h[b, P + end[b, s]])`` (Math-Shepherd eq. 2's ``p``
    before the sigmoid), one decoder forward over ``prompt + response``.

    Args:
      model: the PRM's decoder (a :class:`~jaxrl_reason.models.Transformer`).
      head: its :class:`PRMHead`.
      prompt_tokens: ``int32[B, P]`` left-padded; ``prompt_mask`` ``bool[B, P]``.
      response: ``int32[B, R]`` right-padded response tokens.
      segment_id: ``int32[B, R]`` step ids (-1 on padding).
      num_steps: static ``S``.
      frozen_layers: static; no gradient into the first ``k`` decoder layers or the embedding.

    Returns:
      ``(logits float32[B, S], valid bool[B, S])``; logits are 0 on invalid steps.
    """
    p = prompt_tokens.shape[1]
    hidden = _full_hidden(
        model,
        jnp.asarray(prompt_tokens, jnp.int32),
        prompt_mask,
        jnp.asarray(response, jnp.int32),
        frozen_layers,
    )
    end, valid = step_end_index(segment_id, num_steps)
    h = jnp.take_along_axis(hidden, (p + end)[:, :, None], axis=1)  # [B, S, D]
    return jnp.where(valid, head(h), 0.0), valid


def step_scores(
    model: nnx.Module,
    head: PRMHead,
    prompt_tokens: jax.Array,
    prompt_mask: jax.Array,
    response: jax.Array,
    segment_id: jax.Array,
    *,
    num_steps: int,
) -> jax.Array:
    """PRM step scores ``p[b, s] = sigmoid(step_logits)`` in ``[0, 1]``: the probability that
    step ``s`` is right. ``float32[B, S]``, 0 on steps the response does not have. Pure (no
    state changes); shapes as :func:`step_logits`."""
    z, valid = step_logits(
        model, head, prompt_tokens, prompt_mask, response, segment_id, num_steps=num_steps
    )
    return jnp.where(valid, jax.nn.sigmoid(z), 0.0)


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class PRM:
    """A loaded PRM: ``model`` (decoder), ``head``, ``tokenizer`` and the saved ``meta``."""

    model: nnx.Module
    head: PRMHead
    tokenizer: Any
    meta: dict[str, Any]

    def scores(self, prompt_tokens, prompt_mask, response, segment_id, num_steps: int):
        """:func:`step_scores` of this PRM (jitted per shape), as ``np.float32[B, S]``."""
        return np.asarray(
            jit_step_scores(
                self.model,
                self.head,
                jnp.asarray(prompt_tokens, jnp.int32),
                jnp.asarray(prompt_mask, bool),
                jnp.asarray(response, jnp.int32),
                jnp.asarray(segment_id, jnp.int32),
                num_steps=int(num_steps),
            )
        )


@nnx.jit(static_argnames=("num_steps",))
def jit_step_scores(model, head, prompt_tokens, prompt_mask, response, segment_id, *, num_steps):
    """:func:`step_scores` under ``nnx.jit`` (one compile per shape and ``num_steps``)."""
    return step_scores(
        model, head, prompt_tokens, prompt_mask, response, segment_id, num_steps=num_steps
    )


def _to_pure(module: nnx.Module) -> dict:
    return nnx.to_pure_dict(nnx.state(module, nnx.Param))


def save_prm(
    path: str, model: nnx.Module, head: PRMHead, meta: dict[str, Any], *, with_decoder: bool
) -> str:
    """Writes a PRM checkpoint directory (``prm.json`` + orbax ``params``).

    Args:
      path: a new or empty directory (an existing ``params`` item is replaced).
      model, head: the PRM's decoder and head.
      meta: JSON-serialisable; must hold ``"model"`` (the ``config.model`` block, from which
        :func:`load_prm` rebuilds the decoder).
      with_decoder: also save the decoder's parameters (needed when any decoder layer was
        trained; a head-only PRM rebuilds the decoder from ``meta["model"]``).

    Returns: ``path`` (absolute).
    """
    import orbax.checkpoint as ocp

    if "model" not in meta:
        raise ValueError("save_prm: meta must hold 'model' (the config.model block)")
    path = os.path.abspath(path)
    os.makedirs(path, exist_ok=True)
    tree = {"head": _to_pure(head)}
    if with_decoder:
        tree["decoder"] = _to_pure(model)
    target = os.path.join(path, PARAMS_DIR)
    if os.path.exists(target):
        import shutil

        shutil.rmtree(target)
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(target, tree)
        ckptr.wait_until_finished()
    meta = dict(meta, with_decoder=bool(with_decoder), hidden_size=int(head.kernel.value.shape[0]))
    with open(os.path.join(path, META_FILE), "w") as f:
        json.dump(meta, f, indent=2, sort_keys=True)
    return path


def is_prm_checkpoint(path: str) -> bool:
    """Whether ``path`` is a directory written by :func:`save_prm`."""
    return bool(path) and os.path.isfile(os.path.join(path, META_FILE))


def load_prm(path: str) -> PRM:
    """Loads a :func:`save_prm` directory: the decoder is built from ``meta["model"]`` with
    :func:`~jaxrl_reason.models.build_model` (the policy's loader) and, when saved, its
    parameters are replaced by the checkpoint's.

    Raises:
      FileNotFoundError: ``path`` holds no ``prm.json`` (names the path).
    """
    import orbax.checkpoint as ocp

    from jaxrl_reason.models.build import build_model

    path = os.path.abspath(path)
    if not is_prm_checkpoint(path):
        raise FileNotFoundError(
            f"{path}: not a PRM checkpoint (no {META_FILE}); write one with "
            "python -m experiments.train_prm"
        )
    with open(os.path.join(path, META_FILE)) as f:
        meta = json.load(f)
    model, tokenizer = build_model(_AttrDict(meta["model"]))
    head = PRMHead(int(meta["hidden_size"]))
    target = {"head": _to_pure(head)}
    if meta.get("with_decoder"):
        target["decoder"] = _to_pure(model)
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), target)
    with ocp.StandardCheckpointer() as ckptr:
        restored = ckptr.restore(os.path.join(path, PARAMS_DIR), abstract)
    _assign(head, restored["head"])
    if "decoder" in restored:
        _assign(model, restored["decoder"])
    return PRM(model=model, head=head, tokenizer=tokenizer, meta=meta)


def _assign(module: nnx.Module, pure: dict) -> None:
    state = nnx.state(module, nnx.Param)
    nnx.replace_by_pure_dict(state, pure)
    nnx.update(module, state)


class _AttrDict(dict):
    """``config.model``-like view of a plain dict (``.name`` and ``.get``)."""

    def __getattr__(self, key):
        try:
            return self[key]
        except KeyError as e:
            raise AttributeError(key) from e
