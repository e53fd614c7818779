"""The symplectic solvers `Leapfrog` and `SymplecticEuler`: order, energy, cost, errors."""

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import central_differences, fitted_order

import neurde
from neurde.solvers import Leapfrog, SymplecticEuler, evaluations_at_start, evaluations_per_step


def oscillator(t, y, args):
    # H = p^2/2 + q^2/2 on y = [q; p]
    return jnp.array([y[1], -y[0]])


def pendulum(t, y, args):
    # H = p^2/2 + (1 - cos q): separable and nonlinear
    return jnp.array([y[1], -jnp.sin(y[0])])


def solve(field, solver, t1, dt, y0, ts=None, args=None, max_steps=100_000):
    saveat = diffrax.SaveAt(t1=True) if ts is None else diffrax.SaveAt(ts=ts)
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(field),
        solver,
        0.0,
        t1,
        dt,
        y0,
        args=args,
        saveat=saveat,
        max_steps=max_steps,
    )
    return sol.ys


@pytest.mark.parametrize(("solver", "order"), [(Leapfrog(), 2), (SymplecticEuler(), 1)])
def test_convergence_order_harmonic_oscillator(solver, order):
    with jax.enable_x64(True):
        y0 = jnp.array([1.0, 0.5])
        exact = jnp.array([np.cos(2.0) + 0.5 * np.sin(2.0), 0.5 * np.cos(2.0) - np.sin(2.0)])
        hs = [0.1, 0.05, 0.025, 0.0125]
        errors = [
            float(jnp.linalg.norm(solve(oscillator, solver, 2.0, h, y0)[0] - exact)) for h in hs
        ]
        assert solver.order(None) == order
        assert abs(fitted_order(hs, errors) - order) < 0.1


@pytest.mark.parametrize(("solver", "order"), [(Leapfrog(), 2), (SymplecticEuler(), 1)])
def test_convergence_order_pendulum_through_neural_ode(solver, order):
    with jax.enable_x64(True):
        y0 = jnp.array([1.0, 0.0])
        reference = neurde.NeuralODE(pendulum, rtol=1e-12, atol=1e-12, t1=3.0)(y0)
        hs = [0.1, 0.05, 0.025, 0.0125]
        errors = []
        for h in hs:
            model = neurde.NeuralODE(pendulum, solver=solver, dt0=h, t1=3.0)
            errors.append(float(jnp.linalg.norm(model(y0) - reference)))
        assert abs(fitted_order(hs, errors) - order) < 0.15


@pytest.mark.parametrize("solver", [Leapfrog(), SymplecticEuler()])
def test_energy_error_bounded_over_long_rollout(solver):
    # 100 periods of the pendulum at h = 0.1: the energy error oscillates but does not grow.
    with jax.enable_x64(True):
        y0 = jnp.array([1.0, 0.0])
        ts = jnp.linspace(0.0, 200 * np.pi, 4001)
        energy = lambda y: y[..., 1] ** 2 / 2 + 1 - jnp.cos(y[..., 0])  # noqa: E731
        errors = np.abs(
            np.asarray(energy(solve(pendulum, solver, ts[-1], 0.1, y0, ts)) - energy(y0))
        )
        first, last = errors[:400].max(), errors[-400:].max()
        assert last <= 1.05 * first
        # O(h^2) and O(h) bounds at h = 0.1 (measured 2.2e-3 and 2.3e-2).
        assert last < (4e-3 if isinstance(solver, Leapfrog) else 4e-2)
        # Explicit Euler at the same step gains energy steadily: the check can fail.
        euler = np.abs(
            np.asarray(energy(solve(pendulum, diffrax.Euler(), ts[-1], 0.1, y0, ts)) - energy(y0))
        )
        assert euler[-400:].max() > 5 * euler[:400].max()


def test_leapfrog_is_time_reversible():
    with jax.enable_x64(True):
        y0 = jnp.array([1.0, 0.3])
        forward = solve(pendulum, Leapfrog(), 5.0, 0.1, y0)[0]
        back = diffrax.diffeqsolve(
            diffrax.ODETerm(pendulum),
            Leapfrog(),
            5.0,
            0.0,
            -0.1,
            forward,
            saveat=diffrax.SaveAt(t1=True),
        ).ys[0]
        np.testing.assert_allclose(back, y0, atol=1e-12)


def test_multidimensional_state_splits_positions_and_momenta():
    # Two uncoupled oscillators with frequencies 1 and 2 on y = [q1, q2, p1, p2].
    def field(t, y, args):
        return jnp.concatenate([y[2:], -jnp.array([1.0, 4.0]) * y[:2]])

    with jax.enable_x64(True):
        y0 = jnp.array([1.0, 1.0, 0.0, 0.0])
        y1 = solve(field, Leapfrog(), 1.0, 1e-3, y0)[0]
        exact = jnp.array([np.cos(1.0), np.cos(2.0), -np.sin(1.0), -2 * np.sin(2.0)])
        np.testing.assert_allclose(y1, exact, atol=1e-5)  # O(h^2) = 1e-6 at h = 1e-3


@pytest.mark.parametrize("solver", [Leapfrog(), SymplecticEuler()])
def test_gradient_matches_finite_differences(solver):
    def final_q(w):
        def field(t, y, args):
            return jnp.array([y[1] / args[1], -args[0] * jnp.sin(y[0])])

        model = neurde.NeuralODE(field, solver=solver, dt0=0.05, t1=2.0)
        return model(jnp.array([0.8, 0.1]), args=w)[0]

    with jax.enable_x64(True):
        w = jnp.array([1.3, 0.7])
        np.testing.assert_allclose(
            jax.grad(final_q)(w), central_differences(final_q, w), rtol=1e-6, atol=1e-9
        )


@pytest.mark.parametrize("solver", [Leapfrog(), SymplecticEuler()])
def test_nfe_counts_every_field_evaluation(solver):
    calls = []

    def field(t, y, args):
        jax.debug.callback(lambda: calls.append(1))
        return jnp.array([y[1], -y[0]])

    model = neurde.NeuralODE(field, solver=solver, dt0=0.1, t1=2.0)
    stats = model.solve(jnp.array([1.0, 0.0])).stats
    jax.effects_barrier()
    assert int(stats["num_steps"]) == 20
    assert int(stats["nfe"]) == len(calls)
    assert int(stats["nfe"]) == 20 * evaluations_per_step(solver) + evaluations_at_start(solver)


def test_evaluation_costs():
    assert (evaluations_per_step(Leapfrog()), evaluations_at_start(Leapfrog())) == (2, 1)
    assert (evaluations_per_step(SymplecticEuler()), evaluations_at_start(SymplecticEuler())) == (
        2,
        0,
    )
    assert evaluations_per_step(neurde.RK4()) == 4


def test_interpolated_save_times_are_second_order_accurate():
    with jax.enable_x64(True):
        y0 = jnp.array([1.0, 0.0])
        ts = jnp.array([0.33, 1.57, 2.91])
        exact = jnp.stack([jnp.cos(ts), -jnp.sin(ts)], axis=-1)
        hs = [0.1, 0.05, 0.025]
        errors = [
            float(jnp.max(jnp.abs(solve(oscillator, Leapfrog(), 3.0, h, y0, ts) - exact)))
            for h in hs
        ]
        assert fitted_order(hs, errors) > 1.8


@pytest.mark.parametrize("solver", [Leapfrog(), SymplecticEuler()])
def test_adaptive_controller_is_refused(solver):
    controller = diffrax.PIDController(rtol=1e-3, atol=1e-6)
    with pytest.raises(ValueError, match="has no error estimate"):
        neurde.NeuralODE(oscillator, solver=solver, stepsize_controller=controller, dt0=0.1)


def test_constant_step_needs_dt0():
    with pytest.raises(ValueError, match="Leapfrog runs with a constant step size, so `dt0`"):
        neurde.NeuralODE(oscillator, solver=Leapfrog(), t1=1.0)


@pytest.mark.parametrize(
    ("solver", "y0"),
    [(Leapfrog(), jnp.ones(3)), (SymplecticEuler(), jnp.ones(3)), (Leapfrog(), jnp.ones((2, 2)))],
)
def test_state_must_be_even_vector(solver, y0):
    model = neurde.NeuralODE(lambda t, y, a: -y, solver=solver, dt0=0.1, t1=1.0)
    name = type(solver).__name__
    with pytest.raises(ValueError, match=f"{name}: the state must be one vector \\[q; p\\]"):
        model(y0)


def test_state_with_extra_outputs_is_refused():
    model = neurde.NeuralODE(oscillator, solver=Leapfrog(), dt0=0.1, t1=1.0)
    with pytest.raises(ValueError, match=r"Leapfrog: the state must be one vector.*rnode"):
        neurde.noise.rnode(model)(jnp.array([1.0, 0.0]), key=jax.random.key(0))
