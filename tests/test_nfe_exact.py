"""The reported NFE equals the number of field evaluations, rejected steps and jumps included.

A host callback in the field counts the evaluations that really run (`jax.debug.callback`
fires when the compiled program executes, not when it is traced). The field relaxes fast
towards cos(t), so a first step of dt0 = 0.5 is rejected several times: the case where an
FSAL solver (Tsit5, Dopri5, Dopri8, Bosh3) evaluates its first stage again on every retry.
"""

import diffrax
import jax
import jax.numpy as jnp
import pytest

import neurde
from neurde.solvers import evaluations_at_start, evaluations_per_step

CALLS: list[int] = []
Y0 = jnp.array([1.0, 2.0])


def field(t, y, args):
    jax.debug.callback(lambda: CALLS.append(1))
    return -50.0 * (y - jnp.cos(t))


def mild(t, y, args):
    jax.debug.callback(lambda: CALLS.append(1))
    return -(y - jnp.cos(t))


def counted(model, fn=None):
    """`(stats, evaluations)` of one solve (or of `fn(model)`, which returns stats)."""
    CALLS.clear()
    stats = model.solve(Y0).stats if fn is None else fn(model)
    jax.effects_barrier()
    return {k: int(v) for k, v in stats.items()}, len(CALLS)


ADAPTIVE = [diffrax.Tsit5(), diffrax.Dopri5(), diffrax.Dopri8(), diffrax.Bosh3(), diffrax.Heun()]


@pytest.mark.parametrize("solver", ADAPTIVE, ids=lambda s: type(s).__name__)
def test_nfe_with_rejected_steps(solver):
    model = neurde.NeuralODE(field, solver=solver, rtol=1e-6, atol=1e-8, dt0=0.5, t1=1.0)
    stats, calls = counted(model)
    assert stats["num_rejected_steps"] >= 3
    assert stats["nfe"] == calls
    per_step, at_start = evaluations_per_step(solver), evaluations_at_start(solver)
    formula = stats["num_steps"] * per_step + at_start  # what the count was before
    if at_start:
        # Each rejection of the first step restarted the FSAL first stage.
        assert calls > formula
    else:
        assert calls == formula


def test_nfe_with_jumps():
    # After each jump Diffrax re-evaluates a stored stage: FSAL's first, reversible Heun's.
    jumps = jnp.array([0.3, 0.6])
    for solver, rhs in [(diffrax.Tsit5(), field), (diffrax.ReversibleHeun(), mild)]:
        controller = diffrax.PIDController(rtol=1e-4, atol=1e-6, jump_ts=jumps)
        model = neurde.NeuralODE(rhs, solver=solver, stepsize_controller=controller, t1=1.0)
        stats, calls = counted(model)
        assert stats["nfe"] == calls, type(solver).__name__
        formula = stats["num_steps"] * evaluations_per_step(solver) + 1
        assert calls >= formula + 2, type(solver).__name__


FIXED = [
    diffrax.Euler(),
    diffrax.Heun(),
    diffrax.Tsit5(),
    neurde.RK4(),
    neurde.Leapfrog(),
    neurde.SymplecticEuler(),
]


@pytest.mark.parametrize("solver", FIXED, ids=lambda s: type(s).__name__)
def test_nfe_with_constant_steps(solver):
    model = neurde.NeuralODE(
        mild, solver=solver, stepsize_controller=diffrax.ConstantStepSize(), dt0=0.1, t1=1.0
    )
    stats, calls = counted(model)
    assert (stats["num_steps"], stats["num_rejected_steps"]) == (10, 0)
    assert stats["nfe"] == calls == 10 * evaluations_per_step(solver) + evaluations_at_start(solver)


def test_tracing_is_not_counted():
    model = neurde.NeuralODE(field, rtol=1e-6, atol=1e-8, dt0=0.5, t1=1.0)
    CALLS.clear()
    jax.jit(lambda y: model(y)).lower(Y0)
    jax.eval_shape(model, Y0)
    jax.effects_barrier()
    assert CALLS == []


@pytest.mark.parametrize("adjoint", ["backprop", "adjoint"])
def test_nfe_is_the_forward_cost_under_a_gradient(adjoint):
    # `nfe` is the forward solve's count with or without a gradient; the backward pass
    # evaluates the field again (recomputed steps, or the adjoint ODE), uncounted.
    model = neurde.NeuralODE(
        field, solver=diffrax.Tsit5(), rtol=1e-6, atol=1e-8, dt0=0.5, t1=1.0, adjoint=adjoint
    )
    forward, calls = counted(model)
    assert forward["nfe"] == calls and forward["num_rejected_steps"] >= 3

    def grad_stats(m):
        def loss(y0):
            sol = m.solve(y0)
            return jnp.sum(sol.ys**2), sol.stats

        return jax.grad(loss, has_aux=True)(Y0)[1]

    under_grad, total = counted(model, grad_stats)
    assert under_grad == forward
    assert total > calls


def test_implicit_adjoint_still_solves():
    # `diffrax.ImplicitAdjoint` accepts only `SaveAt(t1=True)`, so the count is not wired
    # in there; without rejections the NFE is still exact.
    model = neurde.NeuralODE(mild, adjoint=diffrax.ImplicitAdjoint(), t1=1.0)
    stats, calls = counted(model)
    assert stats["num_rejected_steps"] == 0
    assert stats["nfe"] == calls


def test_implicit_solvers_report_unknown_nfe():
    # No count is wired in (their cost depends on the Newton iterations): NFE is -1.
    model = neurde.NeuralODE(mild, solver=diffrax.Kvaerno3(), rtol=1e-4, atol=1e-6, t1=1.0)
    stats, _ = counted(model)
    assert stats["nfe"] == -1 and stats["num_steps"] > 0
