import jax
import jax.numpy as jnp
import numpy as np
import pytest

from neurde.data import Trajectories


def _traj(n=10, times=4, dim=2, clean=True, mask=True):
    ys = jnp.arange(n * times * dim, dtype=jnp.float32).reshape(n, times, dim)
    return Trajectories(
        ts=jnp.linspace(0, 1, times),
        ys=ys,
        clean=ys - 0.5 if clean else None,
        mask=jnp.arange(n * times).reshape(n, times) % 3 != 1 if mask else None,
    )


def test_properties():
    traj = _traj()
    assert traj.n == 10 and traj.dim == 2
    np.testing.assert_array_equal(traj.y0, traj.clean[:, 0])
    bare = _traj(clean=False)
    np.testing.assert_array_equal(bare.y0, bare.ys[:, 0])


def test_split_keeps_order_and_fields():
    traj = _traj()
    train, test = traj.split(0.7)
    assert (train.n, test.n) == (7, 3)
    np.testing.assert_array_equal(jnp.concatenate([train.ys, test.ys]), traj.ys)
    np.testing.assert_array_equal(jnp.concatenate([train.clean, test.clean]), traj.clean)
    np.testing.assert_array_equal(jnp.concatenate([train.mask, test.mask]), traj.mask)
    assert train.ts is traj.ts and test.ts is traj.ts
    # round(), not floor: 0.29 * 100 is 28.999...
    train, _ = _traj(n=100, clean=False, mask=False).split(0.29)
    assert train.n == 29 and train.clean is None and train.mask is None


def test_is_a_pytree():
    traj = _traj()
    doubled = jax.jit(lambda t: jax.tree_util.tree_map(lambda x: 2 * x, t))(traj)
    np.testing.assert_array_equal(doubled.ys, 2 * traj.ys)
    assert len(jax.tree_util.tree_leaves(_traj(clean=False, mask=False))) == 2


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.5, 2.0])
def test_split_fraction_out_of_range(fraction):
    with pytest.raises(ValueError, match=r"`fraction` must lie strictly between 0 and 1"):
        _traj().split(fraction)


@pytest.mark.parametrize("fraction", [0.01, 0.99])
def test_split_empty_part(fraction):
    with pytest.raises(ValueError, match="both must be non-empty"):
        _traj().split(fraction)


def test_shape_errors():
    ts, ys = jnp.linspace(0, 1, 4), jnp.zeros((3, 4, 2))
    with pytest.raises(ValueError, match=r"`ts` must have shape \(times,\), got \(1, 4\)"):
        Trajectories(ts=ts[None], ys=ys)
    with pytest.raises(ValueError, match=r"`ys` must have shape \(n, times, dim\) = \(n, 4, dim\)"):
        Trajectories(ts=ts, ys=ys[:, :3])
    with pytest.raises(ValueError, match=r"`ys` must have shape"):
        Trajectories(ts=ts, ys=ys[..., 0])
    with pytest.raises(ValueError, match=r"`clean` must have the shape of `ys`"):
        Trajectories(ts=ts, ys=ys, clean=ys[:2])
    with pytest.raises(ValueError, match=r"`mask` must have shape \(n, times\) = \(3, 4\)"):
        Trajectories(ts=ts, ys=ys, mask=jnp.ones((3, 5), bool))
    with pytest.raises(TypeError, match="`mask` must be boolean, got float32"):
        Trajectories(ts=ts, ys=ys, mask=jnp.ones((3, 4)))
    with pytest.raises(TypeError, match="must keep the trajectory axis"):
        Trajectories(ts=ts, ys=ys)[0]
