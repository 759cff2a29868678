"""The shared defaults every experiment config starts from (``base_config()``).

Each experiment file's ``get_config()`` calls :func:`base_config` and changes what differs;
``--config.key=value`` on the command line overrides any leaf (type-checked, see
``jaxrl_reason.train.config``).
"""

from __future__ import annotations

import ml_collections

from jaxrl_reason.rewards.registry import reward_names


def base_config() -> ml_collections.ConfigDict:
    """GRPO on SmolLM2-135M-Instruct with the generated 2-digit arithmetic task."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.total_steps = 50  # 739 s on a 2-core CPU (docs/results.md)
    c.eval_every = 10
    c.checkpoint_every = 10
    c.eval_at_start = True
    c.max_checkpoints = 2
    c.export = True  # write the final policy as an HF checkpoint to <workdir>/export

    c.model = ml_collections.ConfigDict()
    c.model.name = "smollm2-135m-instruct"
    # Compute dtype: "auto" = bfloat16 on GPU / TPU, float32 on CPU (models.build
    # .resolve_compute_dtype); the master weights and Adam state stay param_dtype = float32.
    c.model.dtype = "auto"
    c.model.param_dtype = "float32"
    c.model.init_seed = 0

    c.task = ml_collections.ConfigDict()
    c.task.name = "arithmetic"
    c.task.low = 10
    c.task.high = 99
    c.task.ops = "+"
    c.task.seed = 0
    c.task.prompt_format = "hash"
    c.task.verify_format = "auto"
    # No system turn (the chat template adds SmolLM2's default) and a terse request: the base
    # model answers about a third of 2-digit sums right with it (greedy), leaving RL room.
    c.task.system_prompt = ""
    c.task.template = "Compute {a} {op} {b}. Reply with only the number."
    # GSM8K: "local" reads task.data_dir (a folder with train.jsonl / test.jsonl; a missing
    # folder is an error, never a download); "tfds" downloads through tensorflow-datasets.
    c.task.source = "local"
    c.task.data_dir = ""
    c.task.path = ""

    c.rollout = ml_collections.ConfigDict()
    c.rollout.batch_prompts = 8
    c.rollout.n_samples = 8
    c.rollout.max_new_tokens = 24
    c.rollout.temperature = 0.8
    c.rollout.top_k = 0
    c.rollout.top_p = 1.0
    # Prompts are left-padded to a multiple of this (fewer recompiles vs less padding: the
    # train step pays for every padded prompt column too).
    c.rollout.prompt_bucket = 16
    # The decode loop's layer walk (rollout.SamplingConfig.decode_layers): "scan" over the
    # stacked weights, or "unrolled" over per-layer copies (XLA CPU copies a scanned layer's
    # weights every step; unrolled decodes faster at small batch, compiles 3-4x longer, and
    # agrees with scan to float32 rounding, not bitwise). "auto" = unrolled on CPU only.
    c.rollout.decode_layers = "scan"
    # How responses are generated (jaxrl_reason.rollout.strategies): "group" = n i.i.d.
    # samples per prompt. Step segmentation fills Trajectories.segment_id for step-level
    # credit: "auto" = the task's own steps (arith_chain: one per computed line), else
    # paragraphs ("double_newline"); responses with more than max_steps steps fold the rest
    # into the last one.
    c.rollout.strategy = "group"
    c.rollout.step_rule = "auto"
    c.rollout.max_steps = 8
    # DAPO dynamic sampling (Yu et al. 2025; jaxrl_reason.train.loop.Trainer._dynamic_sampling):
    # drop groups whose dynamic_metric ("acc" = the verifier, DAPO's default, or "reward") is
    # the same on every sample and roll out rollout.batch_prompts more prompts, at most
    # max_resample_rounds extra rounds per step (DAPO's max_num_gen_batches - 1); if still
    # short, the batch is completed with dropped groups whose loss mask is zeroed.
    c.rollout.dynamic_sampling = False
    c.rollout.dynamic_metric = "acc"
    c.rollout.max_resample_rounds = 3
    # rollout.strategy="env": multi-turn episodes in an environment (jaxrl_reason.envs, see
    # jaxrl_reason/rollout/multiturn.py). rollout.max_new_tokens is then the episode's total
    # response budget (actions and observations); max_turns <= rollout.max_steps.
    c.rollout.env = ml_collections.ConfigDict()
    c.rollout.env.name = "search"  # "search" (BM25 over task.name="multihop") | "tool"
    c.rollout.env.max_turns = 4  # actions per episode (Search-R1: searches + 1 answer turn)
    c.rollout.env.max_turn_tokens = 64  # decode budget of one action
    c.rollout.env.max_obs_tokens = 128  # observations are cut to this many tokens
    c.rollout.env.tools = ("calculator",)  # tool env: "calculator", "python"
    c.rollout.env.k = 3  # passages per search
    c.rollout.env.corpus_path = ""  # a JSONL corpus; "" = the multihop task's own world
    c.rollout.env.cache_dir = ""  # corpus + BM25 index cache ("" = the system temp dir)
    c.rollout.env.invalid_action = "retry"  # "retry" (error observation) | "finish"
    # Tree search over agent steps (Tree-GRPO / TreePS-RAG): >= 0 forks every episode after
    # that turn into `branches` children (n_samples / branches roots per prompt); -1: off.
    c.rollout.env.branch_turn = -1
    c.rollout.env.branches = 2
    # rollout.strategy = "tree" (jaxrl_reason.rollout.tree); rollout.n_samples is the leaf
    # budget per prompt. "eptree": TreeRL's entropy-guided forks, M chains, then `rounds`
    # rounds of `fork_points` forks per tree into `branches` continuations each (TreeRL's
    # released shape (M, N, L, T) = (6, 2, 1, 2): 30 leaves). "segment": branching[d]
    # children per node at depth d (SPO-tree: (6, 6, 6)), forked where each segment ends:
    # fork_at="tokens" every segment_len tokens; fork_at="steps" at the end of each reasoning
    # step (a token whose text holds a newline, or end of turn), segment_len then capping a
    # segment's length (a longer step is cut and forked there).
    c.rollout.tree = ml_collections.ConfigDict()
    c.rollout.tree.mode = "eptree"
    c.rollout.tree.num_chains = 6
    c.rollout.tree.fork_points = 2
    c.rollout.tree.branches = 2
    c.rollout.tree.rounds = 1
    c.rollout.tree.segment_len = 16
    c.rollout.tree.branching = (2, 2)
    c.rollout.tree.fork_at = "tokens"
    # rollout.strategy = "vine" (jaxrl_reason.rollout.vine): n samples per prompt plus Monte
    # Carlo step values (VinePPO / SPO-chain) from k continuations of each step prefix, decoded
    # from the response's KV cache. VinePPO uses k = 9; each estimated state costs k decodes of
    # the remaining budget, so the default is small. States s_0 .. s_{max_steps-1} are
    # estimated; `which`: "all" step starts, "every_k" (every `every`-th step) or "spo_cut"
    # (SPO-chain's cut points: every `interval`-th token with p < rho; segment_id becomes
    # SPO's segments). chunk_rows continuation rows are decoded per call (memory bound).
    c.rollout.vine = ml_collections.ConfigDict()
    c.rollout.vine.k = 4
    c.rollout.vine.max_steps = 8
    c.rollout.vine.which = "all"
    c.rollout.vine.every = 2
    c.rollout.vine.rho = 0.9
    c.rollout.vine.interval = 5
    c.rollout.vine.chunk_rows = 256

    c.algo = ml_collections.ConfigDict()
    c.algo.estimator = "grpo"
    c.algo.value_head = False
    c.algo.estimator_kwargs = ml_collections.ConfigDict()
    # What the update minimises (jaxrl_reason/train/step.py, selftrain.py): "rl" (the
    # estimator's advantages in the policy loss), "sft" (STaR / RAFT: the NLL of the step's
    # verified-correct samples only, no estimator; settings in `star`) or "dpo" (DPO on pairs,
    # settings in `dpo`). sft/dpo score log-probs at temperature 1 (the model itself).
    c.algo.objective = "rl"
    # "rl" only: + sft_coef * NLL of the verified-correct rows (their loss-mask tokens) in the
    # same update; 0 = off. Logged as actor/sft_loss.
    c.algo.sft_coef = 0.0

    # STaR (Zelikman et al. 2022) with algo.objective = "sft". rationalize: prompts with no
    # verified sample are re-sampled with hint_template (formatted with the gold answer)
    # appended to the user prompt; verified re-samples are trained on under the hint-free
    # prompt. min_correct: fewer kept rows than this and the step runs no update.
    c.star = ml_collections.ConfigDict()
    c.star.rationalize = False
    c.star.hint_template = "(The answer is {answer}.)"
    c.star.min_correct = 1

    # DPO (Rafailov et al. 2023, eq. 7) with algo.objective = "dpo". beta: the KL strength
    # (0.1 in the paper's commands); label_smoothing: cDPO's eps. pairs: "self" (a verified
    # and a refuted sample of the same prompt, from each step's own groups, at most
    # n_samples // 2 pairs per prompt) or "file" (JSONL lines {"prompt", "chosen",
    # "rejected"} at pairs_path, B/2 pairs per step in file order, cycling).
    c.dpo = ml_collections.ConfigDict()
    c.dpo.beta = 0.1
    c.dpo.label_smoothing = 0.0
    c.dpo.pairs = "self"
    c.dpo.pairs_path = ""

    # PRIME's online implicit PRM (Cui et al. 2025, arXiv 2502.01456;
    # jaxrl_reason/train/implicit_prm.py):
    # a second copy of the initial policy trained every step with the implicit-PRM
    # cross-entropy on the verifier's outcome labels; its token rewards
    # beta * (log pi_prm - log pi_ref) reach the estimator as Trajectories.process_rewards
    # (algo.estimator="prime"). Off: the policy is its own implicit PRM.
    c.implicit_prm = ml_collections.ConfigDict()
    c.implicit_prm.online = False
    c.implicit_prm.lr = 1e-6  # PRIME's reward_model.model.optim.lr (constant, no weight decay)
    c.implicit_prm.beta = 0.05  # beta_train of PRIME / ImplicitPRM
    c.implicit_prm.grad_clip = 10.0  # PRIME's run scripts (verl recipe yaml: 1.0); 0 = off
    # "before": update the PRM on this step's rollouts, then score them with the updated PRM
    # (verl recipe/prime default, "double forward"); "after": score with the PRM as it was,
    # then update (one forward fewer; PRIME's original run_prime_main.sh). PRIME's
    # reward_model.model.update; not named "update", which ConfigDict's method would shadow.
    c.implicit_prm.update_order = "before"

    c.loss = ml_collections.ConfigDict()
    c.loss.loss_type = "ppo"
    c.loss.clip_low = 0.2
    c.loss.clip_high = 0.28
    c.loss.dual_clip = 0.0  # 0 disables; verl's default c is 3.0
    c.loss.agg_mode = "token-mean"
    c.loss.kl_coef = 0.0
    c.loss.kl_kind = "k3"
    c.loss.entropy_coef = 0.0
    c.loss.vf_coef = 0.5
    c.loss.value_clip = 0.2
    c.loss.kernel_impl = ""

    c.train = ml_collections.ConfigDict()
    c.train.ppo_epochs = 1
    c.train.mini_batch_size = 64
    c.train.micro_batch_size = 32
    c.train.shuffle = True
    # What the backward pass keeps of each decoder layer: "none" (everything), "dots" (matmul
    # outputs; elementwise work is recomputed), "full" (layer inputs only) or "auto" (full on
    # CPU, none on GPU / TPU: train.step.resolve_remat).
    c.train.remat = "auto"
    # > 0: stop once the sampler has generated this many tokens in all (shared tree prefixes
    # counted once; rollout/decoded_tokens_total), for comparisons at equal generation budget.
    c.train.token_budget = 0
    # > 0: stop once the training steps have taken this many seconds (the sum of time/step_s;
    # evaluation excluded; resumable), for comparisons at equal wall-clock.
    c.train.time_budget_s = 0.0

    c.optim = ml_collections.ConfigDict()
    c.optim.learning_rate = 2e-5
    c.optim.schedule = "constant"
    c.optim.warmup_steps = 0
    c.optim.end_lr_ratio = 0.0
    c.optim.weight_decay = 0.0
    c.optim.b1 = 0.9
    c.optim.b2 = 0.99
    c.optim.grad_clip = 1.0
    # The last 12 of SmolLM2's 30 layers train; the backward pass stops below them, which
    # roughly halves the update's cost on a CPU (set "all" on an accelerator).
    c.optim.trainable = "last_k"
    c.optim.last_k = 12

    c.reward = ml_collections.ConfigDict()
    # Every registered component (jaxrl_reason/rewards/components.py), by weight (0 = off),
    # so that `--config.reward.weights.X=w` switches any one on from the command line.
    c.reward.weights = ml_collections.ConfigDict({name: 0.0 for name in reward_names()})
    c.reward.weights.correct = 1.0
    # A component run every step for the Trajectories fields it fills even at weight 0: "",
    # "oracle_steps" (step_scores / step_verdicts from a task's oracle step labels), "prm"
    # (step_scores of the PRM checkpoint at prm.path) or "judge" (CAPO step_verdicts).
    c.reward.step_scorer = ""
    c.reward.length_coef = 1.0
    c.reward.overlong_buffer = 8

    # Outcome-based exploration (used when reward.weights.explore > 0; the weight is c).
    c.explore = ml_collections.ConfigDict()
    c.explore.variant = "ucb_con"
    c.explore.b0 = 0.5
    c.explore.baseline = "plain"
    c.explore.include_current = True
    c.explore.gate_all_correct = False
    c.explore.max_answers_per_prompt = 64
    # "advantage": A = Ahat + c * bonus after the estimator's normalisation (the paper's
    # objective, arXiv 2509.06941); "reward": the bonus joins the reward before it.
    c.explore.placement = "advantage"

    # A discriminative step PRM (jaxrl_reason.models.prm). `path` is the checkpoint the `prm`
    # reward component scores steps with (written by `python -m experiments.train_prm`); the
    # rest configures train_prm: labels "oracle" (arith_chain's true step values), "mc_hard" /
    # "mc_soft" (Math-Shepherd: any / the fraction of mc_rollouts continuations from a step's
    # prefix reaching the answer), the head trained alone (last_k = 0) or with the top last_k
    # decoder layers, and `threshold`, ProcessBench's tau (first step with score < tau).
    c.prm = ml_collections.ConfigDict()
    c.prm.path = ""
    c.prm.labels = "oracle"
    c.prm.mc_rollouts = 4  # Math-Shepherd uses 8
    c.prm.mc_max_new_tokens = 0  # 0 = rollout.max_new_tokens
    c.prm.num_prompts = 64  # training responses = num_prompts * rollout.n_samples
    c.prm.eval_prompts = 32  # held-out prompts for first-error F1 (test split)
    c.prm.train_steps = 200
    c.prm.batch_size = 16
    c.prm.learning_rate = 1e-3
    c.prm.last_k = 0
    c.prm.threshold = 0.5
    # Class-balanced BCE (weights 1/(2r), 1/(2(1-r)) for label rate r): without it a PRM on a
    # mostly-wrong policy's labels learns to call every step wrong.
    c.prm.balance = False

    # PROF (Ye et al. 2025, arXiv 2509.03403): per prompt group drop n_remove responses whose
    # mean step score disagrees most with their outcome (balancing correct / wrong ones);
    # dropped rows get a zero loss mask. 0 = off; needs a step scorer (reward.step_scorer).
    # len_coef: PROF's len_step_reward_coef, a consistency penalty for < 2 or > 30 steps.
    c.prof = ml_collections.ConfigDict()
    c.prof.n_remove = 0
    c.prof.len_coef = 0.0

    # CAPO's generative judge (reward.step_scorer = "judge"): the policy itself (path = "") or
    # an HF checkpoint directory judges every step of a response, num_judgements samples each,
    # at temperature with at most max_new_tokens tokens; unparseable verdicts abstain.
    c.judge = ml_collections.ConfigDict()
    c.judge.path = ""
    c.judge.num_judgements = 4
    c.judge.temperature = 1.0
    c.judge.max_new_tokens = 64

    # Replay / curriculum prompt buffer (jaxrl_reason/data/curriculum.py): keep a moving
    # average of each seen prompt's group pass rate p and fill floor(replay_fraction *
    # rollout.batch_prompts) prompts of every batch from the buffer, drawn with probability
    # proportional to p (1 - p) (the reward variance: all-right / all-wrong groups carry no
    # GRPO gradient), the rest fresh from the data. Prompts with p in {0, 1} leave the buffer
    # at once, prompts rolled out max_visits times retire, the lowest priority goes past
    # capacity. Checkpointed (by dataset index), so resume stays exact.
    c.curriculum = ml_collections.ConfigDict()
    c.curriculum.enabled = False
    c.curriculum.replay_fraction = 0.5
    c.curriculum.capacity = 512
    c.curriculum.ema = 0.5  # weight of a new group's pass rate in the moving average
    c.curriculum.max_visits = 4  # groups per prompt (its first, fresh one included)

    c.eval = ml_collections.ConfigDict()
    c.eval.num_prompts = 100
    c.eval.batch_prompts = 50
    c.eval.n_samples = 0  # > 1 adds pass@k / maj@k / distinct answers
    c.eval.ks = (1, 4)
    c.eval.temperature = 1.0

    c.mesh = ml_collections.ConfigDict({"data": 1, "fsdp": -1, "tensor": 1})
    return c
