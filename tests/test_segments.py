import chex
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_reason import credit


class SegmentTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_reduce_hand_values(self):
        x = jnp.array([[1.0, 2.0, 3.0, 4.0, 99.0], [5.0, -1.0, 2.0, 0.0, 0.0]])
        seg = jnp.array([[0, 0, 1, 1, 1], [0, 2, 2, 0, 0]])
        mask = jnp.array([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]])
        for op, want in [
            ("sum", [[3, 7, 0], [5, 0, 1]]),
            ("mean", [[1.5, 3.5, 0], [5, 0, 0.5]]),
            ("min", [[1, 3, 0], [5, 0, -1]]),
            ("max", [[2, 4, 0], [5, 0, 2]]),
            ("count", [[2, 2, 0], [1, 0, 2]]),
        ]:
            vals, smask = self.variant(credit.segment_reduce, static_argnums=(3, 4))(
                x, seg, mask, 3, op
            )
            np.testing.assert_allclose(vals, want, err_msg=op)
            np.testing.assert_array_equal(smask, [[1, 1, 0], [1, 0, 1]])
        b = self.variant(credit.segment_reduce_broadcast, static_argnums=(3, 4))(
            x, seg, mask, 3, "min"
        )
        np.testing.assert_allclose(b, [[1, 1, 3, 3, 0], [5, -1, -1, 0, 0]])
        ends, _ = credit.segment_ends(seg, mask, 3)
        np.testing.assert_array_equal(ends, [[1, 3, -1], [0, -1, 2]])

    def test_whiten_matches_numpy_and_is_zero_outside(self):
        rng = np.random.default_rng(0)
        x = rng.normal(size=(3, 6)).astype(np.float32)
        m = (rng.uniform(size=(3, 6)) > 0.3).astype(np.float32)
        vals = x[m > 0]
        want = (x - vals.mean()) / np.sqrt(vals.var(ddof=1) + 1e-8) * m
        np.testing.assert_allclose(credit.masked_whiten(x, m), want, rtol=1e-5, atol=1e-6)
        # Garbage outside the mask changes nothing.
        x2 = np.where(m > 0, x, 1e30)
        np.testing.assert_allclose(credit.masked_whiten(x2, m), want, rtol=1e-5, atol=1e-6)

    def test_empty_and_single(self):
        z = credit.masked_whiten(jnp.ones((2, 3)), jnp.zeros((2, 3)))
        np.testing.assert_array_equal(z, 0.0)
        one = credit.masked_whiten(jnp.full((1, 3), 5.0), jnp.array([[0, 1, 0]]))
        np.testing.assert_array_equal(one, 0.0)


def test_registry_errors_list_names():
    @credit.register("_test_dummy")
    def dummy(*a):
        return a

    assert credit.get("_test_dummy") is dummy
    with pytest.raises(ValueError, match="_test_dummy"):
        credit.get("nope")
    with pytest.raises(ValueError, match="already registered"):
        credit.register("_test_dummy")(lambda: None)
    credit.unregister("_test_dummy")
    with pytest.raises(ValueError, match="unknown segment op"):
        credit.segment_reduce(
            jnp.zeros((1, 1)), jnp.zeros((1, 1), jnp.int32), jnp.ones((1, 1)), 1, "median"
        )
