"""Sharding on 8 simulated CPU devices, checked in a subprocess (see multidevice_checks.py).

``--xla_force_host_platform_device_count=8`` must be set before JAX starts, and this pytest
process already started JAX with one device, so the checks run in a fresh interpreter once per
session and each test below asserts one of its results.
"""

import pytest

from tests.parallel.eight_devices import check as _check
from tests.parallel.eight_devices import run_checks


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    return run_checks(
        "multidevice_checks.py", str(tmp_path_factory.mktemp("multidevice")), timeout=600
    )


def test_eight_devices(report):
    _check(report, "device_count")


@pytest.mark.parametrize(
    "name", ["data8", "fsdp8", "fsdp4_tensor2", "data2_fsdp2_tensor2", "wildcard"]
)
def test_mesh_builds(report, name):
    _check(report, f"mesh_{name}")


def test_mesh_that_does_not_cover_devices_is_rejected(report):
    _check(report, "mesh_bad_size_rejected")


def test_params_are_actually_sharded(report):
    # embed [16, 8] under fsdp=4, tensor=2 -> P('tensor', 'fsdp'), 8 x 2 per device, etc.
    _check(report, "params_sharded")


def test_global_batch_splits_rows_over_data_axes(report):
    _check(report, "global_batch")


@pytest.mark.parametrize("name", ["data8", "fsdp8", "fsdp4_tensor2", "data2_fsdp2_tensor2"])
def test_sharded_train_step_equals_single_device(report, name):
    # Loss within 1e-5 relative, parameters after two AdamW steps within rtol=1e-5 + 1e-6.
    _check(report, f"step_{name}")


def test_checkpoint_saved_on_one_mesh_restores_on_another(report):
    _check(report, "reshard_restore")
