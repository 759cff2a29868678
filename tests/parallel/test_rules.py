"""In-process parallel helpers: mesh shapes, logical-axis rules, multi-host detection."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from jaxrl_reason import parallel
from jaxrl_reason.parallel import logical_to_spec, resolve_mesh_shape


def _mesh(data=1, fsdp=1, tensor=1):
    # logical_to_spec only reads mesh.shape: a stub stands for an 8-device mesh here.
    return types.SimpleNamespace(shape={"data": data, "fsdp": fsdp, "tensor": tensor})


@pytest.mark.parametrize(
    "cfg, n, expected",
    [
        (dict(data=8), 8, (8, 1, 1)),
        (dict(fsdp=-1), 8, (1, 8, 1)),
        (dict(fsdp=-1, tensor=2), 8, (1, 4, 2)),
        (dict(data=2, fsdp=2, tensor=2), 8, (2, 2, 2)),
        (dict(data=-1), 1, (1, 1, 1)),
    ],
)
def test_resolve_mesh_shape(cfg, n, expected):
    assert resolve_mesh_shape(cfg, n) == expected


@pytest.mark.parametrize(
    "cfg, match",
    [
        (dict(data=3), "data=3 \\* fsdp=1 \\* tensor=1 = 3 devices, but 8"),
        (dict(data=-1, fsdp=-1), "only one axis may be -1"),
        (dict(tensor=3, fsdp=-1), "does not divide"),
        (dict(tensor=0), "mesh.tensor=0"),
        (dict(fsdp=2.0), "mesh.fsdp=2.0"),
    ],
)
def test_resolve_mesh_shape_errors(cfg, match):
    with pytest.raises(parallel.MeshConfigError, match=match):
        resolve_mesh_shape(cfg, 8)


def test_logical_rules_default_mapping():
    m = _mesh(data=2, fsdp=2, tensor=2)
    assert logical_to_spec(("vocab", "embed"), mesh=m) == P("tensor", "fsdp")
    assert logical_to_spec(("layers", "embed", "heads", "head_dim"), mesh=m) == P(
        None, "fsdp", "tensor", None
    )
    assert logical_to_spec(("batch", "seq"), mesh=m) == P(("data", "fsdp"), None)
    # KV cache [L, B, S, KVH, Dh]: batch over data+fsdp, kv heads over tensor.
    assert logical_to_spec(("layers", "batch", "seq", "kv_heads", "head_dim"), mesh=m) == P(
        None, ("data", "fsdp"), None, "tensor", None
    )
    assert logical_to_spec(None) == P()


def test_size_one_axes_dropped_and_axis_used_once():
    m = _mesh(fsdp=8)
    assert logical_to_spec(("batch", "mlp"), mesh=m) == P("fsdp", None)
    # Both dims map to fsdp: only the first may use it.
    assert logical_to_spec(("embed", "embed"), mesh=m) == P("fsdp", None)


def test_divisibility_fallback_replicates():
    m = _mesh(data=2, fsdp=4, tensor=2)
    # 49152 vocab divides by 2; 6 does not divide by fsdp=4; batch 6 over (data=2, fsdp=4)=8
    # drops fsdp and keeps data=2.
    assert logical_to_spec(("vocab", "embed"), mesh=m, shape=(49152, 6)) == P("tensor", None)
    assert logical_to_spec(("batch", None), mesh=m, shape=(6, 3)) == P("data", None)
    assert logical_to_spec(("batch",), mesh=m, shape=(3,)) == P(None)
    with pytest.raises(ValueError, match="one name"):
        logical_to_spec(("embed",), mesh=m, shape=(2, 2))


def test_custom_rules_first_rule_wins():
    rules = (("embed", "tensor"), ("embed", "fsdp"), ("mlp", ("fsdp", "tensor")))
    m = _mesh(fsdp=2, tensor=2)
    assert logical_to_spec(("embed",), rules, mesh=m) == P("tensor")
    assert logical_to_spec(("mlp",), rules, mesh=m, shape=(8,)) == P(("fsdp", "tensor"))


def test_single_device_mesh_and_shard_params():
    mesh = parallel.make_mesh()
    assert dict(mesh.shape) == {"data": 1, "fsdp": 1, "tensor": 1}

    class M(nnx.Module):
        def __init__(self):
            self.w = nnx.Param(
                jnp.ones((4, 2)), out_sharding=("embed", "mlp"), eager_sharding=False
            )
            self.b = nnx.Param(jnp.zeros(2))

    m = M()
    state = parallel.shard_params(nnx.state(m), mesh)
    nnx.update(m, state)
    assert m.w[...].sharding.mesh == mesh and m.w[...].sharding.spec == P(None, None)
    arrays, names = parallel.split_logical(nnx.state(m))
    assert names == {"w": ("embed", "mlp"), "b": None}
    assert isinstance(arrays["w"], jax.Array)
    g = parallel.global_batch(np.arange(6).reshape(3, 2), mesh)
    assert g.shape == (3, 2) and g.sharding.mesh == mesh


@pytest.mark.parametrize(
    "env, expected",
    [
        ({}, False),
        ({"TPU_WORKER_HOSTNAMES": "t1k-w-0"}, False),
        ({"TPU_WORKER_HOSTNAMES": "w-0,w-1,w-2,w-3"}, True),
        ({"SLURM_NTASKS": "4"}, True),
        ({"SLURM_NTASKS": "1"}, False),
        ({"OMPI_COMM_WORLD_SIZE": "2"}, True),
        ({"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234", "JAX_NUM_PROCESSES": "2"}, True),
        ({"JAXRL_DISTRIBUTED": "0", "SLURM_NTASKS": "4"}, False),
        ({"JAXRL_DISTRIBUTED": "1"}, True),
    ],
)
def test_multihost_detection(env, expected):
    assert parallel.multihost_launch_detected(env) is expected


def test_single_host_does_not_initialize():
    assert parallel.maybe_initialize_distributed({}) is False
    assert parallel.is_main_process()


def test_host_transfers_on_one_process():
    # One process: to_global is a sharded device_put (the single-host path is unchanged) and
    # to_host a plain np.asarray; typed PRNG keys and None pass through to_host untouched.
    from jax.sharding import NamedSharding

    mesh = parallel.make_mesh()
    sh = NamedSharding(mesh, P(None))
    x = np.arange(6, dtype=np.float32).reshape(3, 2)
    g = parallel.to_global(x, sh)
    assert g.sharding == sh and g.dtype == np.float32
    back = parallel.to_host(g)
    assert isinstance(back, np.ndarray) and np.array_equal(back, x)
    keys = parallel.to_global(jax.random.split(jax.random.key(1), 3), sh)
    assert keys.sharding == sh and parallel.to_host(keys) is keys
    tree = parallel.host_tree({"a": g, "b": None})
    assert tree["b"] is None and np.array_equal(tree["a"], x)
