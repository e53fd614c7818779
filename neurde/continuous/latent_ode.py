r"""The latent ODE: an ODE-RNN encoder, a Gaussian posterior over $z_0$, a latent neural ODE."""

import dataclasses
from collections.abc import Callable
from typing import Any

import diffrax
import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from .._types import Args, MaybeKey, SaveTimes
from .._validation import is_concrete
from ..fields import AbstractField, MLPField
from ..model import AbstractContinuousModel, AbstractWrapper
from ..ode import NeuralODE
from ..solution import ModelSolution
from .ode_rnn import ODERNN, IrregularSeries, _combine_stats, _sizes

# Tags of `jr.fold_in(key, tag)`: the encoder's noise and the posterior sample. The latent
# solve uses the call's key itself, as every continuous model does.
_ENCODER_KEY = 101
_SAMPLE_KEY = 102


def gaussian_kl(mean: Float[ArrayLike, " n"], std: Float[ArrayLike, " n"]) -> Float[Array, ""]:
    r"""$\mathrm{KL}(\mathcal N(\mu, \operatorname{diag}\sigma^2) \,\|\, \mathcal N(0, I))$ in
    closed form.

    $$\mathrm{KL} = \tfrac12 \sum_j \left(\sigma_j^2 + \mu_j^2 - 1 - 2\log\sigma_j\right).$$

    **Arguments:**

    - `mean`: $\mu$; `std`: $\sigma > 0$, of the same shape.

    **Returns:**

    A scalar.
    """
    mean, std = jnp.asarray(mean), jnp.asarray(std)
    if mean.shape != std.shape:
        raise ValueError(
            f"gaussian_kl: `mean` and `std` must have the same shape, got {mean.shape} and "
            f"{std.shape}."
        )
    message = (
        "gaussian_kl: `std` must be > 0 (the KL divergence is infinite otherwise). Produce it "
        "with a positive map, e.g. `jax.nn.softplus(raw) + 1e-6` or `jnp.exp(log_std)`."
    )
    if is_concrete(std):
        if not np.all(np.asarray(std) > 0):
            raise ValueError(f"{message} Got {np.asarray(std)!r}.")
    else:
        std = eqx.error_if(std, jnp.any(~(std > 0)), message)
    return 0.5 * jnp.sum(std**2 + mean**2 - 1.0 - 2.0 * jnp.log(std))


class LatentODE(AbstractWrapper):
    r"""The latent ODE of Rubanova et al.: a VAE whose latent state follows a neural ODE.

    An `ODERNN` encoder reads the series backwards in time, from its last observation to the
    latent ODE's start time $t_0$, and its readout gives the posterior
    $q(z_0 \mid x) = \mathcal N(\mu, \operatorname{diag}\sigma^2)$ (readout
    $[\mu, \log\sigma]$). A sample $z_0 = \mu + \sigma \odot \epsilon$ (reparameterization,
    $\epsilon$ from the call's key) is solved by the latent neural ODE `model`,
    $\dot z = f_\theta(t, z)$, at the prediction times, and `decoder` maps each $z(t)$ to
    the mean of the observation. In inference mode (`eqx.nn.inference_mode`) $z_0 = \mu$.

    **How a series goes through the model interface.** `y0` is a
    `neurde.continuous.IrregularSeries` (times, values, mask) and `ts` the prediction times
    (required, strictly increasing, $\ge t_0$): `ts=series.times` is interpolation (the
    reconstruction of the observed points), a series cut at some time with `ts` after it is
    extrapolation. `solve(...).extras["kl"]` is
    $\mathrm{KL}(q(z_0 \mid x) \,\|\, \mathcal N(0, I))$ in closed form, next to the latent
    solve's extras (and the encoder's, prefixed `encoder_`); `stats` add up the encoder's
    and the latent solve's. `elbo` assembles the training objective. Regularizer
    transforms applied to the model act on the latent ODE `model`.

    **Arguments:**

    - `data_size`: the dimension $d$ of the observations.
    - `latent_size`: the dimension of $z$.
    - `hidden_size`: the encoder's hidden size (ignored when `encoder` is given).
    - `field`: the latent dynamics $f_\theta(t, z, \text{args})$; default an
      `MLPField(latent_size, width_size, depth)`.
    - `width_size`, `depth`: the default field's (and default decoder's) MLP.
    - `encoder`: an `ODERNN(data_size, hidden_size, 2 * latent_size)`, or `None` to build one.
    - `decoder`: `z -> x` for one state, or `None` for an MLP.
    - `key`: initialization key.
    - `ode_kwargs`: the latent `neurde.NeuralODE`'s settings (`solver`, `rtol`, `atol`,
      `stepsize_controller`, `adjoint`, `t0` (default 0), `dt0`, `max_steps`, `throw`).

    References: Rubanova, Chen, Duvenaud, "Latent ODEs for Irregularly-Sampled Time Series",
    NeurIPS 2019, Section 3.3; Chen, Rubanova, Bettencourt, Duvenaud, "Neural Ordinary
    Differential Equations", NeurIPS 2018, Section 5.
    """

    encoder: ODERNN
    model: AbstractContinuousModel
    decoder: Callable[[Any], Any]
    latent_size: int = eqx.field(static=True)
    inference: bool = False

    def __init__(
        self,
        data_size: int,
        latent_size: int,
        hidden_size: int = 16,
        *,
        field: AbstractField | Callable[..., Any] | None = None,
        width_size: int = 32,
        depth: int = 1,
        encoder: ODERNN | None = None,
        decoder: Callable[[Any], Any] | None = None,
        inference: bool = False,
        key: PRNGKeyArray,
        **ode_kwargs: Any,
    ):
        _sizes("LatentODE", data_size=data_size, latent_size=latent_size, hidden_size=hidden_size)
        if ode_kwargs.get("t1") is not None:
            raise ValueError(
                f"LatentODE: `t1` must be None (the last prediction time ends each solve), got "
                f"t1={ode_kwargs['t1']!r}. Drop it."
            )
        ekey, fkey, dkey = jr.split(key, 3)
        if encoder is None:
            encoder = ODERNN(data_size, hidden_size, 2 * latent_size, key=ekey)
        if field is None:
            field = MLPField(latent_size, width_size, depth, key=fkey)
        if decoder is None:
            decoder = eqx.nn.MLP(latent_size, data_size, width_size, depth, key=dkey)
        self.encoder = encoder
        self.model = NeuralODE(field, **ode_kwargs)
        self.decoder = decoder
        self.latent_size = latent_size
        self.inference = inference

    def __check_init__(self):
        if not isinstance(self.encoder, ODERNN):
            raise TypeError(
                f"LatentODE: `encoder` must be a neurde.continuous.ODERNN, got "
                f"{type(self.encoder).__name__}."
            )
        if self.encoder.readout.out_features != 2 * self.latent_size:
            raise ValueError(
                f"LatentODE: the encoder's readout must give [mean, log std] of z0, i.e. "
                f"2 * latent_size = {2 * self.latent_size} outputs, got "
                f"{self.encoder.readout.out_features}. Build it as "
                f"`ODERNN(data_size, hidden_size, {2 * self.latent_size}, key=...)`."
            )
        if not callable(self.decoder):
            raise TypeError(
                f"LatentODE: `decoder` must be a function of one latent state, got "
                f"{type(self.decoder).__name__}."
            )

    def posterior(
        self, series: IrregularSeries, *, args: Args = None, key: MaybeKey = None
    ) -> tuple[Array, Array, ModelSolution]:
        r"""$q(z_0 \mid x)$: `(mean, std, encoder_solution)` from the backward ODE-RNN."""
        if not isinstance(series, IrregularSeries):
            raise TypeError(
                f"LatentODE: `y0` must be a `neurde.continuous.IrregularSeries` (times, values, "
                f"mask), got {type(series).__name__}."
            )
        t0 = self.model.t0
        times = series.times
        msg = (
            f"LatentODE: the series starts before the latent ODE's t0 = {t0}, and the encoder "
            "reads it back to t0. Build the model with an earlier `t0=` or drop the earlier "
            "observations."
        )
        if is_concrete(times):
            if float(np.asarray(times)[0]) < t0:
                raise ValueError(f"{msg} Got times[0] = {float(np.asarray(times)[0])}.")
        else:
            times = eqx.error_if(times, times[0] < t0, msg)
            series = dataclasses.replace(series, times=times)
        ekey = None if key is None else jr.fold_in(key, _ENCODER_KEY)
        t_start = jnp.full((1,), t0, series.values.dtype)
        hs, _, solution = self.encoder.hidden(series, t_start, reverse=True, args=args, key=ekey)
        mean, log_std = jnp.split(self.encoder.readout(hs[0]), 2)
        return mean, jnp.exp(log_std), solution

    def solve(
        self, y0: IrregularSeries, ts: SaveTimes = None, *, args: Args = None, key: MaybeKey = None
    ) -> ModelSolution:
        """Encode the series, sample $z_0$, solve at `ts`, decode; `extras["kl"]` is the KL.

        See `neurde.AbstractModel.solve`; `y0` is an `IrregularSeries`, `ts` the prediction
        times (required).
        """
        if ts is None:
            raise ValueError(
                "LatentODE: `ts` (the prediction times) is required. Pass `ts=series.times` "
                "to reconstruct the observations, or later times to extrapolate."
            )
        mean, std, encoded = self.posterior(y0, args=args, key=key)
        if self.inference:
            z0 = mean
        elif key is None:
            raise ValueError(
                "LatentODE: sampling z0 from the posterior needs a key. Pass `key=` to the "
                "call, or use the posterior mean with `eqx.nn.inference_mode(model)`."
            )
        else:
            z0 = mean + std * jr.normal(jr.fold_in(key, _SAMPLE_KEY), mean.shape, mean.dtype)
        solution = self.model.solve(z0, ts, args=args, key=key)
        stats = {
            k: _combine_stats({k: jnp.stack([v, encoded.stats[k]])})[k]
            for k, v in solution.stats.items()
        }
        extras = {
            **solution.extras,
            **{f"encoder_{k}": v for k, v in encoded.extras.items()},
            "kl": gaussian_kl(mean, std),
        }
        failed = encoded.result != diffrax.RESULTS.successful
        result = diffrax.RESULTS.where(failed, encoded.result, solution.result)
        solution = dataclasses.replace(solution, stats=stats, extras=extras, result=result)
        return solution.map(self.decoder)


def elbo(
    model: LatentODE,
    series: IrregularSeries,
    target_times: Float[ArrayLike, " K"],
    target_values: Float[ArrayLike, "K d"],
    target_mask: ArrayLike,
    *,
    key: MaybeKey,
    noise_std: float = 0.01,
    args: Args = None,
) -> Float[Array, ""]:
    r"""The evidence lower bound of one series under a `LatentODE` (a one-sample estimate).

    $$\mathrm{ELBO} = \sum_{i, j:\, m_{ij} = 1} \log \mathcal N\big(x_{ij} \mid
      \hat x_j(t_i), \sigma_{\text{obs}}^2\big) - \mathrm{KL}\big(q(z_0 \mid x) \,\|\,
      \mathcal N(0, I)\big),$$

    with $\hat x(t_i)$ the decoded latent trajectory from one reparameterized sample of
    $z_0$ (drawn with `key`) and the KL in closed form. Maximize it (minimize `-elbo`).

    **Arguments:**

    - `model`: the `LatentODE`.
    - `series`: the observed (encoded) `IrregularSeries`.
    - `target_times`: the times to predict, shape `(K,)`, strictly increasing; the series'
      own times for interpolation, later times for extrapolation.
    - `target_values`, `target_mask`: the values to score there and their mask, `(K, d)`.
    - `key`: the sampling key (`None` only in inference mode).
    - `noise_std`: the observation noise $\sigma_{\text{obs}}$ (0.01 in the paper's toy
      experiments).
    - `args`: passed to the fields.

    References: Rubanova, Chen, Duvenaud, "Latent ODEs for Irregularly-Sampled Time Series",
    NeurIPS 2019, Eq. (5) (one-sample Monte Carlo estimate of the likelihood term).
    """
    target_times = jnp.asarray(target_times)
    values, mask = jnp.asarray(target_values), jnp.asarray(target_mask)
    if target_times.ndim != 1 or values.shape != (target_times.shape[0], series.size):
        raise ValueError(
            f"elbo: `target_values` must have shape (K, d) = ({target_times.shape[0]}, "
            f"{series.size}) to match `target_times` {target_times.shape} and the series' "
            f"data size, got {values.shape}."
        )
    if mask.shape != values.shape:
        raise ValueError(
            f"elbo: `target_mask` must have the shape of `target_values` {values.shape}, got "
            f"{mask.shape}."
        )
    if not noise_std > 0:
        raise ValueError(f"elbo: `noise_std` must be > 0, got {noise_std!r}. Pass e.g. 0.01.")
    solution = model.solve(series, target_times, args=args, key=key)
    var = noise_std**2
    log_density = -0.5 * ((values - solution.ys) ** 2 / var + jnp.log(2 * jnp.pi * var))
    return jnp.sum(jnp.where(mask > 0, log_density, 0.0)) - solution.extras["kl"]
