r"""`StochasticEuler`: the ResNet (Euler) step with injected noise and a random residual branch."""

from typing import Any, ClassVar, Literal, TypeAlias

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array

from .._validation import require_key
from ..discrete import AbstractScheme
from .base import AbstractBranchRegularizer, AbstractNoise, check_noises, combined_scale

Form: TypeAlias = Literal["discrete", "sde"]


class StochasticEuler(AbstractScheme):
    r"""A randomized ResNet block: one Euler–Maruyama step per block, one key per block.

    Block $n$ (time $t_n = n h$, field $f_n$) computes

    $$x_{n+1} = x_n + h\,B_n + \sqrt{h}\,g(t_n, x_n, \bar B_n) \odot \xi_n,$$

    where $B_n$ is the branch: $f_n(t_n, x_n)$, or its random version under a branch
    regularizer ($\bar B_n$ its mean), and $g$ the combined diagonal diffusion of the
    injected noises: an Euler–Maruyama step of $dX = f\,dt + \operatorname{diag}(g)\,dW$.
    With `form="sde"` the branch regularizer is replaced by its SDE reading: $B_n$ becomes
    $\bar B_n + \sigma_n\,\xi'_n$ with the branch's standard deviation $\sigma_n$, a Gaussian
    step with the same mean and covariance as the discrete draw. (In step-size terms the
    branch's diffusion is $\sqrt{h}\,\sigma_n$: it vanishes as $h \to 0$, as Sun, Tao and Du
    note for dropout.)

    Under `eqx.nn.inference_mode` the noise is off and each branch is its mean (test-time
    scaling for stochastic depth and ShakeDrop, $(f^1 + f^2)/2$ for Shake-Shake).

    The `neurde.noise` transforms put it in a `discrete.ResidualStack` in place of `Euler()`
    (noise injection and branch regularizers are defined on the ResNet step), so a
    randomized net is still a `ResidualStack`, run by the same scan; the stack's `key` is
    split into one key per block.

    **Arguments:**

    - `depth`: the stack's depth (stochastic depth and ShakeDrop decay with the block index).
    - `noises`: injected `AbstractNoise`s (may be empty).
    - `branch`: an `AbstractBranchRegularizer` or `None`.
    - `form`: `"discrete"` (the paper's random draw) or `"sde"`.
    - `inference`: noise off.
    """

    depth: int = eqx.field(static=True)
    noises: tuple[AbstractNoise, ...] = ()
    branch: AbstractBranchRegularizer | None = None
    form: Form = eqx.field(static=True, default="discrete")
    inference: bool = False
    reversible: ClassVar[bool] = False
    evaluations_per_step: ClassVar[int] = 1

    def __check_init__(self):
        if isinstance(self.depth, bool) or not isinstance(self.depth, int) or self.depth < 1:
            raise ValueError(
                f"StochasticEuler: `depth` must be an integer >= 1, got {self.depth!r}."
            )
        if self.form not in ("discrete", "sde"):
            raise ValueError(
                f"StochasticEuler: `form` must be 'discrete' or 'sde', got {self.form!r}."
            )
        check_noises("StochasticEuler", self.noises)

    def init(self, y0: Array) -> Array:
        return y0

    def output(self, state: Array) -> Array:
        return state

    def step(
        self, block: Any, n: Array, t: Array, h: float, state: Array, args: Any, key: Any
    ) -> Array:
        branch, depth, x = self.branch, self.depth, state
        two = branch is not None and branch.branches == 2
        t = t.astype(x.dtype)
        fs = block.branches(t, x, args) if two else (block(t, x, args),)
        mean = fs[0] if branch is None else branch.mean(n, depth, fs)
        if self.inference:
            return x + h * mean
        key = require_key(
            "StochasticEuler",
            key,
            "draw the noise of every block",
            "For the deterministic net use `eqx.nn.inference_mode(model)`; to average over "
            "noise use `neurde.noise.MonteCarlo`.",
        )
        k_branch, k_noise = jr.split(key)
        if branch is None:
            update = h * mean
        elif self.form == "discrete":
            update = h * branch.sample(k_branch, n, depth, fs)
        else:
            shape = x.shape if branch.noise == "diagonal" else ()
            xi = jr.normal(k_branch, shape, x.dtype)
            update = h * mean + h * branch.std(n, depth, fs) * xi
        if self.noises:
            g = combined_scale(self.noises, t, x, mean)
            update = update + jnp.sqrt(h) * g * jr.normal(k_noise, x.shape, x.dtype)
        return x + update
