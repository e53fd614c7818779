"""Monte Carlo evaluation: average a stochastic model's outputs over noise draws."""

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.random as jr
from jaxtyping import PRNGKeyArray


class MonteCarlo(eqx.Module):
    r"""Average `model`'s output over `num_samples` noise draws, vmapped over keys.

    $\hat y(x) = \frac1n \sum_{i=1}^n \text{post}(\text{model}(x, \text{key}=k_i))$. For a
    classifier pass `post=jax.nn.softmax` to average probabilities (the usual predictive
    mean) rather than logits. The wrapped model runs with its noise on, whatever
    `inference_mode` does to the rest of a larger model: this wrapper sets its model's
    `inference` flags to False.

    **Arguments:**

    - `model`: a stochastic model called as `model(*args, key=key, **kwargs)`.
    - `num_samples`: number of draws, >= 1.
    - `post`: optional function applied to each draw before averaging.
    """

    model: Any
    num_samples: int = eqx.field(static=True)
    post: Callable[[Any], Any] | None = eqx.field(static=True, default=None)

    def __check_init__(self):
        if isinstance(self.num_samples, bool) or not isinstance(self.num_samples, int):
            raise TypeError(
                f"MonteCarlo: `num_samples` must be an integer >= 1, got "
                f"{type(self.num_samples).__name__}."
            )
        if self.num_samples < 1:
            raise ValueError(
                f"MonteCarlo: `num_samples` must be >= 1, got {self.num_samples}. It is the "
                "number of noise draws averaged."
            )

    def __call__(self, *args: Any, key: PRNGKeyArray | None = None, **kwargs: Any) -> Any:
        """The average over draws; `key` is split into `num_samples` keys."""
        if key is None:
            raise ValueError(
                "MonteCarlo: a `key` is needed to draw the noise: call `mc(x, key=key)`."
            )
        model = eqx.nn.inference_mode(self.model, False)
        post = self.post if self.post is not None else (lambda y: y)

        def one(k):
            return post(model(*args, key=k, **kwargs))

        draws = jax.vmap(one)(jr.split(key, self.num_samples))
        return jax.tree.map(lambda d: d.mean(0), draws)


__all__ = ["MonteCarlo"]
