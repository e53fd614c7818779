"""Bad input to `neurde.noise`: clear errors that name the argument, the value and the fix."""

import diffrax
import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
import pytest

import neurde
from neurde import discrete, noise


def _ode(**kw):
    return neurde.NeuralODE(neurde.LinearField(-jnp.eye(2)), t1=1.0, **kw)


def _stack(scheme=None):
    return discrete.ResidualStack(
        lambda k: neurde.LinearField(-jnp.eye(2)), scheme or discrete.Euler(), 3, key=jr.key(0)
    )


@pytest.mark.parametrize("sigma", [-0.1, float("nan"), float("inf")])
@pytest.mark.parametrize("transform", [noise.additive, noise.multiplicative])
def test_sigma_must_be_finite_and_non_negative(transform, sigma):
    with pytest.raises(ValueError, match=r"`sigma` must be a finite number >= 0, got"):
        transform(_ode(dt0=0.1), sigma)


def test_sigma_must_be_a_number():
    with pytest.raises(TypeError, match="`sigma` must be a Python number"):
        noise.additive(_ode(dt0=0.1), jnp.array([0.1, 0.2]))  # pyright: ignore[reportArgumentType]


@pytest.mark.parametrize("p", [0.0, 1.0, -0.5, 1.5])
def test_probabilities_must_lie_in_the_open_unit_interval(p):
    with pytest.raises(ValueError, match=r"`p` must lie strictly between 0 and 1"):
        noise.dropout_diffusion(_ode(dt0=0.1), p)
    with pytest.raises(ValueError, match=r"`p` must lie strictly between 0 and 1"):
        noise.residual_dropout(_stack(), p)
    with pytest.raises(ValueError, match=r"`survival_last` must lie strictly between 0 and 1"):
        noise.stochastic_depth(_stack(), p)
    with pytest.raises(ValueError, match=r"`survival_last` must lie strictly between 0 and 1"):
        noise.shake_drop(_stack(), p)


def test_shakedrop_ranges_must_be_ordered():
    with pytest.raises(ValueError, match=r"`alpha` must be a range \(low, high\)"):
        noise.shake_drop(_stack(), 0.5, alpha=(1.0, -1.0))


def test_schedule_must_be_callable():
    with pytest.raises(TypeError, match="`schedule` must be a function of time"):
        noise.additive(_ode(dt0=0.1), 0.1, schedule=0.5)  # pyright: ignore[reportArgumentType]


@pytest.mark.parametrize("thing", [3.0, jnp.ones(3), "model", eqx.nn.Linear(2, 2, key=jr.key(0))])
def test_transforms_reject_objects_that_are_not_models(thing):
    with pytest.raises(TypeError, match=r"expected a neurde model .* say which one with `where=`"):
        noise.additive(thing, 0.1)
    with pytest.raises(TypeError, match=r"expected a neurde model .* say which one with `where=`"):
        noise.stochastic_depth(thing)


def test_a_module_holding_models_says_which_with_where():
    class Two(eqx.Module):
        a: neurde.NeuralODE
        b: neurde.NeuralODE

    two = Two(_ode(dt0=0.1), _ode(dt0=0.1))
    with pytest.raises(TypeError, match=r"got Two\. .*`where=lambda m: m\.ode`"):
        noise.additive(two, 0.1)
    noisy = noise.additive(two, 0.1, where=lambda m: m.b)
    assert isinstance(noisy.b, noise.NoisyModel) and noisy.a.field.matrix is two.a.field.matrix
    with pytest.raises(TypeError, match=r"`where` must select a neurde model inside Two, got"):
        noise.additive(two, 0.1, where=lambda m: m.a.field)
    with pytest.raises(TypeError, match=r"`where` could not select a model inside Two"):
        noise.additive(two, 0.1, where=lambda m: m.c)
    with pytest.raises(TypeError, match=r"`where` must be a function"):
        noise.additive(two, 0.1, where="b")  # pyright: ignore[reportArgumentType]


def test_missing_key_in_training_mode():
    with pytest.raises(ValueError, match="a `key` is needed in training mode"):
        noise.additive(_ode(dt0=0.1), 0.1)(jnp.ones(2))
    with pytest.raises(ValueError, match="a `key` is needed in training mode"):
        noise.stochastic_depth(_stack())(jnp.ones(2))
    with pytest.raises(ValueError, match="a `key` is needed"):
        noise.MonteCarlo(noise.additive(_ode(dt0=0.1), 0.1), 4)(jnp.ones(2))


def test_constant_step_sde_needs_dt0():
    # Checked when the solve is traced: an outer transform may still set the step.
    noisy = noise.additive(_ode(), 0.1)
    with pytest.raises(ValueError, match=r"neither the model nor a transform sets `dt0`"):
        noisy(jnp.ones(2), key=jr.key(0))
    stepped = noise.multiplicative(noisy, 0.1, dt0=0.1)
    assert stepped.solve(jnp.ones(2), key=jr.key(0)).stats["num_steps"] == 10


def test_branch_regularizers_need_a_discrete_euler_stack():
    with pytest.raises(TypeError, match="randomizes the residual branches of a discrete net"):
        noise.stochastic_depth(_ode(dt0=0.1))
    with pytest.raises(TypeError, match=r"needs a ResNet stack \(scheme Euler\(\)\)"):
        noise.residual_dropout(_stack(discrete.RungeKutta.rk4()), 0.2)
    with pytest.raises(TypeError, match=r"every block must be a `neurde\.noise\.Branches"):
        noise.shake_shake(_stack())


def test_one_branch_regularizer_per_stack():
    with pytest.raises(
        TypeError, match=r"already randomized by StochasticDepth, and ResidualDropout would"
    ):
        noise.residual_dropout(noise.stochastic_depth(_stack()), 0.1)


def test_solver_options_do_not_apply_to_discrete_nets():
    with pytest.raises(ValueError, match=r"\['dt0'\] apply to continuous models only"):
        noise.additive(_stack(), 0.1, dt0=0.1)


def test_form_must_be_discrete_or_sde():
    with pytest.raises(ValueError, match="`form` must be 'discrete' or 'sde', got 'ito'"):
        noise.stochastic_depth(_stack(), form="ito")


@pytest.mark.parametrize("n", [0, -2])
def test_monte_carlo_needs_at_least_one_sample(n):
    with pytest.raises(ValueError, match="`num_samples` must be >= 1"):
        noise.MonteCarlo(_stack(), n)


def test_non_noise_objects_are_rejected_by_inject():
    with pytest.raises(TypeError, match=r"noises must be neurde\.noise\.AbstractNoise"):
        noise.inject(_ode(dt0=0.1), 0.1)  # pyright: ignore[reportArgumentType]


def test_steer_and_rnode_on_a_module_holding_an_ode():
    class Net(eqx.Module):
        ode: neurde.NeuralODE

    net = Net(_ode())
    assert isinstance(noise.steer(net, 0.5, where=lambda m: m.ode).ode, noise.STEER)
    # RNODE's penalties reach a loss through `solve(...).extras`, which a plain module drops.
    with pytest.raises(TypeError, match=r"adds extra outputs .* Net is not a neurde"):
        noise.rnode(net, where=lambda m: m.ode)
    composed = neurde.Composed(None, _ode(), None)
    assert isinstance(noise.rnode(composed, estimator="exact").model, noise.RNODE)
    with pytest.raises(
        TypeError, match=r"steer cannot be applied to a ResidualStack with scheme Euler: STEER"
    ):
        noise.steer(_stack(), 0.5)
    with pytest.raises(TypeError, match=r"rnode cannot be applied to a ResidualStack"):
        noise.rnode(_stack())


BLOW_UP = r"the solution contains NaN or inf\. With constant steps \(dt0=0\.1\)"


@pytest.mark.parametrize("form", ["ode_grid", "ode_tree", "ode_euler"])
def test_a_constant_step_solve_that_blows_up_raises_instead_of_returning_nan(form):
    # Constant steps reject nothing, so an overflow (here sigma = 1e30 on float32) used to
    # come back as NaN. Every constant-step path raises now: the grid path (scan), the
    # Brownian tree (Diffrax) and a plain constant-step ODE.
    ts = jnp.linspace(0.0, 1.0, 3)
    if form == "ode_euler":
        # Explicit Euler far outside its stability region: |1 - 30 * 0.1| = 2 per step, 10
        # steps, from 1e37: past float32's range.
        ode = neurde.NeuralODE(
            neurde.LinearField(-30 * jnp.eye(2)), solver=diffrax.Euler(), dt0=0.1, t1=1.0
        )
        with pytest.raises(eqx.EquinoxRuntimeError, match=BLOW_UP):
            ode(jnp.full(2, 1e37), ts)
        return
    brownian = "grid" if form == "ode_grid" else "tree"
    model = noise.multiplicative(_ode(dt0=0.1), 1e30, brownian=brownian)
    with pytest.raises(eqx.EquinoxRuntimeError, match=BLOW_UP):
        model(jnp.ones(2), ts, key=jr.key(1))
    # The same model at a sane level returns finite values, and `throw=False` returns the
    # non-finite solution for a caller who checks it.
    sane = noise.multiplicative(_ode(dt0=0.1), 0.3, brownian=brownian)
    assert jnp.all(jnp.isfinite(sane(jnp.ones(2), ts, key=jr.key(1))))
    quiet = noise.multiplicative(_ode(dt0=0.1, throw=False), 1e30, brownian=brownian)
    assert not jnp.all(jnp.isfinite(quiet(jnp.ones(2), ts, key=jr.key(1))))
