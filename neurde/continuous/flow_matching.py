r"""Flow matching and rectified flow: simulation-free training of a CNF's vector field.

The field is regressed on the velocity of a fixed conditional path between a data point $x$
and a base sample $\varepsilon \sim \mathcal N(0, I)$, in the CNF's own time direction (data
at $t_0$, base at $t_1$), so the trained CNF is sampled and scored by the same
`neurde.continuous.sample` and `log_prob` as one trained by maximum likelihood.
"""

from collections.abc import Callable
from typing import Any, Literal, TypeAlias

import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray

from .._types import Args
from ..model import AbstractModel
from .cnf import find_cnf

Path: TypeAlias = Literal["ot", "rectified"]


def _drift_and_interval(
    owner: str, model: Any, x: Array, args: Args, key: Any
) -> tuple[Callable[..., Any], Any, Any]:
    """The drift $f(t, z, \\text{args})$ to regress and the interval $(t_0, t_1)$."""
    if isinstance(model, AbstractModel):
        cnf = find_cnf(owner, model)
        # The CNF's inner problem: its drift without the trace or any wrapper's extras.
        problem = cnf.model.problem(x[0], None, args=args, key=key)
        if problem.diffusion is not None:
            raise ValueError(
                f"{owner}: the CNF's inner model has a diffusion; flow matching regresses an "
                "ODE's vector field. Use a `neurde.NeuralODE` inside the CNF."
            )
        return problem.drift, problem.t0, problem.t1
    if callable(model):
        return model, 0.0, 1.0
    raise TypeError(
        f"{owner}: `model` must be a `neurde.continuous.CNF` (or a wrapper stack around one) "
        f"or a vector field f(t, z, args), got {type(model).__name__}."
    )


def _check(owner: str, x: Any, path: Any, sigma_min: Any, noise: Any) -> float:
    if path not in ("ot", "rectified"):
        raise ValueError(
            f"{owner}: unknown `path={path!r}`. Choose 'ot' (Lipman et al.'s optimal-transport "
            "path, with `sigma_min`) or 'rectified' (Liu et al.'s straight line)."
        )
    if not hasattr(x, "ndim") or x.ndim != 2:
        shape = getattr(x, "shape", type(x).__name__)
        raise ValueError(
            f"{owner}: `x` must be a batch of data points of shape (n, d), got {shape}. For "
            "one point use `x[None]`."
        )
    if noise is not None and jnp.shape(noise) != x.shape:
        raise ValueError(
            f"{owner}: `noise` must have the shape of `x` {x.shape}, got {jnp.shape(noise)}."
        )
    if path == "rectified":
        if sigma_min is not None and sigma_min != 0:
            raise ValueError(
                f"{owner}: the rectified path is the straight line, with no `sigma_min`; got "
                f"sigma_min={sigma_min!r}. Drop it, or use path='ot'."
            )
        return 0.0
    if noise is not None:
        raise ValueError(
            f"{owner}: `noise=` (a coupling of data and base points, for reflow) goes with "
            "path='rectified'; the 'ot' path draws independent base samples."
        )
    sigma_min = 1e-4 if sigma_min is None else sigma_min
    if not 0 <= sigma_min < 1:
        raise ValueError(f"{owner}: `sigma_min` must be in [0, 1), got {sigma_min!r}.")
    return float(sigma_min)


def flow_matching_loss(
    model: Any,
    x: Float[Array, "n d"],
    *,
    key: PRNGKeyArray,
    path: Path = "ot",
    sigma_min: float | None = None,
    noise: Float[Array, "n d"] | None = None,
    args: Args = None,
) -> Float[Array, ""]:
    r"""The conditional flow matching loss of a CNF's field on a batch of data.

    With $s = (t - t_0)/(t_1 - t_0)$ drawn uniformly, $\varepsilon \sim \mathcal N(0, I)$
    and the data point $x$ at $t_0$, the conditional path and its velocity are

    - `path="ot"` (Lipman et al.'s optimal-transport path, run from data to noise):
      $z_s = (1 - s)\,x + (\sigma_{\min} + (1 - \sigma_{\min}) s)\,\varepsilon$,
      $u = (1 - \sigma_{\min})\,\varepsilon - x$;
    - `path="rectified"` (Liu et al.'s straight line, $\sigma_{\min} = 0$):
      $z_s = (1 - s)\,x + s\,\varepsilon$, $u = \varepsilon - x$, where $\varepsilon$ may
      be given (`noise=`) as the coupled partner of $x$, for reflow.

    and the loss is the batch mean of $\|f_\theta(t, z_s) - u/(t_1 - t_0)\|^2$ (summed over
    coordinates). No ODE is solved. At the optimum the flow of $f_\theta$ carries the data
    (smoothed by $\sigma_{\min}$ noise) at $t_0$ to $\mathcal N(0, I)$ at $t_1$, in the CNF's
    direction, so the model is scored and sampled with `log_prob` and `sample`.

    **Arguments:**

    - `model`: a `neurde.continuous.CNF` (or a wrapper stack around one; its inner model's
      drift and interval are used), or a vector field `f(t, z, args)` on $[0, 1]$.
    - `x`: a batch of data points, shape `(n, d)`.
    - `key`: draws the times and the base samples.
    - `path`: `"ot"` (default) or `"rectified"`.
    - `sigma_min`: the width of the OT path at the data end (default `1e-4`).
    - `noise`: for `path="rectified"`, base points coupled to `x` (reflow); default fresh
      independent samples.
    - `args`: passed to the field.

    **Returns:**

    The scalar loss.

    References: Lipman, Chen, Ben-Hamu, Nickel, Le, "Flow Matching for Generative Modeling",
    ICLR 2023. Liu, Gong, Liu, "Flow Straight and Fast: Learning to Generate and Transfer
    Data with Rectified Flow", ICLR 2023.
    """
    owner = "flow_matching_loss"
    sigma = _check(owner, x, path, sigma_min, noise)
    t_key, e_key, p_key = jr.split(key, 3)
    drift, t0, t1 = _drift_and_interval(owner, model, x, args, p_key)
    n = x.shape[0]
    s = jr.uniform(t_key, (n, 1), x.dtype)
    eps = jr.normal(e_key, x.shape, x.dtype) if noise is None else jnp.asarray(noise)
    z = (1 - s) * x + (sigma + (1 - sigma) * s) * eps
    target = ((1 - sigma) * eps - x) / (t1 - t0)
    t = t0 + s[:, 0] * (t1 - t0)
    pred = jax.vmap(lambda t_, z_: drift(t_, z_, args))(t, z)
    return jnp.mean(jnp.sum(jnp.square(pred - target), axis=-1))
