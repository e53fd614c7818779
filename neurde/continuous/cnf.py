r"""Continuous normalizing flows (FFJORD): a neural ODE that carries its log-density change.

Direction convention: the forward solve is the *normalizing* direction. Data $x$ at $t_0$
flows along $\dot z = f_\theta(t, z)$ to the base variable $z(t_1)$, and the instantaneous
change of variables gives

$$\log p(x) = \log \mathcal N(z(t_1); 0, I) + \int_{t_0}^{t_1}
  \operatorname{tr}\partial_z f_\theta(t, z(t))\,dt,$$

the integral being the log-determinant of the Jacobian of the map $x \mapsto z(t_1)$. The
solve integrates it as the extra output `extras["log_det"]`. Sampling runs the same flow
backwards, from $z \sim \mathcal N(0, I)$ at $t_1$ to $x$ at $t_0$.
"""

import dataclasses
from collections.abc import Callable
from typing import Any, Literal, TypeAlias

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray

from .._solve import integrate
from .._types import Args, Input, MaybeKey, SaveTimes, VectorField
from .._validation import require_key
from ..fields import AbstractField
from ..model import AbstractContinuousModel, AbstractContinuousWrapper, AbstractModel
from ..ode import NeuralODE
from ..problem import Problem

_OWNER = "CNF"
# The tag of `jr.fold_in(key, TRACE_KEY)` for the Hutchinson probe of the trace (distinct from
# neurde.model's END_TIME_KEY = 1 and PROBE_KEY = 2, which RNODE uses).
TRACE_KEY = 3
LOG_DET = "log_det"
Estimator: TypeAlias = Literal["exact", "hutchinson"]
Probe: TypeAlias = Literal["gaussian", "rademacher"]


class _Plain(eqx.Module):
    """A drift with no extra outputs, in the form `(t, y, args) -> (dy, {})`."""

    drift: Callable[..., Any]

    def __call__(self, t: Any, y: Any, args: Any) -> tuple[Any, dict[str, Array]]:
        return self.drift(t, y, args), {}


class _WithTrace(eqx.Module):
    r"""`(t, y, args) -> (dy, dextras)` with the integrand $\operatorname{tr}\partial_y f$ added.

    A module (not a closure) so that the field's parameters and the probe stay visible to
    adjoints such as `diffrax.BacksolveAdjoint`.
    """

    field: Callable[..., Any]
    probe: Array | None

    def __call__(self, t: Any, y: Any, args: Any) -> tuple[Any, dict[str, Array]]:
        if self.probe is None:

            def f_aux(y_):
                out = self.field(t, y_, args)
                return out[0], out

            jac, (dy, dextras) = jax.jacfwd(f_aux, has_aux=True)(y)
            trace = jnp.trace(jac)
        else:
            # One Jacobian-vector product per evaluation, the probe fixed along the solve (as
            # in FFJORD): E[e^T J e] = tr(J) for E[e e^T] = I.
            probe = self.probe.astype(y.dtype)
            (dy, dextras), (jv, _) = jax.jvp(lambda y_: self.field(t, y_, args), (y,), (probe,))
            trace = jnp.vdot(probe, jv)
        return dy, {**dextras, LOG_DET: trace.astype(y.dtype)}


class CNF(AbstractContinuousWrapper):
    r"""A continuous normalizing flow (FFJORD): a neural ODE with its log-density change.

    A call maps data $x$ at $t_0$ to the base variable $z = z(t_1)$ of
    $\dot z = f_\theta(t, z, \text{args})$ (the normalizing direction); `solve(...)` also
    returns $\int_{t_0}^{t_1}\operatorname{tr}\partial_z f_\theta\,dt$ as
    `extras["log_det"]`, so that $\log p(x) = \log\mathcal N(z; 0, I) + $ `log_det`
    (`neurde.continuous.log_prob`). `neurde.continuous.sample` and `inverse` solve the flow
    backwards, base to data, with the log-density of the samples.

    The trace is an extra output integrated in the same solve (`neurde.Problem.extras`), so
    transforms compose with it: `neurde.noise.rnode(cnf)` adds the kinetic and Jacobian
    penalties next to `log_det` (Finlay et al.'s regularized FFJORD).

    - `estimator="exact"` forms $\partial_z f$ with `jax.jacfwd` ($d$ forward passes per
      evaluation), for states of dimension up to `max_exact_dim`.
    - `estimator="hutchinson"` estimates the trace by $e^\top \partial_z f\, e$ with one probe
      $e$ (Gaussian, or Rademacher with `probe="rademacher"`) drawn from
      `jr.fold_in(key, TRACE_KEY)` (`TRACE_KEY = 3`) and held fixed along the solve, as in
      FFJORD: one Jacobian-vector product per evaluation, an unbiased estimate of `log_det`
      (and so of $\log p(x)$). A call then needs `key=`.

    The state is one vector of shape `(d,)`; batch with `jax.vmap`.

    **Arguments:**

    - `field`: the vector field $f_\theta(t, z, \text{args})$ (e.g.
      `neurde.MLPField(d, time_dependent=True, key=...)` or any callable), or an already
      built continuous model (e.g. a `neurde.NeuralODE`), which is then used as it is.
    - `estimator`: `"exact"` (default) or `"hutchinson"`.
    - `probe`: the Hutchinson probe distribution, `"gaussian"` (default) or `"rademacher"`.
    - `max_exact_dim`: the largest state dimension the exact trace accepts (default 32).
    - `**ode_kwargs`: with a field, the settings of the inner `neurde.NeuralODE` (`solver`,
      `rtol`, `atol`, `stepsize_controller`, `adjoint`, `t0`, `t1`, `dt0`, `max_steps`,
      `throw`); `t1` defaults to 1.0.

    References: Chen, Rubanova, Bettencourt, Duvenaud, "Neural Ordinary Differential
    Equations", NeurIPS 2018 (the instantaneous change of variables). Grathwohl, Chen,
    Bettencourt, Sutskever, Duvenaud, "FFJORD: Free-form Continuous Dynamics for Scalable
    Reversible Generative Models", ICLR 2019 (the Hutchinson trace estimator).
    """

    model: AbstractContinuousModel
    estimator: Estimator = eqx.field(static=True)
    probe: Probe = eqx.field(static=True)
    max_exact_dim: int = eqx.field(static=True)

    def __init__(
        self,
        field: AbstractField | VectorField | AbstractContinuousModel,
        *,
        estimator: Estimator = "exact",
        probe: Probe = "gaussian",
        max_exact_dim: int = 32,
        **ode_kwargs: Any,
    ):
        if isinstance(field, AbstractContinuousModel):
            if ode_kwargs:
                raise ValueError(
                    f"{_OWNER}: got an already built continuous model and the solver "
                    f"settings {sorted(ode_kwargs)}; those belong to the model. Build it "
                    "with them (e.g. `NeuralODE(field, rtol=1e-5, t1=1.0)`), or pass the "
                    "field instead."
                )
            self.model = field
        elif isinstance(field, AbstractModel):
            raise TypeError(
                f"{_OWNER}: `field` must be a vector field or a continuous model, got the "
                f"non-continuous model {type(field).__name__}. Pass its vector field."
            )
        else:
            self.model = NeuralODE(field, **{"t1": 1.0, **ode_kwargs})
        self.estimator = estimator
        self.probe = probe
        self.max_exact_dim = max_exact_dim

    def __check_init__(self):
        if self.estimator not in ("exact", "hutchinson"):
            raise ValueError(
                f"{_OWNER}: unknown `estimator={self.estimator!r}`. Choose 'exact' "
                "(jax.jacfwd, small states) or 'hutchinson' (one Jacobian-vector product per "
                "step, any size)."
            )
        if self.probe not in ("gaussian", "rademacher"):
            raise ValueError(
                f"{_OWNER}: unknown `probe={self.probe!r}`. Choose 'gaussian' or 'rademacher'."
            )
        if (
            isinstance(self.max_exact_dim, bool)
            or not isinstance(self.max_exact_dim, int)
            or self.max_exact_dim < 1
        ):
            raise ValueError(
                f"{_OWNER}: `max_exact_dim` must be a positive int, got "
                f"{self.max_exact_dim!r}. Pass e.g. max_exact_dim=32."
            )

    def _check_state(self, y0: Input) -> int:
        if not eqx.is_array_like(y0) or jnp.ndim(y0) != 1:
            shape = jnp.shape(y0) if eqx.is_array_like(y0) else type(y0).__name__
            raise ValueError(
                f"{_OWNER}: the state must be one vector of shape (d,), got {shape}. Flatten "
                "it (e.g. `x.reshape(-1)`), or `jax.vmap` over a batch axis."
            )
        dim = jnp.shape(y0)[0]
        if self.estimator == "exact" and dim > self.max_exact_dim:
            raise ValueError(
                f"{_OWNER}: `estimator='exact'` forms the full {dim} x {dim} Jacobian at "
                f"every step, above `max_exact_dim={self.max_exact_dim}`. Use "
                "`estimator='hutchinson'` (one Jacobian-vector product per step), or raise "
                "`max_exact_dim`."
            )
        return dim

    def _probe(self, y0: Input, key: MaybeKey) -> Array | None:
        if self.estimator == "exact":
            return None
        key = require_key(
            _OWNER,
            key,
            "draw the Hutchinson probe of the trace (`estimator='hutchinson'`)",
            "Alternatively build the CNF with `estimator='exact'` (no randomness).",
        )
        dtype = jnp.result_type(y0, float)
        sample = jr.rademacher if self.probe == "rademacher" else jr.normal
        return sample(jr.fold_in(key, TRACE_KEY), jnp.shape(y0), dtype)

    def problem(
        self, y0: Input, ts: SaveTimes = None, *, args: Args = None, key: MaybeKey = None
    ) -> Problem:
        """The inner model's problem with the trace integral as the extra output `log_det`."""
        self._check_state(y0)
        inner = self.model.problem(y0, ts, args=args, key=key)
        dtype = jnp.result_type(y0, float)
        extras = {**inner.extras, LOG_DET: jnp.zeros((), dtype)}
        field = _Plain(inner.drift) if inner.augmented is None else inner.augmented
        augmented = _WithTrace(field, self._probe(y0, key))
        return dataclasses.replace(inner, extras=extras, augmented=augmented)


def find_cnf(owner: str, model: Any) -> CNF:
    """The `CNF` inside `model` (the model itself or the continuous wrappers around one)."""
    if not isinstance(model, AbstractModel):
        raise TypeError(
            f"{owner}: `model` must be a `neurde.continuous.CNF` or a continuous model "
            f"wrapping one (e.g. `neurde.noise.rnode(cnf)`), got {type(model).__name__}."
        )
    # Only wrappers that change the solve keep the meaning of the state and of `log_det`.
    chain = []
    for inner in _chain(model):
        chain.append(type(inner).__name__)
        if isinstance(inner, CNF):
            return inner
        if not isinstance(inner, AbstractContinuousModel):
            break
    raise TypeError(
        f"{owner}: no CNF under the continuous wrappers of the model ({' > '.join(chain)}). "
        "Pass a `neurde.continuous.CNF`, or a transform of one such as "
        "`neurde.noise.rnode(cnf)`; for a model built around a CNF pass the CNF itself."
    )


def _chain(model: AbstractModel) -> list[AbstractModel]:
    chain = [model]
    while isinstance(model, AbstractContinuousWrapper) and not isinstance(model, CNF):
        model = model.model
        chain.append(model)
    return chain


def standard_normal_log_prob(z: Float[Array, " d"]) -> Float[Array, ""]:
    r"""$\log\mathcal N(z; 0, I)$ for one vector `z`: the base density of a CNF."""
    return -0.5 * (jnp.sum(jnp.square(z)) + z.shape[-1] * jnp.log(2 * jnp.pi))


def log_prob(
    model: AbstractModel, x: Float[Array, " d"], *, args: Args = None, key: MaybeKey = None
) -> Float[Array, ""]:
    r"""The log-density $\log p(x) = \log\mathcal N(z(t_1); 0, I) + \int_{t_0}^{t_1}
    \operatorname{tr}\partial_z f\,dt$ of one point under a CNF.

    One forward solve of `model`, a `CNF` or a stack of continuous transforms around one
    (`neurde.noise.rnode(cnf)`: the penalties are integrated alongside and ignored here).
    With `estimator="hutchinson"` the result is an unbiased estimate; pass `key=`.
    Batch with `jax.vmap`.

    **Arguments:**

    - `model`: the CNF, or a continuous wrapper stack around one.
    - `x`: one data point, shape `(d,)`.
    - `args`: passed to the field.
    - `key`: the randomness of the stack (the Hutchinson probe, noise).

    **Returns:**

    The scalar $\log p(x)$.
    """
    find_cnf("log_prob", model)
    solution = model.solve(x, args=args, key=key)
    return standard_normal_log_prob(solution.ys) + solution.extras[LOG_DET]


class _Reversed(eqx.Module):
    r"""The augmented drift of a problem run backwards in time: at $s$, minus the drift at
    $t_0 + t_1 - s$; the extras' integrands unchanged, so they keep their forward values."""

    augmented: Callable[..., Any]
    t0: Any
    t1: Any

    def __call__(self, s: Any, y: Any, args: Any) -> tuple[Any, dict[str, Array]]:
        dy, dextras = self.augmented(self.t0 + self.t1 - s, y, args)
        return jax.tree.map(jnp.negative, dy), dextras


class _StatePart(eqx.Module):
    """The state part `dy` of an augmented drift (for the checks made on `Problem.drift`)."""

    augmented: Callable[..., Any]

    def __call__(self, t: Any, y: Any, args: Any) -> Any:
        return self.augmented(t, y, args)[0]


def inverse(
    model: AbstractModel, z: Float[Array, " d"], *, args: Args = None, key: MaybeKey = None
) -> tuple[Float[Array, " d"], Float[Array, ""]]:
    r"""Run a CNF backwards: the data point $x$ whose base variable is `z`, with $\log p(x)$.

    Solves $\dot z = f_\theta$ from $z$ at $t_1$ back to $t_0$ (as the time-reversed problem
    $\dot y(s) = -f_\theta(t_0 + t_1 - s, y(s))$ on $[t_0, t_1]$, through the same solver and
    settings) with the trace integral alongside, and returns
    $\log p(x) = \log\mathcal N(z; 0, I) + \int_{t_0}^{t_1}\operatorname{tr}\partial_z f\,dt$
    along the same path, so it equals `log_prob(model, x)` up to the solver's error. With
    `estimator="hutchinson"` the same `key` draws the same probe in both directions.

    **Arguments:**

    - `model`: the CNF, or a continuous wrapper stack around one (its solve must have no
      diffusion: sample from a noisy model under `eqx.nn.inference_mode`).
    - `z`: one base point, shape `(d,)`.
    - `args`, `key`: as for `log_prob`.

    **Returns:**

    `(x, log_p)`: the data point and its log-density.
    """
    find_cnf("inverse", model)
    assert isinstance(model, AbstractContinuousModel)  # find_cnf walks continuous models only
    problem = model.problem(z, None, args=args, key=key)
    if problem.diffusion is not None:
        raise ValueError(
            "inverse: the model's solve has a diffusion (a noise transform), and a stochastic "
            "path has no reverse flow. Sample under `eqx.nn.inference_mode(model)`."
        )
    assert problem.augmented is not None  # the CNF sets it
    reversed_ = _Reversed(problem.augmented, problem.t0, problem.t1)
    problem = dataclasses.replace(problem, drift=_StatePart(reversed_), augmented=reversed_)
    solution = integrate(problem, z, None, args)
    return solution.ys, standard_normal_log_prob(z) + solution.extras[LOG_DET]


def sample(
    model: AbstractModel, key: PRNGKeyArray, dim: int, *, args: Args = None
) -> tuple[Float[Array, " d"], Float[Array, ""]]:
    r"""Draw one sample of a CNF: $z \sim \mathcal N(0, I_d)$ run backwards by `inverse`.

    **Arguments:**

    - `model`: the CNF, or a continuous wrapper stack around one.
    - `key`: draws $z$ (from `jr.split(key)[0]`) and the randomness of the solve (the
      Hutchinson probe, from `jr.split(key)[1]`). Batch with `jax.vmap` over keys.
    - `dim`: the dimension $d$ of the data.
    - `args`: passed to the field.

    **Returns:**

    `(x, log_p)`: the sample and its log-density under the model.
    """
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ValueError(f"sample: `dim` must be a positive int (the data dimension), got {dim!r}.")
    z_key, solve_key = jr.split(key)
    z = jr.normal(z_key, (dim,), jnp.result_type(float))
    return inverse(model, z, args=args, key=solve_key)
