"""STaR / RAFT (rejection-sampling fine-tuning), SmolLM2-135M-Instruct, ``arith_chain``.

Self-training instead of RL: each step samples ``rollout.n_samples`` responses per prompt with
the current policy, keeps the ones the verifier marks correct and fine-tunes on them with the
NLL (``algo.objective = "sft"``, ``jaxrl_reason/train/selftrain.py``)::

    keep[b] = correct[b] > 0
    L_SFT   = sum_{b kept, t} m[b, t] (-log pi(y_t | x_b, y_<t)) / sum_{b kept, t} m[b, t]

No estimator, advantage or reference policy is involved; log-probs are at temperature 1.
Rationalisation (STaR, Zelikman et al. 2022, arXiv 2203.14465, sec. 3.2) is on: prompts with
no correct sample are re-sampled with the answer appended as a hint, ``"(The answer is
{answer}.)"``, and the verified re-samples are trained on under the original, hint-free prompt.
A step with no kept sample (``star.min_correct = 1``) runs no update.

This is the online form: STaR's outer loop (sample the whole training set, filter, fine-tune
from the base model for a number of steps, repeat) becomes one Trainer step = sample a batch
with the current policy -> filter -> fine-tune on the kept rows, continuing from the current
weights, as RAFT (Dong et al. 2023, arXiv 2304.06767) and online ReST-EM do; STaR's restart
from the base model each iteration is not reproduced. Metrics: ``star/kept``,
``star/rationalized``, ``star/failed_prompts``, ``star/skipped``, ``actor/sft_loss``.

Sampling stays at the base config's temperature 0.8 (STaR samples near-greedily, 0.01, with one
sample per question; eight samples at 0.8 keep more distinct correct rationales per prompt).
The learning rate is the GRPO configs' (2e-5), not STaR's 1e-6 (a guess, not tuned: no
SmolLM2 STaR run has been made yet).
"""

from experiments.configs.smollm2_arith_chain_grpo import get_config as chain_config


def get_config():
    c = chain_config()
    c.algo.objective = "sft"
    c.star.rationalize = True
    c.star.hint_template = "(The answer is {answer}.)"
    c.star.min_correct = 1
    return c
