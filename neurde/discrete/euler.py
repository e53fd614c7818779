"""Forward Euler: the ResNet block, and PolyNet's second-order polynomial block."""

from typing import Any, ClassVar

import equinox as eqx
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
    r"""PolyNet's poly-2 block, $x_{n+1} = x_n + F(x_n) + F(F(x_n))$ with $F = h f_n(t_n, \cdot)$.

    Zhang et al. build the block from one residual branch $F$ used twice, $I + F + F^2$.
    Lu et al. read it as a truncated Neumann series of $(I - F)^{-1}$, i.e. as an
    approximation of a backward Euler step. That reading holds for a *linear* field
    $f(t, y) = A(t) y$: the block is then $(I + hA + h^2A^2) x_n$, which agrees with
    $(I - hA)^{-1} x_n$ up to $O(h^3)$, a first-order scheme for $\dot y = Ay$. For a field
    with $f(t, 0) \neq 0$ (any branch with a bias) it is not: expanding
    $F(F(x)) = h f(t, h f(t, x)) = h f(t, 0) + O(h^2)$ gives
    $x_{n+1} = x_n + h\,[f(t_n, x_n) + f(t_n, 0)] + O(h^2)$, so as depth grows the stack
    converges (first order) to

    $$\dot y = f(t, y) + f(t, 0),$$

    not to $\dot y = f(t, y)$: the limit carries the extra, learned offset $f(t, 0)$.

    `PolyNet(picard=True)` is the consistent variant that keeps the block's cost (two
    evaluations of $F$) and its value on linear fields: $x_{n+1} = x_n + F(x_n + F(x_n))$,
    two fixed-point (Picard) iterations $v \leftarrow x_n + h f(t_n, v)$ of the backward
    Euler equation started from $v = x_n$. It equals the paper's block when $f$ is linear,
    matches a backward Euler step up to $O(h^3)$ for any smooth autonomous $f$, and converges (first
    order) to $\dot y = f(t, y)$. $F$ applied to its own output (or input plus output) means
    the field's input and output spaces coincide.

    **Arguments:**

    - `picard`: `False` (default) for the paper's block $I + F + F^2$; `True` for the
      consistent $x + F(x + F(x))$.

    References: Zhang, Li, Loy, Lin, "PolyNet: A Pursuit of Structural Diversity in Very
    Deep Networks", CVPR 2017 (poly-2 module, Section 3); Lu, Zhong, Li, Dong, "Beyond
    Finite Layer Neural Networks: Bridging Deep Architectures and Numerical Differential
    Equations", ICML 2018 (Section 2: PolyNet as approximate backward Euler).
    """

    picard: bool = eqx.field(static=True, default=False)
    reversible: ClassVar[bool] = False
    depth: ClassVar[None] = None
    evaluations_per_step: ClassVar[int] = 2

    def __check_init__(self) -> None:
        if not isinstance(self.picard, bool):
            raise TypeError(
                f"PolyNet: `picard` must be True or False, got {self.picard!r}. "
                "`PolyNet()` is the paper's block, `PolyNet(picard=True)` the consistent one."
            )

    def init(self, y0: Array) -> Array:
        return y0

    def step(
        self, block: Any, n: Array, t: Array, h: float, state: Array, args: Any, key: Any
    ) -> Array:
        first = h * block(t, state, args)
        if self.picard:
            return state + h * block(t, state + first, args)
        return state + first + h * block(t, first, args)

    def output(self, state: Array) -> Array:
        return state
