"""One process of a simulated 2-host run (2 CPU devices each); see test_multiprocess.py.

Launched twice with ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES=2``, ``JAX_PROCESS_ID``:
exercises ``maybe_initialize_distributed``, ``global_batch`` from per-host data, the host
transfers ``to_global`` / ``to_host`` of arrays spanning both hosts, Orbax saving
and restoring sharded state from both processes onto another mesh, the cross-host agreement on
a stop request, and that only process 0 writes run files. Prints a JSON report as its last line.
"""

from __future__ import annotations

import json
import os
import sys
import traceback

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
os.environ["JAX_PLATFORMS"] = "cpu"
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import jax  # noqa: E402

# Cross-process collectives on CPU go through gloo.
jax.config.update("jax_cpu_collectives_implementation", "gloo")

import numpy as np  # noqa: E402
from jax.sharding import NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

from jaxrl_reason import parallel  # noqa: E402
from jaxrl_reason.train.checkpoint import Checkpointer  # noqa: E402
from jaxrl_reason.train.logging import RunWriter, read_jsonl  # noqa: E402


def _local_values_match(arr: jax.Array, expected: np.ndarray) -> bool:
    return all(
        np.array_equal(np.asarray(s.data), expected[s.index]) for s in arr.addressable_shards
    )


def main(workdir: str) -> dict:
    results: dict = {}
    initialized = parallel.maybe_initialize_distributed()
    pid = jax.process_index()
    results["distributed"] = initialized and jax.process_count() == 2 and jax.device_count() == 4
    results["main_process"] = parallel.is_main_process() == (pid == 0)

    mesh = parallel.make_mesh({"data": 2, "fsdp": 2})
    # Each host holds its own 2 rows; the global batch is [4, 2].
    local = np.arange(4, dtype=np.float32).reshape(2, 2) + 10 * pid
    g = parallel.global_batch({"x": local}, mesh)["x"]
    total = jax.jit(lambda x: x.sum(), out_shardings=NamedSharding(mesh, P()))(g)
    results["global_batch"] = g.shape == (4, 2) and float(total) == 52.0

    # Parameters sharded over all 4 devices of both hosts (fsdp spans the hosts).
    full = np.arange(8 * 6, dtype=np.float32).reshape(8, 6)
    mesh_fsdp = parallel.make_mesh({"fsdp": 4})
    names = {"w": ("embed", "mlp"), "b": None}
    arrays = {"w": full, "b": np.ones(3, np.float32)}
    shardings = parallel.shardings_for(arrays, names, mesh_fsdp)
    params = {
        k: jax.make_array_from_callback(v.shape, shardings[k], lambda idx, v=v: v[idx])
        for k, v in arrays.items()
    }
    results["sharded_across_hosts"] = (
        params["w"].sharding.spec == P("fsdp", None)
        and len(params["w"].addressable_shards) == 2
        and not params["w"].is_fully_addressable
    )

    # The loop's two doors (parallel.to_global / to_host): every host holds the same host
    # value, builds its own shards, and reads the whole array back (a collective).
    rows = parallel.shardings_for({"x": full}, {"x": ("batch", None)}, mesh_fsdp)["x"]
    g = parallel.to_global(full, rows)
    keys = parallel.to_global(jax.random.split(jax.random.key(5), 4), rows)
    drawn = jax.jit(jax.vmap(lambda k: jax.random.uniform(k)))(keys)
    expected_draws = np.asarray(
        jax.vmap(jax.random.uniform)(jax.random.split(jax.random.key(5), 4))
    )
    results["host_transfers"] = (
        not g.is_fully_addressable
        and _local_values_match(g, full)
        and np.array_equal(parallel.to_host(g), full)
        and np.array_equal(parallel.to_host(drawn), expected_draws)
        and parallel.to_host(None) is None
    )

    # Both processes save; one asks to stop: both agree, both save step 1 and stop.
    ckpt_dir = os.path.join(workdir, "ckpt")
    ck = Checkpointer(ckpt_dir, save_every=100, handle_signals=False)
    if pid == 1:
        ck.request_stop()
    saved = ck.maybe_save(1, {"params": params, "rng": jax.random.key(3)}, {"pos": 9})
    results["stop_agreed"] = saved and ck.stop_requested
    ck.wait_until_finished()

    # Restore onto a different mesh: (data=2, fsdp=1, tensor=2) -> w over tensor on mlp.
    mesh_b = parallel.make_mesh({"data": 2, "tensor": 2})
    target = parallel.shardings_for(arrays, names, mesh_b)
    abstract = {
        "params": parallel.abstract_with_shardings(arrays, target),
        "rng": jax.eval_shape(lambda: jax.random.key(0)),
    }
    r = ck.restore_latest(abstract)
    ck.close()
    results["reshard_restore"] = (
        r.step == 1
        and r.metadata == {"pos": 9}
        and r.state["params"]["w"].sharding.spec == P(None, "tensor")
        and _local_values_match(r.state["params"]["w"], full)
        and np.array_equal(jax.random.key_data(r.state["rng"]), [0, 3])
    )

    # Only process 0 writes run files; both call the writer.
    run_dir = os.path.join(workdir, "run")
    with RunWriter(run_dir, is_main_process=parallel.is_main_process(), tensorboard=False) as w:
        w.write_metrics(1, {"loss": 1.0 + pid})
    # Wait until both processes have written (or not), then check.
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices("after_write")
    rows = read_jsonl(os.path.join(run_dir, "metrics.jsonl"))
    results["only_main_writes"] = rows == [{"step": 1, "loss": 1.0}]
    return {k: bool(v) for k, v in results.items()}


if __name__ == "__main__":
    try:
        report = main(sys.argv[1])
    except Exception:
        report = {"error": traceback.format_exc()}
    print(json.dumps(report), flush=True)
