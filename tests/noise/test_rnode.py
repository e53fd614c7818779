"""RNODE: penalties against closed forms and quadrature, unbiased Hutchinson, gradients."""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest
import scipy.integrate
from conftest import central_differences
from jax.flatten_util import ravel_pytree

import neurde
from neurde._solve import _AugState, _state_only, _StateNorm
from neurde.noise.rnode import RNODE

# A^T A = 4.01 I, so ||A y(t)||^2 = 4.01 ||y(t)||^2 = 4.01 e^{-0.2 t} ||y0||^2.
A = np.array([[-0.1, 2.0], [-2.0, -0.1]])
T1 = 1.5


def _run(rnode, y0, key=None):
    """The state and the penalties of one call."""
    solution = rnode.solve(y0, key=key)
    return solution.ys, solution.extras


def _mlp_field(key, width=16):
    return neurde.MLPField(2, width, 1, time_dependent=True, activation=jnp.tanh, key=key)


def test_linear_field_closed_forms():
    # Tolerance: Dopri5 at rtol = atol = 1e-11 in float64; the penalties are integrated on
    # the same steps, so they match the closed forms to 1e-9 relative.
    with jax.enable_x64(True):
        model = neurde.NeuralODE(
            neurde.LinearField(A), solver=diffrax.Dopri5(), rtol=1e-11, atol=1e-11, t1=T1
        )
        rnode = RNODE(model, estimator="exact")
        y0 = jnp.array([1.0, -0.5])
        y1, pen = _run(rnode, y0)
        kinetic = 4.01 * float(y0 @ y0) * (1 - np.exp(-0.2 * T1)) / 0.2
        np.testing.assert_allclose(pen["kinetic"], kinetic, rtol=1e-9)
        np.testing.assert_allclose(pen["jacobian"], T1 * np.sum(A**2), rtol=1e-12)
        # Step-size control sees y only, so the trajectory and the cost are the plain ones.
        np.testing.assert_array_equal(y1, model(y0))
        assert int(rnode.solve(y0).stats["nfe"]) == int(model.solve(y0).stats["nfe"])
        # A call returns the state, as every model's does.
        np.testing.assert_array_equal(rnode(y0), y1)


def test_nonlinear_field_matches_quadrature():
    # A time-dependent tanh MLP. Reference: the plain solve saved at 2001 times and Simpson's
    # rule on ||f||^2 and on ||df/dy||_F^2 (from jax.jacfwd) along it; Simpson's error at this
    # spacing and the solver's (rtol = atol = 1e-10, float64) are both below 1e-8 relative.
    with jax.enable_x64(True):
        field = _mlp_field(jr.key(1))
        model = neurde.NeuralODE(field, rtol=1e-10, atol=1e-10, t1=T1)
        rnode = RNODE(model, estimator="exact")
        y0 = jnp.array([0.8, -0.3])
        y1, pen = _run(rnode, y0)

        ts = jnp.linspace(0.0, T1, 2001)
        ys = model(y0, ts)
        fs = jax.vmap(lambda t, y: field(t, y, None))(ts, ys)
        jacs = jax.vmap(lambda t, y: jax.jacfwd(lambda z: field(t, z, None))(y))(ts, ys)
        kinetic = scipy.integrate.simpson(np.sum(np.asarray(fs) ** 2, axis=-1), x=ts)
        jacobian = scipy.integrate.simpson(np.sum(np.asarray(jacs) ** 2, axis=(-2, -1)), x=ts)
        np.testing.assert_allclose(pen["kinetic"], kinetic, rtol=1e-8)
        np.testing.assert_allclose(pen["jacobian"], jacobian, rtol=1e-8)
        np.testing.assert_allclose(y1, ys[-1], rtol=1e-12)


def test_hutchinson_is_unbiased():
    # Over 2000 probe keys, the mean Hutchinson estimate matches the exact Jacobian term
    # within 4 standard errors (estimated from the sample), for Gaussian and Rademacher
    # probes; the probe changes neither y1 nor the kinetic term.
    model = neurde.NeuralODE(_mlp_field(jr.key(2)), t1=T1)
    y0 = jnp.array([0.5, 0.2])
    exact = RNODE(model, estimator="exact")
    gaussian = RNODE(model)
    rademacher = RNODE(model, probe="rademacher")

    @jax.jit
    def run(keys):
        y_ex, pen_ex = _run(exact, y0)
        draws = {
            name: jax.vmap(lambda k, r=r: _run(r, y0, key=k))(keys)
            for name, r in (("gaussian", gaussian), ("rademacher", rademacher))
        }
        return y_ex, pen_ex, draws

    n = 2000
    y_ex, pen_ex, draws = run(jr.split(jr.key(0), n))
    for ys, pen in draws.values():
        est = np.asarray(pen["jacobian"], np.float64)
        standard_error = est.std() / np.sqrt(n)
        assert abs(est.mean() - float(pen_ex["jacobian"])) < 4 * standard_error
        assert est.std() > 0
        np.testing.assert_allclose(pen["kinetic"], pen_ex["kinetic"], rtol=1e-6)
        np.testing.assert_allclose(ys, jnp.broadcast_to(y_ex, ys.shape), rtol=1e-6)
    # Rademacher probes have the smaller variance (Hutchinson 1990).
    assert draws["rademacher"][1]["jacobian"].std() < draws["gaussian"][1]["jacobian"].std()


def test_penalised_loss_gradient_matches_finite_differences():
    # Loss of a batch of 2 (vmapped over examples and probe keys) with both penalties, against
    # central differences (eps 1e-6, float64, solver at rtol = atol = 1e-10): agreement to
    # 1e-6 relative (observed ~1e-8).
    with jax.enable_x64(True):
        field = neurde.MLPField(2, 3, 1, activation=jnp.tanh, key=jr.key(3))
        model = neurde.NeuralODE(field, rtol=1e-10, atol=1e-10, t1=1.0)
        rnode = RNODE(model)
        params, static = eqx.partition(rnode, neurde.trainable(rnode))
        flat, unravel = ravel_pytree(params)
        y0s = jnp.array([[0.3, -0.7], [-0.5, 0.4]])
        keys = jr.split(jr.key(4), 2)

        def loss(vec):
            r = eqx.combine(unravel(vec), static)
            y1s, pen = jax.vmap(lambda y, k: _run(r, y, key=k))(y0s, keys)
            task = jnp.mean(jnp.sum((y1s - 1.0) ** 2, axis=-1))
            return task + 0.3 * jnp.mean(pen["kinetic"]) + 0.2 * jnp.mean(pen["jacobian"])

        # One compilation serves both: finite differences read the value.
        value_and_grad = jax.jit(jax.value_and_grad(loss))
        grad = value_and_grad(flat)[1]
        fd = central_differences(lambda v: value_and_grad(v)[0], flat)
        np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-9)


@pytest.mark.slow
def test_continuous_adjoint_matches_backprop():
    # With diffrax.BacksolveAdjoint the backward solve measures its whole state (the
    # penalties included); its gradient of the penalised loss must match backprop to 1e-7
    # relative at rtol = atol = 1e-9 in float64 (observed ~1e-10).
    with jax.enable_x64(True):
        field = neurde.MLPField(2, 8, 1, activation=jnp.tanh, key=jr.key(3))
        y0 = jnp.array([0.3, -0.7])

        def gradient(adjoint):
            model = neurde.NeuralODE(field, rtol=1e-9, atol=1e-9, t1=1.0, adjoint=adjoint)

            def loss(rnode):
                y1, pen = _run(rnode, y0, key=jr.key(0))
                return jnp.sum(y1**2) + 0.3 * pen["kinetic"] + 0.2 * pen["jacobian"]

            return ravel_pytree(eqx.filter_grad(loss)(RNODE(model)))[0]

        backprop, backsolve = gradient("backprop"), gradient("adjoint")
        scale = float(jnp.max(jnp.abs(backprop)))
        np.testing.assert_allclose(backsolve, backprop, rtol=0, atol=1e-7 * scale)


def test_inference_mode_is_the_plain_solve():
    model = neurde.NeuralODE(neurde.LinearField(A), t1=T1)
    rnode = eqx.nn.inference_mode(RNODE(model))
    y0 = jnp.array([1.0, -0.5])
    y1, pen = _run(rnode, y0)  # no key needed
    np.testing.assert_array_equal(y1, model(y0))
    assert float(pen["kinetic"]) == 0.0 and float(pen["jacobian"]) == 0.0


def test_disabled_terms_are_zero():
    model = neurde.NeuralODE(neurde.LinearField(A), t1=T1)
    _, pen = _run(RNODE(model, jacobian=False), jnp.array([1.0, -0.5]))
    assert float(pen["jacobian"]) == 0.0 and float(pen["kinetic"]) > 0.0


def test_step_control_sees_only_the_state():
    pid = diffrax.PIDController(rtol=1e-3, atol=1e-6)
    clipped = diffrax.ClipStepSizeController(pid, step_ts=jnp.array([0.5]))
    assert isinstance(_state_only(pid).norm, _StateNorm)
    assert isinstance(_state_only(clipped).controller.norm, _StateNorm)
    assert isinstance(_state_only(diffrax.ConstantStepSize()), diffrax.ConstantStepSize)
    norm = _StateNorm(pid.norm)
    y = jnp.array([3.0, 4.0])
    big = jnp.asarray(1e6)
    extras = {"kinetic": big, "jacobian": big}
    np.testing.assert_allclose(norm(_AugState(y, extras)), pid.norm(y), rtol=1e-6)
    # Anything else (e.g. the continuous adjoint's backward state) is measured in full.
    np.testing.assert_allclose(norm((y, big)), pid.norm((y, big)), rtol=1e-6)


def test_errors():
    model = neurde.NeuralODE(neurde.LinearField(A), t1=T1)
    with pytest.raises(TypeError, match=r"must be a continuous neurde model .* type LinearField"):
        RNODE(neurde.LinearField(A))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"unknown `estimator='frobenius'`\. Choose 'hutchinson'"):
        RNODE(model, estimator="frobenius")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"`jacobian` must be True or False, got None"):
        RNODE(model, jacobian=None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"already RNODE\(NeuralODE\).*apply RNODE once"):
        RNODE(RNODE(model))
    with pytest.raises(ValueError, match="unknown `probe='uniform'`"):
        RNODE(model, probe="uniform")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="switch off both penalties"):
        RNODE(model, jacobian=False, kinetic=False)
    with pytest.raises(
        ValueError, match=r"a `key` is needed .*`estimator='exact'`.*inference_mode\(rnode\)"
    ):
        RNODE(model)(jnp.array([1.0, -0.5]))
    with pytest.raises(TypeError, match="floating dtype"):
        RNODE(model, estimator="exact")(jnp.array([1, 2]))


def _moons(n, key):
    k_angle, k_noise = jr.split(key)
    labels = jnp.arange(n) % 2
    theta = jr.uniform(k_angle, (n,), maxval=jnp.pi)
    x = jnp.where(labels == 0, jnp.cos(theta), 1 - jnp.cos(theta)) - 0.5
    y = jnp.where(labels == 0, jnp.sin(theta), 0.5 - jnp.sin(theta)) - 0.25
    return 2 * jnp.stack([x, y], -1) + 0.1 * jr.normal(k_noise, (n, 2)), labels


class _Classifier(eqx.Module):
    rnode: RNODE
    head: eqx.nn.Linear


@pytest.mark.expensive
def test_kinetic_penalty_cuts_the_cost_of_a_trained_model():
    # Two moons, a neural ODE on R^2 and a linear head, 300 full-batch Adam steps with and
    # without the kinetic penalty (lambda 0.01); same seeds, same compiled step. Cross-entropy
    # keeps pushing the classes apart, so the unregularized field keeps growing; the penalty
    # keeps it short. Both must reach >= 95% test accuracy; the regularized one must need at
    # most 80% of the NFE at the training tolerance and at a tight one (rtol = atol = 1e-6).
    # Observed: NFE 33.5 -> 22.4 (rtol 1e-3) and 82.2 -> 42.2 (1e-6), both 100% accurate.
    x_train, l_train = _moons(256, jr.key(0))
    x_test, l_test = _moons(512, jr.key(1))
    optimizer = optax.adam(1e-2)

    @eqx.filter_jit
    def step(clf, state, lam):
        def loss(clf):
            y1, pen = jax.vmap(lambda x: _run(clf.rnode, x))(x_train)
            logits = jax.vmap(clf.head)(y1)
            ce = optax.softmax_cross_entropy_with_integer_labels(logits, l_train)
            return jnp.mean(ce) + lam * jnp.mean(pen["kinetic"])

        grads = eqx.filter_grad(loss)(clf)
        updates, state = optimizer.update(grads, state, clf)
        return eqx.apply_updates(clf, updates), state

    @eqx.filter_jit
    def evaluate(clf, tol):
        model = eqx.tree_at(
            lambda m: (m.tolerances.rtol, m.tolerances.atol), clf.rnode.model, (tol, tol)
        )
        solutions = jax.vmap(model.solve)(x_test)
        logits = jax.vmap(clf.head)(solutions.ys)
        accuracy = jnp.mean(jnp.argmax(logits, -1) == l_test)
        return accuracy, jnp.mean(solutions.stats["nfe"])

    results = {}
    for lam in (0.0, 0.01):
        field = neurde.MLPField(2, 32, 2, time_dependent=True, key=jr.key(2))
        rnode = RNODE(neurde.NeuralODE(field, t1=1.0), jacobian=False)
        clf = _Classifier(rnode, eqx.nn.Linear(2, 2, key=jr.key(3)))
        state = optimizer.init(eqx.filter(clf, eqx.is_inexact_array))
        for _ in range(300):
            clf, state = step(clf, state, jnp.asarray(lam))
        results[lam] = [evaluate(clf, jnp.asarray(tol)) for tol in (1e-3, 1e-6)]
    for (acc_plain, nfe_plain), (acc_reg, nfe_reg) in zip(results[0.0], results[0.01], strict=True):
        assert acc_plain >= 0.95 and acc_reg >= 0.95
        assert nfe_reg <= 0.8 * nfe_plain
