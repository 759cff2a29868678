"""The rollout tests' model: tiny_debug with an untied head and scaled-up weights."""

from flax import nnx

from jaxrl_reason.models import ModelConfig, Transformer


def scaled_tiny_model(*, layer_scale: float = 1.0, head_scale: float = 1.0) -> Transformer:
    """``ModelConfig.tiny_debug(tie_word_embeddings=False)`` (seed 0) with every non-norm
    layer matrix multiplied by ``layer_scale`` and the LM head by ``head_scale``: larger
    weights give peaked, context-dependent next-token distributions, so a wrong cache,
    position or key shows in the tokens instead of hiding in near-ties."""

    @nnx.jit  # one compiled initialiser instead of dozens of eager ops
    def make():
        m = Transformer(ModelConfig.tiny_debug(tie_word_embeddings=False), rngs=nnx.Rngs(0))
        if layer_scale != 1.0:
            for name in m.layers.keys():
                if not name.endswith("norm"):
                    m.layers[name][...] = m.layers[name][...] * layer_scale
        m.lm_head[...] = m.lm_head[...] * head_scale
        return m

    return make()
