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
from typing import Any, Literal, TypeAlias

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from .._types import Args
from .forward import AbstractForwardSDE

ScoreFn: TypeAlias = Callable[[Any, Array, Args], Array]
"""`score(t, x, args)` for one example `x`, returning an array of `x`'s shape."""

Parameterisation: TypeAlias = Literal["score", "noise"]
PARAMETERISATIONS = ("score", "noise")


def check_parameterisation(owner: str, parameterisation: Any) -> None:
    """Raise `ValueError` for anything but `"score"` or `"noise"`."""
    if parameterisation not in PARAMETERISATIONS:
        raise ValueError(
            f"{owner}: unknown `parameterisation={parameterisation!r}`. Use 'score' when the "
            "model predicts the score grad log p_t(x), or 'noise' when it predicts the noise "
            "epsilon of x_t = alpha_t x0 + sigma_t epsilon."
        )


def check_score_output(
    owner: str, score_fn: Any, t: Any, x: Any, args: Any, name: str = "score_fn"
) -> None:
    """Trace `score_fn` on one example and check it returns an array of the example's shape."""
    if not callable(score_fn):
        raise TypeError(
            f"{owner}: `{name}` must be callable as {name}(t, x, args) for one example, "
            f"got {type(score_fn).__name__}. Wrap a network with "
            "`neurde.diffusion.Score(model, sde, parameterisation)`."
        )
    try:
        out = jax.eval_shape(score_fn, t, x, args)
    except Exception as e:
        raise ValueError(
            f"{owner}: calling {name}(t, x, args) on one example of shape {tuple(x.shape)} "
            "failed. Score models take ONE example (batches are vmapped) and "
            f"the signature (t, x, args).\nUnderlying error: {type(e).__name__}: {e}"
        ) from e
    shape = getattr(out, "shape", None)
    if shape != tuple(x.shape):
        raise ValueError(
            f"{owner}: {name} returns shape {shape} for an example of shape "
            f"{tuple(x.shape)}; a score (or noise) has the example's shape. Check the output "
            "size, and that it takes one example rather than a batch."
        )


class Score(eqx.Module):
    r"""Turn a network into a score function, according to what it was trained to predict.

    `model(t, x, args)` returns either the score (`"score"`) or the noise $\hat\epsilon$
    (`"noise"`), in which case the score is $-\hat\epsilon / \sigma_t$. `noise(t, x, args)`
    converts the other way, $\hat\epsilon = -\sigma_t \nabla\log p_t$, as DDIM and
    DPM-Solver use it.

    **Arguments:**

    - `model`: a callable `model(t, x, args)` for one example (any neurde field or score net).
    - `sde`: the forward SDE the model was trained with.
    - `parameterisation`: `"noise"` (default) or `"score"`, as in `neurde.diffusion.dsm_loss`.

    References: Ho et al. 2020, eq. 11; Song et al. 2021, Appendix C.
    """

    model: Callable[..., Array]
    sde: AbstractForwardSDE
    parameterisation: Parameterisation = eqx.field(static=True)

    def __init__(
        self,
        model: Callable[..., Array],
        sde: AbstractForwardSDE,
        parameterisation: Parameterisation = "noise",
    ):
        check_parameterisation("Score", parameterisation)
        if not isinstance(sde, AbstractForwardSDE):
            raise TypeError(
                f"Score: `sde` must be a forward SDE (VESDE, VPSDE, SubVPSDE), got "
                f"{type(sde).__name__}."
            )
        self.model = model
        self.sde = sde
        self.parameterisation = parameterisation

    def __call__(self, t: Any, x: Array, args: Args = None) -> Array:
        """The score $\\nabla_x \\log p_t(x)$ at one example."""
        out = self.model(t, x, args)
        if self.parameterisation == "score":
            return out
        return -out / self.sde.std(t)

    def noise(self, t: Any, x: Array, args: Args = None) -> Array:
        """The noise prediction $\\hat\\epsilon(t, x)$ at one example."""
        out = self.model(t, x, args)
        if self.parameterisation == "noise":
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
                f"GaussianScore: needs `mean` of shape (d,) and `cov` of shape (d, d), got "
                f"{mean.shape} and {cov.shape}."
            )
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


def reverse_drift(
    sde: AbstractForwardSDE, score_fn: ScoreFn, t: Any, x: Array, args: Args = None
) -> Array:
    r"""Drift of the reverse-time SDE, $f(t)x - g(t)^2 \nabla\log p_t(x)$ (Song et al. eq. 6).

    The reverse SDE runs backwards, $dx = [\text{this}]\,dt + g\,d\bar W$ with $dt < 0$.
    """
    return sde.drift(t, x) - sde.diffusion(t) ** 2 * score_fn(t, x, args)


def probability_flow_drift(
    sde: AbstractForwardSDE, score_fn: ScoreFn, t: Any, x: Array, args: Args = None
) -> Array:
    r"""The probability-flow ODE $dx/dt = f(t)x - \tfrac12 g(t)^2 \nabla\log p_t(x)$ (eq. 13)."""
    return sde.drift(t, x) - 0.5 * sde.diffusion(t) ** 2 * score_fn(t, x, args)


__all__ = [
    "GaussianScore",
    "Parameterisation",
    "Score",
    "ScoreFn",
    "check_parameterisation",
    "check_score_output",
    "probability_flow_drift",
    "reverse_drift",
]
