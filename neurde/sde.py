"""Neural stochastic differential equations `dy = f(t, y) dt + g(t, y) dW`, solved by Diffrax."""

import dataclasses
from typing import Any, cast

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
from .brownian import GridBrownianPath
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

    A given Brownian motion replaces the key's: `brownian=` any Diffrax Brownian path (e.g.
    a `diffrax.VirtualBrownianTree` or a `neurde.GridBrownianPath`), or an array of
    pre-drawn increments of shape `(steps, *noise_shape)` on the grid of `dt0` from `t0`, to
    reproduce a path from another library or a paper. Then the call needs no key, and
    `model.with_brownian(increments)` swaps the path (inside `jax.vmap`, one per example).
    Increments on the step grid still run on the fast scan.

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
      `throw`: as for `neurde.NeuralODE`. `adjoint="reversible"` with
      `solver=diffrax.ReversibleHeun()`, constant steps and the grid Brownian motion gives
      the exact gradient of the reversible Heun solve in constant memory (Kidger et al.
      2021), the increments redrawn from the key on the backward pass. Solvers without an
      error estimate (Euler, Milstein) run with a constant step `dt0`.
    - `brownian`: `"grid"`, `"tree"`, or `None` (default): `"grid"` when the steps are
      constant and land on a grid from `t0` to the end time, the solver needs no Lévy area
      and no `brownian_tol` is given; `"tree"` otherwise. Or a given Brownian motion: a
      `diffrax.AbstractBrownianPath`, or increments `(steps, *noise_shape)` (with `dt0`).
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
    path: diffrax.AbstractPath | None
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
        brownian: BrownianKind | diffrax.AbstractPath | ArrayLike | None = None,
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
        self.brownian = cast(BrownianKind, brownian) if isinstance(brownian, str) else None
        self.path = None
        self.brownian_tol = brownian_tol
        self.inference = inference
        self._check(configuration("NeuralSDE", self))
        if not _is_kind(brownian):
            self.path = self._given_path(brownian)

    def _given_path(self, brownian: Any) -> diffrax.AbstractPath:
        """A given Brownian motion as a path: itself, or the increments on the `dt0` grid."""
        if isinstance(brownian, diffrax.AbstractPath):
            return brownian
        if not eqx.is_array_like(brownian):
            raise TypeError(
                "NeuralSDE: `brownian` must be 'grid', 'tree', None, a Diffrax Brownian path "
                f"or an array of increments; got {type(brownian).__name__}."
            )
        increments = jnp.asarray(brownian)
        if self.dt0 is None or increments.ndim == 0:
            raise ValueError(
                "NeuralSDE: increments given as `brownian` lie on the grid of `dt0` from `t0`: "
                f"pass `dt0=...` and an array of shape (steps, *noise_shape); got dt0="
                f"{self.dt0} and shape {increments.shape}."
            )
        t1 = self.t0 + increments.shape[0] * self.dt0
        return GridBrownianPath(self.t0, t1, self.dt0, increments=increments)

    def with_brownian(self, brownian: diffrax.AbstractPath | ArrayLike) -> "NeuralSDE":
        """This model with the given Brownian motion (a Diffrax path, or increments of shape
        `(steps, *noise_shape)` on the `dt0` grid from `t0`); usable inside `jax.vmap`, e.g.
        `jax.vmap(lambda y, dw: model.with_brownian(dw)(y))(ys, dws)`."""
        path = self._given_path(brownian)
        return eqx.tree_at(lambda m: m.path, self, path, is_leaf=lambda x: x is None)

    def _check(self, settings: tuple[Any, Any, Any], brownian: BrownianKind | None = None) -> None:
        solver, controller, _ = settings
        brownian = self.brownian if brownian is None else brownian
        check_noise("NeuralSDE", self.noise, self.noise_size)
        check_sde_solver("NeuralSDE", solver, controller, self.noise, brownian, self.brownian_tol)

    def _brownian(self, ode: Problem) -> BrownianKind:
        """The Brownian motion of a solve: the chosen one, or the grid where it is exact."""
        if self.brownian is not None:
            return self.brownian
        if self.path is not None:
            return "tree"  # unused: the given path replaces it
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
        if self.path is not None:
            return dataclasses.replace(
                ode,
                diffusion=self.diffusion,
                noise=self.noise,
                noise_size=self.noise_size,
                path=self.path,
                key=key,
            )
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


def _is_kind(brownian: Any) -> bool:
    """Whether `brownian` names a kind of Brownian motion (or None), not a given one."""
    return brownian is None or isinstance(brownian, str)
