r"""Exponential moving average (EMA) of a model's parameters.

Score models are evaluated with an EMA of their weights, $\bar\theta \leftarrow d\,\bar\theta
+ (1 - d)\,\theta$ after every step ($d = 0.9999$ in Song et al. 2021 and Ho et al. 2020);
it matters more for sample quality than most architectural choices.
"""

from typing import Any, TypeVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import ArrayLike, Float

from ._checks import check_in_range

M = TypeVar("M")


def ema_update(ema_model: M, model: M, decay: Float[ArrayLike, ""]) -> M:
    r"""One EMA step: every inexact array leaf becomes $d\,\bar\theta + (1-d)\,\theta$.

    Other leaves (integer arrays, static fields, functions) are taken from `ema_model`,
    so the two models must have the same structure. Pure and jittable; `decay` may be a
    traced array (e.g. a warm-up schedule `min(d, (1 + n) / (10 + n))`).

    **Arguments:**

    - `ema_model`: the running average (start it as a copy of the model).
    - `model`: the model after the latest optimization step.
    - `decay`: $d \in [0, 1]$.

    **Returns:**

    The updated average, with `ema_model`'s structure.

    References: Polyak & Juditsky, "Acceleration of Stochastic Approximation by Averaging",
    SIAM J. Control Optim. 1992; Song et al. 2021, Appendix H.
    """
    check_in_range("ema_update", "decay", decay, 0, 1, "Typical values are 0.999 to 0.9999.")
    ema_params, static = eqx.partition(ema_model, eqx.is_inexact_array)
    params = eqx.filter(model, eqx.is_inexact_array)
    if jax.tree.structure(ema_params) != jax.tree.structure(params):
        raise ValueError(
            "ema_update: `ema_model` must have the structure of `model`, got a different "
            "one. Start the average from a copy of the model (`ema_model = model`)."
        )

    def average(a: Any, b: Any) -> Any:
        d = jnp.asarray(decay, a.dtype)
        return d * a + (1 - d) * b

    return eqx.combine(jax.tree.map(average, ema_params, params), static)


__all__ = ["ema_update"]
