r"""The importance-weighted bound of a latent SDE: $K$ posterior paths, their Girsanov weights."""

import math
from typing import Any

import jax
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray

from .._types import Args
from ..continuous.ode_rnn import IrregularSeries
from .latent_sde import (
    LatentSDE,
    Likelihood,
    _check_likelihood,
    _log_likelihood,
    _posterior_solve,
)


def latent_sde_log_weights(
    model: LatentSDE,
    series: IrregularSeries,
    *,
    key: PRNGKeyArray,
    samples: int = 1,
    noise_std: float = 0.01,
    likelihood: Likelihood = "gaussian",
    args: Args = None,
) -> Float[Array, " K"]:
    r"""The log importance weights of `samples` posterior paths of a `LatentSDE`.

    For $z^{(s)} \sim \mathbb Q$ (a sample of $z_0 \sim q(z_0 \mid x)$ and of the posterior
    path, from `jr.split(key, samples)[s]`),

    $$\log w_s = \sum_{i, j:\, m_{ij} = 1} \log p\big(x_{ij} \mid \hat x_j^{(s)}(t_i)\big)
      + \log \frac{p(z_0^{(s)})}{q(z_0^{(s)})} + \log \frac{d\mathbb P}{d\mathbb Q}(z^{(s)}),$$

    so that $\mathbb E_{\mathbb Q}[w_s] = p(x)$, the likelihood under the prior. By
    Girsanov, $\log d\mathbb P/d\mathbb Q = -\int u \cdot dW - \tfrac12 \int |u|^2\,dt$ with
    $u = (h - f)/g$ and $W$ the Brownian motion that drives the posterior solve. On the
    Euler–Maruyama grid this sum is exact: with $z_{k+1} = z_k + h_k \Delta t + g_k \Delta
    W_k$, the log ratio of the prior's and the posterior's Gaussian transitions is
    $$\log \frac{\mathcal N(z_{k+1}; z_k + f_k \Delta t, g_k^2 \Delta t)}
      {\mathcal N(z_{k+1}; z_k + h_k \Delta t, g_k^2 \Delta t)}
      = -\frac{\big((h_k - f_k)\Delta t + g_k \Delta W_k\big)^2 - g_k^2 \Delta W_k^2}
      {2 g_k^2 \Delta t} = -u_k \Delta W_k - \tfrac12 u_k^2 \Delta t,$$
    so $w_s$ is the exact likelihood ratio of the discretized prior and posterior chains
    and $\mathbb E[w_s]$ the likelihood under the discretized prior. The weight is integrated
    along the solve beside the path KL, which therefore needs Euler–Maruyama with constant
    steps on the grid Brownian motion (`brownian="grid"` or given increments).

    **Arguments:**

    - `model`: the `LatentSDE` (training mode); `series`: the observed `IrregularSeries`.
    - `key`: the sampling key; `samples`: the number $K \geq 1$ of paths.
    - `noise_std`, `likelihood`, `args`: as for `latent_sde_elbo`.

    **Returns:**

    The $K$ log weights, shape `(samples,)`.

    References: Li, Wong, Chen, Duvenaud, "Scalable Gradients for Stochastic Differential
    Equations", AISTATS 2020 (the path measures and Girsanov's theorem).
    """
    _check_samples("latent_sde_log_weights", samples)
    _check_likelihood("latent_sde_log_weights", noise_std, likelihood)
    if model.inference:
        raise ValueError(
            "latent_sde_log_weights: the model is in inference mode, which solves the "
            "posterior mean without noise: there are no samples to weight. Use the model in "
            "training mode (`eqx.nn.inference_mode(model, False)`)."
        )

    def log_weight(k: Any) -> Array:
        solution = _posterior_solve(model, series, series.times, args, k, weighted=True)
        log_lik = _log_likelihood(series, solution.ys, noise_std, likelihood)
        return log_lik + solution.extras["log_weight_z0"] + solution.extras["log_weight_path"]

    return jax.vmap(log_weight)(jr.split(key, samples))


def latent_sde_iwae(
    model: LatentSDE,
    series: IrregularSeries,
    *,
    key: PRNGKeyArray,
    samples: int = 8,
    noise_std: float = 0.01,
    likelihood: Likelihood = "gaussian",
    args: Args = None,
) -> Float[Array, ""]:
    r"""The importance-weighted evidence lower bound of one series under a `LatentSDE`.

    $$\mathcal L_K = \log \frac1K \sum_{k=1}^K w_k \;\leq\; \log p(x),$$

    with $w_k$ the importance weights of $K$ posterior paths (`latent_sde_log_weights`:
    likelihood, $p(z_0)/q(z_0)$ and the Girsanov path weight $d\mathbb P/d\mathbb Q$).
    $\mathbb E[\mathcal L_K]$ does not decrease with $K$ and tends to $\log p(x)$; $K = 1$
    is a one-sample estimate of the ELBO (with the $z_0$ and path KLs sampled, not in
    closed form). The ELBO's gap to $\log p(x)$ grows with the diffusion, so maximizing it
    shrinks the diffusion; the tighter bound lets a latent SDE fit the data's spread.
    Maximize it (minimize `-latent_sde_iwae`); the cost is that of $K$ posterior solves.

    **Arguments:**

    - `model`: the `LatentSDE` (training mode, Euler–Maruyama on the grid Brownian path);
      `series`: the observed `IrregularSeries`.
    - `key`: the sampling key; `samples`: $K \geq 1$.
    - `noise_std`, `likelihood`, `args`: as for `latent_sde_elbo`.

    References: Burda, Grosse, Salakhutdinov, "Importance Weighted Autoencoders", ICLR 2016;
    Li, Wong, Chen, Duvenaud, "Scalable Gradients for Stochastic Differential Equations",
    AISTATS 2020.
    """
    _check_samples("latent_sde_iwae", samples)
    log_w = latent_sde_log_weights(
        model,
        series,
        key=key,
        samples=samples,
        noise_std=noise_std,
        likelihood=likelihood,
        args=args,
    )
    return jax.nn.logsumexp(log_w) - math.log(samples)


def _check_samples(owner: str, samples: Any) -> None:
    if isinstance(samples, bool) or not isinstance(samples, int):
        raise TypeError(
            f"{owner}: `samples` must be an int (the number of posterior paths), got "
            f"{samples!r} of type {type(samples).__name__}. Pass e.g. samples=8."
        )
    if samples < 1:
        raise ValueError(
            f"{owner}: `samples` must be >= 1 (the number of posterior paths), got "
            f"{samples}. Pass e.g. samples=8 (samples=1 is the one-sample ELBO)."
        )


__all__ = ["latent_sde_iwae", "latent_sde_log_weights"]
