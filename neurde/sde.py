"""Neural stochastic differential equations `dy = f(t, y) dt + g(t, y) dW`, solved by Diffrax."""

import dataclasses
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import ArrayLike, Float

from ._config import (
    BrownianKind,
    NoiseType,
    check_noise,
    check_sde_solver,
    configuration,
    init_settings,
    levy_area,
    ode_capable,
)
from ._solve import model_problem, on_grid
from ._types import Args, Input, MaybeKey, SaveTimes, VectorField
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
    Brownian motion is drawn from the call's `key`. With constant steps that divide the
    interval it is sampled on the step grid (`brownian="grid"`, the default there): the
    increment of step $k$ is $\sqrt{\Delta t}\,\xi_k$ with $\xi_k$ drawn from
    `jr.fold_in(key, k)`, and Euler–Maruyama (`diffrax.Euler`) or `diffrax.Heun` then run as
    one `lax.scan` that draws the increments in its loop, with the loop body rematerialized
    for backprop: no Brownian tree, the cost of a hand-written scan
    (`benchmarks/sde_step.py`), the same result as `diffrax.diffeqsolve` on a
    `neurde.GridBrownianPath` drawn from the same key, and, under `jax.vmap` with one key per
    example, each example's path independent of the batch and its split. Otherwise
    (adaptive steps, a random end time, a `brownian_tol`, solvers that need Lévy areas) it is a
    `diffrax.VirtualBrownianTree` (`brownian="tree"`), so adaptive steps and the continuous
    adjoint see one consistent path.

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
    - `brownian`: `"grid"`, `"tree"`, or `None` (default): `"grid"` when the steps are
      constant and land on a grid from `t0` to the end time, the solver needs no Lévy area
      and no `brownian_tol` is given; `"tree"` otherwise.
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
    brownian: BrownianKind | None = eqx.field(static=True)
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
        brownian: BrownianKind | None = None,
        brownian_tol: float | None = None,
        throw: bool = True,
        inference: bool = False,
    ):
        solver = diffrax.Euler() if solver is None else solver
        settings = (stepsize_controller, rtol, atol, adjoint, t0, t1, dt0, max_steps, throw)
        init_settings(self, "NeuralSDE", solver, *settings)
        self.drift = as_field(drift)
        self.diffusion = as_field(diffusion)
        self.noise = noise
        self.noise_size = noise_size
        self.brownian = brownian
        self.brownian_tol = brownian_tol
        self.inference = inference
        self._check(configuration("NeuralSDE", self))

    def _check(self, settings: tuple[Any, Any, Any], brownian: BrownianKind | None = None) -> None:
        solver, controller, _ = settings
        brownian = self.brownian if brownian is None else brownian
        check_noise("NeuralSDE", self.noise, self.noise_size)
        check_sde_solver("NeuralSDE", solver, controller, self.noise, brownian, self.brownian_tol)

    def _brownian(self, ode: Problem) -> BrownianKind:
        """The Brownian motion of a solve: the chosen one, or the grid where it is exact."""
        if self.brownian is not None:
            return self.brownian
        grid = (
            self.brownian_tol is None
            and levy_area(ode.solver) is diffrax.BrownianIncrement
            and on_grid(ode, ode.stepsize_controller, ode.dt0)
        )
        return "grid" if grid else "tree"

    def problem(
        self, y0: Input, ts: SaveTimes = None, *, args: Args = None, key: MaybeKey = None
    ) -> Problem:
        """The SDE on the model's interval with a Brownian motion from `key`; in inference
        mode the drift alone (no key needed)."""
        del args
        owner = "NeuralSDE"
        if not (eqx.is_array_like(y0) and jnp.ndim(y0) == 1):
            shapes = jax.tree.map(jnp.shape, y0)
            raise ValueError(
                f"{owner}: the state must be one vector (shape (d,)); got {shapes}. Flatten "
                "it, or vmap over a batch axis."
            )
        ode = model_problem(owner, self, self.drift, ts)
        brownian = self._brownian(ode)
        self._check((ode.solver, ode.stepsize_controller, ode.adjoint), brownian)
        if self.inference:
            return dataclasses.replace(ode, solver=ode_capable(ode.solver))
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
            brownian=brownian,
            brownian_tol=self.brownian_tol,
            key=key,
        )
