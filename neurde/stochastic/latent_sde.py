r"""The latent SDE: a posterior and a prior SDE sharing a diffusion, the path KL, the ELBO."""

import dataclasses
from collections.abc import Callable
from typing import Any, Literal, TypeAlias

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from .._scan_solve import scannable
from .._solve import integrate
from .._types import Args, MaybeKey, SaveTimes
from .._validation import is_concrete, require_key
from ..brownian import GridBrownianPath, brownian_increment
from ..continuous.latent_ode import gaussian_kl
from ..continuous.ode_rnn import IrregularSeries, _sizes
from ..fields import AbstractField, MLPField
from ..model import AbstractContinuousModel, AbstractWrapper
from ..problem import Problem
from ..sde import NeuralSDE
from ..solution import ModelSolution
from .latent_fields import DiagonalDiffusion, LatentContext, LatentDrift

# Tag of `jr.fold_in(key, tag)` for the sample of z0; the Brownian motion uses the call's key
# itself, as every continuous model does.
_SAMPLE_KEY = 103
Likelihood: TypeAlias = Literal["gaussian", "laplace"]


class _Plain(eqx.Module):
    drift: Callable[..., Any]

    def __call__(self, t: Any, y: Any, args: Any) -> tuple[Any, dict[str, Array]]:
        return self.drift(t, y, args), {}


class _PathKL(eqx.Module):
    r"""`(t, z, context) -> (h, {..., "kl_path": ½|(h - f)/g|²})` along the posterior solve.

    `base` gives the posterior drift (and the extras of wrappers such as RNODE); the prior
    drift is the problem's drift under an empty context; `g` the problem's own diffusion,
    so noise added by a transform enters the KL as it enters the solve. With `increment`
    (the Brownian increment $\Delta W$ of the grid step starting at `t`), also the log path
    weight $\log d\mathbb P/d\mathbb Q$ as `"log_weight_path"`.
    """

    base: Callable[..., Any]
    drift: Callable[..., Any]
    diffusion: Callable[..., Any]
    increment: "_GridIncrement | None" = None

    def __call__(self, t: Any, z: Any, args: Any) -> tuple[Any, dict[str, Array]]:
        h, dextras = self.base(t, z, args)
        f = self.drift(t, z, LatentContext(None, None, args.args))
        u = (h - f) / self.diffusion(t, z, args)
        kl = 0.5 * jnp.sum(u**2)
        if self.increment is None:
            return h, {**dextras, "kl_path": kl}
        # Extras are integrated against dt only (Euler: integrand times dt at the step's
        # start), so the Itô sum -u_k dW_k enters as -u_k dW_k / dt. Per step the weight is
        # then -u_k dW_k - ½ u_k² dt, exactly the log ratio of the prior's and the
        # posterior's Euler transition densities (see `latent_sde_log_weights`).
        noise = jnp.sum(u * self.increment(t, u.dtype)) / self.increment.dt
        return h, {**dextras, "kl_path": kl, "log_weight_path": -noise - kl}


def _latent_problem(
    model: AbstractContinuousModel, z0: Array, ts: Any, context: LatentContext, key: Any
) -> Problem:
    """The latent solve's problem, with a clear error where a grid path needs a concrete t1."""
    problem = model.problem(z0, ts, args=context, key=key)
    grid = problem.diffusion is not None and problem.brownian == "grid"
    if grid and problem.brownian_t1 is None and not is_concrete(problem.t1):
        raise ValueError(
            "LatentSDE: brownian='grid' samples the Brownian motion on a fixed grid up to "
            "t1, but the latent SDE has no `t1` and the last of `ts` is traced (under "
            "`jit`/`vmap`). Build the model with `t1=...` (e.g. the last observation time), "
            "or use brownian='tree'."
        )
    return problem


def _with_path_kl(problem: Problem, z0: Array, weighted: bool = False) -> Problem:
    """`problem` with the path KL as an extra output (zero when there is no noise), and with
    `weighted` the log path weight `"log_weight_path"` as well."""
    extras = {**problem.extras, "kl_path": jnp.zeros((), z0.dtype)}
    if weighted:
        extras["log_weight_path"] = jnp.zeros((), z0.dtype)
    if problem.diffusion is None:
        return dataclasses.replace(problem, extras=extras)
    if problem.noise != "diagonal":
        raise ValueError(
            f"LatentSDE: the path KL ½|(h - f)/g|² divides by a diagonal diffusion g, but the "
            f"latent solve has noise={problem.noise!r} (set by {problem.owner}). Use "
            "noise='diagonal' and transforms that keep it (noise added to a diagonal SDE does)."
        )
    base = _Plain(problem.drift) if problem.augmented is None else problem.augmented
    increment = _grid_increment(problem, z0) if weighted else None
    augmented = _PathKL(base, problem.drift, problem.diffusion, increment)
    return dataclasses.replace(problem, extras=extras, augmented=augmented)


class _GridIncrement(eqx.Module):
    """The Brownian increment of the grid step starting at `t`: the one the scan solve adds
    (drawn again from the same key and step index, or read from the given increments)."""

    t0: float = eqx.field(static=True)
    dt: float = eqx.field(static=True)
    shape: tuple[int, ...] = eqx.field(static=True)
    key: Any
    increments: Array | None

    def __call__(self, t: Any, dtype: Any) -> Array:
        k = jnp.round((t - self.t0) / self.dt).astype(jnp.int32)
        if self.increments is not None:
            return self.increments[k].astype(dtype)
        return brownian_increment(self.key, k, self.shape, self.dt, dtype)


def _grid_increment(problem: Problem, z0: Array) -> _GridIncrement:
    """The increments of an Euler–Maruyama solve on the grid Brownian path, or an error."""
    if not (scannable(problem) and type(problem.solver) is diffrax.Euler):
        raise ValueError(
            f"latent_sde_iwae: the path weight needs the Brownian increments of the posterior "
            f"solve, which neurde exposes for Euler–Maruyama with constant steps on the grid "
            f"Brownian path (and backprop through the solve); got solver="
            f"{type(problem.solver).__name__}, brownian={problem.brownian!r} (set by "
            f"{problem.owner}). Build the LatentSDE with the default solver, `dt0=...`, "
            "`t1=...` and brownian='grid'."
        )
    path = problem.path
    increments = path.increments if isinstance(path, GridBrownianPath) else None
    t0, dt = float(problem.t0), float(problem.dt0)  # type: ignore[arg-type]
    return _GridIncrement(t0, dt, tuple(z0.shape), problem.key, increments)


class LatentSDE(AbstractWrapper):
    r"""The latent SDE of Li et al.: a VAE whose latent state follows an SDE.

    Prior and approximate posterior are SDEs on $z \in \mathbb{R}^n$ sharing one diagonal
    diffusion $g$:

    $$\text{prior: } dz = f(t, z)\,dt + g(t, z)\,dW_t, \quad z_0 \sim p(z_0)
      = \mathcal N(\mu_p, \operatorname{diag}\sigma_p^2);$$
    $$\text{posterior: } dz = h(t, z, c(t))\,dt + g(t, z)\,dW_t, \quad z_0 \sim q(z_0 \mid x)
      = \mathcal N(\mu_q, \operatorname{diag}\sigma_q^2).$$

    A GRU reads the observations backwards in time (inputs $[x_i \odot m_i, m_i]$) and a
    linear readout gives a context $c_i$ per observation time; the posterior drift reads the
    context of the next observation (`LatentContext`), and $q(z_0 \mid x)$ is a linear map
    of $c_1$. By Girsanov's theorem, with $u = (h - f)/g$ (entrywise),

    $$\mathrm{KL}(\mathbb Q \,\|\, \mathbb P) = \mathrm{KL}(q(z_0) \,\|\, p(z_0))
      + \mathbb E_{\mathbb Q} \int_{t_0}^{t_1} \tfrac12 |u(t, z_t)|^2\,dt,$$

    and the path term is integrated along the posterior solve as an extra output (one
    sample: the integral along the sampled path).

    **How a series goes through the model interface.** `y0` is a
    `neurde.continuous.IrregularSeries` (its mask marks the observed entries) and `ts` the
    times at which to report the decoded latent path (required; `ts=series.times`
    reconstructs the observations). `solve(...)` samples $z_0 \sim q$ (from
    `jr.fold_in(key, 103)`) and one posterior path (the Brownian motion from `key`), and
    returns the decoded path with `extras["kl_path"]` and `extras["kl_z0"]` (closed form).
    `latent_sde_elbo` assembles the training objective, `latent_sde_iwae` a tighter one
    over several posterior paths, and `sample_prior` draws from the prior. The latent SDE
    is the `neurde.NeuralSDE` held as `model` (drift a `LatentDrift`, args a
    `LatentContext`): regularizer transforms act on it, and noise they add to its
    diagonal diffusion enters the KL as it enters the solve. In inference mode
    (`eqx.nn.inference_mode`) $z_0 = \mu_q$, the posterior drift is solved as an ODE and
    `kl_path` is zero (not integrated).

    **Arguments:**

    - `data_size`, `latent_size`, `context_size`, `hidden_size`: the dimensions of $x$,
      $z$, $c$ and the GRU's state.
    - `posterior_drift`: $h(t, [z; c], \text{args})$; default an
      `MLPField(latent_size + context_size, width_size, depth, out_shape=(latent_size,))`.
    - `prior_drift`: $f(t, z, \text{args})$; default an `MLPField(latent_size, ...)`.
    - `diffusion`: $g(t, z, \text{args})$, positive, of the shape of $z$; default a
      `DiagonalDiffusion(latent_size, width_size)`.
    - `width_size`, `depth`: the default fields' MLPs.
    - `decoder`: `z -> x` for one state; default a linear map (the example's projector).
    - `key`: initialization key.
    - `sde_kwargs`: the latent `neurde.NeuralSDE`'s settings (`solver`, `dt0`, `t0`
      (default 0), `t1` (default: the last of `ts`; give it for `brownian="grid"` when the
      times are traced, e.g. under `vmap`), `brownian`, `brownian_tol`, `adjoint`, ...).
      The noise is diagonal.

    References: Li, Wong, Chen, Duvenaud, "Scalable Gradients for Stochastic Differential
    Equations", AISTATS 2020, Section 5 and Eq. (10); torchsde's `examples/latent_sde_lorenz.py`
    (the encoder, the context and the diffusion).
    """

    gru: eqx.nn.GRUCell
    context: eqx.nn.Linear
    qz0: eqx.nn.Linear
    model: AbstractContinuousModel
    decoder: Callable[[Any], Any]
    pz0_mean: Float[Array, " n"]
    pz0_log_std: Float[Array, " n"]
    latent_size: int = eqx.field(static=True)
    inference: bool = False

    def __init__(
        self,
        data_size: int,
        latent_size: int,
        context_size: int = 8,
        hidden_size: int = 16,
        *,
        posterior_drift: AbstractField | Callable[..., Any] | None = None,
        prior_drift: AbstractField | Callable[..., Any] | None = None,
        diffusion: AbstractField | Callable[..., Any] | None = None,
        width_size: int = 32,
        depth: int = 1,
        decoder: Callable[[Any], Any] | None = None,
        inference: bool = False,
        key: PRNGKeyArray,
        **sde_kwargs: Any,
    ):
        sizes = dict(data_size=data_size, latent_size=latent_size, context_size=context_size)
        _sizes("LatentSDE", **sizes, hidden_size=hidden_size)
        if sde_kwargs.get("noise", "diagonal") != "diagonal":
            raise ValueError(
                f"LatentSDE: `noise` must be 'diagonal' (the path KL divides by g entrywise), "
                f"got noise={sde_kwargs['noise']!r}. Drop it."
            )
        gkey, ckey, qkey, hkey, fkey, dkey, okey = jr.split(key, 7)
        if posterior_drift is None:
            size = latent_size + context_size
            posterior_drift = MLPField(size, width_size, depth, out_shape=(latent_size,), key=hkey)
        if prior_drift is None:
            prior_drift = MLPField(latent_size, width_size, depth, key=fkey)
        if diffusion is None:
            diffusion = DiagonalDiffusion(latent_size, width_size, key=dkey)
        if decoder is None:
            decoder = eqx.nn.Linear(latent_size, data_size, key=okey)
        self.gru = eqx.nn.GRUCell(2 * data_size, hidden_size, key=gkey)
        self.context = eqx.nn.Linear(hidden_size, context_size, key=ckey)
        self.qz0 = eqx.nn.Linear(context_size, 2 * latent_size, key=qkey)
        drift = LatentDrift(posterior_drift, prior_drift)
        self.model = NeuralSDE(drift, diffusion, **sde_kwargs)
        self.decoder = decoder
        self.pz0_mean = jnp.zeros(latent_size)
        self.pz0_log_std = jnp.zeros(latent_size)
        self.latent_size = latent_size
        self.inference = inference

    def __check_init__(self):
        if not isinstance(self.model, AbstractContinuousModel):
            raise TypeError(
                f"LatentSDE: `model` must be a continuous neurde model (the latent "
                f"NeuralSDE, possibly wrapped by transforms), got {type(self.model).__name__}."
            )
        if not callable(self.decoder):
            raise TypeError(
                f"LatentSDE: `decoder` must be a function of one latent state, got "
                f"{type(self.decoder).__name__}."
            )

    def encode(self, series: IrregularSeries) -> tuple[Array, Array, Array]:
        r"""`(contexts, mean, std)`: one context per observation time and $q(z_0 \mid x)$."""
        if not isinstance(series, IrregularSeries):
            raise TypeError(
                "LatentSDE: `y0` must be a `neurde.continuous.IrregularSeries` (the observed "
                f"times, values and mask the posterior is conditioned on), got "
                f"{type(series).__name__}. To sample the prior, use `sample_prior(model, ts, "
                "key=...)`."
            )
        inputs = jnp.concatenate([series.values * series.mask, series.mask], axis=-1)
        observed = jnp.any(series.mask > 0, axis=-1)

        def step(h, x):
            inp, seen = x
            h = jnp.where(seen, self.gru(inp, h), h)
            return h, h

        h0 = jnp.zeros(self.gru.hidden_size, inputs.dtype)
        _, hs = jax.lax.scan(step, h0, (inputs, observed), reverse=True)
        contexts = jax.vmap(self.context)(hs)
        mean, log_std = jnp.split(self.qz0(contexts[0]), 2)
        return contexts, mean, jnp.exp(log_std)

    def solve(
        self, y0: IrregularSeries, ts: SaveTimes = None, *, args: Args = None, key: MaybeKey = None
    ) -> ModelSolution:
        """Encode the series, sample $z_0$ and one posterior path, decode it at `ts`.

        See `neurde.AbstractModel.solve`; `y0` is an `IrregularSeries`, `ts` the times to
        report (required). `extras` holds `"kl_path"` and `"kl_z0"` beside the latent solve's.
        """
        if y0 is None:
            raise ValueError(
                "LatentSDE: `y0` (the observed series, the context the posterior drift reads) "
                "is missing. Pass an `IrregularSeries`, or sample the prior with "
                "`sample_prior(model, ts, key=...)`."
            )
        if ts is None:
            raise ValueError(
                "LatentSDE: `ts` (the times to report) is required. Pass `ts=series.times` "
                "to reconstruct the observations."
            )
        return _posterior_solve(self, y0, ts, args, key, weighted=False)


def _posterior_solve(
    model: LatentSDE, series: IrregularSeries, ts: Any, args: Any, key: Any, weighted: bool
) -> ModelSolution:
    r"""`LatentSDE.solve`; with `weighted`, also the log importance weight of the sample,
    `extras["log_weight_z0"]` ($\log p(z_0) - \log q(z_0)$) and `extras["log_weight_path"]`
    ($\log d\mathbb P/d\mathbb Q$ along the path, see `latent_sde_iwae`)."""
    contexts, mean, std = model.encode(series)
    _check_start(model.model.t0, series.times)
    z0, key = _sample_z0("LatentSDE", "posterior", model.inference, mean, std, key)
    context = LatentContext(series.times, contexts, args)
    problem = _latent_problem(model.model, z0, ts, context, key)
    solution = integrate(_with_path_kl(problem, z0, weighted), z0, ts, context)
    prior_std = jnp.exp(model.pz0_log_std)
    # KL(N(m_q, s_q) || N(m_p, s_p)) is invariant under the affine map z -> (z - m_p) / s_p.
    extras = {"kl_z0": gaussian_kl((mean - model.pz0_mean) / prior_std, std / prior_std)}
    if weighted:
        # log N(z0; m_p, s_p) - log N(z0; m_q, s_q), the normalizers' 2π cancelling.
        zp, zq = (z0 - model.pz0_mean) / prior_std, (z0 - mean) / std
        log_ratio = -0.5 * (zp**2 - zq**2) - model.pz0_log_std + jnp.log(std)
        extras["log_weight_z0"] = jnp.sum(log_ratio)
    solution = dataclasses.replace(solution, extras={**solution.extras, **extras})
    return solution.map(model.decoder)


def _sample_z0(
    owner: str, which: str, inference: bool, mean: Array, std: Array, key: Any
) -> tuple[Array, Any]:
    """z0 ~ N(mean, std^2) from `jr.fold_in(key, _SAMPLE_KEY)` (the key is required), or
    the mean in inference mode; returns z0 and the checked key."""
    if inference:
        return mean, key
    key = require_key(
        owner,
        key,
        f"sample z0 from the {which} and the Brownian motion",
        f"For the {which} mean and no noise use `eqx.nn.inference_mode(model)`.",
    )
    return mean + std * jr.normal(jr.fold_in(key, _SAMPLE_KEY), mean.shape, mean.dtype), key


def _check_start(t0: float, times: Array) -> None:
    msg = (
        f"LatentSDE: the series starts before the latent SDE's t0 = {t0}. Build the model "
        "with an earlier `t0=` or drop the earlier observations."
    )
    if is_concrete(times) and float(np.asarray(times)[0]) < t0:
        raise ValueError(f"{msg} Got times[0] = {float(np.asarray(times)[0])}.")


def sample_prior(
    model: LatentSDE, ts: SaveTimes, *, key: MaybeKey, args: Args = None
) -> Float[Array, "K d"]:
    r"""One path of the prior, decoded: $z_0 \sim p(z_0)$, $dz = f\,dt + g\,dW$, $x = D(z)$.

    The prior shares the posterior's solver, diffusion and any transform applied to the
    latent SDE. Like torchsde's example, the observation noise is not sampled. Batch with
    `jax.vmap` over keys.

    **Arguments:**

    - `model`: the `LatentSDE`.
    - `ts`: the times of the path, shape `(K,)`, within the latent SDE's interval.
    - `key`: the randomness of $z_0$ (`jr.fold_in(key, 103)`) and of the Brownian motion
      (`key`); `None` only in inference mode ($z_0 = \mu_p$, no noise).
    - `args`: passed to the fields.

    **Returns:**

    The decoded path, shape `(K, d)`.
    """
    if ts is None:
        raise ValueError("sample_prior: `ts` (the times of the path) is required.")
    mean, std = model.pz0_mean, jnp.exp(model.pz0_log_std)
    z0, key = _sample_z0("sample_prior", "prior", model.inference, mean, std, key)
    context = LatentContext(None, None, args)
    solution = integrate(_latent_problem(model.model, z0, ts, context, key), z0, ts, context)
    return jax.vmap(model.decoder)(solution.ys)


def latent_sde_elbo(
    model: LatentSDE,
    series: IrregularSeries,
    *,
    key: MaybeKey,
    noise_std: float = 0.01,
    likelihood: Likelihood = "gaussian",
    kl_weight: float | Array = 1.0,
    args: Args = None,
) -> Float[Array, ""]:
    r"""The evidence lower bound of one series under a `LatentSDE` (a one-sample estimate).

    $$\mathrm{ELBO} = \sum_{i, j:\, m_{ij} = 1} \log p\big(x_{ij} \mid \hat x_j(t_i)\big)
      - \beta\Big(\mathrm{KL}(q(z_0 \mid x) \,\|\, p(z_0))
      + \int_{t_0}^{t_1} \tfrac12 |u(t, z_t)|^2\,dt\Big),$$

    with $\hat x$ the decoded posterior path at the observation times (one sample of $z_0$
    and of the path, from `key`) and $p(x \mid \hat x)$ a Gaussian or Laplace density of
    scale `noise_std`. $\beta = 1$ is the bound; $\beta < 1$ anneals the KL early in
    training, as torchsde's example does. Maximize it (minimize `-latent_sde_elbo`).

    **Arguments:**

    - `model`: the `LatentSDE`; `series`: the observed `IrregularSeries`.
    - `key`: the sampling key (`None` only in inference mode).
    - `noise_std`: the observation scale (standard deviation, or the Laplace scale $b$).
    - `likelihood`: `"gaussian"` (default) or `"laplace"` (the example's, for GBM data).
    - `kl_weight`: $\beta$.
    - `args`: passed to the fields.

    References: Li, Wong, Chen, Duvenaud, "Scalable Gradients for Stochastic Differential
    Equations", AISTATS 2020, Eq. (10).
    """
    _check_likelihood("latent_sde_elbo", noise_std, likelihood)
    solution = model.solve(series, series.times, args=args, key=key)
    log_lik = _log_likelihood(series, solution.ys, noise_std, likelihood)
    kl = solution.extras["kl_z0"] + solution.extras["kl_path"]
    return log_lik - kl_weight * kl


def _check_likelihood(owner: str, noise_std: Any, likelihood: Any) -> None:
    if likelihood not in ("gaussian", "laplace"):
        raise ValueError(
            f"{owner}: unknown `likelihood={likelihood!r}`. Choose 'gaussian' or 'laplace'."
        )
    if not (isinstance(noise_std, int | float) and noise_std > 0):
        raise ValueError(
            f"{owner}: `noise_std` must be a number > 0, got {noise_std!r}. Pass e.g. 0.01."
        )


def _log_likelihood(
    series: IrregularSeries, ys: Array, noise_std: float, likelihood: Likelihood
) -> Array:
    r"""$\sum_{m_{ij} = 1} \log p(x_{ij} \mid \hat x_j(t_i))$ over the observed entries."""
    residual = (series.values - ys) / noise_std
    if likelihood == "gaussian":
        log_density = -0.5 * residual**2 - jnp.log(noise_std * jnp.sqrt(2 * jnp.pi))
    else:
        log_density = -jnp.abs(residual) - jnp.log(2 * noise_std)
    return jnp.sum(jnp.where(series.mask > 0, log_density, 0.0))


__all__ = [
    "LatentSDE",
    "latent_sde_elbo",
    "sample_prior",
]
