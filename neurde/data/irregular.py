"""Irregularly observed trajectories: random observation masks and a masked loss."""

import functools

import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, ArrayLike, Bool, Float, PRNGKeyArray

from . import _checks
from .trajectories import Trajectories


def _keep_prob(fn: str, keep_prob: float) -> float:
    keep_prob = _checks.number(fn, "keep_prob", keep_prob)
    if not 0 < keep_prob <= 1:
        raise ValueError(
            f"`{fn}(..., keep_prob={keep_prob!r})`: `keep_prob` must lie in (0, 1], the "
            "probability that a value is observed. Pass e.g. `keep_prob=0.5`; `1` keeps all."
        )
    return keep_prob


def random_mask(
    shape: tuple[int, ...], keep_prob: float, *, keep_first: bool = True, key: PRNGKeyArray
) -> Bool[Array, "*shape"]:
    """A random observation mask, `True` where a value is observed.

    Each entry is an independent Bernoulli(`keep_prob`) draw. Time is the last axis: with
    `keep_first=True` the entries at time index 0 are always `True`, so every trajectory
    observes its initial condition.

    **Arguments:**

    - `shape`: the shape of the mask, e.g. `(n, times)`; at least one axis.
    - `keep_prob`: the probability that an entry is observed, in (0, 1].
    - `keep_first`: whether to always observe time index 0 (the last axis).
    - `key`: a JAX PRNG key.

    **Returns:**

    A boolean array of shape `shape`.
    """
    fn = "random_mask"
    keep_prob = _keep_prob(fn, keep_prob)
    shape = tuple(shape)
    if len(shape) == 0 or any(not isinstance(s, int) or s < 0 for s in shape):
        raise ValueError(
            f"`{fn}(shape={shape!r}, ...)`: `shape` must be a tuple of at least one "
            "non-negative integer, with time as the last axis. Pass e.g. `shape=(n, times)`."
        )
    _checks.prng_key(fn, key)
    return _draw_mask(key, keep_prob, shape, keep_first)


@functools.partial(jax.jit, static_argnames=("shape", "keep_first"))
def _draw_mask(key, keep_prob, shape, keep_first):
    mask = jr.bernoulli(key, keep_prob, shape)
    if keep_first:
        mask = mask.at[..., 0].set(True)
    return mask


def irregular(
    traj: Trajectories, keep_prob: float, *, keep_first: bool = True, key: PRNGKeyArray
) -> Trajectories:
    """Observe each value of `traj` at random, making the sampling irregular.

    Draws [`neurde.data.random_mask`][] of shape `(n, times)` and combines it with any mask
    `traj` already has (a value is observed only where both are `True`). `ys` and `clean`
    are left unchanged: values where the mask is `False` remain in `ys` but must be treated as
    unobserved, e.g. through [`neurde.data.masked_mse`][].

    **Arguments:**

    - `traj`: the trajectories to subsample.
    - `keep_prob`: the probability that a value is observed, in (0, 1].
    - `keep_first`: whether to always observe time index 0 (the initial condition).
    - `key`: a JAX PRNG key.

    **Returns:**

    A copy of `traj` with `mask` set, shape `(n, times)`.
    """
    if not isinstance(traj, Trajectories):
        raise TypeError(
            f"`irregular(traj=...)`: `traj` must be a `neurde.data.Trajectories`, got "
            f"{type(traj).__name__}. Wrap arrays as `Trajectories(ts=ts, ys=ys)`."
        )
    _keep_prob("irregular", keep_prob)
    mask = random_mask(traj.ys.shape[:2], keep_prob, keep_first=keep_first, key=key)
    if traj.mask is not None:
        mask = mask & traj.mask
    return Trajectories(ts=traj.ts, ys=traj.ys, clean=traj.clean, mask=mask)


def masked_mse(
    pred: Float[ArrayLike, "*batch dim"],
    target: Float[ArrayLike, "*batch dim"],
    mask: Bool[ArrayLike, "*batch"],
) -> Float[Array, ""]:
    r"""Mean squared error over the observed entries only.

    $$\operatorname{MSE} = \frac{\sum_i m_i \lVert \hat y_i - y_i \rVert^2}{d \sum_i m_i},$$

    over all batch positions $i$ (e.g. trajectory and time) with mask $m_i$ and state
    dimension $d$. Equals the plain mean squared error when the mask is all `True`. With no
    observed entries it returns 0 (and a zero gradient), not NaN. Jit- and grad-friendly.

    **Arguments:**

    - `pred`: predictions, shape `(..., dim)`.
    - `target`: targets, shape `(..., dim)`; values where the mask is `False` are ignored,
      even if they are NaN.
    - `mask`: `True` where observed, shape `(...)`.

    **Returns:**

    A scalar.
    """
    pred, target, mask = jnp.asarray(pred), jnp.asarray(target), jnp.asarray(mask)
    if mask.dtype != jnp.bool_:
        raise TypeError(
            f"`masked_mse`: `mask` must be boolean (True where observed), got {mask.dtype}. "
            "Pass `mask.astype(bool)` if it holds 0/1."
        )
    if pred.shape != target.shape or pred.ndim == 0 or mask.shape != pred.shape[:-1]:
        raise ValueError(
            f"`masked_mse`: expected `pred` and `target` of the same shape (..., dim) and "
            f"`mask` of shape (...), got pred {pred.shape}, target {target.shape}, "
            f"mask {mask.shape}. For trajectories pass `pred` and `target` of shape "
            "(n, times, dim) and `mask` of shape (n, times)."
        )
    return _masked_mse(pred, target, mask)


@jax.jit
def _masked_mse(pred, target, mask):
    observed = mask.astype(bool)[..., None]
    # `where` before squaring rather than a product with the mask: NaN placeholders in
    # unobserved targets then vanish from both the value and the gradient.
    error = jnp.where(observed, pred - target, 0)
    count = jnp.sum(observed) * pred.shape[-1]
    return jnp.sum(error**2) / jnp.maximum(count, 1)
