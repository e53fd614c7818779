"""The parts of a latent SDE's differential equation: the context, the two drifts, the diffusion."""

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray

from ..continuous.ode_rnn import _sizes
from ..fields import AbstractField, as_field


class LatentContext(eqx.Module):
    r"""What the drift of a latent SDE reads besides the state: the encoded observations.

    The context is piecewise constant in time: at time $t$ the posterior drift reads
    `values[i]` with $i$ the first observation strictly after $t$ (the last one past the end),
    the encoding of the observations still to come, as in torchsde's latent SDE example.
    `values=None` (and `times=None`) selects the prior drift.

    **Fields:**

    - `times`: the observation times, shape `(N,)`, or `None` for the prior.
    - `values`: one context vector per observation time, shape `(N, c)`, or `None`.
    - `args`: the user's `args`, passed on to the fields.
    """

    times: Float[Array, " N"] | None
    values: Float[Array, "N c"] | None
    args: Any = None

    def at(self, t: Any) -> Array:
        """The context vector in force at time `t`."""
        assert self.times is not None and self.values is not None
        i = jnp.searchsorted(self.times, t, side="right")
        return self.values[jnp.minimum(i, self.times.shape[0] - 1)]


class LatentDrift(AbstractField):
    r"""The two drifts of a latent SDE as one field: posterior $h$ or prior $f$.

    With a `LatentContext` holding observations, $h(t, [z; c(t)], \text{args})$ with the
    context $c(t)$ in force at $t$; with an empty context (`values=None`), $f(t, z,
    \text{args})$.

    **Arguments:**

    - `posterior`: $h$, a field on the concatenation $[z; c]$ returning the shape of $z$.
    - `prior`: $f$, a field on $z$.
    """

    posterior: AbstractField
    prior: AbstractField

    def __init__(self, posterior: Any, prior: Any):
        self.posterior = as_field(posterior)
        self.prior = as_field(prior)

    def __call__(self, t: Any, y: Array, args: Any) -> Array:
        if not isinstance(args, LatentContext):
            raise TypeError(
                "LatentDrift: `args` must be a `neurde.stochastic.LatentContext` (the encoded "
                f"observations, or none for the prior), got {type(args).__name__}. Call the "
                "`LatentSDE` on a series, or use `sample_prior`."
            )
        if args.values is None:
            return self.prior(t, y, args.args)
        return self.posterior(t, jnp.concatenate([y, args.at(t)]), args.args)


class DiagonalDiffusion(AbstractField):
    r"""A diagonal diffusion $g_i(t, z) = \operatorname{softplus}(\text{MLP}_i(z_i)) > 0$.

    Each coordinate's diffusion is a function of that coordinate only, through its own MLP
    with one hidden layer of softplus units, as in the latent SDE of Li et al.'s example
    code: the noise is then diagonal in the strict sense (commuting), which Milstein
    solvers and the stochastic adjoint need. The example ends in a sigmoid, which caps $g$
    at 1 in latent units; the softplus keeps $g$ positive (so the path KL
    $\tfrac12 |(h - f)/g|^2$ is finite) and leaves its scale to the fit. The $n$ MLPs are
    stored as stacked arrays and evaluated at once.

    **Arguments:**

    - `size`: the dimension $n$ of $z$.
    - `width_size`: the hidden width of each coordinate's MLP.
    - `key`: initialization key (uniform in $\pm 1/\sqrt{\text{fan-in}}$, as
      `eqx.nn.Linear`).
    """

    hidden_weight: Float[Array, "n width"]
    hidden_bias: Float[Array, "n width"]
    out_weight: Float[Array, "n width"]
    out_bias: Float[Array, " n"]

    def __init__(self, size: int, width_size: int = 16, *, key: PRNGKeyArray):
        _sizes("DiagonalDiffusion", size=size, width_size=width_size)
        k1, k2, k3, k4 = jr.split(key, 4)
        shape, lim = (size, width_size), 1.0 / width_size**0.5
        self.hidden_weight = jr.uniform(k1, shape, minval=-1.0, maxval=1.0)
        self.hidden_bias = jr.uniform(k2, shape, minval=-1.0, maxval=1.0)
        self.out_weight = jr.uniform(k3, shape, minval=-lim, maxval=lim)
        self.out_bias = jr.uniform(k4, (size,), minval=-lim, maxval=lim)

    def __call__(self, t: Any, y: Array, args: Any) -> Array:
        del t, args
        size = self.out_bias.shape[0]
        if y.shape != (size,):
            raise ValueError(
                f"DiagonalDiffusion: the state has shape {y.shape}, built for ({size},). "
                f"Build it with `size={y.shape[-1] if y.ndim else 1}`."
            )
        hidden = jax.nn.softplus(self.hidden_weight * y[:, None] + self.hidden_bias)
        return jax.nn.softplus(jnp.sum(self.out_weight * hidden, axis=1) + self.out_bias)


__all__ = ["DiagonalDiffusion", "LatentContext", "LatentDrift"]
