"""`NoisyStack`: a ResNet (Euler) stack with noise and a random residual branch per block."""

from typing import Any, Literal

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
from jax import lax
from jaxtyping import Array, PRNGKeyArray, PyTree

from ..discrete import Euler, ResidualStack
from .base import AbstractBranchRegularizer, AbstractNoise, combined_scale

Form = Literal["discrete", "sde"]


class NoisyStack(eqx.Module):
    r"""A residual stack with Euler scheme whose blocks are randomised, one key per block.

    Block $n$ (time $t_n = n h$, field $f_n$) computes

    $$x_{n+1} = x_n + h\,B_n + \sqrt{h}\,g(t_n, x_n, \bar B_n) \odot \xi_n,$$

    where $B_n$ is the branch: $f_n(t_n, x_n)$, or its random version under a branch
    regularizer ($\bar B_n$ its mean), and $g$ the combined diagonal diffusion of the
    injected noises — an Euler–Maruyama step of $dX = f\,dt + \operatorname{diag}(g)\,dW$.
    With `form="sde"` the branch regularizer is replaced by its SDE reading: $B_n$ becomes
    $\bar B_n + \sqrt{h}\,\sigma_n\,\xi'_n/\sqrt{h}$ with the branch's standard deviation
    $\sigma_n$, a Gaussian step with the same mean and covariance as the discrete draw. (In
    step-size terms the branch's diffusion is $\sqrt{h}\,\sigma_n$: it vanishes as $h \to 0$,
    as Sun, Tao and Du note for dropout.)

    Under `eqx.nn.inference_mode` the noise is off and each branch is its mean (test-time
    scaling for stochastic depth and ShakeDrop, $(f^1 + f^2)/2$ for Shake-Shake).

    Build it with the `neurde.noise` transforms rather than directly.

    **Arguments:**

    - `stack`: a `neurde.discrete.ResidualStack` with the `Euler` scheme.
    - `noises`: injected `AbstractNoise`s (may be empty).
    - `branch`: an `AbstractBranchRegularizer` or `None`.
    - `form`: `"discrete"` (the paper's random draw) or `"sde"`.
    - `inference`: noise off.
    """

    stack: ResidualStack
    noises: tuple[AbstractNoise, ...] = ()
    branch: AbstractBranchRegularizer | None = None
    form: Form = eqx.field(static=True, default="discrete")
    inference: bool = False

    def __check_init__(self):
        if not isinstance(self.stack, ResidualStack):
            raise TypeError(
                f"NoisyStack: `stack` must be a neurde.discrete.ResidualStack, got "
                f"{type(self.stack).__name__}."
            )
        if not isinstance(self.stack.scheme, Euler):
            raise TypeError(
                "noise on a discrete net is an Euler–Maruyama step per block, so it needs a "
                f"ResNet stack (scheme Euler()); got {type(self.stack.scheme).__name__}. Build "
                "the stack with `neurde.discrete.Euler()`."
            )
        if self.form not in ("discrete", "sde"):
            raise ValueError(f"NoisyStack: `form` must be 'discrete' or 'sde', got {self.form!r}.")
        if self.branch is not None and self.branch.branches == 2:
            if not hasattr(self.stack.blocks, "branches"):
                raise TypeError(
                    f"{type(self.branch).__name__} mixes two residual branches, so every block "
                    "must be a `neurde.noise.Branches(f1, f2)`; got blocks of type "
                    f"{type(self.stack.blocks).__name__}."
                )

    def __call__(
        self, y: PyTree[Array], args: Any = None, *, key: PRNGKeyArray | None = None
    ) -> Array:
        """Apply every block to one (unbatched) input; `key` is needed unless in inference."""
        stack, branch, noises = self.stack, self.branch, self.noises
        if key is None and not self.inference:
            raise ValueError(
                "NoisyStack: a `key` is needed in training mode to draw the noise: call "
                "`model(x, key=key)`. For the deterministic net use "
                "`eqx.nn.inference_mode(model)`; to average over noise use "
                "`neurde.noise.MonteCarlo`."
            )
        h, depth = stack.h, stack.depth
        dyn, static = eqx.partition(stack.blocks, eqx.is_array)
        two = branch is not None and branch.branches == 2
        keys = jr.split(jr.key(0) if key is None else key, depth)

        def body(x, xs):
            n, block_dyn, k = xs
            block = eqx.combine(block_dyn, static)
            t = (n * h).astype(x.dtype)
            fs = block.branches(t, x, args) if two else (block(t, x, args),)
            mean = fs[0] if branch is None else branch.mean(n, depth, fs)
            if self.inference:
                return x + h * mean, None
            k_branch, k_noise = jr.split(k)
            if branch is None:
                update = h * mean
            elif self.form == "discrete":
                update = h * branch.sample(k_branch, n, depth, fs)
            else:
                shape = x.shape if branch.noise == "diagonal" else ()
                xi = jr.normal(k_branch, shape, x.dtype)
                update = h * mean + h * branch.std(n, depth, fs) * xi
            if noises:
                g = combined_scale(noises, t, x, mean)
                update = update + jnp.sqrt(h) * g * jr.normal(k_noise, x.shape, x.dtype)
            return x + update, None

        out, _ = lax.scan(body, y, (jnp.arange(depth), dyn, keys))
        return out


__all__ = ["NoisyStack"]
