"""A step PRM for arith_chain (``python -m experiments.train_prm``): SmolLM2-135M-Instruct's
decoder plus a linear head trained on oracle step labels of the policy's own responses.

``--config.prm.labels=mc_soft`` (or ``mc_hard``) trains on Math-Shepherd Monte Carlo labels
instead; ``--config.prm.last_k=2`` also trains the top two decoder layers. The checkpoint feeds
PURE: ``experiments/configs/smollm2_arith_chain_pure.py --config.reward.step_scorer=prm
--config.prm.path=<workdir>/prm``.
"""

from experiments.configs.smollm2_arith_chain_grpo import get_config as chain_config


def get_config():
    c = chain_config()
    # rollout.n_samples = 8 responses per prompt (the GRPO config's), sampled at T = 0.8.
    c.prm.num_prompts = 32  # 256 training responses
    c.prm.eval_prompts = 16  # 128 held-out responses
    c.prm.train_steps = 300
    c.prm.batch_size = 16
    c.prm.learning_rate = 1e-3
    # SmolLM2's sampled steps are ~10 % right: unweighted, the head called every step wrong
    # (held-out first-error F1 0.000); balanced class weights make 0.5 the balanced cut.
    c.prm.balance = True
    return c
