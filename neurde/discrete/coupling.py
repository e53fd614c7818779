"""Additive coupling: RevNet and the Hamiltonian (Verlet) network."""

import abc
from typing import Any, ClassVar, TypeAlias

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, PRNGKeyArray

from ..fields import AbstractField
from .scheme import AbstractScheme, Pair


class AbstractCouplingBlock(eqx.Module):
    """A pair of half-state fields `first(t, b, args)` and `second(t, a, args)`."""

    @abc.abstractmethod
    def first(self, t: Any, b: Array, args: Any) -> Array:
        """Update of the first half, from the second half."""

    @abc.abstractmethod
    def second(self, t: Any, a: Array, args: Any) -> Array:
        """Update of the second half, from the updated first half."""


class CouplingBlock(AbstractCouplingBlock):
    """RevNet's residual functions F and G as two fields on half the state.

    **Arguments:**

    - `f`, `g`: fields `f(t, half, args)` returning a half-state.
    """

    f: AbstractField
    g: AbstractField

    def first(self, t: Any, b: Array, args: Any) -> Array:
        return self.f(t, b, args)

    def second(self, t: Any, a: Array, args: Any) -> Array:
        return self.g(t, a, args)


class HamiltonianBlock(AbstractCouplingBlock):
    r"""Hamiltonian-net fields $\dot y = \sigma(K z + b)$, $\dot z = -\sigma(K^\top y + b)$.

    As a coupling block the momentum $z$ is the first half and $y$ the second, so one Verlet
    (symplectic Euler) step reads $z_{j+1} = z_j - h\sigma(K_j^\top y_j + b_j)$,
    $y_{j+1} = y_j + h\sigma(K_j z_{j+1} + b_j)$.

    **Arguments:**

    - `size`: dimension of $y$ (and $z$).
    - `activation`: $\sigma$ (default `tanh`).
    - `key`: initialization of $K$ (normal, std `1/sqrt(size)`) and $b$ (zero).

    References: Haber & Ruthotto, "Stable Architectures for Deep Neural Networks", Inverse
    Problems 2017; Chang, Meng, Haber, Ruthotto, Begert, Holtham, "Reversible Architectures
    for Arbitrarily Deep Residual Neural Networks", AAAI 2018.
    """

    kernel: Array
    bias: Array
    activation: Any = eqx.field(static=True)

    def __init__(self, size: int, *, activation: Any = jnp.tanh, key: PRNGKeyArray):
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"HamiltonianBlock: `size` must be an integer >= 1, got {size!r}.")
        self.kernel = jr.normal(key, (size, size)) / jnp.sqrt(size)
        self.bias = jnp.zeros((size,))
        self.activation = activation

    def first(self, t: Any, b: Array, args: Any) -> Array:
        _check_half(self.kernel, b)
        return -self.activation(self.kernel.T @ b + self.bias)

    def second(self, t: Any, a: Array, args: Any) -> Array:
        _check_half(self.kernel, a)
        return self.activation(self.kernel @ a + self.bias)


def _check_half(kernel: Array, half: Array) -> None:
    size = kernel.shape[-1]
    if jnp.shape(half) != (size,):
        raise ValueError(
            f"HamiltonianBlock: a half of the state has shape {jnp.shape(half)}, but the block "
            f"was built with `size={size}`, so the state needs shape ({2 * size},) (y and its "
            f"momentum z). Build the block with `size=<state width> // 2`."
        )


Block: TypeAlias = AbstractCouplingBlock


def _halves(y: Array) -> tuple[Array, Array]:
    if y.shape[0] % 2 != 0:
        raise ValueError(
            f"AdditiveCoupling: the state is split in two halves along its first axis, which "
            f"has odd size {y.shape[0]} (state shape {y.shape}). Use an even width."
        )
    m = y.shape[0] // 2
    return y[:m], y[m:]


class AdditiveCoupling(AbstractScheme):
    r"""Additive coupling $a' = a + hF(b)$, $b' = b + hG(a')$: RevNet and Hamiltonian nets.

    The state is split into halves $(a, b)$ along its first axis (features or channels).
    The step is a partitioned (symplectic) Euler step and is exactly invertible:
    $b = b' - hG(a')$, $a = a' - hF(b)$, so `ResidualStack` can backpropagate by recomputing
    activations from the output instead of storing them.

    References: Gomez, Ren, Urtasun, Grosse, "The Reversible Residual Network:
    Backpropagation Without Storing Activations", NeurIPS 2017.
    """

    reversible: ClassVar[bool] = True
    depth: ClassVar[None] = None
    # One evaluation of each half-field, `first` and `second`.
    evaluations_per_step: ClassVar[int] = 2

    def init(self, y0: Array) -> Pair:
        return _halves(y0)

    def step(
        self, block: Block, n: Array, t: Array, h: float, state: Pair, args: Any, key: Any
    ) -> Pair:
        a, b = state
        a = a + h * block.first(t, b, args)
        return a, b + h * block.second(t, a, args)

    def inverse_step(
        self, block: Block, n: Array, t: Array, h: float, state: Pair, args: Any
    ) -> Pair:
        a, b = state
        b = b - h * block.second(t, a, args)
        return a - h * block.first(t, b, args), b

    def output(self, state: Pair) -> Array:
        return jnp.concatenate(state, axis=0)


__all__ = [
    "AbstractCouplingBlock",
    "AdditiveCoupling",
    "CouplingBlock",
    "HamiltonianBlock",
]
