"""Bad input to NeuralODE: each case raises a clear error naming the argument and the fix."""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import neurde


@pytest.fixture(scope="module")
def model():
    return neurde.NeuralODE(neurde.MLPField(2, 8, 1, key=jr.key(0)), t1=1.0)


@pytest.fixture(scope="module")
def jitted():
    return eqx.filter_jit(lambda m, y0, ts: m(y0, ts))


@pytest.mark.parametrize(
    ("ts", "match"),
    [
        (jnp.array([0.0, 0.5, 0.5]), "strictly increasing"),
        (jnp.array([0.5, 0.2]), "strictly increasing"),
        (jnp.zeros((0,)), "non-empty 1-D"),
        (jnp.zeros((2, 2)), "non-empty 1-D"),
        (jnp.array([0.5, 1.5]), r"inside \[t0, t1\]"),
        (jnp.array([-0.1, 0.5]), r"inside \[t0, t1\]"),
    ],
)
def test_bad_save_times_eager(model, ts, match):
    with pytest.raises(ValueError, match=match):
        model(jnp.ones(2), ts)


@pytest.mark.parametrize(
    ("ts", "match"),
    [
        (jnp.array([0.0, 0.5, 0.5]), "strictly increasing"),
        (jnp.array([0.5, 1.5]), r"inside \[t0, t1\]"),
    ],
)
def test_bad_save_times_compiled(model, jitted, ts, match):
    # Inside jit the values are unknown at trace time: eqx.error_if raises at run time.
    with pytest.raises(Exception, match=match):
        jitted(model, jnp.ones(2), ts)


def test_state_shape_mismatch(model):
    with pytest.raises(ValueError, match=r"built for states of shape \(2,\)"):
        model(jnp.ones(3))


def test_field_returning_wrong_shape():
    bad = neurde.NeuralODE(lambda t, y, args: jnp.ones(3), t1=1.0)
    with pytest.raises(ValueError, match=r"returns shape \(3,\), but shape \(2,\)"):
        bad(jnp.ones(2))


def test_non_finite_initial_state(model, jitted):
    with pytest.raises(ValueError, match="contains NaN or inf"):
        model(jnp.array([1.0, jnp.nan]))
    with pytest.raises(Exception, match="contains NaN or inf"):
        jitted(model, jnp.array([jnp.inf, 1.0]), jnp.array([0.5, 1.0]))


def test_integer_dtype(model):
    with pytest.raises(TypeError, match=r"dtype int32.*astype\(jnp.float32\)"):
        model(jnp.array([1, 2], dtype=jnp.int32))


def test_max_steps_reached_says_what_to_try():
    stiff = neurde.NeuralODE(neurde.LinearField(-1e4 * np.eye(2)), t1=10.0, max_steps=16)
    run = eqx.filter_jit(lambda m: m(jnp.ones(2)))
    with pytest.raises(Exception, match=r"max_steps=16.*raising `max_steps`.*implicit"):
        run(stiff)


def test_throw_false_returns_result_code():
    stiff = neurde.NeuralODE(
        neurde.LinearField(-1e4 * np.eye(2)), t1=10.0, max_steps=16, throw=False
    )
    sol = stiff.solve(jnp.ones(2))
    assert sol.result == diffrax.RESULTS.max_steps_reached


@pytest.mark.parametrize("dt0", [0.0, -0.1])
def test_non_positive_step_size(dt0):
    with pytest.raises(ValueError, match=r"`dt0` must be > 0"):
        neurde.NeuralODE(neurde.LinearField(np.eye(2)), solver=neurde.RK4(), dt0=dt0)


def test_constant_step_solver_needs_dt0():
    with pytest.raises(ValueError, match=r"constant step size, so `dt0` is needed"):
        neurde.NeuralODE(neurde.LinearField(np.eye(2)), solver=neurde.RK4())


def test_solver_without_error_estimate_with_adaptive_controller():
    with pytest.raises(ValueError, match="no error estimate"):
        neurde.NeuralODE(
            neurde.LinearField(np.eye(2)),
            solver=neurde.RK4(),
            stepsize_controller=diffrax.PIDController(rtol=1e-3, atol=1e-6),
            dt0=0.1,
        )


def test_unknown_adjoint():
    with pytest.raises(ValueError, match=r"(?s)unknown `adjoint='magic'`.*'backprop'"):
        neurde.NeuralODE(neurde.LinearField(np.eye(2)), adjoint="magic")


def test_missing_end_time():
    no_t1 = neurde.NeuralODE(neurde.LinearField(np.eye(2)))
    with pytest.raises(ValueError, match="no end time"):
        no_t1(jnp.ones(2))


@pytest.mark.parametrize(("t0", "t1"), [(1.0, 1.0), (1.0, 0.5)])
def test_empty_interval(t0, t1):
    with pytest.raises(ValueError, match="needs finite t1 > t0"):
        neurde.NeuralODE(neurde.LinearField(np.eye(2)), t0=t0, t1=t1)


@pytest.mark.parametrize(("name", "value"), [("rtol", 0.0), ("atol", -1e-6)])
def test_non_positive_tolerances(name, value):
    with pytest.raises(ValueError, match=f"`{name}` must be > 0"):
        neurde.NeuralODE(neurde.LinearField(np.eye(2)), **{name: value})


def test_not_a_field():
    with pytest.raises(TypeError, match="Expected a vector field"):
        neurde.NeuralODE(3.0)  # type: ignore[arg-type]


def test_max_steps_must_be_positive():
    with pytest.raises(ValueError, match="`max_steps` must be an integer >= 1"):
        neurde.NeuralODE(neurde.LinearField(np.eye(2)), max_steps=0)


def test_error_inside_vmap_names_the_problem(model):
    ts = jnp.array([0.5, 0.2])
    with pytest.raises(ValueError, match="strictly increasing"):
        jax.vmap(lambda y: model(y, ts))(jnp.ones((3, 2)))
