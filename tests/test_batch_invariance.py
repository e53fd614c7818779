"""Batch invariance: a vmapped batch gives each example's own output and gradient.

For every model family and adjoint: the outputs of `jax.vmap(model)` on a batch equal the
outputs of the model called on each example alone, and the gradient (in the parameters)
of the batch's mean loss equals the mean of the per-example gradients; float64, relative
tolerance 1e-10 (Diffrax users have reported batched results and gradients that differ
from per-example ones, diffrax issues 692 and 701).

What holds and what does not, by construction:

- `NeuralODE` with adaptive steps under `vmap` steps each example with its own step sizes
  (Diffrax batches the `while_loop`; finished examples stop updating), so it is invariant,
  with one exception: the continuous adjoint (`adjoint="adjoint"`, Diffrax's
  `BacksolveAdjoint`) with adaptive steps gives a batched gradient that differs from the
  mean of the per-example ones by an amount that scales with the tolerance (the batched
  backward solve evidently does not repeat each example's own steps; measured on this test's batch:
  1e-7 relative at rtol = atol = 1e-5, 5e-11 at 1e-8, 5e-13 at 1e-10; 6e-9 at 1e-8 on an
  unscaled batch); it is checked to 1e-6 there. With constant steps it is exact.
- `NeuralSDE` is invariant given each example's Brownian path (`with_brownian` inside the
  vmap, or one key per example); one key shared by the batch gives every example the
  same path.
- The diffusion samplers take a batch, not one example. The fixed-grid deterministic
  ones (DDIM with eta = 0, DPM-Solver, DPM-Solver multistep, EDM Heun without churn) treat
  examples independently: invariant. `ProbabilityFlow` solves the whole batch as one ODE
  state with one step-size sequence, so a sample depends, by up to the solve's own error,
  on the rest of its batch (documented there); the stochastic samplers draw their noise
  for the batch as a whole (`jr.normal(key, batch_shape)`), so an example's noise depends
  on the batch size and its position in it.
"""

import functools

import diffrax
import equinox as eqx
import jax
import jax.flatten_util
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import neurde
from neurde import diffusion, discrete

RTOL = 1e-10


def _flat(tree):
    return jax.flatten_util.ravel_pytree(eqx.filter(tree, eqx.is_inexact_array))[0]


def _close(actual, desired, what, rtol=RTOL):
    actual, desired = np.asarray(actual), np.asarray(desired)
    scale = float(np.max(np.abs(desired)))
    assert scale > 0, what
    np.testing.assert_allclose(actual, desired, rtol=rtol, atol=rtol * scale, err_msg=what)


def check_invariance(model, call, xs, what, grad_rtol=RTOL):
    """`call(model, x)` (one example) under `vmap` over `xs` against each `x` alone."""
    params, static = eqx.partition(model, neurde.trainable(model))

    def loss(p, x):
        out = call(eqx.combine(p, static), x)
        return jnp.sum(out**2), out

    def batch_loss(p, xs):
        losses, outs = jax.vmap(loss, in_axes=(None, 0))(p, xs)
        return jnp.mean(losses), outs

    batch_grad, outs = jax.jit(jax.grad(batch_loss, has_aux=True))(params, xs)
    one = jax.jit(jax.grad(loss, has_aux=True))
    grads, singles = zip(*(one(params, x) for x in xs), strict=True)
    _close(outs, jnp.stack(singles), f"{what}: outputs")
    mean = np.mean([_flat(g) for g in grads], axis=0)
    _close(_flat(batch_grad), mean, f"{what}: gradient", grad_rtol)


# --- NeuralODE: each adjoint, adaptive and constant steps -------------------------------

# Each case compiles two gradients of a solve (~10 s of CPU); `diffrax.DirectAdjoint`,
# backprop through a bounded loop like "backprop", is kept out of CI for time.
ODE_CASES = [
    ("tsit5-adaptive", "backprop"),
    pytest.param("tsit5-adaptive", "direct", marks=pytest.mark.expensive),
    ("tsit5-adaptive", "adjoint"),
    ("rk4-constant", "backprop"),
    ("tsit5-constant", "reversible"),
]


@pytest.mark.parametrize(("steps", "adjoint"), ODE_CASES)
def test_neural_ode(steps, adjoint):
    # The continuous adjoint with adaptive steps: invariant to O(tolerance) only (above).
    grad_rtol = 1e-6 if (steps, adjoint) == ("tsit5-adaptive", "adjoint") else RTOL
    with jax.enable_x64(True):
        field = neurde.MLPField(2, 4, 1, key=jr.key(0))
        if steps == "tsit5-adaptive":
            settings = dict(rtol=1e-8, atol=1e-8)
        else:
            solver = neurde.RK4() if steps == "rk4-constant" else diffrax.Tsit5()
            settings = dict(
                solver=solver, stepsize_controller=diffrax.ConstantStepSize(), dt0=0.125
            )
        model = neurde.NeuralODE(field, adjoint=adjoint, t1=1.0, **settings)
        # Scales 0.1, 1, 10: with adaptive steps the examples take different step sizes.
        xs = jr.normal(jr.key(1), (3, 2)) * jnp.array([[0.1], [1.0], [10.0]])
        what = f"NeuralODE {steps} {adjoint}"
        check_invariance(model, lambda m, x: m(x), xs, what, grad_rtol)


def test_adaptive_steps_are_per_example_under_vmap():
    # Examples that need different numbers of steps keep them under vmap: the batched
    # solve is not one step-size sequence for the batch.
    with jax.enable_x64(True):
        model = neurde.NeuralODE(neurde.LinearField(-jnp.eye(1)), rtol=1e-8, atol=1e-10, t1=1.0)
        xs = jnp.array([[1e-6], [1.0], [1e3]])
        batched = jax.vmap(lambda x: model.solve(x).stats["num_steps"])(xs)
        alone = [int(model.solve(x).stats["num_steps"]) for x in xs]
        assert [int(n) for n in batched] == alone
        assert len(set(alone)) > 1


# --- NeuralSDE with a fixed Brownian path per example ---------------------------------


@functools.cache
def _increments():
    with jax.enable_x64(True):
        return jnp.sqrt(0.125) * jr.normal(jr.key(2), (3, 8, 2))


@pytest.mark.parametrize(
    ("solver", "adjoint"),
    [
        (diffrax.Euler(), "backprop"),  # the scan path
        pytest.param(diffrax.ItoMilstein(), "backprop", marks=pytest.mark.expensive),  # Diffrax
        (diffrax.ReversibleHeun(), "reversible"),
    ],
    ids=["euler-scan", "milstein-diffrax", "reversible-heun"],
)
def test_neural_sde_with_given_path(solver, adjoint):
    with jax.enable_x64(True):
        drift = neurde.MLPField(2, 4, 1, key=jr.key(3))
        diffusion_field = neurde.MLPField(2, 4, 1, key=jr.key(4))
        constant = diffrax.ConstantStepSize()
        model = neurde.NeuralSDE(
            drift,
            diffusion_field,
            solver=solver,
            stepsize_controller=constant,
            adjoint=adjoint,
            dt0=0.125,
            t1=1.0,
        )
        xs = jr.normal(jr.key(5), (3, 2))
        data = (xs, _increments())

        def call(m, x_dw):
            x, dw = x_dw
            return m.with_brownian(dw)(x)

        params, static = eqx.partition(model, neurde.trainable(model))

        def loss(p, x_dw):
            out = call(eqx.combine(p, static), x_dw)
            return jnp.sum(out**2), out

        def batch_loss(p):
            losses, outs = jax.vmap(loss, in_axes=(None, 0))(p, data)
            return jnp.mean(losses), outs

        batch_grad, outs = jax.jit(jax.grad(batch_loss, has_aux=True))(params)
        one = jax.jit(jax.grad(loss, has_aux=True))
        runs = [one(params, (x, dw)) for x, dw in zip(*data, strict=True)]
        grads, singles = zip(*runs, strict=True)
        what = f"NeuralSDE {type(solver).__name__}"
        _close(outs, jnp.stack(singles), f"{what}: outputs")
        _close(_flat(batch_grad), np.mean([_flat(g) for g in grads], axis=0), f"{what}: gradient")


# --- The discrete stacks: every scheme, through the vector classifiers ------------------


# One architecture per scheme (the others are these schemes with other fields).
SCHEMES = ("resnet", "polynet", "rk4", "lm-resnet", "leapfrog", "momentum", "revnet")


@pytest.mark.parametrize("architecture", SCHEMES)
def test_discrete_stacks(architecture):
    with jax.enable_x64(True):
        model = discrete.Classifier(
            (3,), 2, architecture=architecture, width=4, depth=3, hidden=4, key=jr.key(6)
        )
        xs = jr.normal(jr.key(7), (3, 3))
        check_invariance(model, lambda m, x: m(x), xs, architecture)


# --- The diffusion samplers: deterministic ones are per-example ------------------------


DETERMINISTIC_SAMPLERS = {
    "ddim": lambda: diffusion.DDIM(4),
    "dpm-solver": lambda: diffusion.DPMSolver(6, order=2),
    "dpm-solver-multistep": lambda: diffusion.DPMSolverMultistep(4, order=2),
    "edm-heun": lambda: diffusion.EDMHeun(3),
}


@functools.cache
def _score_net():
    with jax.enable_x64(True):
        return diffusion.ScoreMLP(2, 8, 1, embedding_size=4, key=jr.key(8))


@functools.cache
def _prior():
    with jax.enable_x64(True):
        return jr.normal(jr.key(9), (3, 2))


@pytest.mark.parametrize("name", sorted(DETERMINISTIC_SAMPLERS))
def test_deterministic_samplers(name):
    # A batch of three against three batches of one.
    with jax.enable_x64(True):
        sde = diffusion.VPSDE()
        score = diffusion.Score(_score_net(), sde)
        sampler = DETERMINISTIC_SAMPLERS[name]()
        batch, _ = diffusion.sample_from(sampler, score, sde, _prior())
        alone = [diffusion.sample_from(sampler, score, sde, x[None])[0][0] for x in _prior()]
        _close(batch, jnp.stack(alone), name)


def test_gradient_through_a_deterministic_sampler():
    with jax.enable_x64(True):
        sde = diffusion.VPSDE()
        sampler = diffusion.DDIM(4)

        def call(net, x):
            return diffusion.sample_from(sampler, diffusion.Score(net, sde), sde, x[None])[0][0]

        check_invariance(_score_net(), call, _prior(), "DDIM")


def test_probability_flow_couples_the_batch_within_its_error():
    # One ODE for the whole batch, one step-size sequence: a sample moves with the rest of
    # its batch, by no more than the solve's own error (measured against rtol = 1e-10).
    with jax.enable_x64(True):
        sde = diffusion.VPSDE()
        score = diffusion.Score(_score_net(), sde)

        def run(rtol):
            sampler = diffusion.ProbabilityFlow(rtol=rtol, atol=rtol)
            batch = diffusion.sample_from(sampler, score, sde, _prior())[0]
            alone = [diffusion.sample_from(sampler, score, sde, x[None])[0][0] for x in _prior()]
            return batch, jnp.stack(alone)

        batch, alone = run(1e-6)
        batch_ref, alone_ref = run(1e-10)
        gap = float(jnp.max(jnp.abs(batch - alone)))
        error = max(
            float(jnp.max(jnp.abs(batch - batch_ref))), float(jnp.max(jnp.abs(alone - alone_ref)))
        )
        assert 1e-12 < gap <= error
        np.testing.assert_allclose(batch_ref, alone_ref, atol=1e-6)
