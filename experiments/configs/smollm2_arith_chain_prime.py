"""PRIME (Cui et al. 2025, arXiv 2502.01456) on arith_chain with an online implicit PRM.

A second copy of SmolLM2 (the PRM ``pi_phi``), initialised from the reference (= the initial
policy), is trained every step on this step's rollouts with the implicit-PRM cross-entropy on
the verifier's outcome labels: ``BCE(sigmoid(beta * sum_t log pi_phi / pi_ref), correct)``
(PRIME's ``compute_ce_dpo_loss_rm``). It is updated first and then scores the rollouts
(``implicit_prm.update_order = "before"``, the verl recipe's default); its token rewards
``beta * (log pi_phi - log pi_ref)`` reach the ``prime`` estimator as ``process_rewards``,
which adds the outcome reward with leave-one-out baselines (the paper's advantage). The frozen
reference is the trainer's KL reference, held once. Settings and metrics (``prm/loss``,
``prm/accuracy``, ``prm/reward_mean``): ``jaxrl_reason/train/implicit_prm.py``.

``--config.implicit_prm.online=False`` gives the earlier form: the policy is its own implicit PRM
(``beta * (log pi_old - log pi_ref)`` from the behaviour log-probs).

``implicit_prm.lr = 2e-5`` is the policy's own rate here, not PRIME's 1e-6: PRIME trains a 7B PRM on
256-prompt batches for hundreds of steps, this run is 50 steps of 64 rollouts on a 135M model
(a guess, not tuned: no SmolLM2 PRIME run has been made yet). Its trainable subset is the
policy's (``optim.trainable = "last_k"``, 12 layers).
"""

from experiments.configs.smollm2_arith_chain_grpo import get_config as chain_config


def get_config():
    c = chain_config()
    c.algo.estimator = "prime"
    c.algo.estimator_kwargs = {"beta": 0.05}
    c.implicit_prm.online = True
    c.implicit_prm.beta = 0.05
    c.implicit_prm.lr = 2e-5
    c.implicit_prm.update_order = "before"
    return c
