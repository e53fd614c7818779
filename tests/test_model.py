"""The model interface: one call signature, `solve` and `ModelSolution`, configuration checked
at every trace, save times on discrete stacks, `Composed`, and the errors of each."""

import dataclasses
import io
import sys

import diffrax
import equinox as eqx
import jax
import jax.flatten_util
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import neurde
from neurde import discrete, noise

Y0 = jnp.array([0.5, -0.4])


def _field(key=0):
    return neurde.MLPField(2, 8, 1, activation=jnp.tanh, key=jr.key(key))


def _stack(**kw):
    return discrete.ResidualStack(lambda k: _field(), discrete.Euler(), 4, key=jr.key(1), **kw)


MODELS = {
    "ode": lambda: neurde.NeuralODE(_field(), t1=1.0),
    "sde": lambda: neurde.NeuralSDE(_field(), lambda t, y, a: 0.1 * y, t1=1.0, dt0=0.1),
    "stack": _stack,
    "classifier": lambda: discrete.Classifier((2,), 3, width=4, depth=2, key=jr.key(2)),
    "composed": lambda: neurde.Composed(jnp.tanh, neurde.NeuralODE(_field(), t1=1.0), jnp.sin),
    "noisy": lambda: noise.additive(neurde.NeuralODE(_field(), t1=1.0), 0.1, dt0=0.1),
    "steer": lambda: noise.steer(neurde.NeuralODE(_field(), t1=1.0), 0.2),
    "rnode": lambda: noise.rnode(neurde.NeuralODE(_field(), t1=1.0)),
    "monte_carlo": lambda: noise.MonteCarlo(noise.additive(_stack(), 0.1), 3),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_every_model_is_called_the_same_way(name):
    model = MODELS[name]()
    assert isinstance(model, neurde.AbstractModel)
    key = jr.key(3)
    solution = model.solve(Y0, key=key)
    assert isinstance(solution, neurde.ModelSolution)
    # A call is the solution's state, whatever the model; no model returns a tuple.
    out = model(Y0, key=key)
    assert not isinstance(out, tuple)
    np.testing.assert_array_equal(out, solution.ys)
    assert {"nfe", "num_steps", "num_accepted_steps", "num_rejected_steps"} <= set(solution.stats)
    assert int(solution.stats["nfe"]) > 0 and solution.ts is None
    assert set(solution.extras) == ({"kinetic", "jacobian"} if name == "rnode" else set())


def test_save_times_mean_the_same_for_ode_and_stack():
    # The second positional argument is `ts` for every model: a trajectory on [t0, t1].
    ode = neurde.NeuralODE(_field(), t1=1.0, solver=diffrax.Euler(), dt0=0.25)
    stack = _stack()  # the same Euler step, h = 1/4, but one (identical) field per block
    ts = jnp.array([0.0, 0.5, 1.0])
    np.testing.assert_allclose(stack(Y0, ts), ode(Y0, ts), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(stack(Y0, ts)[-1], stack(Y0))
    np.testing.assert_array_equal(stack(Y0, ts)[0], Y0)
    solution = stack.solve(Y0, ts)
    assert solution.ts is not None and int(solution.stats["nfe"]) == 4


def test_stack_save_times_through_a_classifier_map_every_time():
    clf = MODELS["classifier"]()
    ts = jnp.array([0.5, 1.0])
    logits = clf(jnp.ones(2), ts)
    assert logits.shape == (2, 3)
    np.testing.assert_allclose(logits[-1], clf(jnp.ones(2)), rtol=1e-6)


def test_stack_save_time_errors():
    with pytest.raises(ValueError, match=r"multiples of the step h = 0.25 in \[0, 1.0\]"):
        _stack()(Y0, jnp.array([0.1, 0.5]))
    with pytest.raises(ValueError, match=r"multiples of the step h = 0.25 .*strictly"):
        _stack()(Y0, jnp.array([0.5, 0.5]))
    with pytest.raises(ValueError, match="non-empty 1-D"):
        _stack()(Y0, jnp.zeros((0,)))
    coupling = discrete.ResidualStack(
        lambda k: discrete.CouplingBlock(
            neurde.MLPField(1, 4, 1, key=k), neurde.MLPField(1, 4, 1, key=k)
        ),
        discrete.AdditiveCoupling(),
        2,
        key=jr.key(0),
    )
    with pytest.raises(ValueError, match="would store every activation, which memory_saving"):
        coupling(Y0, jnp.array([0.5]))
    off_grid = eqx.filter_jit(lambda s, ts: s(Y0, ts))
    with pytest.raises(Exception, match="multiples of the step"):
        off_grid(_stack(), jnp.array([0.3]))


def test_composed_decodes_every_save_time_and_passes_extras_through():
    ode = neurde.NeuralODE(_field(), t1=1.0)
    model = neurde.Composed(lambda x: 2 * x, noise.rnode(ode, estimator="exact"), jnp.tanh)
    ts = jnp.array([0.5, 1.0])
    solution = model.solve(Y0, ts)
    inner = model.model.solve(2 * Y0, ts)
    np.testing.assert_array_equal(solution.ys, jnp.tanh(inner.ys))
    assert set(solution.extras) == {"kinetic", "jacobian"}
    np.testing.assert_array_equal(solution.extras["kinetic"], inner.extras["kinetic"])
    # The penalties cover the whole interval, with or without save times.
    np.testing.assert_allclose(
        solution.extras["kinetic"], model.solve(Y0).extras["kinetic"], rtol=1e-6
    )


def test_composed_errors():
    with pytest.raises(TypeError, match=r"Composed: `model` must be a neurde model .* got Linear"):
        neurde.Composed(None, eqx.nn.Linear(2, 2, key=jr.key(0)), None)  # pyright: ignore
    with pytest.raises(TypeError, match=r"Composed: `decoder` must be a function of one example"):
        neurde.Composed(None, _stack(), 3)  # pyright: ignore[reportArgumentType]


def test_settings_edited_with_tree_at_get_neurdes_message_at_trace_time():
    model = neurde.NeuralODE(_field(), t1=1.0)
    euler = eqx.tree_at(lambda m: m.solver, model, diffrax.Euler())
    with pytest.raises(ValueError, match=r"NeuralODE: Euler runs with a constant step size"):
        euler(Y0)
    pid = neurde.NeuralODE(_field(), t1=1.0, stepsize_controller=diffrax.PIDController(1e-3, 1e-6))
    adaptive_euler = eqx.tree_at(lambda m: m.solver, pid, diffrax.Euler())
    with pytest.raises(ValueError, match="NeuralODE: Euler has no error estimate, so it cannot"):
        adaptive_euler(Y0)
    bad_adjoint = eqx.tree_at(lambda m: m.adjoint, model, "magic")
    with pytest.raises(ValueError, match=r"unknown `adjoint='magic'`"):
        bad_adjoint(Y0)
    sde = MODELS["sde"]()
    milstein = eqx.tree_at(lambda m: m.solver, sde, diffrax.ItoMilstein())
    milstein(Y0, key=jr.key(0))  # diagonal noise: fine
    general = neurde.NeuralSDE(
        _field(), lambda t, y, a: jnp.ones((2, 3)), noise="general", noise_size=3, dt0=0.1, t1=1.0
    )
    with pytest.raises(ValueError, match="ItoMilstein needs diagonal or scalar noise"):
        eqx.tree_at(lambda m: m.solver, general, diffrax.ItoMilstein())(Y0, key=jr.key(0))


def test_a_controller_carries_its_own_tolerances():
    pid = diffrax.PIDController(rtol=1e-6, atol=1e-8)
    with pytest.raises(ValueError, match=r"both `stepsize_controller` and `rtol`/`atol`"):
        neurde.NeuralODE(_field(), stepsize_controller=pid, rtol=1e-3)
    with pytest.raises(ValueError, match=r"both `stepsize_controller` and `rtol`/`atol`"):
        neurde.NeuralSDE(_field(), _field(), stepsize_controller=pid, atol=1e-3, dt0=0.1)
    model = neurde.NeuralODE(_field(), stepsize_controller=pid, t1=1.0)
    assert model.tolerances is None
    tight = neurde.NeuralODE(_field(), rtol=1e-6, atol=1e-8, t1=1.0)
    np.testing.assert_array_equal(model(Y0), tight(Y0))  # the same controller either way


def test_a_grid_brownian_path_needs_steps_on_its_grid():
    sde = neurde.NeuralSDE(_field(), _field(), t1=1.0, dt0=0.3, brownian="grid")
    with pytest.raises(ValueError, match=r"t1 - t0 = 1.0 is not a multiple of it"):
        sde(Y0, key=jr.key(0))
    # Noise on an ODE picks the virtual tree when the steps are off the grid.
    noisy = noise.additive(neurde.NeuralODE(_field(), t1=1.0, dt0=0.3), 0.1)
    assert noisy.problem(Y0, None, args=None, key=jr.key(0)).brownian == "tree"
    on_grid = noise.additive(neurde.NeuralODE(_field(), t1=1.0, dt0=0.25), 0.1)
    assert on_grid.problem(Y0, None, args=None, key=jr.key(0)).brownian == "grid"


def test_noisy_model_errors():
    ode = neurde.NeuralODE(_field(), t1=1.0, dt0=0.1)
    with pytest.raises(TypeError, match=r"NoisyModel: `model` must be a continuous neurde"):
        noise.NoisyModel(_stack(), (noise.Additive(0.1),))  # pyright: ignore[reportArgumentType]
    with pytest.raises(ValueError, match=r"NoisyModel: `brownian` must be 'tree' or 'grid'"):
        noise.NoisyModel(ode, (noise.Additive(0.1),), brownian="fine")  # pyright: ignore
    with pytest.raises(ValueError, match=r"NoisyModel: `dt0` must be > 0"):
        noise.NoisyModel(ode, (noise.Additive(0.1),), dt0=-0.1)
    with pytest.raises(TypeError, match=r"NoisyModel: `solver` must be a Diffrax solver"):
        noise.NoisyModel(ode, (noise.Additive(0.1),), solver="euler")  # pyright: ignore


def test_steer_twice_has_no_meaning():
    steered = noise.steer(neurde.NeuralODE(_field(), t1=1.0), 0.2)
    with pytest.raises(TypeError, match=r"already NoisyModel\(STEER\(NeuralODE\)\).*STEER once"):
        noise.steer(noise.additive(steered, 0.1, dt0=0.1), 0.1)


def test_monte_carlo_of_a_plain_module():
    class Net(eqx.Module):
        ode: neurde.AbstractModel

        def __call__(self, x, *, key=None):
            return 2 * self.ode(x, key=key)

    net = noise.additive(
        Net(neurde.NeuralODE(_field(), t1=1.0, dt0=0.1)), 0.1, where=lambda m: m.ode
    )
    mc = noise.MonteCarlo(net, 4)
    keys = jr.split(jr.key(0), 4)
    manual = jnp.mean(jnp.stack([net(Y0, key=k) for k in keys]), 0)
    np.testing.assert_allclose(mc(Y0, key=jr.key(0)), manual, rtol=1e-6)
    with pytest.raises(ValueError, match=r"Net is not a neurde model, so it is called as"):
        mc(Y0, jnp.array([0.5]), key=jr.key(0))
    with pytest.raises(TypeError, match=r"MonteCarlo: `model` must be a neurde model or"):
        noise.MonteCarlo(3.0, 2)  # pyright: ignore[reportArgumentType]


def test_the_progress_bar_stays_short_in_a_log(monkeypatch):
    # Redirected to a file (not a terminal), 300 fast steps write a few lines, not hundreds.
    buffer = io.StringIO()
    monkeypatch.setattr(sys, "stderr", buffer)
    data = (jnp.ones((8, 2)), jnp.zeros((8, 2)))
    model = neurde.NeuralODE(neurde.LinearField(-jnp.eye(2)), t1=0.1, solver=neurde.RK4(), dt0=0.1)

    def loss(m, batch, key):
        y0, y1 = batch
        return jnp.mean((jax.vmap(m)(y0) - y1) ** 2)

    neurde.fit(model, loss, data, steps=300, key=jr.key(0), progress=True)
    written = buffer.getvalue()
    assert "300/300" in written and len(written) < 2000, len(written)


def test_continuous_adjoint_sees_the_parameters_inside_a_noisy_diffusion():
    # Dropout-style noise evaluates the drift inside the diffusion; the continuous adjoint
    # (Stratonovich Heun, one Brownian path) must see those parameters. Its gradient carries
    # the backward solve's error: within 2.5% of backprop's here (observed 0.9%).
    with jax.enable_x64(True):
        field = _field()

        def gradient(adjoint):
            ode = neurde.NeuralODE(field, t1=0.5, adjoint=adjoint)
            model = noise.dropout_diffusion(ode, 0.2, solver=diffrax.Heun(), dt0=0.01)
            loss = lambda m: jnp.sum(m(jnp.array([0.3, -0.7]), key=jr.key(1)) ** 2)  # noqa: E731
            grads = eqx.filter_grad(loss)(model)
            return jax.flatten_util.ravel_pytree(eqx.filter(grads, eqx.is_inexact_array))[0]

        backprop, backsolve = gradient("backprop"), gradient("adjoint")
        scale = float(jnp.max(jnp.abs(backprop)))
        assert scale > 0
        np.testing.assert_allclose(backsolve, backprop, atol=0.025 * scale)


class _Decay(neurde.AbstractContinuousModel):
    """A new continuous family written against the interface: dy = -rate y dt, with an
    optional diffusion that (wrongly) forgets to take a key."""

    rate: jax.Array
    t0: float = 0.0
    t1: float | None = 1.0
    keyless_noise: bool = eqx.field(static=True, default=False)

    def problem(self, y0, ts=None, *, args=None, key=None):
        del y0, args, key
        problem = neurde.Problem(
            lambda t, y, a: -self.rate * y,
            self.t0,
            self.t1,
            diffrax.Tsit5(),
            diffrax.PIDController(rtol=1e-8, atol=1e-8),
            diffrax.RecursiveCheckpointAdjoint(),
            None,
            4096,
            True,
            "Decay",
        )
        if self.keyless_noise:
            return dataclasses.replace(problem, diffusion=lambda t, y, a: jnp.ones_like(y))
        return problem


def test_a_new_continuous_family_gets_solve_and_the_transforms():
    model = _Decay(jnp.asarray(2.0))
    np.testing.assert_allclose(model(Y0), Y0 * np.exp(-2.0), rtol=1e-6)
    ts = jnp.array([0.25, 1.0])
    np.testing.assert_allclose(model(Y0, ts), Y0 * np.exp(-2.0 * ts[:, None]), rtol=1e-6)
    # RNODE's exact penalties: kinetic = int |2 y|^2 dt, Jacobian = int ||-2 I||_F^2 dt.
    penalties = noise.rnode(model, estimator="exact").solve(Y0).extras
    kinetic = 4 * float(Y0 @ Y0) * (1 - np.exp(-4.0)) / 4
    np.testing.assert_allclose(penalties["kinetic"], kinetic, rtol=1e-5)
    np.testing.assert_allclose(penalties["jacobian"], 2 * 4.0, rtol=1e-6)
    steered = noise.steer(model, 0.5)
    end = float(steered.end_time(jr.key(0)))
    np.testing.assert_allclose(steered(Y0, key=jr.key(0)), Y0 * np.exp(-2.0 * end), rtol=1e-5)
    noisy = noise.additive(model, 0.1, solver=diffrax.Euler(), dt0=0.01)
    assert noisy(Y0, key=jr.key(0)).shape == (2,)


def test_a_problem_with_a_diffusion_needs_a_key():
    model = _Decay(jnp.asarray(2.0), keyless_noise=True)
    with pytest.raises(ValueError, match=r"Decay: the problem has a diffusion but no key"):
        model(Y0)


def test_noise_needs_one_array_as_its_state():
    ode = neurde.NeuralODE(lambda t, y, a: jax.tree.map(jnp.negative, y), t1=1.0, dt0=0.1)
    state = (jnp.ones(2), jnp.ones(3))
    np.testing.assert_allclose(ode(state)[1], np.exp(-1.0) * np.ones(3), rtol=1e-2)
    with pytest.raises(ValueError, match=r"with diagonal noise the state must be one array"):
        noise.additive(ode, 0.1)(state, key=jr.key(0))


def test_stochastic_euler_errors():
    with pytest.raises(ValueError, match=r"StochasticEuler: `form` must be 'discrete' or 'sde'"):
        noise.StochasticEuler(3, form="ito")  # pyright: ignore[reportArgumentType]
    with pytest.raises(TypeError, match=r"StochasticEuler: noises must be neurde\.noise"):
        noise.StochasticEuler(3, noises=(0.1,))  # pyright: ignore[reportArgumentType]
    scheme = noise.StochasticEuler(4, noises=(noise.Additive(0.1),))
    stack = eqx.tree_at(lambda s: s.scheme, _stack(), scheme)
    with pytest.raises(ValueError, match=r"StochasticEuler: a `key` is needed in training mode"):
        stack(Y0)
    wrong_depth = eqx.tree_at(lambda s: s.scheme, _stack(), noise.StochasticEuler(3))
    with pytest.raises(ValueError, match="StochasticEuler was built for depth 3 but the stack"):
        wrong_depth(Y0, key=jr.key(0))
