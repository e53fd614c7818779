"""LD3's decoupled times: an `OptimizedGrid` with `shifts` queries the model elsewhere.

Zero shifts are today's samplers bit for bit; nonzero shifts are checked against one DDIM
run computed by hand; fitting the shifts with the grid (`decouple=True`) lowers the fitting
loss below the plain fit's on a 2-D Gaussian mixture with the exact score.
"""

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import neurde
import neurde.diffusion as nd

VP = nd.VPSDE()


def _mixture():
    means = jnp.array([[-1.0, 0.5], [1.0, -0.5], [0.0, 1.5], [0.5, -1.5]])
    covs = jnp.array([[0.3, 0.02], [0.02, 0.3], [0.05, 0.05], [0.1, 0.02]])
    return nd.GaussianMixtureScore(VP, jnp.array([0.3, 0.3, 0.2, 0.2]), means, covs)


@functools.cache
def _draw():
    return eqx.filter_jit(lambda s, score, x: nd.sample_from(s, score, VP, x)[0])


LOGITS = jnp.array([0.3, -0.2, 0.4])


def _singlestep(grid):
    # Singlestep DPM-Solver-2: its intermediate times take interpolated shifts.
    return nd.DPMSolver(3, order=2, time_grid=grid)


def test_zero_shifts_give_bit_identical_samples():
    score = _mixture()
    x_T = jr.normal(jr.key(0), (64, 2))
    plain = _draw()(_singlestep(nd.OptimizedGrid(LOGITS)), score, x_T)
    zero = _draw()(_singlestep(nd.OptimizedGrid(LOGITS, jnp.zeros(4))), score, x_T)
    np.testing.assert_array_equal(zero, plain)
    shifted = _draw()(_singlestep(nd.OptimizedGrid(LOGITS, jnp.full(4, 0.1))), score, x_T)
    assert float(jnp.max(jnp.abs(shifted - plain))) > 1e-3


def test_a_grid_with_shifts_saves_and_loads_with_its_sampler(tmp_path):
    score = _mixture()
    sampler = _singlestep(nd.OptimizedGrid(LOGITS, jnp.array([0.2, -0.1, 0.05, 0.3])))
    path = tmp_path / "sampler.eqx"
    neurde.save(path, sampler)
    loaded = neurde.load(path, _singlestep(nd.OptimizedGrid(jnp.zeros(3), jnp.zeros(4))))
    np.testing.assert_array_equal(loaded.time_grid.shifts, sampler.time_grid.shifts)  # pyright: ignore[reportAttributeAccessIssue]
    x_T = jr.normal(jr.key(4), (64, 2))
    np.testing.assert_array_equal(_draw()(loaded, score, x_T), _draw()(sampler, score, x_T))
    # A file without shifts (saved before them) still loads into a grid without shifts.
    neurde.save(path, _singlestep(nd.OptimizedGrid(LOGITS)))
    old = neurde.load(path, _singlestep(nd.OptimizedGrid(jnp.zeros(3))))
    np.testing.assert_array_equal(old.time_grid.logits, LOGITS)  # pyright: ignore[reportAttributeAccessIssue]
    assert old.time_grid.shifts is None  # pyright: ignore[reportAttributeAccessIssue]


def test_shifted_ddim_equals_a_hand_computation():
    # DDIM on the exact Gaussian score: at each grid time t_i the noise prediction is the
    # model's at s_i = t_i exp(delta_i), eps = -sigma(s_i) score(s_i, x).
    with jax.enable_x64(True):
        score = nd.GaussianScore(VP, jnp.array([0.5, -0.3]), jnp.array([[1.0, 0.3], [0.3, 0.5]]))
        logits, shifts = jnp.array([0.2, -0.1, 0.3]), jnp.array([-0.2, 0.15, -0.3, 0.4])
        grid = nd.OptimizedGrid(logits, shifts)
        x_T = jr.normal(jr.key(1), (16, 2), jnp.float64)
        ours = nd.sample_from(nd.DDIM(3, time_grid=grid), score, VP, x_T)[0]
        ts = np.asarray(grid(VP, 3, 1e-3, jnp.float64))

        def ddim(deltas):
            x = x_T
            for i in range(3):
                t, s, t_next = ts[i], ts[i] * np.exp(deltas[i]), ts[i + 1]
                noise = -VP.std(s) * jax.vmap(score, in_axes=(None, 0, None))(s, x, None)
                x0 = (x - VP.std(t) * noise) / VP.mean_coeff(t)
                x = VP.mean_coeff(t_next) * x0 + VP.std(t_next) * noise
            return x

        by_hand = ddim(np.asarray(shifts))
        np.testing.assert_allclose(ours, by_hand, rtol=1e-12, atol=1e-12)
        # The shifts matter: the unshifted DDIM is far from it.
        assert float(jnp.max(jnp.abs(ddim(np.zeros(4)) - by_hand))) > 1e-2


@functools.cache
def _fits():
    # DDIM at 3 NFE: the cheapest sampler to compile, and a first-order one whose error the
    # shifts absorb most (observed losses: plain fit 0.514 -> 0.178, decoupled 0.064).
    score = _mixture()
    kwargs = dict(
        key=jr.key(2), reference=nd.DPMSolverMultistep(30, order=3), batches=1,
        batch_size=32, iterations=30, learning_rate=0.1,
    )  # fmt: skip
    plain = nd.fit_time_grid(nd.DDIM(3), score, VP, (2,), **kwargs)  # pyright: ignore[reportArgumentType]
    decoupled = nd.fit_time_grid(nd.DDIM(3), score, VP, (2,), decouple=True, **kwargs)  # pyright: ignore[reportArgumentType]
    return score, plain, decoupled


# Two fits (~10 s of compilation on one core): an acceptance check, kept out of CI.
@pytest.mark.expensive
def test_decoupled_fit_lowers_the_loss_below_the_plain_fit():
    _, plain, decoupled = _fits()
    assert plain.sampler.time_grid.shifts is None  # pyright: ignore[reportAttributeAccessIssue]
    shifts = decoupled.sampler.time_grid.shifts  # pyright: ignore[reportAttributeAccessIssue]
    assert shifts is not None and float(jnp.max(jnp.abs(shifts))) > 1e-2
    # Same draws, same start: the same initial loss; the extra freedom lowers the final one.
    np.testing.assert_allclose(decoupled.initial_loss, plain.initial_loss, rtol=1e-6)
    assert float(decoupled.final_loss) < 0.5 * float(plain.final_loss), (
        float(plain.final_loss),
        float(decoupled.final_loss),
    )


@pytest.mark.expensive
def test_a_plain_fit_keeps_the_shifts_it_starts_from():
    score, _, fit = _fits()
    refit = nd.fit_time_grid(
        fit.sampler, score, VP, (2,), key=jr.key(5), reference=nd.DPMSolverMultistep(30, order=3),
        batches=1, batch_size=32, iterations=5,
    )  # fmt: skip
    np.testing.assert_array_equal(refit.sampler.time_grid.shifts, fit.sampler.time_grid.shifts)  # pyright: ignore[reportAttributeAccessIssue]
    assert float(refit.final_loss) <= float(refit.initial_loss)


def test_bad_shifts_and_decouple_raise():
    message = r"OptimizedGrid: `shifts` must have shape \(steps \+ 1,\) = \(6,\).*got \(5,\)"
    with pytest.raises(ValueError, match=message):
        nd.OptimizedGrid(jnp.zeros(5), jnp.zeros(5))
    with pytest.raises(ValueError, match=r"`shifts` must have shape.*got \(2, 6\)"):
        nd.OptimizedGrid(jnp.zeros(5), jnp.zeros((2, 6)))
    with pytest.raises(TypeError, match=r"fit_time_grid: `decouple` must be True or False, got 1"):
        nd.fit_time_grid(
            nd.DDIM(5),
            _mixture(),
            VP,
            (2,),
            key=jr.key(0),
            decouple=1,  # pyright: ignore[reportArgumentType]
        )
