"""Neural stochastic differential equations `dy = f(t, y) dt + g(t, y) dW`, solved by Diffrax."""

from typing import Any, Literal

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray

from ._solve import (
    default_controller,
    resolve_adjoint,
    resolve_interval,
    run_solve,
    squeeze_final,
)
from ._types import Args, VectorField
from ._validation import (
    check_field_output,
    check_interval,
    check_state,
)
from .brownian import make_brownian
from .fields import AbstractField, as_field
from .ode import resolve_controller
from .stats import solver_stats
from .tolerances import Tolerances

Noise = Literal["diagonal", "scalar", "general"]
_ODE_CAPABLE = (diffrax.AbstractRungeKutta, diffrax.Euler, diffrax.ReversibleHeun)


class NeuralSDE(eqx.Module):
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
    and the drift is solved as an ODE, deterministically and without a key.

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
    tolerances: Tolerances
    adjoint: diffrax.AbstractAdjoint
    noise: Noise = eqx.field(static=True)
    noise_size: int | None = eqx.field(static=True)
    brownian: Literal["tree", "grid"] = eqx.field(static=True)
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
        noise: Noise = "diagonal",
        noise_size: int | None = None,
        solver: diffrax.AbstractSolver | None = None,
        stepsize_controller: diffrax.AbstractStepSizeController | None = None,
        rtol: Float[ArrayLike, ""] = 1e-3,
        atol: Float[ArrayLike, ""] = 1e-6,
        adjoint: str | diffrax.AbstractAdjoint = "backprop",
        t0: float = 0.0,
        t1: float | None = None,
        dt0: float | None = None,
        max_steps: int = 4096,
        brownian: Literal["tree", "grid"] = "tree",
        brownian_tol: float | None = None,
        throw: bool = True,
        inference: bool = False,
    ):
        owner = "NeuralSDE"
        if noise not in ("diagonal", "scalar", "general"):
            raise ValueError(
                f"{owner}: unknown `noise={noise!r}`; choose 'diagonal', 'scalar' or 'general'."
            )
        if noise == "general" and (not isinstance(noise_size, int) or noise_size < 1):
            raise ValueError(
                f"{owner}: general noise needs `noise_size` (the Brownian dimension m >= 1), "
                f"got {noise_size!r}. The diffusion must then return shape (d, m)."
            )
        if noise != "general" and noise_size is not None:
            raise ValueError(
                f"{owner}: `noise_size` only applies to noise='general', got "
                f"noise={noise!r}, noise_size={noise_size!r}. Drop `noise_size`."
            )
        if brownian not in ("tree", "grid"):
            raise ValueError(f"{owner}: `brownian` must be 'tree' or 'grid', got {brownian!r}.")
        self.solver = diffrax.Euler() if solver is None else solver
        is_milstein = isinstance(self.solver, diffrax.ItoMilstein | diffrax.StratonovichMilstein)
        if noise == "general" and is_milstein:
            raise ValueError(
                f"{owner}: {type(self.solver).__name__} needs diagonal or scalar noise, got "
                "noise='general'. Use `diffrax.Euler()` (Itô) or `diffrax.Heun()` "
                "(Stratonovich) for general noise."
            )
        controller = resolve_controller(owner, self.solver, stepsize_controller, dt0)
        if brownian == "grid" and not isinstance(controller, diffrax.ConstantStepSize):
            raise ValueError(
                f"{owner}: brownian='grid' samples the Brownian motion on the grid of a "
                "constant step size; got an adaptive controller. Use brownian='tree' with "
                "adaptive steps."
            )
        if brownian == "grid" and hasattr(self.solver, "minimal_levy_area"):
            raise ValueError(
                f"{owner}: {type(self.solver).__name__} needs Lévy areas, which "
                "brownian='grid' does not sample. Use brownian='tree'."
            )
        if t1 is not None:
            check_interval(owner, t0, t1)
        if not isinstance(max_steps, int) or max_steps < 1:
            raise ValueError(f"{owner}: `max_steps` must be an integer >= 1, got {max_steps!r}.")
        if brownian_tol is not None and not brownian_tol > 0:
            raise ValueError(f"{owner}: `brownian_tol` must be > 0, got {brownian_tol!r}.")
        self.drift = as_field(drift)
        self.diffusion = as_field(diffusion)
        self.stepsize_controller = controller
        self.tolerances = Tolerances(rtol, atol)
        self.adjoint = resolve_adjoint(owner, adjoint)
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

    def controller(self) -> diffrax.AbstractStepSizeController:
        """The step-size controller a solve uses (the default PID built from the tolerances)."""
        return default_controller(
            self.stepsize_controller, self.tolerances.rtol, self.tolerances.atol
        )

    def _brownian_shape(self, y0: Array) -> tuple[int, ...]:
        if self.noise == "diagonal":
            return y0.shape
        if self.noise == "scalar":
            return ()
        assert self.noise_size is not None
        return (self.noise_size,)

    def _diffusion_term(self, y0: Array, t0: Any, t1: Any, key: PRNGKeyArray) -> Any:
        bm = make_brownian(
            self.brownian,
            t0,
            t1,
            dt0=self.dt0,
            tol=self.brownian_tol,
            shape=self._brownian_shape(y0),
            dtype=y0.dtype,
            levy_area=getattr(self.solver, "minimal_levy_area", diffrax.BrownianIncrement),
            key=key,
        )
        if self.noise == "diagonal":

            def vf(t, y, args):
                return lx.DiagonalLinearOperator(self.diffusion(t, y, args))

            return diffrax.ControlTerm(vf, bm)
        return diffrax.ControlTerm(self.diffusion, bm)

    def _check(self, y0: Array, t0: Any, args: Args) -> None:
        owner = "NeuralSDE"
        if not isinstance(y0, jax.Array) or y0.ndim != 1:
            raise ValueError(
                f"{owner}: the state must be one vector (shape (d,)); got "
                f"{jax.tree.map(jnp.shape, y0)}. Flatten it, or vmap over a batch axis."
            )
        check_field_output(owner, "drift", self.drift, t0, y0, args, want=y0)
        d = y0.shape[0]
        g_shape = (d, self.noise_size) if self.noise == "general" else (d,)
        check_field_output(
            owner,
            f"diffusion (noise={self.noise!r})",
            self.diffusion,
            t0,
            y0,
            args,
            want=jax.ShapeDtypeStruct(g_shape, y0.dtype),
        )

    def solve(
        self,
        y0: Float[ArrayLike, " d"],
        ts: Float[ArrayLike, " times"] | None = None,
        *,
        args: Args = None,
        t0: float | None = None,
        t1: float | None = None,
        key: PRNGKeyArray | None = None,
    ) -> diffrax.Solution:
        """Solve from `y0` and return the full `diffrax.Solution`; arguments as `__call__`."""
        owner = "NeuralSDE"
        start, end = resolve_interval(owner, self.t0, self.t1, t0, t1, ts)
        state: Any = check_state(owner, y0)
        self._check(state, start, args)
        drift = diffrax.ODETerm(self.drift)
        solver = self.solver
        if self.inference:
            terms = drift
            if not isinstance(solver, _ODE_CAPABLE):
                # SDE-only solvers (Milstein) reduce to Euler when the noise is zero.
                solver = diffrax.Euler()
        else:
            if key is None:
                raise ValueError(
                    f"{owner}: a `key` is needed in training mode to sample the Brownian "
                    "motion: call `model(y0, ts, key=jr.key(0))`. To drop the noise instead, "
                    "use `eqx.nn.inference_mode(model)` (or `NeuralSDE(..., inference=True)`)."
                )
            terms = diffrax.MultiTerm(drift, self._diffusion_term(state, start, end, key))
        return run_solve(owner, self, terms, solver, start, end, state, args, ts)

    def __call__(
        self,
        y0: Float[ArrayLike, " d"],
        ts: Float[ArrayLike, " times"] | None = None,
        *,
        args: Args = None,
        t0: float | None = None,
        t1: float | None = None,
        key: PRNGKeyArray | None = None,
    ) -> Float[Array, "*times d"]:
        """Sample one path from one (unbatched) initial state `y0`.

        **Arguments:**

        - `y0`: initial state, a vector of shape `(d,)`.
        - `ts`: save times, strictly increasing inside `[t0, t1]`; `None` returns y(t1).
        - `args`: passed to drift and diffusion.
        - `t0`, `t1`: override the model's interval for this call.
        - `key`: the Brownian motion's key; required unless `inference=True`. The same key
          gives the same path.

        **Returns:**

        The state at `t1`, or the states at each of `ts` stacked on a leading axis.
        """
        solution = self.solve(y0, ts, args=args, t0=t0, t1=t1, key=key)
        ys: Any = solution.ys
        return squeeze_final(ys) if ts is None else ys

    def stats(self, solution: diffrax.Solution) -> dict[str, Int[Array, ""]]:
        """Number of drift evaluations and steps of a solve made by this model."""
        return solver_stats(solution, self.solver)


__all__ = ["NeuralSDE"]
