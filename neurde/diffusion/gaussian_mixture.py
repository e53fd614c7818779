r"""The exact score of Gaussian-mixture data: a yardstick for samplers, grids and losses.

If the data are $p_0 = \sum_k w_k\,\mathcal N(\mu_k, \Sigma_k)$, every forward SDE here
($x_t = \alpha_t x_0 + \sigma_t z$) keeps them a mixture,

$$p_t = \sum_k w_k\,\mathcal N(\alpha_t\mu_k,\ \alpha_t^2\Sigma_k + \sigma_t^2 I),$$

so the score is known in closed form: the components' scores averaged with their
posterior weights. With it a sampler's error can be measured exactly, against the
probability-flow map from the same noise, without a trained network.
"""

import math
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from .._types import Args
from .._validation import is_concrete
from ._checks import check_integer, check_positive, check_sde
from .forward import AbstractForwardSDE
from .score import probability_flow_drift

_OWNER = "GaussianMixtureScore"


def _check_weights(weights: Any) -> None:
    w = np.asarray(weights, np.float64)
    if np.any(w <= 0) or not math.isclose(float(w.sum()), 1.0, rel_tol=0, abs_tol=1e-5):
        raise ValueError(
            f"{_OWNER}: `weights` must be positive and sum to 1, got {w!r} (sum "
            f"{w.sum():.6g}). Normalize them, e.g. `weights / weights.sum()`."
        )


def _check_covariances(covs: Any) -> None:
    c = np.asarray(covs, np.float64)
    scale = max(float(np.max(np.abs(c))), 1e-30)
    if not np.allclose(c, np.swapaxes(c, -1, -2), rtol=0, atol=1e-6 * scale):
        raise ValueError(
            f"{_OWNER}: `covs` must be symmetric, got a largest asymmetry of "
            f"{np.max(np.abs(c - np.swapaxes(c, -1, -2))):.3g}. Symmetrize them, e.g. "
            "`(covs + covs.swapaxes(-1, -2)) / 2`."
        )
    smallest = np.linalg.eigvalsh(c).min(axis=-1)
    if np.any(smallest <= 0):
        k = int(np.argmin(smallest))
        raise ValueError(
            f"{_OWNER}: `covs` must be symmetric positive definite, got component {k} with "
            f"smallest eigenvalue {smallest[k]:.3g}. Add a small multiple of the identity."
        )


class GaussianMixtureScore(eqx.Module):
    r"""The exact score of Gaussian-mixture data diffused by a forward SDE.

    Data $p_0 = \sum_k w_k\,\mathcal N(\mu_k, \Sigma_k)$ have, under any of the forward SDEs
    (`VESDE`, `VPSDE`, `SubVPSDE`: $\alpha_t$ = `sde.mean_coeff(t)`, $\sigma_t$ =
    `sde.std(t)`, which for sub-VP is $1 - e^{-B(t)}$, a standard deviation), the marginals
    $p_t = \sum_k w_k\,\mathcal N(\alpha_t\mu_k, C_k(t))$ with $C_k(t) = \alpha_t^2\Sigma_k +
    \sigma_t^2 I$, and the score

    $$\nabla\log p_t(x) = -\sum_k \pi_k(t, x)\,C_k(t)^{-1}(x - \alpha_t\mu_k),\qquad
      \pi_k = \operatorname{softmax}_k\big(\log w_k + \log\mathcal N(x; \alpha_t\mu_k,
      C_k(t))\big).$$

    Each $\Sigma_k = U_k\operatorname{diag}(v_k)U_k^\top$ is diagonalized once at
    construction; $U_k$ diagonalizes $C_k(t)$ at every $t$ too (eigenvalues
    $\alpha_t^2 v_k + \sigma_t^2$), so a score costs two matrix-vector products per
    component and no factorization, where a Cholesky solve would refactor $C_k(t)$ at
    every call. The posterior weights are a softmax (log-sum-exp) of the log-densities, so
    far from every component nothing underflows. Defined for $t \in [0, T]$: at $t = 0$ it
    is the data score.

    Call it as a score function, `score(t, x, args)` for one example (`ScoreFn`), e.g.
    `neurde.diffusion.sample(sampler, mixture, mixture.sde, n, (d,), key=key)`.

    **Arguments:**

    - `sde`: the forward SDE.
    - `weights`: $w$, shape `(K,)`, positive, summing to 1.
    - `means`: $\mu$, shape `(K, d)`.
    - `covs`: $\Sigma$, symmetric positive definite, shape `(K, d, d)`; or shape `(K, d)` for
      diagonal covariances (their diagonals).

    References: Song et al., "Score-Based Generative Modeling through Stochastic
    Differential Equations", ICLR 2021 (eqs. 13, 29); Karras et al., "Elucidating the Design
    Space of Diffusion-Based Generative Models", NeurIPS 2022 (mixtures as exact testbeds).
    """

    sde: AbstractForwardSDE
    log_weights: Float[Array, " K"]
    means: Float[Array, "K d"]
    eigenvalues: Float[Array, "K d"]
    eigenvectors: Float[Array, "K d d"]

    def __init__(
        self,
        sde: AbstractForwardSDE,
        weights: Float[ArrayLike, " K"],
        means: Float[ArrayLike, "K d"],
        covs: Float[ArrayLike, "K d d"] | Float[ArrayLike, "K d"],
    ):
        check_sde(_OWNER, sde)
        weights, means, covs = jnp.asarray(weights), jnp.asarray(means), jnp.asarray(covs)
        if weights.ndim != 1 or means.ndim != 2 or means.shape[0] != weights.shape[0]:
            raise ValueError(
                f"{_OWNER}: `weights` and `means` must have shapes (K,) and (K, d), got "
                f"{weights.shape} and {means.shape}. Stack one mean per component."
            )
        k, d = means.shape
        if covs.shape == (k, d):
            check_positive(_OWNER, "covs", covs, "Diagonal covariances must be > 0.")
            covs = jax.vmap(jnp.diag)(covs)
        elif covs.shape != (k, d, d):
            raise ValueError(
                f"{_OWNER}: `covs` must have shape (K, d, d) = {(k, d, d)} (full) or (K, d) = "
                f"{(k, d)} (diagonal), got {covs.shape}."
            )
        for name, value in (("weights", weights), ("means", means), ("covs", covs)):
            if is_concrete(value) and not np.all(np.isfinite(np.asarray(value))):
                raise ValueError(
                    f"{_OWNER}: `{name}` must be finite, got {np.asarray(value)!r}. Check the "
                    "parameters for NaN or inf."
                )
        if is_concrete(weights):
            _check_weights(weights)
        if is_concrete(covs):
            _check_covariances(covs)
        self.sde = sde
        self.log_weights = jnp.log(weights)
        self.means = means
        self.eigenvalues, self.eigenvectors = jnp.linalg.eigh(covs)

    def _components(self, t: Any, x: Array) -> tuple[Array, Array, Array]:
        # Per component: coordinates of x - alpha_t mu_k in U_k, variances there, log-density.
        alpha, sigma = self.sde.mean_coeff(t), self.sde.std(t)
        var = alpha**2 * self.eigenvalues + sigma**2
        coords = jnp.einsum("kij,ki->kj", self.eigenvectors, x - alpha * self.means)
        log_density = -0.5 * jnp.sum(coords**2 / var + jnp.log(2 * jnp.pi * var), axis=-1)
        return coords, var, log_density

    def __call__(self, t: Any, x: Float[Array, " d"], args: Args = None) -> Float[Array, " d"]:
        r"""The exact score $\nabla_x\log p_t(x)$ at one example."""
        del args
        coords, var, log_density = self._components(t, x)
        posterior = jax.nn.softmax(self.log_weights + log_density)
        return -jnp.einsum("k,kij,kj->i", posterior, self.eigenvectors, coords / var)

    def log_prob(self, t: Any, x: Float[Array, " d"]) -> Float[Array, ""]:
        r"""$\log p_t(x)$, the exact log-density of the marginal at one example."""
        _, _, log_density = self._components(t, x)
        return jax.nn.logsumexp(self.log_weights + log_density)

    def sample(self, key: PRNGKeyArray, num_samples: int) -> Float[Array, "num_samples d"]:
        """Draw `num_samples` points from the data distribution $p_0$."""
        check_integer(_OWNER + ".sample", "num_samples", num_samples)
        component_key, normal_key = jr.split(key)
        k = jr.categorical(component_key, self.log_weights, shape=(num_samples,))
        z = jr.normal(normal_key, (num_samples, self.means.shape[1]), self.means.dtype)
        scaled = jnp.sqrt(self.eigenvalues[k]) * z
        return self.means[k] + jnp.einsum("nij,nj->ni", self.eigenvectors[k], scaled)

    def flow(
        self,
        x: Float[Array, " d"],
        t_from: float,
        t_to: float,
        *,
        rtol: float | None = None,
        atol: float | None = None,
        max_steps: int = 16384,
    ) -> Float[Array, " d"]:
        r"""The probability-flow map from `t_from` to `t_to` of one example, by a fine solve.

        Solves $dx/dt = f(t)x - \tfrac12 g(t)^2\nabla\log p_t(x)$ (Song et al. 2021, eq. 13)
        with Diffrax's `Dopri8` and a PID controller, forwards or backwards in time: the
        reference that deterministic samplers are measured against from the same noise
        (`t_from = T`, `t_to = eps`), and its inverse. The defaults `rtol = atol = 1e-10`
        in float64 and `1e-6` in float32 put the solve's error well below any sampler's.

        **Arguments:**

        - `x`: one example at `t_from`.
        - `t_from`, `t_to`: the times, in $[0, T]$.
        - `rtol`, `atol`: the controller's tolerances (defaults as above).
        - `max_steps`: the most steps the solve may take.

        **Returns:**

        The example at `t_to`.
        """
        tight = 1e-10 if jnp.asarray(x).dtype == jnp.float64 else 1e-6
        rtol = tight if rtol is None else rtol
        atol = tight if atol is None else atol

        def drift(t: Any, y: Array, args: Args) -> Array:
            return probability_flow_drift(self.sde, self, t, y)

        solution = diffrax.diffeqsolve(
            diffrax.ODETerm(drift),
            diffrax.Dopri8(),
            t_from,
            t_to,
            None,
            x,
            stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
            max_steps=max_steps,
        )
        assert solution.ys is not None
        return solution.ys[-1]


__all__ = ["GaussianMixtureScore"]
