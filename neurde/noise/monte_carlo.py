"""Monte Carlo evaluation: average a stochastic model's outputs over noise draws."""

from collections.abc import Callable
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import PRNGKeyArray

from .._types import Args, Input, MaybeKey, SaveTimes
from .._validation import check_callable
from ..model import AbstractModel, AbstractWrapper
from ..solution import ModelSolution


def _solve(model: Any, y0: Any, ts: Any, args: Args, key: PRNGKeyArray) -> ModelSolution:
    if isinstance(model, AbstractModel):
        return model.solve(y0, ts, args=args, key=key)
    # Any other callable `model(x, *, key)` (a user's module): its output is the state.
    if ts is not None or args is not None:
        raise ValueError(
            f"MonteCarlo: {type(model).__name__} is not a neurde model, so it is called as "
            "`model(x, key=key)` and cannot take `ts` or `args`. Make it a "
            "`neurde.AbstractModel` (e.g. with `neurde.Composed`) to pass them."
        )
    ys = model(y0, key=key)
    return ModelSolution(ys, None, {}, {}, diffrax.RESULTS.successful)


class MonteCarlo(AbstractWrapper):
    r"""Average `model`'s output over `num_samples` noise draws, vmapped over keys.

    $\hat y(x) = \frac1n \sum_{i=1}^n \text{post}(\text{model}(x, \text{key}=k_i))$. For a
    classifier pass `post=jax.nn.softmax` to average probabilities (the usual predictive
    mean) rather than logits. The wrapped model runs with its noise on, whatever
    `inference_mode` does to the rest of a larger model: this wrapper sets its model's
    `inference` flags to False.

    `solve` returns the averaged state with the extras averaged over the draws (e.g. RNODE's
    penalties: their Monte Carlo estimate) and the statistics summed over the draws (the cost
    of the estimate). A transform applied to a `MonteCarlo` is applied to the model inside,
    so `noise.additive(MonteCarlo(m, 8), 0.1)` averages over the added noise too.

    **Arguments:**

    - `model`: a stochastic neurde model, or any module called as `model(x, key=key)`.
    - `num_samples`: number of draws, >= 1.
    - `post`: optional function applied to each draw (at each save time) before averaging.
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
        check_callable("MonteCarlo", "model", self.model, "a neurde model or a callable module")
        check_callable("MonteCarlo", "post", self.post, "a function of one draw", optional=True)

    def solve(
        self, y0: Input, ts: SaveTimes = None, *, args: Args = None, key: MaybeKey = None
    ) -> ModelSolution:
        """The average over draws; `key` is split into `num_samples` keys."""
        if key is None:
            raise ValueError(
                "MonteCarlo: a `key` is needed to draw the noise: call `mc(x, key=key)`."
            )
        model = eqx.nn.inference_mode(self.model, False)

        def one(k: PRNGKeyArray) -> ModelSolution:
            solution = _solve(model, y0, ts, args, k)
            return solution if self.post is None else solution.map(self.post)

        draws = jax.vmap(one)(jr.split(key, self.num_samples))
        mean = jax.tree.map(lambda d: d.mean(0), (draws.ys, draws.extras))
        stats = jax.tree.map(lambda s: jnp.sum(s, axis=0), draws.stats)
        # RESULTS codes: 0 is success, so the largest code is a failure if any draw failed.
        result = jax.tree.map(lambda r: jnp.max(r, axis=0), draws.result)
        saved = None if draws.ts is None else draws.ts[0]  # the same times in every draw
        return ModelSolution(mean[0], saved, stats, mean[1], result)
