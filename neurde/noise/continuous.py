"""`NoisyODE`: a continuous model with injected noise, solved as a `neurde.NeuralSDE`."""

from typing import Any, Literal

import diffrax
import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray

from ..ode import NeuralODE, has_error_estimate
from ..sde import NeuralSDE
from ..stats import solver_stats
from .base import AbstractNoise, combined_scale


class NoisyODE(eqx.Module):
    r"""`model` (a `NeuralODE` or `NeuralSDE`) with extra noises $g_1, \dots, g_k$ in its diffusion.

    From a `NeuralODE` $dy = f\,dt$ it solves $dy = f\,dt + \operatorname{diag}(g)\,dW$ with
    $g = \sqrt{\sum_i g_i^2}$: one diagonal Brownian motion with the summed covariance, which
    is the same SDE in law as independent noises (see `combined_scale`). From a `NeuralSDE`
    the noises join its diffusion: summed in variance for diagonal noise; as extra
    independent columns $[G, \operatorname{diag}(g)]$ (general noise) for scalar or general
    noise. Parameters stay in `model`, so gradients and optimizers see one copy of them.

    Build it with `neurde.noise.additive`, `multiplicative`, `dropout_diffusion` or `inject`
    rather than directly. Under `eqx.nn.inference_mode` (`inference=True`) the noise is off
    and the call is exactly the wrapped model's deterministic solve (a `NeuralODE` with its
    own solver; a `NeuralSDE`'s drift as an ODE).

    **Arguments:**

    - `model`: the `NeuralODE` or `NeuralSDE`.
    - `noises`: the `AbstractNoise`s.
    - `solver`: SDE solver; default `diffrax.Euler()` (Euler–Maruyama, Itô) for a
      `NeuralODE`, the `NeuralSDE`'s own solver otherwise.
    - `dt0`: step of the SDE solve; default the model's `dt0`. Needed when the solver has no
      error estimate (Euler) and the model has none.
    - `brownian`: `"tree"` or `"grid"` (see `NeuralSDE`); default `"grid"` for constant steps
      (several times faster), `"tree"` otherwise, or the `NeuralSDE`'s own choice.
    - `inference`: noise off.
    """

    model: NeuralODE | NeuralSDE
    noises: tuple[AbstractNoise, ...]
    solver: diffrax.AbstractSolver | None
    dt0: float | None = eqx.field(static=True)
    brownian: Literal["tree", "grid"] | None = eqx.field(static=True)
    inference: bool = False

    def __init__(
        self,
        model: NeuralODE | NeuralSDE,
        noises: tuple[AbstractNoise, ...],
        *,
        solver: diffrax.AbstractSolver | None = None,
        dt0: float | None = None,
        brownian: Literal["tree", "grid"] | None = None,
        inference: bool = False,
    ):
        if not isinstance(model, NeuralODE | NeuralSDE):
            raise TypeError(
                f"NoisyODE: `model` must be a neurde.NeuralODE or neurde.NeuralSDE, got "
                f"{type(model).__name__}."
            )
        for noise in noises:
            if not isinstance(noise, AbstractNoise):
                raise TypeError(
                    f"NoisyODE: every noise must be a neurde.noise.AbstractNoise (Additive, "
                    f"Multiplicative, DropoutDiffusion), got {type(noise).__name__}."
                )
        self.model = model
        self.noises = tuple(noises)
        self.solver = solver
        self.dt0 = None if dt0 is None else float(dt0)
        self.brownian = brownian
        self.inference = inference
        self.sde(size=None)  # construct once now, so configuration errors surface here

    def _settings(self) -> dict[str, Any]:
        model = self.model
        if isinstance(model, NeuralODE):
            solver = diffrax.Euler() if self.solver is None else self.solver
            dt0 = self.dt0 if self.dt0 is not None else model.dt0
            brownian = self.brownian
            if brownian is None:
                brownian = "tree" if has_error_estimate(solver) else "grid"
            controller = model.stepsize_controller
            if not has_error_estimate(solver):
                controller = diffrax.ConstantStepSize()
            if dt0 is None and isinstance(controller, diffrax.ConstantStepSize):
                raise ValueError(
                    f"NoisyODE: the SDE is solved by {type(solver).__name__} with a constant "
                    "step, and neither the NeuralODE nor the transform sets `dt0`. Pass a step, "
                    "e.g. `neurde.noise.additive(model, 0.1, dt0=0.05)`."
                )
            return {
                "solver": solver, "stepsize_controller": controller, "dt0": dt0,
                "brownian": brownian, "brownian_tol": None,
            }  # fmt: skip
        return {
            "solver": model.solver if self.solver is None else self.solver,
            "stepsize_controller": model.stepsize_controller,
            "dt0": model.dt0 if self.dt0 is None else self.dt0,
            "brownian": model.brownian if self.brownian is None else self.brownian,
            "brownian_tol": model.brownian_tol,
        }

    def sde(self, size: int | None) -> NeuralSDE:
        """The `NeuralSDE` solved for states of dimension `size` (used by `solve`)."""
        model, noises = self.model, self.noises
        need_f = any(noise.needs_drift for noise in noises)
        if isinstance(model, NeuralODE):
            drift = model.field

            def diffusion(t, y, args):
                f = drift(t, y, args) if need_f else None
                return combined_scale(noises, t, y, f)

            noise, noise_size = "diagonal", None
        else:
            drift = model.drift
            base = model.diffusion
            if model.noise == "diagonal":

                def diffusion(t, y, args):
                    f = drift(t, y, args) if need_f else None
                    return combined_scale(noises, t, y, f, extra=(base(t, y, args),))

                noise, noise_size = "diagonal", None
            else:
                m = 1 if model.noise == "scalar" else model.noise_size
                assert m is not None

                def diffusion(t, y, args):
                    g = base(t, y, args)
                    g = g[:, None] if model.noise == "scalar" else g
                    f = drift(t, y, args) if need_f else None
                    return jnp.concatenate([g, jnp.diag(combined_scale(noises, t, y, f))], 1)

                noise, noise_size = "general", m + (1 if size is None else size)
        tolerances = model.tolerances
        return NeuralSDE(
            drift, diffusion, noise=noise, noise_size=noise_size, rtol=tolerances.rtol,
            atol=tolerances.atol, adjoint=model.adjoint, t0=model.t0, t1=model.t1,
            max_steps=model.max_steps, throw=model.throw, **self._settings(),
        )  # fmt: skip

    def _deterministic(self) -> NeuralODE | NeuralSDE:
        if isinstance(self.model, NeuralSDE):
            return eqx.tree_at(lambda m: m.inference, self.model, True)
        return self.model

    def solve(
        self,
        y0: Float[ArrayLike, " d"],
        ts: Float[ArrayLike, " times"] | None = None,
        *,
        args: Any = None,
        t0: float | None = None,
        t1: float | None = None,
        key: PRNGKeyArray | None = None,
    ) -> diffrax.Solution:
        """Solve from `y0`; returns the `diffrax.Solution`. Arguments as `__call__`."""
        if self.inference:
            return self._deterministic().solve(y0, ts, args=args, t0=t0, t1=t1)
        if key is None:
            raise ValueError(
                "NoisyODE: a `key` is needed in training mode to sample the injected noise: "
                "call `model(y0, key=jr.key(0))`. For the noise-free model use "
                "`eqx.nn.inference_mode(model)`; to average over noise use "
                "`neurde.noise.MonteCarlo`."
            )
        size = int(jnp.shape(y0)[0]) if jnp.ndim(y0) == 1 else None
        return self.sde(size).solve(y0, ts, args=args, t0=t0, t1=t1, key=key)

    def __call__(
        self,
        y0: Float[ArrayLike, " d"],
        ts: Float[ArrayLike, " times"] | None = None,
        *,
        args: Any = None,
        t0: float | None = None,
        t1: float | None = None,
        key: PRNGKeyArray | None = None,
    ) -> Float[Array, "*times d"]:
        """One sample path from the vector `y0` (at `t1`, or at each of `ts`).

        `key` draws the noise and is required unless `inference=True`.
        """
        solution = self.solve(y0, ts, args=args, t0=t0, t1=t1, key=key)
        ys: Any = solution.ys
        return ys[-1] if ts is None else ys

    def stats(self, solution: diffrax.Solution) -> dict[str, Int[Array, ""]]:
        """Drift evaluations and steps of a solve by this model (dropout-style noise also
        evaluates the field once more per step for its diffusion)."""
        if self.inference:
            return self._deterministic().stats(solution)
        return solver_stats(solution, self._settings()["solver"])


__all__ = ["NoisyODE"]
