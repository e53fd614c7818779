"""Forward Euler: the ResNet block, and PolyNet's second-order polynomial block."""

from typing import Any, ClassVar

from jaxtyping import Array

from .scheme import AbstractScheme


class Euler(AbstractScheme):
    r"""Forward Euler, $x_{n+1} = x_n + h f_n(t_n, x_n)$: a residual network (ResNet).

    Named after the method, as `diffrax.Euler` is: the same forward Euler step, here a scheme
    applied once per block with the block's own field rather than a solver of one field.

    References: He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition", CVPR
    2016; E, "A Proposal on Machine Learning via Dynamical Systems", 2017; Haber & Ruthotto,
    "Stable Architectures for Deep Neural Networks", Inverse Problems 2017.
    """

    reversible: ClassVar[bool] = False
    depth: ClassVar[None] = None
    evaluations_per_step: ClassVar[int] = 1

    def init(self, y0: Array) -> Array:
        return y0

    def step(
        self, block: Any, n: Array, t: Array, h: float, state: Array, args: Any, key: Any
    ) -> Array:
        return state + h * block(t, state, args)

    def output(self, state: Array) -> Array:
        return state


class PolyNet(AbstractScheme):
    r"""PolyNet's block $x_{n+1} = x_n + hF(x_n) + hF(hF(x_n))$.

    The polynomial $I + hF + (hF)^2$ truncates $(I - hF)^{-1}$, so the block approximates a
    backward Euler step (first order). $F$ applied to its own output means the field's
    input and output spaces coincide.

    References: Zhang, Li, Loy, Lin, "PolyNet: A Pursuit of Structural Diversity in Very
    Deep Networks", CVPR 2017; Lu, Zhong, Li, Dong, "Beyond Finite Layer Neural Networks",
    ICML 2018.
    """

    reversible: ClassVar[bool] = False
    depth: ClassVar[None] = None
    evaluations_per_step: ClassVar[int] = 2

    def init(self, y0: Array) -> Array:
        return y0

    def step(
        self, block: Any, n: Array, t: Array, h: float, state: Array, args: Any, key: Any
    ) -> Array:
        first = h * block(t, state, args)
        return state + first + h * block(t, first, args)

    def output(self, state: Array) -> Array:
        return state
