"""Online DPO on verified / refuted samples, SmolLM2-135M-Instruct, ``arith_chain``.

Each step samples ``rollout.n_samples`` responses per prompt with the current policy, and pairs
a verified-correct response (chosen ``y_w``) with a refuted one (rejected ``y_l``) of the same
prompt (``dpo.pairs = "self"``; at most ``n_samples // 2`` pairs per prompt; prompts whose
samples are all right or all wrong give none). The update minimises DPO's loss (Rafailov et al.
2023, arXiv 2305.18290, eq. 7) against the frozen initial policy ``pi_ref``::

    logp(y) = sum_t log pi(y_t | x, y_<t)                        (temperature 1)
    h       = (logp_pol(y_w) - logp_ref(y_w)) - (logp_pol(y_l) - logp_ref(y_l))
    L_DPO   = -mean_pairs log sigmoid(beta * h),   beta = 0.1

Metrics: ``dpo/pairs`` (pairs this step), ``dpo/accuracy`` (share with ``h > 0``, the implicit
reward ``beta (logp_pol - logp_ref)`` of the chosen above the rejected's), ``dpo/margin``
(mean ``beta h``). A step with no pair runs no update. ``--config.dpo.pairs=file
--config.dpo.pairs_path=<pairs.jsonl>`` trains on fixed pairs instead (lines ``{"prompt",
"chosen", "rejected"}``; the rollouts then only monitor accuracy).

The learning rate is the GRPO configs' (2e-5), not DPO's 5e-7 (a guess, not tuned: no SmolLM2
DPO run has been made yet).
"""

from experiments.configs.smollm2_arith_chain_grpo import get_config as chain_config


def get_config():
    c = chain_config()
    c.algo.objective = "dpo"
    c.dpo.beta = 0.1
    c.dpo.label_smoothing = 0.0
    c.dpo.pairs = "self"
    return c
