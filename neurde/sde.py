"""Neural stochastic differential equations `dy = f(t, y) dt + g(t, y) dW`, solved by Diffrax."""

import dataclasses
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import ArrayLike, Float, PRNGKeyArray, PyTree

from ._config import (
    BrownianKind,
    NoiseType,
    check_noise,
    check_sde_solver,
    check_tolerances_and_controller,
    configuration,
    ode_capable,
    resolve_adjoint,
)
from ._solve import resolve_interval
from ._types import Args, VectorField
from ._validation import require_key
from .fields import AbstractField, as_field
from .model import AbstractContinuousModel
from .problem import Problem
from .tolerances import Tolerances


class NeuralSDE(AbstractContinuousModel):
    r"""A neural stochastic differential equation $dy = f(t, y)\,dt + g(t, y)\,dW_t$.

    The state is a vector $y \in \mathbb{R}^d$. The shape of the diffusion $g$ fixes the noise:

    - `"diagonal"`: $g(t, y) \in \mathbb{R}^d$, one independent Brownian motion per
      coordinate, $dy_i = f_i\,dt + g_i\,dW^i$;
    - `"scalar"`: $g(t, y) \in \mathbb{R}^d$, one Brownian motion shared by every
      coordinate, $dy = f\,dt + g\,dW$ with $W$ scalar;
    - `"general"`: $g(t, y) \in \mathbb{R}^{d \times m}$ with an $m$-dimensional Brownian
      motion ($m$ = `noise_size`).

    The solver fixes the calculus: Itô for `diffrax.Euler` (Euler–Maruyama, the default) and
    `diffrax.ItoMilstein`; Stratonovich for `diffrax.Heun`, `diffrax.ReversibleHeun` and
    `diffrax.StratonovichMilstein` (Milstein solvers need diagonal or scalar noise). The
    Brownian motion is a `diffrax.VirtualBrownianTree` drawn from the call's `key`, so
    adaptive steps and the continuous adjoint see one consistent path; `brownian="grid"`
    samples the increments once on the step grid (`neurde.GridBrownianPath`): several times
    faster, for constant steps with Euler-type solvers.

    With `inference=True` (set everywhere by `eqx.nn.inference_mode`) the noise is dropped
    and the drift is solved as an ODE, deterministically and without a key. Solvers that
    only solve SDEs (Milstein's) are then replaced by `diffrax.Euler()`, to which they reduce
    when the diffusion is zero.

    **Arguments:**

    - `drift`, `diffusion`: fields `f(t, y, args)`, `g(t, y, args)`.
    - `noise`: `"diagonal"` (default), `"scalar"` or `"general"`.
    - `noise_size`: dimension $m$ of the Brownian motion for general noise.
    - `solver`: default `diffrax.Euler()` (Euler–Maruyama).
    - `stepsize_controller`, `rtol`, `atol`, `adjoint`, `t0`, `t1`, `dt0`, `max_steps`,
      `throw`: as for `neurde.NeuralODE`. Solvers without an error estimate (Euler,
      Milstein) run with a constant step `dt0`.
    - `brownian`: `"tree"` (default) or `"grid"`.
    - `brownian_tol`: resolution of the virtual Brownian tree (default `dt0 / 2`, or
      `(t1 - t0) / 2**12` when `dt0` is not given).
    - `inference`: drop the noise.

    References: Tzen & Raginsky, "Neural Stochastic Differential Equations: Deep Latent
    Gaussian Models in the Diffusion Limit", 2019; Liu, Xiao, Si, Cao, Kumar, Hsieh,
    "Neural SDE: Stabilizing Neural ODE Networks with Stochastic Noise", 2019; Kidger, Foster,
    Li, Lyons, "Efficient and Accurate Gradients for Neural SDEs", NeurIPS 2021.
    """

    drift: AbstractField
    diffusion: AbstractField
    solver: diffrax.AbstractSolver
    stepsize_controller: diffrax.AbstractStepSizeController | None
    tolerances: Tolerances | None
    adjoint: diffrax.AbstractAdjoint
    noise: NoiseType = eqx.field(static=True)
    noise_size: int | None = eqx.field(static=True)
    brownian: BrownianKind = eqx.field(static=True)
    brownian_tol: float | None = eqx.field(static=True)
    t0: float = eqx.field(static=True)
    t1: float | None = eqx.field(static=True)
    dt0: float | None = eqx.field(static=True)
    max_steps: int = eqx.field(static=True)
    throw: bool = eqx.field(static=True)
    inference: bool = False

    def __init__(
        self,
        drift: AbstractField | VectorField,
        diffusion: AbstractField | VectorField,
        *,
        noise: NoiseType = "diagonal",
        noise_size: int | None = None,
        solver: diffrax.AbstractSolver | None = None,
        stepsize_controller: diffrax.AbstractStepSizeController | None = None,
        rtol: Float[ArrayLike, ""] | None = None,
        atol: Float[ArrayLike, ""] | None = None,
        adjoint: str | diffrax.AbstractAdjoint = "backprop",
        t0: float = 0.0,
        t1: float | None = None,
        dt0: float | None = None,
        max_steps: int = 4096,
        brownian: BrownianKind = "tree",
        brownian_tol: float | None = None,
        throw: bool = True,
        inference: bool = False,
    ):
        check_tolerances_and_controller("NeuralSDE", stepsize_controller, rtol, atol)
        self.drift = as_field(drift)
        self.diffusion = as_field(diffusion)
        self.solver = diffrax.Euler() if solver is None else solver
        self.stepsize_controller = stepsize_controller
        self.tolerances = (
            None
            if stepsize_controller is not None
            else Tolerances(1e-3 if rtol is None else rtol, 1e-6 if atol is None else atol)
        )
        self.adjoint = resolve_adjoint("NeuralSDE", adjoint)
        self.noise = noise
        self.noise_size = noise_size
        self.brownian = brownian
        self.brownian_tol = brownian_tol
        self.t0 = float(t0)
        self.t1 = None if t1 is None else float(t1)
        self.dt0 = None if dt0 is None else float(dt0)
        self.max_steps = max_steps
        self.throw = throw
        self.inference = inference
        self._configuration()

    def _configuration(self) -> tuple[Any, Any, Any]:
        owner = "NeuralSDE"
        check_noise(owner, self.noise, self.noise_size)
        solver, controller, adjoint = configuration(
            owner,
            solver=self.solver,
            stepsize_controller=self.stepsize_controller,
            tolerances=self.tolerances,
            adjoint=self.adjoint,
            dt0=self.dt0,
            max_steps=self.max_steps,
            t0=self.t0,
            t1=self.t1,
        )
        check_sde_solver(owner, solver, controller, self.noise, self.brownian, self.brownian_tol)
        return solver, controller, adjoint

    def problem(
        self,
        y0: PyTree[Any],
        ts: Any,
        *,
        args: Args,
        key: PRNGKeyArray | None,
    ) -> Problem:
        """The SDE on the model's interval with a Brownian motion from `key`; in inference
        mode the drift alone (no key needed)."""
        del args
        owner = "NeuralSDE"
        solver, controller, adjoint = self._configuration()
        if not (eqx.is_array_like(y0) and jnp.ndim(y0) == 1):
            shapes = jax.tree.map(jnp.shape, y0)
            raise ValueError(
                f"{owner}: the state must be one vector (shape (d,)); got {shapes}. Flatten "
                "it, or vmap over a batch axis."
            )
        t0, t1 = resolve_interval(owner, self.t0, self.t1, ts)
        ode = Problem(
            drift=self.drift,
            t0=t0,
            t1=t1,
            solver=solver,
            stepsize_controller=controller,
            adjoint=adjoint,
            dt0=self.dt0,
            max_steps=self.max_steps,
            throw=self.throw,
            owner=owner,
        )
        if self.inference:
            return dataclasses.replace(ode, solver=ode_capable(solver))
        key = require_key(
            owner,
            key,
            "sample the Brownian motion",
            "To drop the noise instead, use `eqx.nn.inference_mode(model)` (or "
            "`NeuralSDE(..., inference=True)`).",
        )
        return dataclasses.replace(
            ode,
            diffusion=self.diffusion,
            noise=self.noise,
            noise_size=self.noise_size,
            brownian=self.brownian,
            brownian_tol=self.brownian_tol,
            key=key,
        )
