r"""`NoisyModel`: a continuous model with injected noise, solved as an SDE."""

import dataclasses
from typing import Any

import diffrax
import equinox as eqx
import jax.numpy as jnp
from jaxtyping import PRNGKeyArray, PyTree

from .._config import BrownianKind, check_sde_solver, check_solver, has_error_estimate
from .._types import Args
from .._validation import check_positive, require_key
from ..model import AbstractContinuousModel, AbstractContinuousWrapper
from ..problem import Problem
from .base import AbstractNoise, combined_scale


def _diffusion(problem: Problem, noises: tuple[AbstractNoise, ...], y0: Any) -> dict[str, Any]:
    """The problem's diffusion with `noises` added: its fields to replace."""
    drift, base = problem.drift, problem.diffusion
    need_f = any(noise.needs_drift for noise in noises)

    def drift_value(t, y, args):
        return drift(t, y, args) if need_f else None

    if base is None:

        def diffusion(t, y, args):
            return combined_scale(noises, t, y, drift_value(t, y, args))

        return {"diffusion": diffusion, "noise": "diagonal", "noise_size": None}
    if problem.noise == "diagonal":

        def diffusion(t, y, args):
            extra = (base(t, y, args),)
            return combined_scale(noises, t, y, drift_value(t, y, args), extra=extra)

        return {"diffusion": diffusion, "noise": "diagonal", "noise_size": None}
    if not (eqx.is_array_like(y0) and jnp.ndim(y0) == 1):
        raise ValueError(
            f"NoisyModel: noise added to an SDE with {problem.noise} noise becomes extra "
            "columns of a general diffusion, so the state must be one vector (shape (d,)); "
            f"got shape {jnp.shape(y0) if eqx.is_array_like(y0) else type(y0).__name__}."
        )
    scalar = problem.noise == "scalar"
    m = 1 if scalar else problem.noise_size
    assert m is not None

    def general(t, y, args):
        g = base(t, y, args)
        g = g[:, None] if scalar else g
        scale = combined_scale(noises, t, y, drift_value(t, y, args))
        return jnp.concatenate([g, jnp.diag(scale)], axis=1)

    return {"diffusion": general, "noise": "general", "noise_size": m + jnp.shape(y0)[0]}


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
      constant steps (several times faster) and `"tree"` for adaptive ones, or an SDE's own.
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
        for noise in self.noises:
            if not isinstance(noise, AbstractNoise):
                raise TypeError(
                    f"{owner}: noises must be neurde.noise.AbstractNoise objects (Additive, "
                    f"Multiplicative, DropoutDiffusion), got {type(noise).__name__}."
                )
        if self.solver is not None:
            check_solver(owner, self.solver)
        check_positive(owner, "dt0", self.dt0, "It is the step of the SDE solve.")
        if self.brownian not in (None, "tree", "grid"):
            raise ValueError(
                f"{owner}: `brownian` must be 'tree' or 'grid', got {self.brownian!r}."
            )

    def problem(
        self,
        y0: PyTree[Any],
        ts: Any,
        *,
        args: Args,
        key: PRNGKeyArray | None,
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
            constant = isinstance(controller, diffrax.ConstantStepSize)
            default = "grid" if constant else "tree"
            brownian = default if self.brownian is None else self.brownian
        check_sde_solver("NoisyModel", solver, controller, noise, brownian, None)
        return dict(solver=solver, stepsize_controller=controller, dt0=dt0, brownian=brownian)
