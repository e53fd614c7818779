"""2-D toy densities: support and moments from their definitions, determinism, bad input."""

import jax.random as jr
import numpy as np
import pytest

import neurde

N = 20_000


def test_checkerboard_is_uniform_on_alternate_squares():
    x = np.asarray(neurde.data.checkerboard(N, key=jr.key(0)))
    assert x.shape == (N, 2) and np.all(np.abs(x) <= 4)
    cell = np.floor(x / 2).astype(int)  # 2 x 2 cells on [-4, 4]^2
    # Occupied cells are those with an even sum of indices: a checkerboard of 8 of 16 cells.
    assert np.all((cell[:, 0] + cell[:, 1]) % 2 == 0)
    counts = np.unique(cell[:, 0] * 10 + cell[:, 1], return_counts=True)[1]
    assert len(counts) == 8
    np.testing.assert_allclose(counts / N, 1 / 8, atol=4 * np.sqrt((1 / 8) * (7 / 8) / N))


def test_eight_gaussians_has_eight_equal_modes_on_a_circle():
    x = np.asarray(neurde.data.eight_gaussians(N, key=jr.key(1)))
    angles = np.arctan2(x[:, 1], x[:, 0])
    mode = np.round(angles / (np.pi / 4)).astype(int) % 8
    counts = np.bincount(mode, minlength=8) / N
    np.testing.assert_allclose(counts, 1 / 8, atol=0.01)
    radius = np.linalg.norm(x, axis=1)
    np.testing.assert_allclose(np.median(radius), 4 / 1.414, rtol=0.03)


def test_two_moons_halves_and_determinism():
    a = np.asarray(neurde.data.two_moons(N, key=jr.key(2)))
    b = np.asarray(neurde.data.two_moons(N, key=jr.key(2)))
    np.testing.assert_array_equal(a, b)
    # Undo the scaling: upper moon points lie near the unit circle, lower near (1, 0.5).
    u = (a - np.array([-1.0, -0.2])) / 2
    d_upper = np.abs(np.linalg.norm(u, axis=1) - 1)
    d_lower = np.abs(np.linalg.norm(u - np.array([1.0, 0.5]), axis=1) - 1)
    assert np.mean(np.minimum(d_upper, d_lower) < 0.3) > 0.97
    assert abs(np.mean(d_upper < d_lower) - 0.5) < 0.03


@pytest.mark.parametrize("make", list(neurde.data.DENSITIES.values()))
@pytest.mark.parametrize("n", [0, -3, 2.5])
def test_bad_sizes_are_rejected(make, n):
    with pytest.raises(ValueError, match="`n` must be an integer >= 1"):
        make(n, key=jr.key(0))
