"""`fit`: the training loop, its history, its guards and its determinism.

The loop is model-agnostic, so its mechanics are tested on a tiny regression model that
compiles in milliseconds; one test trains a neural ODE to a stated error.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest
import scipy.linalg

import neurde

W_TRUE = np.array([1.0, -2.0, 0.5], np.float32)


def _regression_data(n=32):
    x = np.asarray(jr.normal(jr.key(0), (n, 3)))
    return x, x @ W_TRUE


def _regression_model():
    return {"w": jnp.zeros(3), "b": jnp.zeros(())}


def _noisy_mse(model, batch, key):
    # Key-dependent, so that determinism covers the per-step keys as well as minibatches.
    x, y = batch
    noise = 0.1 * jr.normal(key, y.shape)
    return jnp.mean((x @ model["w"] + model["b"] - y - noise) ** 2)


def _mse(model, batch, key):
    del key
    x, y = batch
    return jnp.mean((x @ model["w"] + model["b"] - y) ** 2)


def _fit(data, loss_fn=_noisy_mse, **kwargs):
    kwargs = {"steps": 10, "key": jr.key(3), "optim": optax.sgd(0.05), "progress": False} | kwargs
    return neurde.fit(_regression_model(), loss_fn, data, **kwargs)


def _assert_trees_equal(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)


def test_fit_is_deterministic_for_a_fixed_key():
    data = _regression_data()
    first = _fit(data, batch_size=8)
    second = _fit(data, batch_size=8)
    other = _fit(data, batch_size=8, key=jr.key(4))
    np.testing.assert_array_equal(first.history.loss, second.history.loss)
    _assert_trees_equal(first.model, second.model)
    _assert_trees_equal(first.opt_state, second.opt_state)
    # The key is really used: another key gives other minibatches and noise.
    assert np.abs(np.asarray(first.history.loss) - np.asarray(other.history.loss)).max() > 1e-3


def test_history_and_callback():
    data = _regression_data()
    calls = []

    def callback(step, model):
        calls.append(step)
        return float(_mse(model, data, None))

    result = _fit(data, loss_fn=_mse, steps=7, eval_every=3, callback=callback)
    history = result.history
    assert len(history.loss) == len(history.time) == 7
    assert all(t > 0 for t in history.time)
    assert calls == [3, 6, 7]
    assert [s for s, _ in history.evals] == [3, 6, 7]
    # The evaluation after the last step sees the returned model (float32 round-off).
    np.testing.assert_allclose(history.evals[-1][1], _mse(result.model, data, None), rtol=1e-6)
    # Full-batch gradient descent on a quadratic: the loss decreases monotonically.
    assert np.all(np.diff(np.asarray(history.loss)) < 0)
    # With an evaluation interval that divides `steps`, the last step is evaluated once.
    result = _fit(data, loss_fn=_mse, steps=6, eval_every=3, callback=lambda s, m: s)
    assert result.history.evals == [(3, 3), (6, 6)]


def test_non_finite_loss_stops_with_the_last_good_model():
    x, y = _regression_data(24)
    batches = [(x[i : i + 4], y[i : i + 4]) for i in range(0, 24, 4)]
    poisoned = list(batches)
    poisoned[3] = (batches[3][0], batches[3][1].copy())
    poisoned[3][1][2] = np.nan

    with pytest.raises(neurde.NonFiniteLossError, match=r"non-finite \(nan\) at step 3\b") as e:
        _fit(iter(poisoned), steps=6)
    err = e.value
    assert isinstance(err, neurde.TrainingError)
    assert err.step == 3
    assert len(err.history.loss) == 3
    # `.model` is the model after steps 0, 1, 2: the same as training on those batches only.
    reference = _fit(iter(batches[:3]), steps=3)
    _assert_trees_equal(err.model, reference.model)
    _assert_trees_equal(err.opt_state, reference.opt_state)
    assert np.isfinite(float(_mse(err.model, batches[3], None)))
    assert float(jnp.abs(err.model["w"]).min()) > 0  # trained, not the initial zeros
    # The step it refused would have written NaN into the parameters.
    step = neurde.make_step(_noisy_mse, optax.sgd(0.05))
    bad_model, *_ = step(err.model, err.opt_state, poisoned[3], jr.key(0))
    assert np.isnan(np.asarray(bad_model["w"])).all()


def test_failing_step_raises_training_error():
    x, y = _regression_data(16)
    batches = [(x[i : i + 4], y[i : i + 4]) for i in range(0, 16, 4)]
    batches[2] = (batches[2][0] * 1e3, batches[2][1])

    def checked_mse(model, batch, key):
        x = eqx.error_if(batch[0], jnp.abs(batch[0]).max() > 100, "inputs out of range")
        return _mse(model, (x, batch[1]), key)

    with pytest.raises(neurde.TrainingError, match=r"(?s)step 2 failed.*inputs out of range") as e:
        _fit(iter(batches), loss_fn=checked_mse, steps=4)
    assert not isinstance(e.value, neurde.NonFiniteLossError)
    assert e.value.step == 2 and len(e.value.history.loss) == 2


@pytest.mark.parametrize("steps", [0, -1, 2.0])
def test_bad_steps(steps):
    with pytest.raises(ValueError, match=rf"`steps` must be an integer >= 1, got {steps}"):
        _fit(_regression_data(), steps=steps)


def test_bad_eval_every():
    with pytest.raises(ValueError, match=r"`eval_every` must be an integer >= 1, got 0"):
        _fit(_regression_data(), eval_every=0)


def test_batch_size_with_an_iterator():
    data = _regression_data()
    with pytest.raises(ValueError, match=r"`batch_size` applies to array data.*iterator"):
        _fit(iter([data]), batch_size=8)


def _shape_recording_loss(shapes):
    def loss_fn(model, x, key):
        del key
        shapes.append(x.shape)
        return jnp.mean((x @ model["w"] - 1.0) ** 2)

    return loss_fn


def test_a_single_array_is_minibatched():
    x, _ = _regression_data()
    as_array, as_tuple = [], []
    loss_fn = _shape_recording_loss(as_array)
    result = _fit(jnp.asarray(x), loss_fn=loss_fn, batch_size=8, steps=3)
    tuple_loss = _shape_recording_loss(as_tuple)
    reference = _fit(
        (jnp.asarray(x),), loss_fn=lambda m, b, k: tuple_loss(m, b[0], k), batch_size=8, steps=3
    )
    assert as_array == [(8, 3)]
    np.testing.assert_array_equal(result.history.loss, reference.history.loss)


def test_a_single_array_is_used_whole_without_batch_size():
    x, _ = _regression_data()
    shapes = []
    _fit(np.asarray(x), loss_fn=_shape_recording_loss(shapes), steps=3)
    assert shapes == [(32, 3)]


def test_fit_learns_a_linear_system():
    # A damped rotation; trajectories are exact (matrix exponential), the model starts at 0.
    a_true = np.array([[-0.1, 2.0], [-2.0, -0.1]])
    ts = np.linspace(0.0, 1.0, 6)
    y0 = np.asarray(jr.normal(jr.key(1), (32, 2)))
    ys = np.stack([y0 @ scipy.linalg.expm(a_true * t).T for t in ts], axis=1)
    data = (jnp.asarray(y0, jnp.float32), jnp.asarray(ys, jnp.float32))
    model = neurde.NeuralODE(
        neurde.LinearField(jnp.zeros((2, 2))), t1=1.0, solver=neurde.RK4(), dt0=0.05
    )

    def loss_fn(model, batch, key):
        del key
        y0, ys = batch
        sols = jax.vmap(lambda y: model.solve(y, jnp.asarray(ts)))(y0)
        return jnp.mean((sols.ys - ys) ** 2), {"nfe": sols.stats["nfe"]}

    def callback(step, model):
        return float(np.abs(np.asarray(model.field.matrix) - a_true).max())

    steps = 300
    result = neurde.fit(
        model,
        loss_fn,
        data,
        steps=steps,
        batch_size=16,
        key=jr.key(2),
        optim=optax.adam(0.05),
        callback=callback,
        eval_every=100,
        progress=False,
    )
    history = result.history
    assert len(history.loss) == len(history.time) == steps
    nfe = np.asarray(history.metrics["nfe"])
    assert nfe.shape == (steps, 16)
    # A constant step: every solve costs the same, 20 steps of 4 stages at least.
    assert np.all(nfe == nfe[0, 0]) and nfe[0, 0] >= 80
    errors = [e for _, e in history.evals]
    assert [s for s, _ in history.evals] == [100, 200, 300]
    assert errors[-1] < errors[0]
    # The data are exact and RK4 with dt = 0.05 is accurate to ~1e-7 here, so optimization
    # alone limits the fit (observed: max error 2e-6, loss 1e-13).
    assert errors[-1] < 1e-4, errors
    assert history.loss[-1] < 1e-9


def test_iterator_shorter_than_steps_is_a_clear_error():
    import jax.numpy as jnp
    import jax.random as jr

    import neurde

    def loss(model, batch, key):
        return jnp.sum((model["w"] - batch) ** 2)

    batches = iter([jnp.ones(2)] * 3)
    with pytest.raises(ValueError, match=r"ran out after 3 batches but `steps=5`"):
        neurde.fit({"w": jnp.zeros(2)}, loss, batches, steps=5, key=jr.key(0), progress=False)
