"""`Branches`: a residual block of two fields, for Shake-Shake."""

from typing import Any

from jaxtyping import Array, PyTree

from ..fields import AbstractField, as_field


class Branches(AbstractField):
    r"""A residual block of two fields, $f^1$ and $f^2$, for Shake-Shake.

    As an ordinary field it returns the mean $(f^1 + f^2)/2$ (Shake-Shake's test-time
    block), so a stack of `Branches` is an ordinary ResNet until `shake_shake` is applied.
    """

    first: AbstractField
    second: AbstractField

    def __init__(self, first: Any, second: Any):
        self.first = as_field(first)
        self.second = as_field(second)

    def branches(self, t: Any, y: PyTree[Array], args: Any) -> tuple[Array, Array]:
        """Both branch values."""
        return self.first(t, y, args), self.second(t, y, args)

    def __call__(self, t: Any, y: PyTree[Array], args: Any) -> Array:
        f1, f2 = self.branches(t, y, args)
        return (f1 + f2) / 2
