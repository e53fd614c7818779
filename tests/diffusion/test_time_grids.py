"""Time grids as objects: names and objects agree, optimized grids differentiate, fit, save.

The fitted-grid test uses a 2-D Gaussian mixture with the exact score
(`GaussianMixtureScore`) and DPM-Solver-3M at 5 NFE; errors are measured on prior draws
that the fit did not see, against the exact probability-flow map.
"""

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from conftest import central_differences

import neurde
import neurde.diffusion as nd
from neurde.diffusion.samplers._fixed_grid import AbstractFixedGridSampler

VP = nd.VPSDE()
GRIDS = {"uniform": nd.UniformGrid(), "logsnr": nd.LogSNRGrid(), "edm": nd.KarrasGrid()}


def two_moons_like(sde):
    # Four components, two of them elongated: a score that bends the flow near the data.
    means = jnp.array([[-1.0, 0.5], [1.0, -0.5], [0.0, 1.5], [0.5, -1.5]])
    covs = jnp.array([[0.3, 0.02], [0.02, 0.3], [0.05, 0.05], [0.1, 0.02]])
    return nd.GaussianMixtureScore(sde, jnp.array([0.3, 0.3, 0.2, 0.2]), means, covs)


@functools.cache
def _draw():
    return eqx.filter_jit(lambda s, score, x: nd.sample_from(s, score, VP, x)[0])


def test_names_and_objects_give_the_same_times_and_samples():
    with jax.enable_x64(True):
        for name, grid in GRIDS.items():
            a = nd.time_grid(VP, 9, name, dtype=jnp.float64)  # pyright: ignore[reportArgumentType]
            np.testing.assert_array_equal(a, nd.time_grid(VP, 9, grid, dtype=jnp.float64))
            np.testing.assert_array_equal(a, grid(VP, 9, 1e-3, jnp.float64))
        np.testing.assert_array_equal(
            nd.time_grid(VP, 9, "edm", rho=3.0), nd.time_grid(VP, 9, nd.KarrasGrid(3.0))
        )
    # rho changes the grid: the name keeps working through the object.
    assert not np.allclose(nd.time_grid(VP, 9, "edm", rho=3.0), nd.time_grid(VP, 9, "edm"))
    score = nd.GaussianScore(VP, jnp.array([0.5, -0.3]), jnp.eye(2))
    x_T = jr.normal(jr.key(0), (16, 2))
    for name, grid in GRIDS.items():
        by_name, by_object = nd.DDIM(4, time_grid=name), nd.DDIM(4, time_grid=grid)
        assert by_name == by_object
        np.testing.assert_array_equal(_draw()(by_name, score, x_T), _draw()(by_object, score, x_T))


def test_optimized_grid_is_a_decreasing_grid_from_T_to_eps_for_any_logits():
    with jax.enable_x64(True):
        for name, grid in GRIDS.items():
            # from_grid reproduces the grid it starts from.
            fitted = nd.OptimizedGrid.from_grid(name, VP, 7, eps=1e-3)
            np.testing.assert_allclose(
                fitted(VP, 7, 1e-3, jnp.float64), grid(VP, 7, 1e-3, jnp.float64), rtol=1e-12
            )
        zeros = nd.OptimizedGrid(jnp.zeros(7))
        np.testing.assert_allclose(
            zeros(VP, 7, 1e-3, jnp.float64), GRIDS["logsnr"](VP, 7, 1e-3, jnp.float64), rtol=1e-12
        )
        for seed in range(3):
            logits = 3 * jr.normal(jr.key(seed), (7,), jnp.float64)
            ts = np.asarray(nd.OptimizedGrid(logits)(VP, 7, 1e-3, jnp.float64))
            assert ts[0] == 1.0 and ts[-1] == 1e-3 and np.all(np.diff(ts) < 0), ts


def test_a_sampler_is_differentiable_with_respect_to_its_grid():
    # The gradient of a scalar of the samples with respect to the logits, through the
    # scanned sampler, against central differences (float64).
    with jax.enable_x64(True):
        score = two_moons_like(VP)
        x_T = jr.normal(jr.key(1), (8, 2), jnp.float64)
        sampler = nd.DPMSolverMultistep(4, order=3)

        @jax.jit
        def loss(logits):
            candidate = eqx.tree_at(lambda s: s.time_grid, sampler, nd.OptimizedGrid(logits))
            xs, _ = candidate.run(score, VP, x_T, None, None)
            return jnp.sum(jnp.sin(xs))

        logits = jnp.array([0.3, -0.2, 0.1, 0.4])
        grad = np.asarray(jax.grad(loss)(logits))
        np.testing.assert_allclose(grad, central_differences(loss, logits), rtol=1e-6)
        assert np.max(np.abs(grad)) > 1e-2


@functools.cache
def _fitted():
    score = two_moons_like(VP)
    # A fine multistep solve as the reference (error ~2e-3 here): cheaper to compile than
    # the default adaptive probability-flow solve, and far below the 5-NFE errors.
    fit = nd.fit_time_grid(
        nd.DPMSolverMultistep(5, order=3), score, VP, (2,), key=jr.key(2),
        reference=nd.DPMSolverMultistep(50, order=3), batches=2, batch_size=32,
        iterations=40, learning_rate=0.1,
    )  # fmt: skip
    return score, fit


@pytest.mark.slow
def test_fitted_grid_halves_the_error_of_the_best_fixed_grid_at_five_evaluations():
    score, fit = _fitted()
    assert float(fit.final_loss) < 0.5 * float(fit.initial_loss), fit
    x_T = jr.normal(jr.key(3), (256, 2))  # draws the fit did not see
    exact = eqx.filter_jit(lambda x: jax.vmap(lambda y: score.flow(y, 1.0, 1e-3))(x))(x_T)

    def error(grid):
        # Every grid as an OptimizedGrid: one sampler structure, one compilation.
        sampler = nd.DPMSolverMultistep(5, order=3, time_grid=grid)
        xs = _draw()(sampler, score, x_T)
        return float(jnp.sqrt(jnp.mean(jnp.sum((xs - exact) ** 2, 1))))

    fixed = {name: error(nd.OptimizedGrid.from_grid(name, VP, 5)) for name in GRIDS}
    fitted = error(fit.sampler.time_grid)  # pyright: ignore[reportAttributeAccessIssue]
    # Observed RMS errors: uniform 0.46, logsnr 0.24, edm 0.33, fitted 0.092 (the fitting
    # loss fell from 0.11 to 0.0074).
    assert fitted < 0.5 * min(fixed.values()), (fitted, fixed)


def test_a_fitted_sampler_saves_and_loads_with_its_grid(tmp_path):
    score, fit = _fitted()
    path = tmp_path / "sampler.eqx"
    neurde.save(path, fit.sampler)
    like = nd.DPMSolverMultistep(5, order=3, time_grid=nd.OptimizedGrid(jnp.zeros(5)))
    loaded = neurde.load(path, like)
    assert isinstance(loaded.time_grid, nd.OptimizedGrid)
    np.testing.assert_array_equal(loaded.time_grid.logits, fit.sampler.time_grid.logits)  # pyright: ignore[reportAttributeAccessIssue]
    x_T = jr.normal(jr.key(4), (32, 2))
    np.testing.assert_array_equal(_draw()(loaded, score, x_T), _draw()(fit.sampler, score, x_T))
    # The grid is a leaf: plain `jax.jit` traces it, and the NFE is still static.
    nfe = jax.jit(lambda s, x: nd.sample_from(s, score, VP, x)[1])(loaded, x_T)
    assert int(nfe) == 5


def test_bad_grids_are_named():
    grid = nd.OptimizedGrid(jnp.zeros(5))
    with pytest.raises(ValueError, match=r"DDIM: `time_grid` is an OptimizedGrid of 5 steps, but"):
        nd.DDIM(6, time_grid=grid)
    with pytest.raises(
        ValueError, match=r"DPMSolverMultistep: .*OptimizedGrid of 5 steps.*steps=5"
    ):
        nd.DPMSolverMultistep(4, time_grid=grid)
    with pytest.raises(ValueError, match=r"time_grid: `time_grid` is an OptimizedGrid of 5 steps"):
        nd.time_grid(VP, 4, grid)
    with pytest.raises(ValueError, match=r"EulerMaruyama: `time_grid` must be .*Or pass a grid"):
        nd.EulerMaruyama(10, time_grid="karras")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"OptimizedGrid: `logits` must have shape \(steps,\)"):
        nd.OptimizedGrid(jnp.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"KarrasGrid: `rho` must be > 0, got 0.0"):
        nd.KarrasGrid(0.0)
    score = nd.GaussianScore(VP, jnp.zeros(2), jnp.eye(2))
    with pytest.raises(ValueError, match=r"fit_time_grid: `sampler` must be deterministic.*eta"):
        nd.fit_time_grid(nd.DDIM(5, eta=1.0), score, VP, (2,), key=jr.key(0))
    with pytest.raises(TypeError, match=r"fit_time_grid: `sampler` must be a fixed-step sampler"):
        nd.fit_time_grid(nd.EDMHeun(5), score, VP, (2,), key=jr.key(0))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"fit_time_grid: `iterations` must be an integer >= 1"):
        nd.fit_time_grid(nd.DDIM(5), score, VP, (2,), key=jr.key(0), iterations=0)


class _StaticGridSampler(AbstractFixedGridSampler):
    # A sampler that declares its grid static, as the samplers did before grids were objects.
    steps: int = eqx.field(static=True, default=5)
    eps: float = eqx.field(static=True, default=1e-3)
    time_grid: str = eqx.field(static=True, default="uniform")

    def nfe(self):
        return self.steps

    def randomness(self):
        return None

    def init(self, sde, x_T, keys):
        return x_T, nd.time_grid(sde, self.steps, "uniform")[1:]

    def step(self, score, state, inputs):
        return state

    def finish(self, score, state, keys):
        return state


def test_a_static_grid_cannot_be_fitted():
    score = nd.GaussianScore(VP, jnp.zeros(2), jnp.eye(2))
    with pytest.raises(TypeError, match=r"_StaticGridSampler declares `time_grid` static"):
        nd.fit_time_grid(_StaticGridSampler(), score, VP, (2,), key=jr.key(0))  # type: ignore[arg-type]
