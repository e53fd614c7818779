"""ODERNN and TimeGapRNN: the recurrences against hand-rolled references (matrix exponentials
between observations, masked GRU updates), gradients against finite differences, the
family's behavior (vmap, fit, ensembles, checkpoints, noise), `IrregularSeries`,
`union_grid`, the periodic data, and the errors."""

import equinox as eqx
import jax
import jax.flatten_util
import jax.numpy as jnp
import jax.random as jr
import jax.scipy.linalg
import numpy as np
import optax
import pytest
from conftest import central_differences

import neurde
from neurde import noise
from neurde.continuous import ODERNN, IrregularSeries, TimeGapRNN, union_grid

A = np.array([[-0.3, -1.0, 0.2], [1.0, -0.1, 0.0], [0.1, 0.4, -0.5]])
TIMES = np.array([0.1, 0.4, 0.5, 0.9, 1.3])
VALUES = np.array([[0.5, -1.0], [0.2, 0.3], [9.0, 9.0], [-0.4, 0.8], [1.0, 0.1]])
# Step 2 is unobserved (its values must not matter); steps 1 and 3 are partly observed.
MASK = np.array([[1, 1], [1, 0], [0, 0], [0, 1], [1, 1]], float)
TIGHT = {"rtol": 1e-10, "atol": 1e-12}


# One compiled call shared by the tests (eager calls would re-trace the recurrence's scan).
_call = eqx.filter_jit(lambda model, series, ts=None, key=None: model(series, ts, key=key))


def _series(dtype=jnp.float32):
    return IrregularSeries(
        jnp.asarray(TIMES, dtype), jnp.asarray(VALUES, dtype), jnp.asarray(MASK, dtype)
    )


def _linear_odernn(**kw):
    return ODERNN(2, 3, 2, field=neurde.LinearField(A), key=jr.key(0), **{**TIGHT, **kw})


def _reference(model, ts, reverse=False):
    """h(t) from the observations strictly before t (at or after, reversed), by hand."""
    out = []
    for t in np.asarray(ts):
        order = range(len(TIMES) - 1, -1, -1) if reverse else range(len(TIMES))
        keep = [i for i in order if (TIMES[i] >= t if reverse else TIMES[i] < t)]
        h, t_prev = jnp.zeros(3, jnp.float64), None
        for i in keep:
            if not MASK[i].any():
                continue
            if t_prev is not None:
                h = jax.scipy.linalg.expm(A * (TIMES[i] - t_prev)) @ h
            x = jnp.concatenate([jnp.asarray(VALUES[i] * MASK[i]), jnp.asarray(MASK[i])])
            h, t_prev = model.cell(x, h), TIMES[i]
        if t_prev is not None:
            h = jax.scipy.linalg.expm(A * (t - t_prev)) @ h
        out.append(h)
    return jnp.stack(out)


def test_odernn_matches_matrix_exponentials_and_masked_gru_updates():
    with jax.enable_x64(True):
        model = _linear_odernn()
        series = _series(jnp.float64)
        ts = jnp.array([0.1, 0.45, 0.9, 1.3, 1.8, 2.5])
        hs, _, _ = model.hidden(series, ts)
        np.testing.assert_allclose(hs, _reference(model, ts), rtol=1e-8, atol=1e-10)
        out = _call(model, series, ts)
        np.testing.assert_allclose(out, jax.vmap(model.readout)(hs), rtol=1e-12)
        # Default: one-step-ahead predictions at the observation times.
        np.testing.assert_allclose(model(series), model(series, series.times), rtol=1e-12)
        # The unobserved values of step 2 do not matter; an observation only affects later
        # predictions, never the one at its own time.
        changed = IrregularSeries(series.times, series.values.at[2].set(-5.0), series.mask)
        np.testing.assert_array_equal(_call(model, changed, ts), out)
        changed = IrregularSeries(series.times, series.values.at[3, 1].add(1.0), series.mask)
        moved = np.abs(np.asarray(_call(model, changed, ts) - out)).max(axis=1)
        assert moved[2] == 0 and moved[3] > 1e-3


def test_odernn_reversed_reads_the_series_back_in_time():
    with jax.enable_x64(True):
        model = _linear_odernn()
        ts = jnp.array([0.0, 0.5, 1.0])
        hs, _, _ = model.hidden(_series(jnp.float64), ts, reverse=True)
        np.testing.assert_allclose(hs, _reference(model, ts, True), rtol=1e-8, atol=1e-10)


def test_stats_add_up_over_the_intervals_and_extras_are_summed():
    model = ODERNN(2, 3, key=jr.key(1), solver=neurde.RK4(), dt0=0.25)
    series = _series()
    solution = model.solve(series, jnp.array([1.5, 2.0]))
    intervals = len(TIMES) + 2  # one inner solve per merged grid time
    assert int(solution.stats["nfe"]) == intervals * 4 * 4
    assert solution.ys.shape == (2, 2) and solution.extras == {}
    penalized = noise.rnode(model, estimator="exact")
    solution = penalized.solve(series, jnp.array([1.5]))
    assert set(solution.extras) == {"kinetic", "jacobian"}
    assert float(solution.extras["kinetic"]) > 0


def _time_gap_reference(model, ts):
    out = []
    for t in np.asarray(ts):
        h, t_last = jnp.zeros(3), TIMES[0]
        for i in range(len(TIMES)):
            if TIMES[i] < t and MASK[i].any():
                x = np.concatenate([VALUES[i] * MASK[i], MASK[i], [TIMES[i] - t_last]])
                h, t_last = model.cell(jnp.asarray(x, jnp.float32), h), TIMES[i]
        x = jnp.asarray([0.0, 0.0, 0.0, 0.0, t - t_last], jnp.float32)
        out.append(model.readout(model.cell(x, h)))
    return jnp.stack(out)


def test_time_gap_rnn_matches_its_recurrence():
    model = TimeGapRNN(2, 3, key=jr.key(2))
    ts = jnp.array([0.45, 0.9, 1.3, 2.0])
    np.testing.assert_allclose(model(_series(), ts), _time_gap_reference(model, ts), rtol=1e-5)
    solution = model.solve(_series(), ts)
    assert int(solution.stats["nfe"]) == len(TIMES) + 4 and solution.extras == {}


def test_gradient_matches_finite_differences():
    with jax.enable_x64(True):
        model = ODERNN(2, 2, 1, width_size=3, key=jr.key(3), **TIGHT)
        model = jax.tree.map(
            lambda x: x.astype(jnp.float64) if eqx.is_inexact_array(x) else x, model
        )
        series = _series(jnp.float64)
        ts = jnp.array([0.9, 1.6])
        # `trainable`: not the tolerances, which a difference step of 1e-6 would make negative.
        params, static = eqx.partition(model, neurde.trainable(model))
        flat, unflatten = jax.flatten_util.ravel_pytree(params)

        def loss(p):
            m = eqx.combine(unflatten(p), static)
            return jnp.sum(m(series, ts) ** 2)

        loss = jax.jit(loss)
        grad = jax.grad(loss)(flat)
        fd = central_differences(loss, flat)
        np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-8)


def test_vmap_over_a_union_grid_batch_equals_single_calls():
    batch = union_grid([(TIMES, VALUES), (np.array([0.2, 0.4, 1.0]), np.ones((3, 2)))])
    assert batch.times.shape == (2, 7) and batch.values.shape == (2, 7, 2)
    np.testing.assert_array_equal(batch.mask[1, :, 0], [0, 1, 1, 0, 0, 1, 0])
    np.testing.assert_allclose(batch.values[0][batch.mask[0, :, 0] > 0], VALUES, rtol=1e-6)
    ts = jnp.array([1.5, 2.0])
    for model in (ODERNN(2, 3, key=jr.key(4)), TimeGapRNN(2, 3, key=jr.key(4))):
        out = jax.vmap(lambda s, m=model: m(s, ts))(batch)
        for i in range(2):
            single = model(jax.tree.map(lambda x, i=i: x[i], batch), ts)
            np.testing.assert_allclose(out[i], single, rtol=1e-5, atol=1e-6)


def _forecast_data():
    traj = neurde.data.periodic(16, times=12, keep_prob=0.6, key=jr.key(5))
    series = neurde.data.irregular_series(traj)
    first = jax.tree.map(lambda x: x[:, :6], series)
    second = jax.tree.map(lambda x: x[:, 6:], series)
    return first, second


def _loss(model, batch, key):
    del key
    first, second = batch
    pred = jax.vmap(model)(first, second.times)
    return jnp.sum(second.mask * (pred - second.values) ** 2) / jnp.sum(second.mask)


def test_periodic_data_and_irregular_series():
    traj = neurde.data.periodic(4, times=10, keep_prob=0.5, noise_std=0.0, key=jr.key(0))
    assert traj.ts.shape == (10,) and traj.ts[0] == 0 and bool(jnp.all(jnp.diff(traj.ts) > 0))
    assert bool(jnp.all(traj.mask[:, 0]))
    np.testing.assert_array_equal(traj.ys, traj.clean)
    assert float(jnp.max(jnp.abs(traj.ys))) <= 1.5
    series = neurde.data.irregular_series(traj)
    assert series.values.shape == (4, 10, 1) and series.mask.shape == (4, 10, 1)
    with pytest.raises(ValueError, match="keep_prob"):
        neurde.data.periodic(4, keep_prob=0.0, key=jr.key(0))
    with pytest.raises(TypeError, match="Trajectories"):
        neurde.data.irregular_series(series)


@pytest.mark.parametrize("cls", [ODERNN, TimeGapRNN])
def test_fit_decreases_the_forecast_loss(cls):
    kw = {"solver": neurde.RK4(), "dt0": 0.5} if cls is ODERNN else {}
    model = cls(1, 8, key=jr.key(6), **kw)
    result = neurde.fit(
        model,
        _loss,
        _forecast_data(),
        steps=30,
        key=jr.key(7),
        progress=False,
        optim=optax.adam(1e-2),
    )
    losses = result.history.loss
    assert float(np.mean(losses[-5:])) < 0.95 * float(np.mean(losses[:5]))


def test_ensemble_and_checkpoint(tmp_path):
    ensemble = neurde.make_ensemble(lambda k: ODERNN(2, 3, key=k), 3, key=jr.key(8))
    ts = jnp.array([1.5])
    out = eqx.filter_vmap(lambda m: m(_series(), ts))(ensemble)
    assert out.shape == (3, 1, 2)
    assert float(jnp.std(out[:, 0, 0])) > 0  # the members differ
    model = ODERNN(2, 3, key=jr.key(9))
    neurde.save(tmp_path / "odernn.eqx", model)
    loaded = neurde.load(tmp_path / "odernn.eqx", ODERNN(2, 3, key=jr.key(10)))
    np.testing.assert_array_equal(_call(loaded, _series(), ts), _call(model, _series(), ts))


def test_noise_acts_on_the_inner_ode():
    model = ODERNN(2, 3, key=jr.key(11), solver=neurde.RK4(), dt0=0.25)
    noisy = noise.additive(model, 0.3, dt0=0.25)
    by_hand = eqx.tree_at(lambda m: m.model, model, noise.additive(model.model, 0.3, dt0=0.25))
    ts, key = jnp.array([1.5, 2.0]), jr.key(12)
    out = _call(noisy, _series(), ts, key)
    np.testing.assert_array_equal(out, _call(by_hand, _series(), ts, key))
    plain = _call(model, _series(), ts)
    assert np.abs(np.asarray(out - plain)).max() > 1e-3
    # Each interval draws its own Brownian motion from the call's key.
    other = _call(noisy, _series(), ts, jr.key(13))
    assert np.abs(np.asarray(other - out)).max() > 1e-4
    quiet = eqx.nn.inference_mode(noisy)
    np.testing.assert_allclose(_call(quiet, _series(), ts), plain, rtol=1e-6)


def test_series_errors():
    with pytest.raises(TypeError, match="IrregularSeries: `mask` is missing"):
        IrregularSeries(TIMES, VALUES)
    with pytest.raises(ValueError, match=r"`mask` must have the shape of `values` \(5, 2\)"):
        IrregularSeries(TIMES, VALUES, MASK[:, 0])
    with pytest.raises(ValueError, match=r"`values` shape \(N, d\).*values\[:, None\]"):
        IrregularSeries(TIMES, VALUES[:, 0], MASK[:, 0])
    with pytest.raises(ValueError, match="`times` must be strictly increasing"):
        IrregularSeries(TIMES[::-1], VALUES, MASK)
    with pytest.raises(Exception, match="`times` must be strictly increasing"):
        jax.jit(IrregularSeries)(jnp.asarray(TIMES[::-1]), VALUES, MASK).times.block_until_ready()
    with pytest.raises(ValueError, match="union_grid: series 1"):
        union_grid([(TIMES, VALUES), (TIMES, VALUES[:, :1])])
    with pytest.raises(ValueError, match="union_grid: `series` must be a non-empty list"):
        union_grid([])


def test_model_errors():
    model = ODERNN(2, 3, key=jr.key(0))
    with pytest.raises(ValueError, match="ODERNN: `hidden_size` must be a positive int, got 0"):
        ODERNN(2, 0, key=jr.key(0))
    with pytest.raises(ValueError, match="TimeGapRNN: `data_size` must be a positive int"):
        TimeGapRNN(-1, 3, key=jr.key(0))
    with pytest.raises(ValueError, match="ODERNN: `t1` cannot be set"):
        ODERNN(2, 3, key=jr.key(0), t1=2.0)
    with pytest.raises(
        TypeError, match=r"ODERNN: `y0` must be a `neurde\.continuous\.IrregularSeries`"
    ):
        model(jnp.zeros((5, 2)))
    with pytest.raises(ValueError, match="TimeGapRNN: `ts` must be a non-empty 1-D array"):
        TimeGapRNN(2, 3, key=jr.key(0))(_series(), jnp.zeros((2, 2)))
    with pytest.raises(ValueError, match="ODERNN: `ts` must be strictly increasing"):
        model(_series(), jnp.array([2.0, 1.0]))
