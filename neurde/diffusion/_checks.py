"""Argument checks of `neurde.diffusion`, all in one message style.

Every message reads "Owner: `name` must ..., got <value>. <fix>": the call that failed, the
argument, what it must be, the offending value and what to do. Structural checks run at
trace time (`ValueError` / `TypeError`); a value that is only known inside compiled code (a
traced time) is checked with `eqx.error_if`, the second layer of neurde's validation.
"""

from collections.abc import Mapping
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._validation import is_concrete

HORIZON = 1.0
"""$T$: every forward SDE here runs on $[0, T]$, $T = 1$ (`AbstractForwardSDE.T` is this)."""

TIME_GRIDS = {
    "uniform": "uniform in t",
    "logsnr": "uniform in log(alpha_t / sigma_t)",
    "edm": "Karras et al.'s sigma^(1/rho) spacing, rho = 7",
}
"""The names of the time grids; each is a grid object of `samplers/grids.py`."""
PARAMETERIZATIONS = {
    "score": "the model predicts the score grad log p_t(x)",
    "noise": "it predicts the noise epsilon of x_t = alpha_t x0 + sigma_t epsilon",
}
WEIGHTINGS = {
    "score": "lambda = sigma_t^2, = DDPM's simple loss",
    "likelihood": "lambda = g(t)^2",
    "none": "lambda = 1",
}
TIME_SAMPLINGS = {
    "uniform": "i.i.d. uniform",
    "low_discrepancy": "one stratified draw per batch",
    "importance": "t ~ g(t)^2 / sigma_t^2, with weighting='likelihood'",
}


def _fix(text: str) -> str:
    return f" {text}" if text else ""


def _listing(choices: Mapping[Any, str]) -> str:
    items = [f"{c!r} ({d})" if d else repr(c) for c, d in choices.items()]
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]


def check_choice(
    owner: str, name: str, value: Any, choices: Mapping[Any, str], fix: str = ""
) -> None:
    """Raise `ValueError` unless `value` is one of `choices` (a map choice -> meaning)."""
    try:
        # `True in {1: ...}` holds since True == 1, and arrays are unhashable.
        known = not isinstance(value, bool) and value in choices
    except TypeError:
        known = False
    if not known:
        raise ValueError(
            f"{owner}: `{name}` must be {_listing(choices)}, got {value!r}.{_fix(fix)}"
        )


def check_integer(owner: str, name: str, value: Any, minimum: int = 1, fix: str = "") -> int:
    """Raise `ValueError` unless `value` is a Python integer >= `minimum`; return it."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(
            f"{owner}: `{name}` must be an integer >= {minimum}, got {value!r}.{_fix(fix)}"
        )
    return value


def check_steps(owner: str, steps: Any, name: str = "steps") -> int:
    """`check_integer` for a number of sampler steps, with the fix that says what it sets."""
    fix = "It sets the number of steps, and with it the number of score evaluations (NFE)."
    return check_integer(owner, name, steps, fix=fix)


def check_schedule(owner: str, steps: Any, eps: Any, time_grid: Any) -> tuple[int, float, Any]:
    """Check a fixed-step sampler's `steps`, `eps` and `time_grid`; return them.

    The grid comes back as a grid object (`samplers/grids.py`): a name of `TIME_GRIDS` is
    converted, an `OptimizedGrid` must hold positions for `steps` steps.
    """
    # Imported here: the grids use the checks of this module.
    from .samplers.grids import as_time_grid, check_grid_steps

    grid = as_time_grid(owner, time_grid)
    steps = check_steps(owner, steps)
    check_grid_steps(owner, grid, steps)
    return steps, check_eps(owner, eps), grid


def _all(test: Any, value: Any) -> bool:
    try:
        return bool(np.all(test(np.asarray(value))))
    except TypeError:  # not a number at all
        return False


def check_positive(owner: str, name: str, value: Any, fix: str = "") -> None:
    """Raise `ValueError` unless a concrete `value` (scalar or array) is > 0 everywhere."""
    if is_concrete(value) and not _all(lambda v: v > 0, value):
        raise ValueError(f"{owner}: `{name}` must be > 0, got {value!r}.{_fix(fix)}")


def check_tolerances(owner: str, rtol: Any, atol: Any) -> tuple[jax.Array, jax.Array]:
    """Check `rtol, atol > 0` as `neurde.Tolerances` does; return them as arrays.

    Arrays, so that changing them does not recompile; traced values pass unchecked.
    """
    fix = "Song et al. 2021 use rtol = atol = 1e-5."
    check_positive(owner, "rtol", rtol, fix)
    check_positive(owner, "atol", atol, fix)
    return jnp.asarray(rtol), jnp.asarray(atol)


def check_in_range(
    owner: str, name: str, value: Any, low: float, high: float = np.inf, fix: str = ""
) -> None:
    """Raise `ValueError` unless a concrete `value` lies in `[low, high]` everywhere."""
    if is_concrete(value) and not _all(lambda v: (v >= low) & (v <= high), value):
        bound = f"be >= {low}" if high == np.inf else f"lie in [{low}, {high}]"
        raise ValueError(f"{owner}: `{name}` must {bound}, got {value!r}.{_fix(fix)}")


def check_eps(owner: str, eps: Any) -> float:
    """Raise `ValueError` unless `0 < eps < T`; return it as a float."""
    if isinstance(eps, bool) or not isinstance(eps, int | float) or not 0 < eps < HORIZON:
        raise ValueError(
            f"{owner}: `eps` (the smallest diffusion time) must be a float in (0, 1), got "
            f"{eps!r}. The score is singular at t = 0; Song et al. 2021 use eps=1e-5 for "
            "training and likelihoods, eps=1e-3 for sampling."
        )
    return float(eps)


def check_time(owner: str, t: Any) -> Any:
    """Check `0 < t <= T`: now when `t` is concrete (returned as given), else in compiled code."""
    message = f"{owner}: the time `t` must lie in (0, 1] (the SDE runs on [0, T], T = 1)"
    fix = "Clip it, e.g. `jnp.clip(t, 1e-5, 1.0)`; t = 0 is the data, where the score is undefined."
    if not is_concrete(t):
        return eqx.error_if(t, (t <= 0) | (t > HORIZON), f"{message}. {fix}")
    if not _all(lambda v: (v > 0) & (v <= HORIZON), t):
        raise ValueError(f"{message}, got t={np.asarray(t)!r}. {fix}")
    return t


def check_key(owner: str, key: Any, why: str, fix: str) -> Any:
    """Return `key`, or raise `ValueError` saying what the randomness is for."""
    if key is None:
        raise ValueError(f"{owner}: `key` must be a PRNG key, got None: {why}. {fix}")
    return key


def check_sde(owner: str, sde: Any) -> None:
    """Raise `TypeError` unless `sde` is a forward SDE of this package."""
    # Imported here: forward.py itself uses the checks of this module.
    from .forward import AbstractForwardSDE

    if not isinstance(sde, AbstractForwardSDE):
        raise TypeError(
            f"{owner}: `sde` must be a forward SDE (VESDE, VPSDE, SubVPSDE), got "
            f"{type(sde).__name__}. Build one, e.g. `neurde.diffusion.VPSDE()`."
        )


def check_floating(owner: str, name: str, x: Any) -> jax.Array:
    """Return `x` as an array, or raise `TypeError` unless its dtype is floating."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(
            f"{owner}: `{name}` must be floating, got dtype {x.dtype}. Convert it, e.g. "
            f"`{name}.astype(jnp.float32)`."
        )
    return x


def check_batch(owner: str, name: str, x: jax.Array, fix: str) -> None:
    """Raise `ValueError` unless `x` has a leading batch axis (at least two axes)."""
    if x.ndim < 2:
        raise ValueError(
            f"{owner}: `{name}` must be a batch with a leading batch axis, got shape "
            f"{x.shape}. {fix}"
        )


def check_score_sde(owner: str, score_fn: Any, sde: Any, name: str = "score_fn") -> None:
    """Raise `ValueError` when `score_fn` declares a forward SDE (`Score`, `GaussianScore`)
    other than the `sde` it is used with.

    A score is the score of the marginals of one forward SDE; with another SDE's drift,
    diffusion and prior it produces garbage (samples of order 1e9) without any error. Only
    comparable when both SDEs hold concrete parameters; plain callables cannot be checked.
    """
    own = getattr(score_fn, "sde", None)
    if own is None or sde is None or own is sde:
        return
    same = type(own) is type(sde) and eqx.tree_equal(own, sde)
    if isinstance(same, bool | np.bool_) and not same:
        raise ValueError(
            f"{owner}: `{name}` was built for the forward SDE {own!r}, but is used with "
            f"`sde={sde!r}`. A score only describes the marginals of the SDE it was made "
            f"(and trained) for: pass `sde={name}.sde`, or rebuild the score for this SDE."
        )


def check_score_fn(
    owner: str,
    score_fn: Any,
    t: Any,
    x: Any,
    args: Any,
    name: str = "score_fn",
    sde: Any = None,
) -> None:
    """Trace `score_fn` on one example: it must return an array of the example's shape, and
    be made for `sde` when it says which SDE it is for (see `check_score_sde`)."""
    check_score_sde(owner, score_fn, sde, name)
    if not callable(score_fn):
        raise TypeError(
            f"{owner}: `{name}` must be callable as {name}(t, x, args) for one example, "
            f"got {type(score_fn).__name__}. Wrap a network with "
            "`neurde.diffusion.Score(model, sde, parameterization)`."
        )
    try:
        out = jax.eval_shape(score_fn, t, x, args)
    except Exception as e:
        raise ValueError(
            f"{owner}: calling {name}(t, x, args) on one example of shape {tuple(x.shape)} "
            "failed. Score models take ONE example (batches are vmapped) and the signature "
            f"(t, x, args).\nUnderlying error: {type(e).__name__}: {e}"
        ) from e
    shape = getattr(out, "shape", None)
    if shape != tuple(x.shape):
        raise ValueError(
            f"{owner}: `{name}` must return an array of the example's shape "
            f"{tuple(x.shape)}, got shape {shape}. A score (or noise) has the example's "
            "shape: check the output size, and that it takes one example, not a batch."
        )
