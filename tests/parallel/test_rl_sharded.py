"""The real GRPO step, sampler and train-state checkpoint on 8 simulated CPU devices.

The checks run in a fresh interpreter (``rl_sharded_checks.py``): the 8-device XLA flag must be
set before JAX starts, and this pytest process keeps its single device. One subprocess per
module; each test asserts one of its results.
"""

import pytest

from tests.parallel.eight_devices import check as _check
from tests.parallel.eight_devices import run_checks


def _run(workdir, *flags):
    return run_checks("rl_sharded_checks.py", workdir, *flags, timeout=900)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    return _run(str(tmp_path_factory.mktemp("rl_sharded")))


def test_reference_step_has_signal(report):
    # Non-zero GRPO advantages, gradient and KL-to-reference (kl_coef and entropy_coef are
    # on in every sharded step): the comparisons below are not vacuous.
    _check(report, "device_count")
    _check(report, "reference")


@pytest.mark.parametrize("name", ["data8", "fsdp8", "fsdp4_tensor2", "data2_fsdp2_tensor2"])
def test_sharded_grpo_step_equals_single_device(report, name):
    # Loss and grad norm within 1e-5 relative; every updated parameter within 1e-5 norm-wise
    # relative; params and Adam moments sharded as the rules say; batch rows split.
    _check(report, f"step_{name}")


def test_sampler_on_mesh_gives_the_same_greedy_tokens(report):
    _check(report, "sampler_data2_fsdp2_tensor2")


def test_sampler_on_mesh_gives_the_same_sampled_tokens(report):
    # temperature 0.8, top-k 40, top-p 0.9, n = 2: per-row keys make sharding invisible.
    _check(report, "sampler_sampled_data2_fsdp2_tensor2")


def test_train_state_saved_under_fsdp8_restores_under_fsdp4_tensor2(report):
    _check(report, "restore_fsdp4_tensor2")


@pytest.mark.slow
def test_slow_sampler_meshes_and_training_after_restore(tmp_path):
    results = _run(str(tmp_path), "--slow")
    for name in (
        "sampler_fsdp8",
        "sampler_fsdp4_tensor2",
        "restore_fsdp4_tensor2",
        "restore_data8",
        "value_head_fsdp4_tensor2",  # PPO value head + KL + entropy, sharded vs one device
    ):
        _check(results, name)


def test_fsdp8_holds_an_eighth_of_qwen_0_5b_state_per_device(report):
    _check(report, "memory_fsdp8")
