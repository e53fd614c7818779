import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

from neurde.data import Trajectories, irregular, masked_mse, random_mask, spiral


def test_random_mask_keep_rate_and_first_column():
    mask = np.asarray(random_mask((400, 51), 0.3, key=jr.key(0)))
    assert mask.dtype == np.bool_ and mask.shape == (400, 51)
    assert mask[:, 0].all()
    rate = mask[:, 1:].mean()
    # 20000 Bernoulli(0.3) draws: standard error sqrt(0.3 * 0.7 / 20000) ~ 0.0032; allow 4.
    assert abs(rate - 0.3) < 0.013
    free = np.asarray(random_mask((400, 51), 0.3, keep_first=False, key=jr.key(0)))
    assert 0.2 < free[:, 0].mean() < 0.4
    assert np.asarray(random_mask((3, 7), 1.0, key=jr.key(1))).all()


def test_irregular_sets_mask_and_keeps_values():
    traj = Trajectories(ts=jnp.linspace(0, 1, 30), ys=jr.normal(jr.key(1), (50, 30, 2)))
    sparse = irregular(traj, 0.5, key=jr.key(2))
    assert sparse.mask is not None and sparse.mask.shape == (50, 30)
    assert np.asarray(sparse.mask[:, 0]).all()
    np.testing.assert_array_equal(sparse.ys, traj.ys)
    assert abs(np.asarray(sparse.mask[:, 1:]).mean() - 0.5) < 0.05
    # Masks combine: a value stays observed only where both masks are True.
    sparser = irregular(sparse, 0.5, key=jr.key(3))
    assert sparser.mask is not None
    assert not np.any(np.asarray(sparser.mask) & ~np.asarray(sparse.mask))
    assert np.asarray(sparser.mask[:, 1:]).mean() < 0.35


def test_masked_mse_equals_mse_when_all_observed():
    pred, target = jr.normal(jr.key(4), (2, 5, 8, 3))
    mask = jnp.ones((5, 8), bool)
    np.testing.assert_allclose(
        masked_mse(pred, target, mask), jnp.mean((pred - target) ** 2), rtol=1e-6
    )


def test_masked_mse_ignores_masked_entries():
    pred = jr.normal(jr.key(5), (4, 6, 2))
    target = pred + 1.0
    mask = jr.bernoulli(jr.key(6), 0.5, (4, 6))
    # Garbage (including NaN) where unobserved changes neither the value nor the gradient.
    target = jnp.where(mask[..., None], target, jnp.nan)
    np.testing.assert_allclose(masked_mse(pred, target, mask), 1.0, rtol=1e-6)
    grad = jax.grad(masked_mse)(pred, target, mask)
    assert np.isfinite(np.asarray(grad)).all()
    np.testing.assert_array_equal(grad[~mask], 0.0)
    manual = jnp.sum(jnp.where(mask[..., None], (pred - target) ** 2, 0)) / (mask.sum() * 2)
    np.testing.assert_allclose(masked_mse(pred, target, mask), manual, rtol=1e-6)


def test_masked_mse_without_observations_is_zero():
    pred = jnp.ones((3, 4, 2))
    mask = jnp.zeros((3, 4), bool)
    assert masked_mse(pred, jnp.zeros_like(pred), mask) == 0.0
    grad = jax.grad(masked_mse)(pred, jnp.zeros_like(pred), mask)
    np.testing.assert_array_equal(grad, 0.0)


def test_irregular_on_generated_data():
    # Same shape as in test_spirals.py, so the compiled generator is reused.
    traj = irregular(spiral(64, 20, key=jr.key(7)), 0.7, key=jr.key(8))
    assert traj.mask is not None
    assert masked_mse(traj.clean, traj.clean, traj.mask) == 0.0


@pytest.mark.parametrize("keep_prob", [0.0, -0.2, 1.5])
def test_keep_prob_errors(keep_prob):
    traj = Trajectories(ts=jnp.linspace(0, 1, 3), ys=jnp.zeros((2, 3, 1)))
    with pytest.raises(ValueError, match=r"`keep_prob` must lie in \(0, 1\]"):
        random_mask((2, 3), keep_prob, key=jr.key(0))
    with pytest.raises(ValueError, match=rf"irregular\(\.\.\., keep_prob={keep_prob}\)"):
        irregular(traj, keep_prob, key=jr.key(0))


def test_other_errors():
    with pytest.raises(ValueError, match="`shape` must be a tuple of at least one"):
        random_mask((), 0.5, key=jr.key(0))
    with pytest.raises(TypeError, match=r"`traj` must be a `neurde\.data\.Trajectories`"):
        irregular(jnp.zeros((2, 3, 1)), 0.5, key=jr.key(0))
    with pytest.raises(ValueError, match=r"got pred \(2, 3, 1\), target \(2, 3, 1\), mask \(2,\)"):
        masked_mse(jnp.zeros((2, 3, 1)), jnp.zeros((2, 3, 1)), jnp.ones(2, bool))
