r"""Denoising score matching (DSM), the training loss of score-based diffusion models.

For one example $x_0$ and time $t$, draw $z \sim \mathcal{N}(0, I)$, set
$x_t = \alpha_t x_0 + \sigma_t z$ and compare the model with the conditional score
$\nabla \log p(x_t \mid x_0) = -z/\sigma_t$ (Vincent 2011; Song et al. 2021, eq. 7):

$$\ell(t) = \lambda(t)\,\big\| s_\theta(t, x_t) + z/\sigma_t \big\|^2
        = \frac{\lambda(t)}{\sigma_t^2}\,\big\| \sigma_t s_\theta(t, x_t) + z \big\|^2,$$

summed over the example's entries (the reference implementation's default). With the noise
parameterization $s_\theta = -\hat\epsilon_\theta/\sigma_t$ the norm is
$\|z - \hat\epsilon_\theta\|^2$. Weightings $\lambda(t)$:

- `"score"`: $\lambda = \sigma_t^2$ (Song et al. 2021's default, $\lambda \propto
  1/\mathbb{E}\|\nabla\log p(x_t|x_0)\|^2$). In noise space the weight is 1: this *is*
  DDPM's $L_\text{simple} = \|z - \hat\epsilon_\theta\|^2$ (Ho et al. 2020, eq. 14), so the
  two names would be one loss; neurde keeps one.
- `"likelihood"`: $\lambda = g(t)^2$, for which the time integral bounds the negative
  log-likelihood (Song, Durkan, Murray, Ermon 2021, Theorem 1); pair it with
  `time_sampling="importance"`.
- `"none"`: $\lambda = 1$, plain DSM on the score (Vincent 2011).

The minimizer over all functions is the true score whatever the weighting.

References: Vincent, "A Connection Between Score Matching and Denoising Autoencoders",
Neural Computation 2011; Song et al. 2021 (ICLR); Ho et al. 2020; Song, Durkan, Murray,
Ermon, "Maximum Likelihood Training of Score-Based Diffusion Models", NeurIPS 2021.
"""

from collections.abc import Callable
from typing import Any, Literal, TypeAlias

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from .._types import Args
from .._validation import check_key as check_prng_key, is_concrete
from ._checks import (
    PARAMETERIZATIONS,
    TIME_SAMPLINGS,
    WEIGHTINGS,
    check_batch,
    check_choice,
    check_eps,
    check_floating,
    check_score_fn,
    check_sde,
    check_time,
)
from .forward import AbstractForwardSDE
from .score import Parameterization
from .time_sampling import TimeSampling, sample_times

# The DSM weighting $\lambda(t)$: `"score"`, `"likelihood"` or `"none"` (`dsm_loss`).
Weighting: TypeAlias = Literal["score", "likelihood", "none"]


def _check_options(owner: str, sde: Any, parameterization: Any, weighting: Any) -> None:
    check_sde(owner, sde)
    check_choice(owner, "parameterization", parameterization, PARAMETERIZATIONS)
    check_choice(owner, "weighting", weighting, WEIGHTINGS)


def _check_time_sampling(owner: str, time_sampling: Any, weighting: Any) -> None:
    check_choice(owner, "time_sampling", time_sampling, TIME_SAMPLINGS)
    if time_sampling == "importance" and weighting != "likelihood":
        raise ValueError(
            f"{owner}: `weighting` must be 'likelihood' with time_sampling='importance', got "
            f"{weighting!r}. Importance sampling draws t from p(t) ~ g(t)^2 / sigma_t^2, which "
            "flattens the likelihood weighting only; or use time_sampling='uniform' / "
            "'low_discrepancy'."
        )


def _check_data(owner: str, x0: Any, key: Any) -> Array:
    """`x0` as a floating array, checked finite (now, or in compiled code), and the key."""
    check_prng_key(owner, key)
    x0 = check_floating(owner, "x0", x0)
    message = f"{owner}: the data `x0` contains NaN or inf; the loss would be NaN. Clean the data."
    if is_concrete(x0):
        if not bool(jnp.all(jnp.isfinite(x0))):
            raise ValueError(message)
        return x0
    return eqx.error_if(x0, ~jnp.all(jnp.isfinite(x0)), message)


def _noise_space_weight(sde: AbstractForwardSDE, t: Array, weighting: Weighting) -> Array:
    # lambda(t) / sigma_t^2: the weight of || sigma_t s + z ||^2.
    if weighting == "score":
        return jnp.ones_like(t)
    if weighting == "likelihood":
        return sde.diffusion(t) ** 2 / sde.std(t) ** 2
    return 1.0 / sde.std(t) ** 2


def _dsm_term(
    model: Callable[..., Array],
    sde: AbstractForwardSDE,
    x0: Array,
    t: Array,
    z: Array,
    parameterization: Parameterization,
    weighting: Weighting,
    args: Args,
) -> Array:
    std = sde.std(t)
    xt = sde.mean_coeff(t) * x0 + std * z
    out = model(t, xt, args)
    residual = std * out + z if parameterization == "score" else z - out
    return _noise_space_weight(sde, t, weighting) * jnp.sum(residual**2)


def denoising_score_matching(
    model: Callable[..., Array],
    sde: AbstractForwardSDE,
    x0: Float[ArrayLike, "*shape"],
    t: Float[ArrayLike, ""],
    *,
    parameterization: Parameterization = "noise",
    weighting: Weighting = "score",
    args: Args = None,
    key: PRNGKeyArray,
) -> Float[Array, ""]:
    r"""The DSM loss $\ell(t)$ of ONE example at ONE time (module docstring).

    **Arguments:**

    - `model`: `model(t, x, args)` for one example, predicting the score or the noise.
    - `sde`: the forward SDE.
    - `x0`: one data point.
    - `t`: the time, in $(0, 1]$.
    - `parameterization`: `"noise"` (default) or `"score"`.
    - `weighting`: `"score"` (default), `"likelihood"` or `"none"`.
    - `args`: passed to the model.
    - `key`: draws the noise $z$.

    **Returns:**

    A scalar; its expectation over $z$ is minimized by the true score.
    """
    owner = "denoising_score_matching"
    _check_options(owner, sde, parameterization, weighting)
    x0, time = _check_data(owner, x0, key), jnp.asarray(check_time(owner, t))
    check_score_fn(owner, model, time, x0, args, name="model", sde=sde)
    z = jr.normal(key, x0.shape, x0.dtype)
    return _dsm_term(model, sde, x0, time, z, parameterization, weighting, args)


def dsm_loss(
    model: Callable[..., Array],
    sde: AbstractForwardSDE,
    x0: Float[ArrayLike, "batch ..."],
    *,
    parameterization: Parameterization = "noise",
    weighting: Weighting = "score",
    time_sampling: TimeSampling = "uniform",
    eps: float = 1e-5,
    args: Args = None,
    key: PRNGKeyArray,
) -> Float[Array, ""]:
    r"""The DSM loss of a batch: times drawn by `time_sampling`, the model vmapped.

    $\frac1B \sum_i w_i\,\ell_i(t_i)$ with $(t_i, w_i)$ from
    `neurde.diffusion.sample_times`; an unbiased estimate of
    $\frac{1}{T-\epsilon}\int_\epsilon^T \mathbb{E}\,\ell(t)\,dt$.

    **Arguments:**

    - `model`, `sde`, `parameterization`, `weighting`, `args`: as for
      `denoising_score_matching`.
    - `x0`: a batch of data, leading axis the batch.
    - `time_sampling`: `"uniform"` (default), `"low_discrepancy"` or `"importance"`
      (the last only with `weighting="likelihood"`, whose variance it is designed to remove).
    - `eps`: the smallest time (default $10^{-5}$, Song et al.'s training value).
    - `key`: randomness for the times and the noise.

    **Returns:**

    A scalar. For `neurde.fit`, use `DSMLoss`, which has the `loss(model, batch, key)` form.
    """
    owner = "dsm_loss"
    _check_options(owner, sde, parameterization, weighting)
    eps = check_eps(owner, eps)
    _check_time_sampling(owner, time_sampling, weighting)
    x0 = _check_data(owner, x0, key)
    check_batch(
        owner,
        "x0",
        x0,
        "For one vector, use `x0[None]`; for one example at a fixed time, "
        "`denoising_score_matching`.",
    )
    check_score_fn(owner, model, jnp.asarray(0.5, x0.dtype), x0[0], args, name="model", sde=sde)
    time_key, noise_key = jr.split(key)
    t, weights = sample_times(sde, x0.shape[0], method=time_sampling, eps=eps, key=time_key)
    t, weights = t.astype(x0.dtype), weights.astype(x0.dtype)
    z = jr.normal(noise_key, x0.shape, x0.dtype)
    terms = jax.vmap(_dsm_term, in_axes=(None, None, 0, 0, 0, None, None, None))(
        model, sde, x0, t, z, parameterization, weighting, args
    )
    return jnp.mean(weights * terms)


class DSMLoss(eqx.Module):
    """`dsm_loss` as a loss `loss(model, batch, key)` for `neurde.fit` and `neurde.make_step`.

    `neurde.fit(net, DSMLoss(sde), data, steps=..., key=...)` trains a network on batches of
    data. Hashable, so `fit` reuses its compiled step across calls.

    **Arguments:**

    - `sde`, `parameterization`, `weighting`, `time_sampling`, `eps`: as for `dsm_loss`.
    """

    sde: AbstractForwardSDE
    parameterization: Parameterization = eqx.field(static=True)
    weighting: Weighting = eqx.field(static=True)
    time_sampling: TimeSampling = eqx.field(static=True)
    eps: float = eqx.field(static=True)

    def __init__(
        self,
        sde: AbstractForwardSDE,
        *,
        parameterization: Parameterization = "noise",
        weighting: Weighting = "score",
        time_sampling: TimeSampling = "uniform",
        eps: float = 1e-5,
    ):
        _check_options("DSMLoss", sde, parameterization, weighting)
        _check_time_sampling("DSMLoss", time_sampling, weighting)
        eps = check_eps("DSMLoss", eps)
        self.sde = sde
        self.parameterization = parameterization
        self.weighting = weighting
        self.time_sampling = time_sampling
        self.eps = eps

    def __call__(self, model: Any, batch: Any, key: PRNGKeyArray) -> Float[Array, ""]:
        """The loss of `model` on a batch of data."""
        return dsm_loss(
            model,
            self.sde,
            batch,
            parameterization=self.parameterization,
            weighting=self.weighting,
            time_sampling=self.time_sampling,
            eps=self.eps,
            key=key,
        )


__all__ = ["DSMLoss", "Weighting", "denoising_score_matching", "dsm_loss"]
