"""Fields for discrete architectures: the stable antisymmetric field and image fields."""

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray

from ..fields import AbstractField


class AntisymmetricField(AbstractField):
    r"""$f(y) = \sigma((W - W^\top - \gamma I) y + b)$: a field whose Jacobian is stable.

    $W - W^\top$ has purely imaginary eigenvalues, so forward Euler with this field neither
    amplifies nor (beyond the damping $\gamma$) destroys signals over many blocks: the
    AntisymmetricRNN / stable-ResNet construction.

    **Arguments:**

    - `size`: state dimension.
    - `gamma`: diffusion $\gamma \ge 0$ that keeps Euler steps stable.
    - `activation`: $\sigma$ (default `tanh`).
    - `key`: initialisation of $W$ (normal, std `1/sqrt(size)`).

    References: Haber & Ruthotto, "Stable Architectures for Deep Neural Networks", Inverse
    Problems 2017; Chang, Chen, Haber, Chi, "AntisymmetricRNN", ICLR 2019.
    """

    weight: Float[Array, "size size"]
    bias: Float[Array, " size"]
    gamma: float = eqx.field(static=True)
    activation: Callable[[Array], Array] = eqx.field(static=True)

    def __init__(
        self,
        size: int,
        *,
        gamma: float = 0.01,
        activation: Callable[[Array], Array] = jnp.tanh,
        key: PRNGKeyArray,
    ):
        if gamma < 0:
            raise ValueError(f"AntisymmetricField: `gamma` must be >= 0, got {gamma!r}.")
        self.weight = jr.normal(key, (size, size)) / jnp.sqrt(size)
        self.bias = jnp.zeros((size,))
        self.gamma = float(gamma)
        self.activation = activation

    def __call__(self, t: Any, y: Float[Array, " size"], args: Any) -> Float[Array, " size"]:
        if y.ndim != 1:
            raise ValueError(
                f"AntisymmetricField: expects a vector state, got shape {y.shape}. Use "
                "ConvField or PDEField for images."
            )
        w = self.weight - self.weight.T - self.gamma * jnp.eye(y.shape[0], dtype=y.dtype)
        return self.activation(w @ y + self.bias)


def _check_image(owner: str, y: Array, channels: int, dims: int) -> None:
    if y.ndim != 1 + dims or y.shape[0] != channels:
        spatial = ", ".join(["length"] if dims == 1 else ["height", "width"][:dims])
        raise ValueError(
            f"{owner}: expects a channel-first signal of shape ({channels}, {spatial}), got "
            f"shape {y.shape}. For vector states use MLPField; reshape images channel-first."
        )


class ConvField(AbstractField):
    r"""A convolutional residual branch $f(u) = K_2 \sigma(N(K_1 u))$ on images or signals.

    The state is channel-first, `(C, H, W)` (or `(C, L)` with `num_spatial_dims=1`).
    Same-padded convolutions keep the size, so the field can be stepped by any scheme. $N$
    is a group normalization over channels (per example, so it commutes with `vmap`), or the
    identity with `norm=False`.

    **Arguments:**

    - `channels`: channels of the state.
    - `kernel_size`: odd convolution size (default 3).
    - `norm`: use group normalization.
    - `num_spatial_dims`: 2 for images (default), 1 for signals.
    - `key`: initialisation key.
    """

    conv1: eqx.nn.Conv
    conv2: eqx.nn.Conv
    norm: eqx.nn.GroupNorm | None
    channels: int = eqx.field(static=True)
    num_spatial_dims: int = eqx.field(static=True)

    def __init__(
        self,
        channels: int,
        kernel_size: int = 3,
        *,
        norm: bool = True,
        num_spatial_dims: int = 2,
        key: PRNGKeyArray,
    ):
        if kernel_size % 2 != 1:
            raise ValueError(f"ConvField: `kernel_size` must be odd, got {kernel_size}.")
        k1, k2 = jr.split(key)
        pad, d = kernel_size // 2, num_spatial_dims
        self.conv1 = eqx.nn.Conv(d, channels, channels, kernel_size, padding=pad, key=k1)
        self.conv2 = eqx.nn.Conv(d, channels, channels, kernel_size, padding=pad, key=k2)
        self.norm = eqx.nn.GroupNorm(min(4, channels), channels) if norm else None
        self.channels = channels
        self.num_spatial_dims = d

    def __call__(self, t: Any, y: Float[Array, "..."], args: Any) -> Float[Array, "..."]:
        _check_image("ConvField", y, self.channels, self.num_spatial_dims)
        u = self.conv1(y)
        if self.norm is not None:
            u = self.norm(u)
        return self.conv2(jax.nn.relu(u))


class PDEField(AbstractField):
    r"""The PDE-CNN field $f(u) = -K^\top \sigma(N(K u))$ with a convolution $K$.

    $K^\top$ is the exact adjoint of the convolution (computed with `jax.linear_transpose`),
    so with a monotone $\sigma$ the field is the negative gradient of a convex energy: forward
    Euler gives the parabolic (nonlinear diffusion) PDE-CNN, `Leapfrog` the hyperbolic one.

    **Arguments:**

    - `channels`: channels of the state.
    - `kernel_size`: odd convolution size.
    - `norm`: group normalization $N$ (default on).
    - `activation`: $\sigma$ (default `relu`).
    - `num_spatial_dims`: 2 for images (default), 1 for signals.
    - `key`: initialisation key.

    References: Ruthotto & Haber, "Deep Neural Networks Motivated by Partial Differential
    Equations", J. Math. Imaging Vis. 2020.
    """

    conv: eqx.nn.Conv
    norm: eqx.nn.GroupNorm | None
    channels: int = eqx.field(static=True)
    num_spatial_dims: int = eqx.field(static=True)
    activation: Callable[[Array], Array] = eqx.field(static=True)

    def __init__(
        self,
        channels: int,
        kernel_size: int = 3,
        *,
        norm: bool = True,
        activation: Callable[[Array], Array] = jax.nn.relu,
        num_spatial_dims: int = 2,
        key: PRNGKeyArray,
    ):
        if kernel_size % 2 != 1:
            raise ValueError(f"PDEField: `kernel_size` must be odd, got {kernel_size}.")
        self.conv = eqx.nn.Conv(
            num_spatial_dims,
            channels,
            channels,
            kernel_size,
            padding=kernel_size // 2,
            use_bias=False,
            key=key,
        )
        self.num_spatial_dims = num_spatial_dims
        self.norm = eqx.nn.GroupNorm(min(4, channels), channels) if norm else None
        self.channels = channels
        self.activation = activation

    def __call__(self, t: Any, y: Float[Array, "..."], args: Any) -> Float[Array, "..."]:
        _check_image("PDEField", y, self.channels, self.num_spatial_dims)
        u = self.conv(y)
        if self.norm is not None:
            u = self.norm(u)
        (adjoint,) = jax.linear_transpose(self.conv, y)(self.activation(u))
        return -adjoint
