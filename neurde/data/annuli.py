"""Concentric annuli: the classification task a neural ODE's flow cannot solve in its own space."""

import functools

import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import PRNGKeyArray

from . import _checks
from .classification import Classification


@functools.partial(jax.jit, static_argnames=("n", "dim", "dtype"))
def _points(key, n, dim, radii, dtype):
    # Half the points per class (the first half inner); directions uniform on the sphere,
    # radii uniform in each range, as in the reference code.
    direction_key, radius_key = jr.split(key)
    direction = jr.normal(direction_key, (n, dim), dtype)
    direction = direction / jnp.linalg.norm(direction, axis=1, keepdims=True)
    labels = (jnp.arange(n) >= n // 2).astype(jnp.int32)
    low = jnp.where(labels == 0, 0.0, radii[1]).astype(dtype)
    high = jnp.where(labels == 0, radii[0], radii[2]).astype(dtype)
    radius = low + (high - low) * jr.uniform(radius_key, (n,), dtype)
    return direction * radius[:, None], labels


def concentric_annuli(
    n_train: int = 1024,
    n_test: int = 1024,
    *,
    dim: int = 2,
    radii: tuple[float, float, float] = (0.5, 1.0, 1.5),
    dtype=None,
    key: PRNGKeyArray,
) -> Classification:
    r"""Points in a ball (class 0) and in a surrounding shell (class 1).

    With radii $r_1 < r_2 < r_3$, class 0 is $\lVert x \rVert \leq r_1$ and class 1 is
    $r_2 \leq \lVert x \rVert \leq r_3$ in $\mathbb R^{\text{dim}}$; half the points of each
    split are in each class. The direction of a point is uniform on the sphere and its radius
    uniform in its class's range (not uniform in area, as in the reference code). No
    homeomorphism of $\mathbb R^{\text{dim}}$, hence no neural ODE flow, maps the two classes to
    linearly separable sets; an augmented neural ODE can.

    **Arguments:**

    - `n_train`, `n_test`: numbers of points, at least 2 each.
    - `dim`: the dimension, at least 1 (1: the interval and two outer segments).
    - `radii`: $(r_1, r_2, r_3)$, with $0 < r_1 < r_2 < r_3$ (default the paper's
      $(0.5, 1, 1.5)$).
    - `dtype`: floating dtype of the inputs;
      default `None`: JAX's default float (float64 with x64 on).
    - `key`: a JAX PRNG key.

    **Returns:**

    A [`neurde.data.Classification`][] named `"annuli"` with inputs of shape `(n, dim)` and
    labels in `{0, 1}`.

    References: Dupont, Doucet, Teh, "Augmented Neural ODEs", NeurIPS 2019 (Section 3).
    """
    fn = "concentric_annuli"
    n_train = _checks.count(fn, "n_train", n_train, 2)
    n_test = _checks.count(fn, "n_test", n_test, 2)
    dim = _checks.count(fn, "dim", dim, 1)
    r = tuple(_checks.positive(fn, "radii", value) for value in radii)
    if len(r) != 3 or not r[0] < r[1] < r[2]:
        raise ValueError(
            f"`{fn}(..., radii={radii!r})`: `radii` must be three increasing radii "
            "(r1, r2, r3): class 0 inside r1, class 1 between r2 and r3. Pass e.g. "
            "radii=(0.5, 1.0, 1.5)."
        )
    dtype = _checks.float_dtype(fn, dtype)
    _checks.prng_key(fn, key)
    train_key, test_key = jr.split(key)
    radii_array = jnp.asarray(r, dtype)
    x_train, y_train = _points(train_key, n_train, dim, radii_array, dtype)
    x_test, y_test = _points(test_key, n_test, dim, radii_array, dtype)
    return Classification(x_train, y_train, x_test, y_test, num_classes=2, name="annuli")
