"""The interface every discrete scheme implements: depth is time, a block is a step."""

import abc
from typing import Any, ClassVar, TypeAlias

import equinox as eqx
from jaxtyping import Array, PyTree

# The state of two-component schemes: (previous, current) values, or (position, velocity).
Pair: TypeAlias = tuple[Array, Array]


class AbstractScheme(eqx.Module):
    """One step of a numerical scheme, applied once per block of a residual stack.

    A scheme carries a state (the current value, plus the previous one for two-step methods,
    or a velocity for momentum methods), maps the network input to it (`init`), advances it
    by one block (`step`, which receives the block's own parameters, its index `n`, its time
    `t = n h`, the step `h` and the block's key) and reads the output off it (`output`).
    Reversible schemes also implement `inverse_step`, which lets `ResidualStack` recompute
    activations on the backward pass instead of storing them.

    Array fields of a scheme (e.g. LM-ResNet's `k_n`) carry a leading depth axis and are
    sliced per block, like the blocks' parameters.

    **Declared by every scheme:**

    - `reversible`: whether `inverse_step` undoes `step`.
    - `depth`: the number of blocks the scheme was built for, or `None` for schemes that fit
      any depth; `ResidualStack` checks it against its own.
    - `evaluations_per_step`: block evaluations per step (the stack's `stats["nfe"]`).
    """

    reversible: ClassVar[bool]
    depth: eqx.AbstractVar[int | None]
    evaluations_per_step: eqx.AbstractVar[int]

    @abc.abstractmethod
    def init(self, y0: PyTree[Array]) -> Any:
        """The scheme state before the first block."""

    @abc.abstractmethod
    def step(
        self, block: Any, n: Array, t: Array, h: float, state: Any, args: Any, key: Any
    ) -> Any:
        """Advance the state through block `n` (this scheme's fields are block `n`'s slice).

        `key` is the block's key when the stack is called with one (stochastic schemes draw
        their noise from it), else `None`; deterministic schemes ignore it.
        """

    @abc.abstractmethod
    def output(self, state: Any) -> PyTree[Array]:
        """The network's output read off the final state."""

    def inverse_step(self, block: Any, n: Array, t: Array, h: float, state: Any, args: Any) -> Any:
        """The state before block `n`, from the state after it (reversible schemes only)."""
        raise TypeError(
            f"{type(self).__name__} is not reversible: it has no inverse step. Reversible "
            "schemes: AdditiveCoupling (RevNet, Hamiltonian), Leapfrog, Momentum."
        )
