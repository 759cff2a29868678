"""jaxrl_reason.parallel: device mesh, logical-axis sharding rules, multi-host start-up."""

from jaxrl_reason.parallel.distributed import (
    is_main_process,
    maybe_initialize_distributed,
    multihost_launch_detected,
)
from jaxrl_reason.parallel.host import host_tree, to_global, to_host
from jaxrl_reason.parallel.mesh import (
    MESH_AXES,
    MeshConfigError,
    make_mesh,
    resolve_mesh_shape,
)
from jaxrl_reason.parallel.sharding import (
    DEFAULT_RULES,
    abstract_with_shardings,
    batch_spec,
    global_batch,
    logical_to_spec,
    param_shardings,
    shard_arrays,
    shard_params,
    shardings_for,
    shardings_of,
    split_logical,
    with_logical_constraint,
)

__all__ = [
    "DEFAULT_RULES",
    "MESH_AXES",
    "MeshConfigError",
    "abstract_with_shardings",
    "batch_spec",
    "global_batch",
    "host_tree",
    "is_main_process",
    "logical_to_spec",
    "make_mesh",
    "maybe_initialize_distributed",
    "multihost_launch_detected",
    "param_shardings",
    "resolve_mesh_shape",
    "shard_arrays",
    "shard_params",
    "shardings_for",
    "shardings_of",
    "split_logical",
    "to_global",
    "to_host",
    "with_logical_constraint",
]
