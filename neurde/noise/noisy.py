r"""`NoisyModel`: a continuous model with injected noise, solved as an SDE."""

import dataclasses
from collections.abc import Callable
from typing import Any

import diffrax
import equinox as eqx
import jax.numpy as jnp

from .._config import BrownianKind, check_sde_solver, check_solver, has_error_estimate
from .._solve import on_grid
from .._types import Args, Input, MaybeKey, SaveTimes
from .._validation import check_positive, require_key
from ..model import AbstractContinuousModel, AbstractContinuousWrapper
from ..problem import Problem
from .base import AbstractNoise, check_noises, combined_scale


class _NoisyDiffusion(eqx.Module):
    """The diffusion of a problem with `noises` added (a module, so that the parameters of
    the drift and of a base diffusion stay visible to adjoints such as `BacksolveAdjoint`).

    `base` is the problem's own diffusion or `None`; `columns` is `None` for a diagonal
    result, else the number of the base's Brownian columns (1 for scalar noise), to which
    the noises are appended as `diag(g)`.
    """

    noises: tuple[AbstractNoise, ...]
    drift: Callable[..., Any] | None
    base: Callable[..., Any] | None
    columns: int | None = eqx.field(static=True)

    def __call__(self, t: Any, y: Any, args: Any) -> Any:
        f = None if self.drift is None else self.drift(t, y, args)
        if self.columns is None:
            extra = () if self.base is None else (self.base(t, y, args),)
            return combined_scale(self.noises, t, y, f, extra=extra)
        assert self.base is not None
        g = self.base(t, y, args)
        g = g[:, None] if self.columns == 1 and g.ndim == 1 else g
        return jnp.concatenate([g, jnp.diag(combined_scale(self.noises, t, y, f))], axis=1)


def _diffusion(problem: Problem, noises: tuple[AbstractNoise, ...], y0: Any) -> dict[str, Any]:
    """The problem's diffusion with `noises` added: its fields to replace."""
    drift = problem.drift if any(noise.needs_drift for noise in noises) else None
    diagonal = problem.diffusion is None or problem.noise == "diagonal"
    if diagonal:
        diffusion = _NoisyDiffusion(noises, drift, problem.diffusion, None)
        return {"diffusion": diffusion, "noise": "diagonal", "noise_size": None}
    if not (eqx.is_array_like(y0) and jnp.ndim(y0) == 1):
        raise ValueError(
            f"NoisyModel: noise added to an SDE with {problem.noise} noise becomes extra "
            "columns of a general diffusion, so the state must be one vector (shape (d,)); "
            f"got shape {jnp.shape(y0) if eqx.is_array_like(y0) else type(y0).__name__}."
        )
    m = 1 if problem.noise == "scalar" else problem.noise_size
    assert m is not None
    diffusion = _NoisyDiffusion(noises, drift, problem.diffusion, m)
    return {"diffusion": diffusion, "noise": "general", "noise_size": m + jnp.shape(y0)[0]}


class NoisyModel(AbstractContinuousWrapper):
    r"""A continuous `model` with extra diagonal noises $g_1, \dots, g_k$ in its diffusion.

    From an ODE $dy = f\,dt$ it solves $dy = f\,dt + \operatorname{diag}(g)\,dW$ with
    $g = \sqrt{\sum_i g_i^2}$: one diagonal Brownian motion with the summed covariance, the
    same SDE in law as independent noises (see `AbstractNoise`). From an SDE the noises join
    its diffusion: summed in variance for diagonal noise; as extra independent columns
    $[G, \operatorname{diag}(g)]$ (general noise) for scalar or general noise. Any continuous
    model can be wrapped, including one already wrapped (by STEER, RNODE or another noise):
    the noise is added to the problem that model solves, whatever else changes it.
    Parameters stay in `model`, so gradients and optimizers see one copy of them.

    Build it with `neurde.noise.additive`, `multiplicative`, `dropout_diffusion` or `inject`.
    Under `eqx.nn.inference_mode` (`inference=True`) the noise is off and a call is exactly
    the wrapped model's (deterministic, for an ODE).

    The key: the Brownian motion is drawn from the call's `key` (an SDE's own Brownian motion
    is replaced by one with the extra dimensions, drawn from the same key).

    **Arguments:**

    - `model`: the continuous model (`neurde.AbstractContinuousModel`).
    - `noises`: the `AbstractNoise`s.
    - `solver`: the SDE solver; default `diffrax.Euler()` (Euler–Maruyama, Itô) when the
      model solves an ODE, the model's own solver when it solves an SDE.
    - `dt0`: the step of the SDE solve; default the model's. Needed when the solver runs
      with constant steps (Euler) and the model sets none.
    - `brownian`: `"tree"` or `"grid"` (see `neurde.NeuralSDE`); default `"grid"` for
      constant steps that divide the interval (several times faster) and `"tree"` otherwise
      (adaptive steps, a random end time), or an SDE's own.
    - `inference`: noise off.

    References: Liu, Xiao, Si, Cao, Kumar, Hsieh, "Neural SDE: Stabilizing Neural ODE
    Networks with Stochastic Noise", 2019.
    """

    model: AbstractContinuousModel
    noises: tuple[AbstractNoise, ...]
    solver: diffrax.AbstractSolver | None
    dt0: float | None = eqx.field(static=True)
    brownian: BrownianKind | None = eqx.field(static=True)
    inference: bool = False

    def __init__(
        self,
        model: AbstractContinuousModel,
        noises: tuple[AbstractNoise, ...],
        *,
        solver: diffrax.AbstractSolver | None = None,
        dt0: float | None = None,
        brownian: BrownianKind | None = None,
        inference: bool = False,
    ):
        self.model = model
        self.noises = tuple(noises)
        self.solver = solver
        self.dt0 = None if dt0 is None else float(dt0)
        self.brownian = brownian
        self.inference = inference

    def __check_init__(self):
        owner = "NoisyModel"
        if not isinstance(self.model, AbstractContinuousModel):
            raise TypeError(
                f"{owner}: `model` must be a continuous neurde model (NeuralODE, NeuralSDE or "
                f"one wrapped by a transform), got {type(self.model).__name__}."
            )
        check_noises(owner, self.noises)
        if self.solver is not None:
            check_solver(owner, self.solver)
        check_positive(owner, "dt0", self.dt0, "It is the step of the SDE solve.")
        if self.brownian not in (None, "tree", "grid"):
            raise ValueError(
                f"{owner}: `brownian` must be 'tree' or 'grid', got {self.brownian!r}."
            )

    def problem(
        self, y0: Input, ts: SaveTimes = None, *, args: Args = None, key: MaybeKey = None
    ) -> Problem:
        """The wrapped model's problem with the noises added to its diffusion."""
        inner = self.model.problem(y0, ts, args=args, key=key)
        if self.inference:
            return inner
        key = require_key(
            "NoisyModel",
            key,
            "sample the injected noise",
            "For the noise-free model use `eqx.nn.inference_mode(model)`; to average over "
            "noise use `neurde.noise.MonteCarlo`.",
        )
        if inner.path is not None:
            raise ValueError(
                "NoisyModel: the wrapped SDE runs on a given Brownian motion (its `brownian=` "
                "path or increments), which has no room for the Brownian dimensions of the "
                "injected noise. Let the SDE draw its Brownian motion from the key "
                "(brownian='grid' or 'tree') to add noise transforms to it."
            )
        diffusion = _diffusion(inner, self.noises, y0)
        return dataclasses.replace(
            inner,
            **diffusion,
            **self._solver_settings(inner, diffusion["noise"]),
            key=key if inner.key is None else inner.key,
            owner="NoisyModel",
        )

    def _solver_settings(self, inner: Problem, noise: Any) -> dict[str, Any]:
        dt0 = inner.dt0 if self.dt0 is None else self.dt0
        if inner.diffusion is not None and self.solver is None:
            solver, controller = inner.solver, inner.stepsize_controller
            brownian = inner.brownian if self.brownian is None else self.brownian
        else:
            solver = diffrax.Euler() if self.solver is None else self.solver
            controller = inner.stepsize_controller
            if not has_error_estimate(solver):
                controller = diffrax.ConstantStepSize()
            brownian = self.brownian
            if brownian is None:
                brownian = "grid" if on_grid(inner, controller, dt0) else "tree"
        check_sde_solver("NoisyModel", solver, controller, noise, brownian, None)
        return dict(solver=solver, stepsize_controller=controller, dt0=dt0, brownian=brownian)
