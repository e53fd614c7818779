r"""The loop that every fixed-step sampler shares, and the batched score it evaluates.

A fixed-step sampler is a scheme on a grid of $N$ times fixed before it runs: `init` gives
the state at $T$ and the inputs of each step (times, coefficients, keys), `step` advances
the state by one step, `finish` turns the last state into samples. `run` is the same for
all: one `lax.scan` over the steps, so a sampler compiles once whatever $N$, as in
Diffrax's `init`/`step` solvers.
"""

import abc
from typing import Any, Generic, TypeAlias, TypeVar

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Int, PRNGKeyArray

from ..._types import Args, MaybeKey
from .._checks import check_key
from ..forward import AbstractForwardSDE
from ..score import ScoreFn, reverse_drift
from .base import AbstractSampler
from .grids import OptimizedGrid

_State = TypeVar("_State")
# One key per step for stochastic samplers, None for deterministic ones.
Keys: TypeAlias = PRNGKeyArray | None


class BatchedScore(eqx.Module):
    r"""The score of a batch, `args` bound: what a sampler evaluates, one NFE per call.

    `score_fn` takes one example; calls here take a batch `x` (leading axis) at one time.
    """

    score_fn: ScoreFn
    sde: AbstractForwardSDE
    args: Args

    def __call__(self, t: Array, x: Array) -> Array:
        r"""$\nabla\log p_t$ at every example of `x`."""
        return jax.vmap(self.score_fn, in_axes=(None, 0, None))(t, x, self.args)

    def noise(self, t: Array, x: Array) -> Array:
        r"""The noise prediction $\hat\epsilon = -\sigma_t \nabla\log p_t$ of every example."""
        return -self.sde.std(t) * self(t, x)

    def reverse_drift(self, t: Array, x: Array) -> Array:
        """`neurde.diffusion.reverse_drift` at every example of `x`."""
        drift = jax.vmap(reverse_drift, in_axes=(None, None, None, 0, None))
        return drift(self.sde, self.score_fn, t, x, self.args)


class AbstractFixedGridSampler(AbstractSampler, Generic[_State]):
    r"""A sampler that takes `steps` steps on a grid fixed in advance, in one `lax.scan`.

    `run`, shared by all, is

    ```python
    keys = jr.split(key, steps)                # stochastic samplers only, else None
    state, inputs = init(sde, x_T, keys)       # one row of `inputs` per scanned step
    state = lax.scan(step, state, inputs)      # step(score, state, row)
    return finish(score, state, keys), nfe()
    ```

    with `score` the batched score (`BatchedScore`, which also holds the SDE; on an
    `OptimizedGrid` with `shifts` it queries the model at the shifted times). A sampler
    puts the keys into the rows of `inputs` in the order its steps use them; `finish` sees
    them too, for a last step outside the scan (`EDMHeun`).
    """

    steps: eqx.AbstractVar[int]

    @abc.abstractmethod
    def nfe(self) -> int:
        """The number of (batched) score evaluations of a run."""

    @abc.abstractmethod
    def randomness(self) -> str | None:
        """What the sampler draws at random (why it needs a key), or None if deterministic."""

    @abc.abstractmethod
    def init(self, sde: AbstractForwardSDE, x_T: Array, keys: Keys) -> tuple[_State, Any]:
        """The state at $T$, and the inputs of the scanned steps stacked on a leading axis."""

    @abc.abstractmethod
    def step(self, score: BatchedScore, state: _State, inputs: Any) -> _State:
        """One step, given that step's row of the inputs."""

    @abc.abstractmethod
    def finish(self, score: BatchedScore, state: _State, keys: Keys) -> Array:
        """The samples, from the state after the last scanned step."""

    def run(
        self, score_fn: ScoreFn, sde: AbstractForwardSDE, x_T: Array, args: Args, key: MaybeKey
    ) -> tuple[Array, Int[Array, ""]]:
        why = self.randomness()
        keys = None
        if why is not None:
            fix = (
                "Pass e.g. `key=jr.key(0)` to `neurde.diffusion.sample_from`, or use a "
                "deterministic sampler."
            )
            keys = jr.split(check_key(type(self).__name__, key, why, fix), self.steps)
        grid = getattr(self, "time_grid", None)
        if isinstance(grid, OptimizedGrid) and grid.shifts is not None:
            # LD3's decoupled times: the model is queried where the grid's shifts say.
            times = grid(sde, self.steps, self.eps, x_T.dtype)  # pyright: ignore[reportAttributeAccessIssue]
            score_fn = grid.shifted_score(score_fn, sde, times)
        score = BatchedScore(score_fn, sde, args)
        state, inputs = self.init(sde, x_T, keys)

        def body(state: _State, row: Any) -> tuple[_State, None]:
            return self.step(score, state, row), None

        state, _ = jax.lax.scan(body, state, inputs)
        return self.finish(score, state, keys), jnp.asarray(self.nfe())
