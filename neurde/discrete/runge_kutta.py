"""Explicit Runge–Kutta blocks from any Butcher tableau (RK-Net)."""

from typing import Any, ClassVar

import equinox as eqx
import numpy as np
from jaxtyping import Array

from .scheme import AbstractScheme


class RungeKutta(AbstractScheme):
    r"""An explicit Runge–Kutta step as a block: $x_{n+1} = x_n + h \sum_i b_i k_i$.

    $k_i = f_n(t_n + c_i h, x_n + h \sum_{j<i} a_{ij} k_j)$, with the tableau $(a, b, c)$
    given explicitly or by a preset: `RungeKutta.rk2()` (explicit midpoint),
    `RungeKutta.heun()`, `RungeKutta.rk4()` (classic).

    **Arguments:**

    - `a`: strictly lower-triangular `(s, s)` matrix.
    - `b`: weights, shape `(s,)`, summing to 1 (consistency).
    - `c`: nodes, shape `(s,)`; defaults to the row sums of `a`.

    References: Chen, Rubanova, Bettencourt, Duvenaud, "Neural Ordinary Differential
    Equations", NeurIPS 2018 (RK-Net); Zhu, Chang, Fu, "Convolutional Neural Networks Combined
    with Runge–Kutta Methods", 2018.
    """

    a: tuple[tuple[float, ...], ...] = eqx.field(static=True)
    b: tuple[float, ...] = eqx.field(static=True)
    c: tuple[float, ...] = eqx.field(static=True)
    reversible: ClassVar[bool] = False
    depth: ClassVar[None] = None

    def __init__(self, a: Any, b: Any, c: Any = None):
        a_np, b_np = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
        s = b_np.shape[0] if b_np.ndim == 1 else -1
        if b_np.ndim != 1 or s < 1:
            raise ValueError(f"RungeKutta: `b` must be a non-empty vector, got shape {b_np.shape}.")
        if a_np.shape != (s, s):
            raise ValueError(
                f"RungeKutta: `a` must have shape ({s}, {s}) to match `b` of length {s}, got "
                f"shape {a_np.shape}."
            )
        if np.any(np.triu(a_np) != 0):
            raise ValueError(
                "RungeKutta: `a` must be strictly lower triangular for an explicit method; "
                f"got a = {a_np.tolist()}. Implicit tableaus are not supported."
            )
        if not np.isclose(b_np.sum(), 1.0, atol=1e-12):
            raise ValueError(
                f"RungeKutta: the weights `b` must sum to 1 (consistency), got sum "
                f"{b_np.sum():.6g} for b = {b_np.tolist()}."
            )
        c_np = a_np.sum(axis=1) if c is None else np.asarray(c, dtype=float)
        if c_np.shape != (s,):
            raise ValueError(f"RungeKutta: `c` must have shape ({s},), got {c_np.shape}.")
        self.a = tuple(tuple(float(x) for x in row) for row in a_np)
        self.b = tuple(float(x) for x in b_np)
        self.c = tuple(float(x) for x in c_np)

    @classmethod
    def rk2(cls) -> "RungeKutta":
        """The explicit midpoint method (second order)."""
        return cls([[0.0, 0.0], [0.5, 0.0]], [0.0, 1.0])

    @classmethod
    def heun(cls) -> "RungeKutta":
        """Heun's method (second order, trapezoidal weights)."""
        return cls([[0.0, 0.0], [1.0, 0.0]], [0.5, 0.5])

    @classmethod
    def rk4(cls) -> "RungeKutta":
        """The classic fourth-order Runge–Kutta method."""
        a = [[0, 0, 0, 0], [0.5, 0, 0, 0], [0, 0.5, 0, 0], [0, 0, 1, 0]]
        return cls(a, [1 / 6, 1 / 3, 1 / 3, 1 / 6])

    @property
    def evaluations_per_step(self) -> int:
        """One block evaluation per stage."""
        return len(self.b)

    def init(self, y0: Array) -> Array:
        return y0

    def step(
        self, block: Any, n: Array, t: Array, h: float, state: Array, args: Any, key: Any
    ) -> Array:
        ks: list[Array] = []
        for i, ci in enumerate(self.c):
            y = state
            for aij, kj in zip(self.a[i][:i], ks, strict=True):
                if aij != 0.0:
                    y = y + h * aij * kj
            ks.append(block(t + ci * h, y, args))
        out = state
        for bi, ki in zip(self.b, ks, strict=True):
            if bi != 0.0:
                out = out + h * bi * ki
        return out

    def output(self, state: Array) -> Array:
        return state
