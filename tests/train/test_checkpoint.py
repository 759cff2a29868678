"""Orbax checkpointer: round trip of arrays + typed keys + JSON, intervals, save-on-signal."""

import os
import signal
import subprocess
import sys
import textwrap

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxrl_reason.train.checkpoint import Checkpointer

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _state(seed=0):
    params = {"w": jax.random.normal(jax.random.key(seed), (4, 3)), "b": jnp.zeros(3)}
    tx = optax.adam(1e-3)
    return {
        "params": params,
        "opt_state": tx.init(params),
        "step": jnp.asarray(5, jnp.int32),
        "rng": jax.random.key(seed + 1),
        "bf16": jnp.arange(4, dtype=jnp.bfloat16),
    }


def _abstract(tree):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree)


def _assert_same(a, b):
    a = jax.tree.map(
        lambda x: jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x, a
    )
    b = jax.tree.map(
        lambda x: jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x, b
    )
    chex.assert_trees_all_equal(a, b)
    chex.assert_trees_all_equal_dtypes(a, b)


def test_round_trip_state_keys_and_metadata(tmp_path):
    state = _state()
    meta = {"data_position": 17, "answer_counts": {"42": 3}}
    with Checkpointer(tmp_path / "ckpt", save_every=10, handle_signals=False) as ck:
        assert ck.restore_latest(_abstract(state)) is None
        assert ck.save(3, state, meta)
        assert not ck.save(3, state, meta)  # already saved: a no-op, not an error
        r = ck.restore_latest(_abstract(state))
    assert r.step == 3 and r.metadata == meta
    assert jnp.issubdtype(r.state["rng"].dtype, jax.dtypes.prng_key)
    _assert_same(r.state, state)
    # The restored key continues the same random stream.
    np.testing.assert_array_equal(
        jax.random.uniform(r.state["rng"], (3,)), jax.random.uniform(state["rng"], (3,))
    )


def test_restore_onto_concrete_arrays_reuses_their_sharding(tmp_path):
    state = _state()
    with Checkpointer(tmp_path, save_every=1, handle_signals=False) as ck:
        ck.save(1, state)
        r = ck.restore_latest(_state(seed=9))  # other values, same structure
    _assert_same(r.state, state)
    assert r.state["params"]["w"].sharding == state["params"]["w"].sharding


def test_periodic_saves_and_max_to_keep(tmp_path):
    state = _state()
    with Checkpointer(tmp_path, save_every=2, max_to_keep=2, handle_signals=False) as ck:
        saved = [s for s in range(1, 8) if ck.maybe_save(s, state, {"s": s})]
        ck.wait_until_finished()
        assert saved == [2, 4, 6]
        assert ck.all_steps() == [4, 6]
        assert ck.maybe_save(7, state, force=True)
        ck.wait_until_finished()
        assert ck.latest_step() == 7
        assert ck.restore(6, _abstract(state)).metadata == {"s": 6}


def test_sigterm_requests_a_save_at_the_next_step(tmp_path):
    state = _state()
    before = signal.getsignal(signal.SIGTERM)
    ck = Checkpointer(tmp_path, save_every=100, handle_signals=True)
    assert not ck.maybe_save(1, state)
    os.kill(os.getpid(), signal.SIGTERM)
    assert ck.stop_requested
    assert ck.maybe_save(2, state, {"why": "sigterm"})  # not periodic, saved because of it
    ck.close()
    assert signal.getsignal(signal.SIGTERM) == before
    with Checkpointer(tmp_path, save_every=100, handle_signals=False) as ck2:
        assert ck2.latest_step() == 2


LOOP = textwrap.dedent(
    """
    import sys, time, jax.numpy as jnp
    from jaxrl_reason.train.checkpoint import Checkpointer
    ck = Checkpointer(sys.argv[1], save_every=1000)
    state = {"x": jnp.zeros(3)}
    step = 0
    print("ready", flush=True)
    while True:
        step += 1
        state = {"x": state["x"] + 1}
        time.sleep(0.01)
        ck.maybe_save(step, state, {"step": step})
        if ck.stop_requested:
            break
    ck.close()
    print("stopped", step, flush=True)
    """
)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_saves_and_exits_cleanly(tmp_path, sig):
    env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
    proc = subprocess.Popen(
        [sys.executable, "-c", LOOP, str(tmp_path)], stdout=subprocess.PIPE, text=True, env=env
    )
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    step = int(out.split()[-1])
    with Checkpointer(tmp_path, save_every=1000, handle_signals=False) as ck:
        assert ck.latest_step() == step
        r = ck.restore_latest({"x": jax.ShapeDtypeStruct((3,), jnp.float32)})
    assert r.metadata == {"step": step}
    np.testing.assert_array_equal(r.state["x"], np.full(3, step, np.float32))
