"""DAPO-style dynamic sampling on ``arith_chain`` (GRPO estimator, SmolLM2-135M-Instruct).

Yu et al. 2025 (DAPO, arXiv 2503.14476): groups whose samples are all right or all wrong
have zero GRPO advantage and only dilute the token-mean loss, so they are dropped and more
prompts are rolled out until the batch holds ``rollout.batch_prompts`` informative groups
(filter metric ``acc``, DAPO's default; at most ``rollout.max_resample_rounds`` extra rounds,
DAPO's ``max_num_gen_batches = 10`` gives 9). DAPO's clip-higher (0.2 / 0.28) and token-mean
aggregation are set explicitly (the base defaults already); everything else is
``smollm2_arith_chain_grpo``. Logged per step: ``batch/groups_dropped``,
``batch/prompts_sampled``, ``batch/resample_rounds``, ``batch/groups_masked``.
"""

from experiments.configs.smollm2_arith_chain_grpo import get_config as grpo_config


def get_config():
    c = grpo_config()
    c.rollout.dynamic_sampling = True
    c.rollout.dynamic_metric = "acc"
    c.rollout.max_resample_rounds = 9
    c.loss.clip_low = 0.2
    c.loss.clip_high = 0.28
    c.loss.agg_mode = "token-mean"
    return c
