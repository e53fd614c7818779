r"""ShakeDrop: stochastic depth and Shake mixed in one multiplier (Yamada et al. 2019).

Discrete form $x_{n+1} = x_n + h\,(b + a - b a) f_n(x_n)$ with $b \sim$ Bernoulli$(p_l)$
(linear decay to $p_L$ as in stochastic depth) and $a \sim U(\alpha_0, \alpha_1)$ in the
forward pass; the backward pass uses $b + c - b c$ with an independent $c \sim
U(\beta_0, \beta_1)$ and the same $b$. At test time the branch is scaled by
$E[b + a - b a] = p_l + (1 - p_l)(\alpha_0 + \alpha_1)/2$. SDE form: that drift, scalar
noise with the multiplier's standard deviation.
"""

from typing import Any

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, PRNGKeyArray

from .base import AbstractBranchRegularizer, check_probability, linear_survival, straight_through
from .stochastic_euler import Form
from .transform import Where, regularize


class ShakeDrop(AbstractBranchRegularizer):
    r"""ShakeDrop with survival falling linearly to `survival_last` and the paper's ranges.

    **Arguments:**

    - `survival_last`: the last block's $p_L$ in (0, 1) (paper: 0.5).
    - `alpha`: forward range $(\alpha_0, \alpha_1)$ (paper: (-1, 1)).
    - `beta`: backward range $(\beta_0, \beta_1)$ (paper: (0, 1)).

    Reference: Yamada, Iwamura, Akiba, Kise, "ShakeDrop Regularization for Deep Residual
    Learning", IEEE Access 2019 (Eq. 6 and Section 4.1).
    """

    survival_last: float = eqx.field(static=True, default=0.5)
    alpha: tuple[float, float] = eqx.field(static=True, default=(-1.0, 1.0))
    beta: tuple[float, float] = eqx.field(static=True, default=(0.0, 1.0))

    def __check_init__(self):
        check_probability(
            "ShakeDrop", "survival_last", self.survival_last, "the last block's survival"
        )
        for name in ("alpha", "beta"):
            lo, hi = getattr(self, name)
            if not lo < hi:
                raise ValueError(
                    f"ShakeDrop: `{name}` must be a range (low, high) with low < high, got "
                    f"{getattr(self, name)!r}."
                )

    def _moments(self, n: Array, depth: int) -> tuple[Array, Array]:
        p = linear_survival(n, depth, self.survival_last)
        lo, hi = self.alpha
        mean_a, mean_a2 = (lo + hi) / 2, (lo * lo + lo * hi + hi * hi) / 3
        mean = p + (1 - p) * mean_a
        second = p + (1 - p) * mean_a2
        return mean, second - mean**2

    def sample(self, key: PRNGKeyArray, n: Array, depth: int, fs: tuple[Array, ...]) -> Array:
        (f,) = fs
        kb, ka, kc = jr.split(key, 3)
        b = jr.bernoulli(kb, linear_survival(n, depth, self.survival_last)).astype(f.dtype)
        a = jr.uniform(ka, dtype=f.dtype, minval=self.alpha[0], maxval=self.alpha[1])
        c = jr.uniform(kc, dtype=f.dtype, minval=self.beta[0], maxval=self.beta[1])
        return straight_through((b + a - b * a) * f, (b + c - b * c) * f)

    def mean(self, n: Array, depth: int, fs: tuple[Array, ...]) -> Array:
        return self._moments(n, depth)[0].astype(fs[0].dtype) * fs[0]

    def std(self, n: Array, depth: int, fs: tuple[Array, ...]) -> Array:
        return jnp.sqrt(self._moments(n, depth)[1]).astype(fs[0].dtype) * fs[0]


def shake_drop(
    model: Any,
    survival_last: float = 0.5,
    *,
    form: Form = "discrete",
    where: Where = None,
    **kwargs: Any,
) -> Any:
    """ShakeDrop on every block of an Euler stack; `kwargs` are `alpha`, `beta`; `form` and
    `where` as for `neurde.noise.regularize`."""
    return regularize(model, ShakeDrop(survival_last, **kwargs), form=form, where=where)
