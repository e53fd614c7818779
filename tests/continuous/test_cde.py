"""Neural CDEs: control paths, closed forms, invariance, gradients, the model interface, errors."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest
from conftest import central_differences
from jax.flatten_util import ravel_pytree

import neurde
from neurde import noise
from neurde.continuous import NeuralCDE, control_path
from neurde.data import spiral_directions

TIMES = jnp.array([0.0, 0.3, 0.5, 1.1, 1.4, 2.0])
VALUES = jnp.stack([jnp.sin(2 * TIMES), jnp.cos(TIMES) ** 2], axis=1)
TIGHT = dict(rtol=1e-10, atol=1e-10, max_steps=100_000)


def _small(key: int | jax.Array = 0, **kwargs):
    # Constant steps: outputs are then smooth in the inputs and identical under vmap to
    # rounding (adaptive steps may be placed differently, within the tolerances).
    kwargs = {"solver": neurde.RK4(), "dt0": 0.05, **kwargs}
    return NeuralCDE(
        2, 3, 2, width_size=8, depth=1, key=jr.key(key) if isinstance(key, int) else key, **kwargs
    )


def _constant_field(matrix):
    return neurde.FunctionField(lambda t, z, args: matrix)


def _batch(n=4):
    data = spiral_directions(n, 1, length=12, key=jr.key(3))
    x = data.x_train
    return jax.vmap(lambda s: control_path(s[:, 0], s[:, 1:]))(x), data.y_train


# ---------------------------------------------------------------- control paths


def test_linear_path_interpolates_and_fills_missing_values():
    values = VALUES.at[2, 0].set(jnp.nan).at[0, 1].set(jnp.nan).at[5, 1].set(jnp.nan)
    path = control_path(TIMES, values, interpolation="linear")
    at_knots = jax.vmap(path.evaluate)(path.knots)
    np.testing.assert_allclose(at_knots[:, 0], TIMES, rtol=1e-6)  # time is channel 0
    np.testing.assert_allclose(at_knots[[0, 1, 3, 4, 5], 1], values[[0, 1, 3, 4, 5], 0], rtol=1e-6)
    # The gap at t=0.5 is bridged linearly in time between t=0.3 and t=1.1.
    w = (0.5 - 0.3) / (1.1 - 0.3)
    np.testing.assert_allclose(at_knots[2, 1], (1 - w) * values[1, 0] + w * values[3, 0], rtol=1e-6)
    # Before the first and after the last observation a channel holds its nearest value.
    np.testing.assert_allclose(at_knots[0, 2], values[1, 1], rtol=1e-6)
    np.testing.assert_allclose(at_knots[5, 2], values[4, 1], rtol=1e-6)


def test_hermite_path_interpolates_is_smooth_and_causal():
    path = control_path(TIMES, VALUES)
    np.testing.assert_allclose(jax.vmap(path.evaluate)(path.knots)[:, 1:], VALUES, rtol=1e-5)
    # Continuous derivative at an interior knot (left and right limits agree).
    s = path.knots[3]
    left = path.spline().derivative(s, left=True)
    right = path.spline().derivative(s + 1e-7, left=False)
    np.testing.assert_allclose(left, right, rtol=1e-3, atol=1e-3)
    # Backward differences: changing the observation at index 4 leaves the path up to
    # the knot before it (index 3) unchanged.
    changed = control_path(TIMES, VALUES.at[4].add(1.0))
    early = jnp.linspace(0.0, float(path.knots[3]), 17)
    np.testing.assert_allclose(jax.vmap(changed.evaluate)(early), jax.vmap(path.evaluate)(early))
    late = float(path.knots[4])
    assert not np.allclose(changed.evaluate(late), path.evaluate(late))


def test_mask_equals_nan_and_intensity_counts_observations():
    mask = jnp.ones(VALUES.shape, bool).at[2, 0].set(False).at[4, 1].set(False)
    masked = control_path(TIMES, VALUES, mask=mask, intensity=True)
    nans = control_path(TIMES, jnp.where(mask, VALUES, jnp.nan), intensity=True)
    assert masked.channels == 5
    for a, b in zip(masked.coeffs, nans.coeffs, strict=True):
        np.testing.assert_array_equal(a, b)
    counts = masked.evaluate(1.0)[3:]
    np.testing.assert_allclose(counts, jnp.sum(mask, axis=0))


# ---------------------------------------------------------------- numerics


@pytest.mark.parametrize("interpolation", ["hermite", "linear"])
def test_constant_field_closed_form(interpolation):
    """With f(z) = A constant, z(t_n) = z(t_0) + A (X(t_n) - X(t_0))."""
    with jax.enable_x64(True):
        times = TIMES.astype(jnp.float64)
        values = VALUES.astype(jnp.float64).at[0, 0].set(jnp.nan).at[5, 1].set(jnp.nan)
        matrix = jr.normal(jr.key(1), (3, 3), jnp.float64)
        model = NeuralCDE(
            2, 3, 3, field=_constant_field(matrix), readout=lambda z: z,
            interpolation=interpolation, key=jr.key(0), **TIGHT,
        )  # fmt: skip
        path = control_path(times, values, interpolation=interpolation)
        z0 = model.initial(path.evaluate(0.0))
        # X(t_0) takes channel 0's first observation (t=0.3), X(t_n) channel 1's last (t=1.4).
        x_start = jnp.array([0.0, values[1, 0], values[0, 1]])
        x_end = jnp.array([2.0, values[5, 0], values[4, 1]])
        # Tsit5 meets the kinks of d^2X/ds^2 at the knots: 1e-7 at rtol = atol = 1e-10.
        np.testing.assert_allclose(model(path), z0 + matrix @ (x_end - x_start), rtol=1e-7)


def test_reparameterization_invariance():
    """A CDE's solution depends on the path, not its speed: warping the times of a linear
    path (without the time channel) leaves every output unchanged."""
    with jax.enable_x64(True):
        times = TIMES.astype(jnp.float64)
        warped = jnp.exp(2 * times) - 7.0
        values = VALUES.astype(jnp.float64)
        model = NeuralCDE(
            2, 3, 2, width_size=8, interpolation="linear", include_time=False,
            output="sequence", key=jr.key(2), **TIGHT,
        )  # fmt: skip
        out = model((times, values))
        out_warped = model((warped, values))
        np.testing.assert_allclose(out_warped, out, rtol=1e-7, atol=1e-9)
        assert not np.allclose(model((times**2, values[::-1])), out)


@pytest.mark.parametrize("wrt", ["parameters", "values"])
def test_gradient_matches_central_differences(wrt):
    with jax.enable_x64(True):
        # Constant steps, so that the finite differences see a smooth function; with
        # adaptive steps the solver's ~1e-8 error at the Hermite knots would swamp them.
        model = NeuralCDE(
            2, 2, 2, width_size=4, depth=1, solver=neurde.RK4(), dt0=1 / 32, key=jr.key(4)
        )
        model = jax.tree.map(lambda x: x.astype(jnp.float64) if eqx.is_array(x) else x, model)
        times, values = TIMES.astype(jnp.float64), VALUES.astype(jnp.float64)
        params, static = eqx.partition(model, eqx.is_array)
        target = params if wrt == "parameters" else values
        flat, unravel = ravel_pytree(target)

        @jax.jit
        def loss(x):
            if wrt == "parameters":
                m, v = eqx.combine(unravel(x), static), values
            else:
                m, v = model, unravel(x)
            return jnp.sum(jnp.sin(m((times, v.at[2, 1].set(jnp.nan)))))

        grad = jax.grad(loss)(flat)
        np.testing.assert_allclose(grad, central_differences(loss, flat), rtol=1e-5, atol=1e-7)


# Slow only in compile time (~15 s CPU: a forward, a reverse and a backward solve in float64).
@pytest.mark.slow
def test_continuous_adjoint_matches_backprop():
    """The paper's memory-efficient adjoint: gradients in the parameters and in the data
    (which reaches the solve through `args`) agree with backpropagation through the solver."""
    with jax.enable_x64(True):
        times, values = TIMES.astype(jnp.float64), VALUES.astype(jnp.float64)
        grads = []
        for adjoint in ("backprop", "adjoint"):
            model = NeuralCDE(
                2, 3, 2, width_size=8, depth=1, adjoint=adjoint, solver=neurde.RK4(),
                dt0=1 / 64, key=jr.key(6),
            )  # fmt: skip
            params, static = eqx.partition(model, eqx.is_inexact_array)

            def loss(params, values, static=static):
                return jnp.sum(eqx.combine(params, static)((times, values)) ** 2)

            grads.append(jax.grad(loss, argnums=(0, 1))(params, values))
        for a, b in zip(jax.tree.leaves(grads[0]), jax.tree.leaves(grads[1]), strict=True):
            # The backward RK4 solve differs from the forward one by O(dt0^4).
            np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- outputs


def test_sequence_output_and_save_times():
    final = _small()
    sequence = _small(output="sequence")
    path = control_path(TIMES, VALUES)
    out = sequence(path)
    assert out.shape == (len(TIMES), 2)
    np.testing.assert_allclose(out[-1], final(path), rtol=1e-5)
    at = sequence(path, TIMES[jnp.array([1, 4])])
    np.testing.assert_allclose(at, out[jnp.array([1, 4])], rtol=1e-5)
    solution = sequence.solve(path)
    np.testing.assert_array_equal(solution.ts, TIMES)
    assert int(solution.stats["nfe"]) > 0


def test_tuple_input_equals_path_and_vmap():
    model = _small()
    np.testing.assert_allclose(model((TIMES, VALUES)), model(control_path(TIMES, VALUES)))
    mask = jnp.ones(VALUES.shape, bool).at[3, 1].set(False)
    masked = model(control_path(TIMES, VALUES, mask=mask))
    np.testing.assert_allclose(model((TIMES, VALUES, mask)), masked)
    assert not np.allclose(masked, model((TIMES, VALUES)))
    paths, _ = _batch()
    batched = jax.vmap(model)(paths)
    one = model(jax.tree.map(lambda x: x[1], paths))
    np.testing.assert_allclose(batched[1], one, rtol=1e-5)


# ---------------------------------------------------------------- the neurde family


def test_fit_decreases_loss():
    paths, labels = _batch(16)

    def loss(model, batch, key):
        p, y = batch
        logits = jax.vmap(model)(p)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    result = neurde.fit(
        _small(), loss, (paths, labels), steps=15, optim=optax.adam(3e-2),
        key=jr.key(0), progress=False,
    )  # fmt: skip
    assert result.history.loss[-1] < 0.7 * result.history.loss[0]


def test_ensemble_and_checkpoint(tmp_path):
    path = control_path(TIMES, VALUES)
    ensemble = neurde.make_ensemble(lambda k: _small(k), 3, key=jr.key(5))
    outs = eqx.filter_vmap(lambda m: m(path))(ensemble)
    assert outs.shape == (3, 2)
    np.testing.assert_allclose(outs[2], neurde.ensemble_member(ensemble, 2)(path), rtol=1e-5)
    assert not np.allclose(outs[0], outs[1])
    model = _small()
    neurde.save(tmp_path / "cde.eqx", model)
    loaded = neurde.load(tmp_path / "cde.eqx", _small(key=9))
    np.testing.assert_array_equal(loaded(path), model(path))


def test_noise_acts_on_the_inner_ode():
    model = _small()
    path = control_path(TIMES, VALUES)
    noisy = noise.additive(model, 0.3, dt0=0.05)
    assert isinstance(noisy, NeuralCDE)
    assert isinstance(noisy.model, noise.NoisyModel)
    key = jr.key(7)
    inner = eqx.tree_at(lambda m: m.model, model, noise.additive(model.model, 0.3, dt0=0.05))
    np.testing.assert_array_equal(noisy(path, key=key), inner(path, key=key))
    assert not np.allclose(noisy(path, key=key), model(path))
    np.testing.assert_allclose(eqx.nn.inference_mode(noisy)(path), model(path), rtol=1e-6)


def test_rnode_penalties_pass_through():
    model = _small()
    path = control_path(TIMES, VALUES)
    solution = noise.rnode(model, estimator="exact").solve(path)
    np.testing.assert_allclose(solution.ys, model(path), rtol=1e-5)
    assert float(solution.extras["kinetic"]) > 0 and float(solution.extras["jacobian"]) > 0


# ---------------------------------------------------------------- errors


def test_series_errors():
    with pytest.raises(ValueError, match=r"control_path: expected `times` of shape \(n,\)"):
        control_path(TIMES[:-1], VALUES)
    with pytest.raises(ValueError, match="single channel as `values\\[:, None\\]`"):
        control_path(TIMES, VALUES[:, 0])
    with pytest.raises(ValueError, match="control_path: `times` must be strictly increasing"):
        control_path(TIMES.at[3].set(0.2), VALUES)
    with pytest.raises(ValueError, match="at least 2 observation times, got 1"):
        control_path(TIMES[:1], VALUES[:1])
    with pytest.raises(TypeError, match="control_path: `values` must be floating"):
        control_path(TIMES, jnp.ones((6, 2), jnp.int32))
    with pytest.raises(ValueError, match=r"has no observation .* Empty channels: \[1\]"):
        control_path(TIMES, VALUES.at[:, 1].set(jnp.nan))
    with pytest.raises(ValueError, match="unknown `interpolation='spline'`"):
        control_path(TIMES, VALUES, interpolation="spline")  # pyright: ignore


def test_run_time_errors_under_jit():
    build = jax.jit(control_path)
    with pytest.raises(Exception, match="`times` must be strictly increasing"):
        jax.block_until_ready(build(TIMES.at[3].set(0.2), VALUES).coeffs)
    with pytest.raises(Exception, match="a channel of `values` has no observation"):
        jax.block_until_ready(build(TIMES, VALUES.at[:, 0].set(jnp.nan)).coeffs)


@pytest.mark.parametrize("mask", [jnp.ones((6, 1), bool), jnp.ones((6, 2)), jnp.ones((5, 2), bool)])
def test_mask_errors(mask):
    with pytest.raises(ValueError, match="`mask` must be a boolean array of the shape"):
        control_path(TIMES, VALUES, mask=mask)


def test_model_errors():
    path = control_path(TIMES, VALUES)
    with pytest.raises(ValueError, match=r"path has 3 channels .* model expects 4 channels"):
        NeuralCDE(3, 3, 2, width_size=8, key=jr.key(0))(path)
    with pytest.raises(ValueError, match="model expects 3 channels"):
        _small()(control_path(TIMES, VALUES, interpolation="linear"))
    with pytest.raises(TypeError, match="NeuralCDE: the input must be a `ControlPath`"):
        _small()(VALUES)
    with pytest.raises(ValueError, match="NeuralCDE: got t1, but the CDE is solved on"):
        _small(t1=2.0)
    with pytest.raises(ValueError, match="unknown `output='last'`"):
        _small(output="last")
    with pytest.raises(ValueError, match="`hidden_size` must be an integer >= 1, got 0"):
        NeuralCDE(2, 0, 2, key=jr.key(0))
    bad = NeuralCDE(2, 3, 2, field=_constant_field(jnp.ones((3, 2))), key=jr.key(0))
    with pytest.raises(ValueError, match=r"CDE field returns shape \(3, 2\) .* need \(3, 3\)"):
        bad(path)
    with pytest.raises(ValueError, match=r"`ts` must be a non-empty 1-D array .* shape \(\)"):
        _small()(path, 1.0)
    with pytest.raises(ValueError, match="`ts` must lie between the first and last"):
        _small()(path, jnp.array([0.5, 2.5]))


# ---------------------------------------------------------------- data


def test_spiral_directions():
    data = spiral_directions(64, 32, length=40, drop=0.3, key=jr.key(0))
    assert data.x_train.shape == (64, 40, 3) and data.x_test.shape == (32, 40, 3)
    x, y = np.asarray(data.x_train), np.asarray(data.y_train)
    assert 0 < y.mean() < 1
    assert np.all(np.diff(x[:, :, 0], axis=1) > 0) and not np.isnan(x[:, :, 0]).any()
    assert not np.allclose(x[0, :, 0], x[1, :, 0])  # each series has its own times
    dropped = np.isnan(x[:, 1:, 1]).mean()
    assert 0.25 < dropped < 0.35 and not np.isnan(x[:, 0, 1]).any()
    # The label is the turning direction: the sign of the signed area swept (cross product).
    for series, label in zip(x, y, strict=True):
        p = series[~np.isnan(series[:, 1]), 1:]
        swept = np.sum(p[:-1, 0] * p[1:, 1] - p[:-1, 1] * p[1:, 0])
        assert (swept < 0) == bool(label)
    with pytest.raises(ValueError, match=r"`drop` must lie in \[0, 1\)"):
        spiral_directions(4, 4, drop=1.0, key=jr.key(0))
    with pytest.raises(ValueError, match="`length` must be >= 3"):
        spiral_directions(4, 4, length=2, key=jr.key(0))


# ---------------------------------------------------------------- acceptance


@pytest.mark.slow
def test_acceptance_spiral_direction_with_dropped_observations():
    from neurde.experiments.zoo_cde import train_cde

    numbers = train_cde("quick", seed=0)
    assert numbers["hermite_accuracy"] >= 0.98
