r"""Score functions `score(t, x, args)`, and the reverse-time dynamics they define.

A score function takes one example `x` at time `t` (the field signature `f(t, y, args)` used
everywhere in neurde) and returns $\nabla_x \log p_t(x)$, an array of `x`'s shape. Samplers
and the likelihood take score functions. A network trained to predict the noise (Ho et al.
2020) becomes one with `Score(model, sde, "noise")`: $\nabla \log p_t = -\hat\epsilon/\sigma_t$.

Given a score, the forward SDE $dx = f\,dt + g\,dW$ has the reverse-time SDE
$dx = [f - g^2 \nabla\log p_t]\,dt + g\,d\bar W$ and the probability-flow ODE
$dx/dt = f - \tfrac12 g^2 \nabla\log p_t$ with the same marginals (Song et al. 2021,
eqs. 6 and 13).
"""

from collections.abc import Callable
from typing import Any, Literal, Protocol, TypeAlias

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from .._types import Args
from .._validation import is_concrete
from ._checks import PARAMETERIZATIONS, check_choice, check_sde, check_time
from .forward import AbstractForwardSDE


class ScoreFn(Protocol):
    r"""A score function `score(t, x, args)`: $\nabla_x \log p_t(x)$ at one example.

    Any callable of this shape is one: a `Score`-wrapped network, `GaussianScore`, or a plain
    function. It takes ONE example `x` at time `t` and returns an array of `x`'s shape;
    samplers and the likelihood vmap it over batches.
    """

    def __call__(self, t: Any, x: Array, args: Args, /) -> Array:
        """The score at time `t` and example `x`."""
        ...


# What a network predicts: `"score"` or `"noise"` (`Score`, `dsm_loss`).
Parameterization: TypeAlias = Literal["score", "noise"]


class Score(eqx.Module):
    r"""Turn a network into a score function, according to what it was trained to predict.

    `model(t, x, args)` returns either the score (`"score"`) or the noise $\hat\epsilon$
    (`"noise"`), in which case the score is $-\hat\epsilon / \sigma_t$. `noise(t, x, args)`
    converts the other way, $\hat\epsilon = -\sigma_t \nabla\log p_t$, as DDIM and
    DPM-Solver use it.

    **Arguments:**

    - `model`: a callable `model(t, x, args)` for one example (any neurde field or score net).
    - `sde`: the forward SDE the model was trained with.
    - `parameterization`: `"noise"` (default) or `"score"`, as in `neurde.diffusion.dsm_loss`.

    References: Ho et al. 2020, eq. 11; Song et al. 2021, Appendix C.
    """

    model: Callable[..., Array]
    sde: AbstractForwardSDE
    parameterization: Parameterization = eqx.field(static=True)

    def __init__(
        self,
        model: Callable[..., Array],
        sde: AbstractForwardSDE,
        parameterization: Parameterization = "noise",
    ):
        check_choice("Score", "parameterization", parameterization, PARAMETERIZATIONS)
        check_sde("Score", sde)
        if not callable(model):
            raise TypeError(
                "Score: `model` must be callable as model(t, x, args) for one example (a neurde "
                f"field or score network), got {type(model).__name__}."
            )
        self.model = model
        self.sde = sde
        self.parameterization = parameterization

    def __call__(self, t: Any, x: Array, args: Args = None) -> Array:
        """The score $\\nabla_x \\log p_t(x)$ at one example."""
        if is_concrete(t):  # traced times (inside samplers) are checked by their callers
            check_time("Score", t)
        out = self.model(t, x, args)
        if self.parameterization == "score":
            return out
        return -out / self.sde.std(t)

    def noise(self, t: Any, x: Array, args: Args = None) -> Array:
        """The noise prediction $\\hat\\epsilon(t, x)$ at one example."""
        out = self.model(t, x, args)
        if self.parameterization == "noise":
            return out
        return -self.sde.std(t) * out


class GaussianScore(eqx.Module):
    r"""The exact score of data $\mathcal{N}(m, S)$ diffused by a forward SDE.

    The marginal is $p_t = \mathcal{N}(\alpha_t m, \Sigma_t)$ with
    $\Sigma_t = \alpha_t^2 S + \sigma_t^2 I$, so $\nabla \log p_t(x) = -\Sigma_t^{-1}(x -
    \alpha_t m)$, computed in the eigenbasis $S = U \operatorname{diag}(w) U^\top$, where
    $\Sigma_t^{-1} = U \operatorname{diag}(1/(\alpha_t^2 w + \sigma_t^2)) U^\top$. A reference
    against which samplers, likelihoods and losses are tested and benchmarked.

    **Arguments:**

    - `sde`: the forward SDE.
    - `mean`: $m$, shape `(d,)`.
    - `cov`: $S$, symmetric positive semi-definite, shape `(d, d)`.
    """

    sde: AbstractForwardSDE
    mean: Float[Array, " d"]
    eigenvalues: Float[Array, " d"]
    eigenvectors: Float[Array, "d d"]

    def __init__(
        self, sde: AbstractForwardSDE, mean: Float[ArrayLike, " d"], cov: Float[ArrayLike, "d d"]
    ):
        mean, cov = jnp.asarray(mean), jnp.asarray(cov)
        if mean.ndim != 1 or cov.shape != (mean.shape[0], mean.shape[0]):
            raise ValueError(
                "GaussianScore: `mean` and `cov` must have shapes (d,) and (d, d), got "
                f"{mean.shape} and {cov.shape}. Pass one mean vector and its covariance matrix."
            )
        check_sde("GaussianScore", sde)
        _check_covariance(mean, cov)
        self.sde = sde
        self.mean = mean
        self.eigenvalues, self.eigenvectors = jnp.linalg.eigh(cov)

    def marginal_variances(self, t: Any) -> Float[Array, " d"]:
        r"""The eigenvalues $\alpha_t^2 w + \sigma_t^2$ of $\Sigma_t$."""
        return self.sde.mean_coeff(t) ** 2 * self.eigenvalues + self.sde.std(t) ** 2

    def marginal_logp(self, t: Any, x: Float[Array, " d"]) -> Float[Array, ""]:
        r"""$\log p_t(x)$, the exact log-density of the marginal."""
        var = self.marginal_variances(t)
        coords = self.eigenvectors.T @ (x - self.sde.mean_coeff(t) * self.mean)
        return -0.5 * jnp.sum(coords**2 / var + jnp.log(2 * jnp.pi * var))

    def __call__(self, t: Any, x: Float[Array, " d"], args: Args = None) -> Float[Array, " d"]:
        """The exact score at one example."""
        del args
        coords = self.eigenvectors.T @ (x - self.sde.mean_coeff(t) * self.mean)
        return -self.eigenvectors @ (coords / self.marginal_variances(t))


def _check_covariance(mean: Array, cov: Array) -> None:
    """A concrete `cov` must be finite, symmetric and positive semi-definite."""
    if not (is_concrete(mean) and is_concrete(cov)):
        return
    m, c = np.asarray(mean), np.asarray(cov)
    fix = "Pass a covariance matrix, e.g. `a @ a.T` or `jnp.diag(variances)`."
    if not (np.all(np.isfinite(m)) and np.all(np.isfinite(c))):
        raise ValueError(f"GaussianScore: `mean` and `cov` must be finite, got NaN or inf. {fix}")
    scale = max(float(np.max(np.abs(c))), np.finfo(c.dtype).tiny)
    tol = 100 * np.finfo(c.dtype).eps * scale
    if not np.allclose(c, c.T, rtol=0, atol=tol):
        gap = float(np.max(np.abs(c - c.T)))
        raise ValueError(
            f"GaussianScore: `cov` must be symmetric, got max |cov - cov.T| = {gap:.3g}. {fix}"
        )
    smallest = float(np.linalg.eigvalsh(c).min())
    if smallest < -tol * c.shape[0]:
        raise ValueError(
            "GaussianScore: `cov` must be positive semi-definite, got smallest eigenvalue "
            f"{smallest:.3g}. {fix}"
        )


def reverse_drift(
    sde: AbstractForwardSDE, score_fn: ScoreFn, t: Any, x: Array, args: Args = None
) -> Array:
    r"""Drift of the reverse-time SDE, $f(t)x - g(t)^2 \nabla\log p_t(x)$ (Song et al. eq. 6).

    The reverse SDE runs backwards, $dx = [\text{this}]\,dt + g\,d\bar W$ with $dt < 0$;
    its Euler–Maruyama steps are `EulerMaruyama` and `PredictorCorrector`'s predictor.

    **Arguments:**

    - `sde`: the forward SDE.
    - `score_fn`: `score_fn(t, x, args)` for one example.
    - `t`, `x`, `args`: the time, ONE example, and the score's extra arguments.

    **Returns:**

    The drift, an array of `x`'s shape.
    """
    check_sde("reverse_drift", sde)
    return sde.drift(t, x) - sde.diffusion(t) ** 2 * score_fn(t, x, args)


def probability_flow_drift(
    sde: AbstractForwardSDE, score_fn: ScoreFn, t: Any, x: Array, args: Args = None
) -> Array:
    r"""The probability-flow ODE $dx/dt = f(t)x - \tfrac12 g(t)^2 \nabla\log p_t(x)$ (eq. 13).

    It has the marginals of the forward SDE; `ProbabilityFlow` solves it from $T$ to the data
    and `log_likelihood` from the data to $T$, with its divergence.

    **Arguments:** as for `reverse_drift`.

    **Returns:**

    $dx/dt$, an array of `x`'s shape.
    """
    check_sde("probability_flow_drift", sde)
    return sde.drift(t, x) - 0.5 * sde.diffusion(t) ** 2 * score_fn(t, x, args)


__all__ = [
    "GaussianScore",
    "Parameterization",
    "Score",
    "ScoreFn",
    "probability_flow_drift",
    "reverse_drift",
]
