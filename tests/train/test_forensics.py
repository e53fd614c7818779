"""NaN forensics: a step with a non-finite loss or gradient is refused, and the error says
where (step, parameter leaves, ensemble members), why (forward or backward pass, the
solver's outcome) and what is left (the model before the step, the last checkpoint)."""

import diffrax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest

import neurde

SGD = optax.sgd(0.1)


def _sqrt_loss(model, s, key):
    # d/dw sqrt(s + w^2) = w / sqrt(s + w^2): 0 at w = 0 while s > 0, but 0/0 = NaN at s = 0,
    # where the loss itself is still finite. `w` stays 0; `b` trains.
    del key
    return jnp.mean(jnp.sqrt(s + model["w"] ** 2)) + (model["b"] - 1.0) ** 2


def _model():
    return {"w": jnp.zeros(3), "b": jnp.zeros(())}


def _batches(bad_step):
    return iter([jnp.zeros(()) if i == bad_step else jnp.ones(()) for i in range(10)])


def test_a_non_finite_gradient_with_a_finite_loss_is_caught(tmp_path):
    # Before the forensics, `fit` checked the loss only: this step would write NaN into `w`.
    step = neurde.make_step(_sqrt_loss, SGD)
    m = _model()
    bad, _, loss, _ = step(m, neurde.init_optimizer(SGD, m), jnp.zeros(()), jr.key(0))
    assert np.isfinite(loss) and np.isnan(np.asarray(bad["w"])).all()

    with pytest.raises(neurde.NonFiniteGradientError) as e:
        neurde.fit(
            _model(),
            _sqrt_loss,
            _batches(bad_step=5),
            steps=8,
            key=jr.key(0),
            optim=SGD,
            progress=False,
            checkpoint_dir=tmp_path,
            checkpoint_every=2,
        )
    err = e.value
    message = str(err)
    assert isinstance(err, neurde.TrainingError) and err.step == 5
    assert "the gradients became non-finite at step 5 while the loss was finite" in message
    assert "the backward pass failed" in message
    assert "Non-finite gradients in 1 of 2 parameter leaves: ['w']." in message
    assert "No solver outcome was reported" in message
    checkpoint = tmp_path / "step-000000004.ckpt"
    assert f"The last good checkpoint is {str(checkpoint)!r}." in message
    assert err.leaves == ["['w']"] and err.checkpoint == checkpoint and err.result is None
    # `.model` is the model after 5 good steps: finite, `b` trained by SGD on (b - 1)^2.
    np.testing.assert_array_equal(err.model["w"], np.zeros(3))
    np.testing.assert_allclose(err.model["b"], 1 - 0.8**5, rtol=1e-6)
    assert len(err.history.loss) == 5


def test_a_non_finite_loss_reports_the_forward_pass_and_the_gradients():
    def loss(model, s, key):
        return _sqrt_loss(model, s, key) + jnp.log(s)  # log(0) = -inf: the forward pass

    with pytest.raises(neurde.NonFiniteLossError) as e:
        neurde.fit(_model(), loss, _batches(2), steps=4, key=jr.key(0), optim=SGD, progress=False)
    message = str(e.value)
    assert "the loss became non-finite (-inf) at step 2: the forward pass failed" in message
    # The gradient of log(s) is not taken (s is data); that of sqrt(0 + w^2) is NaN.
    assert "Non-finite gradients in 1 of 2 parameter leaves: ['w']." in message
    assert "Checkpointing is off (pass `checkpoint_dir`" in message
    assert e.value.checkpoint is None


def test_the_solver_outcome_is_reported():
    # A solve that runs out of steps; as under EQX_ON_ERROR=nan, the failure shows as NaN.
    field = neurde.LinearField(jnp.array([[0.0, 1.0], [-1.0, 0.0]]))
    model = neurde.NeuralODE(field, t1=1.0, solver=neurde.RK4(), dt0=0.1, max_steps=8, throw=False)

    def loss(model, y0, key):
        del key
        sol = model.solve(y0)
        ok = sol.result == diffrax.RESULTS.successful
        return jnp.sum(jnp.where(ok, sol.ys, jnp.nan) ** 2), {"result": sol.result}

    with pytest.raises(neurde.NonFiniteLossError) as e:
        neurde.fit(model, loss, jnp.ones(2), steps=2, key=jr.key(0), optim=SGD, progress=False)
    message = str(e.value)
    assert "at step 0: the forward pass failed" in message
    assert (
        "The solver failed in 1 of 1 solve(s) (code 1: The maximum number of solver steps"
        in message
    )
    # `where` sends no gradient through the failed branch: here only the forward pass failed.
    assert "Every gradient was finite." in message
    np.testing.assert_array_equal(e.value.result, 1)


def test_an_ensemble_names_the_members():
    # Member 1 starts at w = 0, where the gradient at s = 0 is NaN; the others do not.
    ensemble = {
        "w": jnp.array([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [2.0, 2.0, 2.0]]),
        "b": jnp.zeros(3),
    }
    with pytest.raises(neurde.NonFiniteGradientError) as e:
        neurde.fit(
            ensemble,
            _sqrt_loss,
            _batches(1),
            steps=3,
            key=jr.key(0),
            optim=SGD,
            ensemble=True,
            progress=False,
        )
    message = str(e.value)
    assert "at step 1 while the loss was finite" in message
    assert (
        "Non-finite gradients in 1 of 2 parameter leaves: ['w']. Ensemble members affected: [1]."
        in message
    )
    # The good step 0 was kept for every member.
    np.testing.assert_allclose(e.value.model["b"], np.full(3, 0.2), rtol=1e-6)
