"""Solver tolerances as data, and the filter that keeps them out of training.

Tolerances are stored as JAX arrays rather than static Python floats so that changing them
(e.g. loosening them during training, tightening them for evaluation) does not recompile.
Arrays are normally trainable leaves, so `trainable` marks them as not trainable: use it as
the filter of `eqx.partition` / `eqx.filter_grad` in hand-written loops (`neurde.make_step`
and `neurde.fit` already do).
"""

from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PyTree

from ._validation import is_concrete


class Tolerances(eqx.Module):
    """Relative and absolute tolerances of an adaptive step-size controller.

    **Arguments:**

    - `rtol`, `atol`: positive scalars; stored as arrays so changing them does not recompile.
    """

    rtol: Float[Array, ""]
    atol: Float[Array, ""]

    def __init__(self, rtol: Float[ArrayLike, ""] = 1e-3, atol: Float[ArrayLike, ""] = 1e-6):
        for name, value in (("rtol", rtol), ("atol", atol)):
            if not is_concrete(value):
                continue
            v = np.asarray(value)
            if not (np.all(v > 0) and np.all(np.isfinite(v))):
                raise ValueError(
                    f"Tolerances: `{name}` must be > 0 and finite, got {value!r}. Typical values "
                    "are rtol=1e-3, atol=1e-6 for training and rtol=1e-7, atol=1e-9 for accuracy."
                )
        self.rtol = jnp.asarray(rtol, dtype=float)
        self.atol = jnp.asarray(atol, dtype=float)

    def controller(self) -> diffrax.PIDController:
        """A `diffrax.PIDController` with these tolerances (never trained: gradients stopped)."""
        rtol, atol = jax.lax.stop_gradient(self.rtol), jax.lax.stop_gradient(self.atol)
        return diffrax.PIDController(rtol=rtol, atol=atol)


# Arrays inside these are configuration or data, never parameters.
_FROZEN = (Tolerances, diffrax.AbstractBrownianPath)


def trainable(tree: PyTree[Any]) -> PyTree[bool]:
    """Filter spec of the trainable leaves of `tree`: inexact arrays, except tolerances and
    Brownian paths (e.g. the increments given to a `NeuralSDE`).

    **Arguments:**

    - `tree`: a model, or any PyTree containing models.

    **Returns:**

    A PyTree of bools with the structure of `tree`, for `eqx.partition(tree, trainable(tree))`.
    """

    def leaf_spec(x: Any) -> Any:
        if isinstance(x, _FROZEN):
            return jax.tree.map(lambda _: False, x)
        return eqx.is_inexact_array(x)

    return jax.tree.map(leaf_spec, tree, is_leaf=lambda x: isinstance(x, _FROZEN))
