"""Config files, --config.x=y overrides, validation before compilation, launcher flags."""

import json
import os
import textwrap

import pytest

from jaxrl_reason.train import config as cfglib
from jaxrl_reason.train.config import ConfigError, load_config, parse_flags, validate

CONFIG_SRC = textwrap.dedent(
    """
    import ml_collections

    def get_config(variant=None):
        c = ml_collections.ConfigDict()
        c.seed = 0
        c.total_steps = 100
        c.eval_every = 10
        c.checkpoint_every = 20
        c.rollout = ml_collections.ConfigDict()
        c.rollout.batch_prompts = 8
        c.rollout.n_samples = 4
        c.rollout.temperature = 1.0
        c.rollout.stop = ("</s>",)
        c.train = ml_collections.ConfigDict()
        c.train.micro_batch_size = 8
        c.train.learning_rate = 1e-6
        c.train.use_kl = False
        c.train.loss = "ppo_clip"
        c.train.layer_ids = (0, 1)
        c.train.note = None
        c.train.max_len = ml_collections.config_dict.placeholder(int)
        c.mesh = ml_collections.ConfigDict(dict(data=1, fsdp=-1, tensor=1))
        if variant == "big":
            c.rollout.batch_prompts = 64
        return c
    """
)


@pytest.fixture
def cfg_path(tmp_path):
    p = tmp_path / "exp.py"
    p.write_text(CONFIG_SRC)
    return str(p)


def test_overrides_parse_as_the_default_type(cfg_path):
    c = load_config(
        cfg_path,
        [
            "--config.seed=7",
            "--config.rollout.temperature=0.5",
            "--config.train.use_kl=true",
            "--config.train.loss=gspo",
            "--config.train.layer_ids=(2,3,4)",
            "--config.rollout.stop=[a, b]",
            "--config.train.note=3",
            "--config.train.learning_rate=1",  # an int is a valid float
        ],
    )
    assert c.seed == 7 and isinstance(c.seed, int)
    assert c.rollout.temperature == 0.5
    assert c.train.use_kl is True
    assert c.train.loss == "gspo"
    assert c.train.layer_ids == (2, 3, 4)
    assert c.rollout.stop == ("a", "b")
    assert c.train.note == 3
    assert c.train.learning_rate == 1.0 and isinstance(c.train.learning_rate, float)


def test_typed_placeholder_parses_as_its_type(cfg_path):
    assert load_config(cfg_path, ["--config.train.max_len=64"]).train.max_len == 64
    assert load_config(cfg_path, ["--config.train.max_len=None"]).train.max_len is None
    with pytest.raises(ConfigError, match="train.max_len='long': expected an int"):
        load_config(cfg_path, ["--config.train.max_len=long"])


def test_config_variant_argument(cfg_path):
    assert load_config(cfg_path + ":big").rollout.batch_prompts == 64


def test_unknown_key_names_key_and_close_matches(cfg_path):
    with pytest.raises(ConfigError) as e:
        load_config(cfg_path, ["--config.rollout.n_sample=2"])
    msg = str(e.value)
    assert "rollout.n_sample" in msg and "rollout.n_samples" in msg
    with pytest.raises(ConfigError, match="total_steps"):
        load_config(cfg_path, ["--config.totl_steps=2"])
    with pytest.raises(ConfigError, match="'nope'"):
        load_config(cfg_path, ["--config.nope.x=2"])


@pytest.mark.parametrize(
    "override, expected",
    [
        ("--config.seed=1.5", "expected an int"),
        ("--config.rollout.temperature=hot", "expected a float"),
        ("--config.train.use_kl=maybe", "expected a bool"),
        ("--config.train.layer_ids=(a,b)", "sequence of int"),
    ],
)
def test_wrong_type_names_field_value_and_type(cfg_path, override, expected):
    with pytest.raises(ConfigError) as e:
        load_config(cfg_path, [override])
    field, value = override[len("--config.") :].split("=", 1)
    assert field in str(e.value) and value in str(e.value) and expected in str(e.value)


def test_setting_a_group_is_an_error(cfg_path):
    with pytest.raises(ConfigError, match="group"):
        load_config(cfg_path, ["--config.rollout=3"])


def test_batch_division_checked_before_compilation(cfg_path):
    # 8 prompts * 3 samples = 24 rollouts do not split into micro-batches of 5.
    with pytest.raises(ConfigError) as e:
        load_config(cfg_path, ["--config.rollout.n_samples=3", "--config.train.micro_batch_size=5"])
    assert "train.micro_batch_size=5" in str(e.value) and "24" in str(e.value)
    load_config(cfg_path, ["--config.rollout.n_samples=3"])  # 24 % 8 == 0 is fine


def test_mesh_must_cover_the_devices(cfg_path):
    c = load_config(cfg_path)
    validate(c, num_devices=8)  # fsdp=-1 takes all 8
    with c.unlocked():
        c.mesh.fsdp = 4
    with pytest.raises(ConfigError, match="4 devices, but 8"):
        validate(c, num_devices=8)
    with c.unlocked():
        c.mesh.fsdp = -1
        c.mesh.tensor = 3
    with pytest.raises(ConfigError, match="does not divide"):
        validate(c, num_devices=8)
    with c.unlocked():
        c.mesh.tensor = 0
    with pytest.raises(ConfigError, match="mesh.tensor=0"):
        validate(c)
    with c.unlocked():
        c.mesh.tensor = 1
        c.mesh.data = -1
    with pytest.raises(ConfigError, match="only one axis"):
        validate(c)


def test_micro_batch_must_split_over_data_devices(cfg_path):
    c = load_config(cfg_path, ["--config.train.micro_batch_size=4"])
    validate(c, num_devices=4)
    with pytest.raises(ConfigError, match="mesh.data \\* mesh.fsdp = 8"):
        validate(c, num_devices=8)


def test_common_keys_required(tmp_path):
    p = tmp_path / "bad.py"
    p.write_text(
        "import ml_collections\n"
        "def get_config():\n"
        "    return ml_collections.ConfigDict(dict(seed=0, total_steps=3, eval_every=1))\n"
    )
    with pytest.raises(ConfigError, match="checkpoint_every is missing"):
        load_config(str(p))


def test_loaded_config_is_locked_and_serialises(cfg_path):
    c = load_config(cfg_path)
    with pytest.raises(AttributeError):
        c.new_key = 1
    d = cfglib.to_json_dict(c)
    assert d["rollout"]["stop"] == ["</s>"] and json.dumps(d)


def test_missing_file_and_bad_override_syntax(tmp_path, cfg_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_config(str(tmp_path / "missing.py"))
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_config(cfg_path, ["--config.seed"])


def test_parse_flags():
    a = parse_flags(
        [
            "--config",
            "c.py",
            "--workdir",
            "/tmp/w",
            "--config.seed=3",
            "--resume",
            "--config.rollout.n_samples",
            "2",
        ]
    )
    assert a.config == "c.py" and a.workdir == "/tmp/w" and a.resume
    assert a.overrides == ("--config.seed=3", "--config.rollout.n_samples=2")
    assert not parse_flags(["--config", "c.py", "--workdir", "w"]).resume
    with pytest.raises(SystemExit):
        parse_flags(["--config", "c.py", "--workdir", "w", "--bogus=1"])
    with pytest.raises(SystemExit):
        parse_flags(["--config", "c.py"])


# --- field rules checked before anything loads (tiny_debug + one bad override each) ----------

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = f"{_REPO}/experiments/configs/tiny_debug.py"


@pytest.mark.parametrize(
    "override, field",
    [
        ("train.ppo_epochs=0", "train.ppo_epochs"),
        ("max_checkpoints=0", "max_checkpoints"),
        ("optim.learning_rate=0.0", "optim.learning_rate"),
        ("optim.learning_rate=-1e-3", "optim.learning_rate"),
        ("optim.learning_rate=nan", "optim.learning_rate"),
        ("optim.learning_rate=inf", "optim.learning_rate"),
        ("optim.grad_clip=-1.0", "optim.grad_clip"),
        ("optim.grad_clip=inf", "optim.grad_clip"),
        ("optim.b1=1.0", "optim.b1"),
        ("optim.b2=-0.1", "optim.b2"),
        ("optim.weight_decay=-0.01", "optim.weight_decay"),
        ("optim.weight_decay=nan", "optim.weight_decay"),
        ("optim.schedule=linear", "optim.schedule"),
        ("optim.warmup_steps=-1", "optim.warmup_steps"),
        ("optim.trainable=last_layers", "optim.trainable"),
        ("rollout.temperature=0.0", "rollout.temperature"),
        ("rollout.max_new_tokens=0", "rollout.max_new_tokens"),
        ("rollout.top_p=0.0", "rollout.top_p"),
        ("rollout.top_p=1.5", "rollout.top_p"),
        ("rollout.top_k=-1", "rollout.top_k"),
        ("rollout.decode_layers=stacked", "rollout.decode_layers"),
        ("rollout.n_samples=0", "rollout.n_samples"),
        ("rollout.batch_prompts=0", "rollout.batch_prompts"),
        ("task.name=gsm8", "task.name"),
        ("task.source=hub", "task.source"),
        ("task.low=50", "task.low"),  # > task.high (99 -> set below)
        ("task.ops=+/", "task.ops"),
        ("task.ops=++", "task.ops"),
        ("loss.loss_type=grpo", "loss.loss_type"),
        ("loss.agg_mode=mean", "loss.agg_mode"),
        ("loss.kl_kind=k4", "loss.kl_kind"),
        ("loss.kl_kind=k2+", "loss.kl_kind"),
        ("loss.clip_low=-0.2", "loss.clip_low"),
        ("loss.clip_high=-0.1", "loss.clip_high"),
        ("loss.dual_clip=0.5", "loss.dual_clip"),
        ("loss.dual_clip=1.0", "loss.dual_clip"),
        ("eval.num_prompts=0", "eval.num_prompts"),
        ("eval.batch_prompts=0", "eval.batch_prompts"),
        ("rollout.vine.k=0", "rollout.vine.k"),
        ("rollout.vine.max_steps=0", "rollout.vine.max_steps"),
        ("rollout.vine.which=some", "rollout.vine.which"),
        ("rollout.vine.every=0", "rollout.vine.every"),
        ("rollout.vine.rho=1.5", "rollout.vine.rho"),
        ("rollout.vine.chunk_rows=0", "rollout.vine.chunk_rows"),
    ],
)
def test_bad_field_is_rejected_naming_the_field(override, field):
    extra = ["--config.task.high=20"] if field == "task.low" else []
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")) as e:
        load_config(TINY, [f"--config.{override}", *extra])
    assert "\n" not in str(e.value)


def test_last_k_lower_bound_and_regex_mode():
    with pytest.raises(ConfigError, match=r"optim\.last_k=0"):
        load_config(TINY, ["--config.optim.trainable=last_k", "--config.optim.last_k=0"])
    load_config(TINY, ["--config.optim.trainable=last_k", "--config.optim.last_k=1"])


def test_dual_clip_with_gspo_is_rejected():
    with pytest.raises(ConfigError, match=r"loss\.dual_clip.*gspo"):
        load_config(TINY, ["--config.loss.loss_type=gspo", "--config.loss.dual_clip=3.0"])


def test_eval_num_prompts_only_matters_when_evaluating():
    load_config(TINY, ["--config.eval_every=0", "--config.eval.num_prompts=0"])


@pytest.mark.parametrize(
    "override",
    [
        "optim.grad_clip=0.0",  # 0 = clipping off
        "loss.dual_clip=3.0",
        "loss.kl_kind=low_var_kl",
        "rollout.top_k=0",
        "task.source=tfds",
        "task.name=math",
        "optim.schedule=cosine",
    ],
)
def test_good_edge_values_pass(override):
    load_config(TINY, [f"--config.{override}"])


def test_every_experiment_config_validates_unchanged():
    import glob

    files = sorted(
        f
        for f in glob.glob(f"{_REPO}/experiments/configs/*.py")
        if os.path.basename(f) not in ("__init__.py", "common.py")
    )
    assert len(files) >= 7
    from jaxrl_reason.rollout.strategies import strategy_names

    for f in files:
        raw = load_config(f, validate_config=False)
        if raw.rollout.get("strategy", "group") not in strategy_names():
            # a config awaiting its rollout strategy: rejected with the documented message
            # (tests/train/test_estimators_e2e.py checks it)
            with pytest.raises(ConfigError, match="is not a registered strategy"):
                load_config(f)
            continue
        load_config(f)


def test_spo_chain_cuts_and_masks_at_one_rho():
    path = os.path.join(os.path.dirname(TINY), "smollm2_arith_chain_spo_chain.py")
    load_config(path, ["--config.rollout.vine.rho=0.8"])  # estimator_kwargs.rho unset: fine
    cfg = load_config(path, validate_config=False)
    with cfg.unlocked():
        cfg.algo.estimator_kwargs.rho = 0.5
    with pytest.raises(ConfigError, match=r"algo\.estimator_kwargs\.rho=0\.5 differs") as e:
        validate(cfg)
    assert "\n" not in str(e.value)
    cfg.rollout.vine.rho = 0.5
    validate(cfg)
