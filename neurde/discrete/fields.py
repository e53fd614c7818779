"""Fields for discrete architectures: the stable antisymmetric field and image fields."""

import math
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
    - `key`: initialization of $W$ (normal, std `1/sqrt(size)`).

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
        _check_size("AntisymmetricField", "size", size)
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
        if y.shape != self.weight.shape[-1:]:
            raise ValueError(
                f"AntisymmetricField: the state `y` has shape {y.shape}, but the field was "
                f"built with `size={self.weight.shape[-1]}`. Build it with "
                f"`size={y.shape[0]}`."
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


def _check_size(owner: str, name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{owner}: `{name}` must be an integer >= 1, got {value!r}.")


class ScanConv(eqx.Module):
    """A same-padded convolution written as shifted slices and one `einsum`.

    Inside a scanned loop XLA:CPU runs `lax.conv_general_dilated` much slower than this form
    (an order of magnitude on a 16-channel 8x8 stack; see benchmarks/README.md), so the
    fields that `ResidualStack` scans over depth use it. It is linear in its input, so its
    exact adjoint comes from `jax.linear_transpose`.

    **Arguments:**

    - `num_spatial_dims`: 1 or 2.
    - `in_channels`, `out_channels`, `kernel_size` (odd).
    - `use_bias`: add a bias per output channel.
    - `key`: initialization (uniform in ±1/sqrt(fan_in), as `eqx.nn.Conv`).
    """

    weight: Float[Array, "..."]
    bias: Float[Array, " out"] | None
    kernel_size: int = eqx.field(static=True)
    num_spatial_dims: int = eqx.field(static=True)

    def __init__(
        self,
        num_spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        *,
        use_bias: bool = True,
        key: PRNGKeyArray,
    ):
        if num_spatial_dims not in (1, 2):
            raise ValueError(
                f"ScanConv: `num_spatial_dims` must be 1 or 2, got {num_spatial_dims}."
            )
        if kernel_size % 2 != 1:
            raise ValueError(f"ScanConv: `kernel_size` must be odd, got {kernel_size}.")
        wkey, bkey = jr.split(key)
        fan_in = in_channels * kernel_size**num_spatial_dims
        lim = 1 / jnp.sqrt(fan_in)
        shape = (out_channels, in_channels) + (kernel_size,) * num_spatial_dims
        self.weight = jr.uniform(wkey, shape, minval=-lim, maxval=lim)
        self.bias = jr.uniform(bkey, (out_channels,), minval=-lim, maxval=lim) if use_bias else None
        self.kernel_size = kernel_size
        self.num_spatial_dims = num_spatial_dims

    def __call__(self, y: Float[Array, "..."]) -> Float[Array, "..."]:
        """Convolve one channel-first input, keeping its spatial size."""
        k, d = self.kernel_size, self.num_spatial_dims
        pad = k // 2
        padded = jnp.pad(y, [(0, 0)] + [(pad, pad)] * d)
        size = y.shape[1:]
        if d == 1:
            windows = [padded[:, i : i + size[0]] for i in range(k)]
            out = jnp.einsum("oci,ic...->o...", self.weight, jnp.stack(windows))
        else:
            windows = [
                padded[:, i : i + size[0], j : j + size[1]] for i in range(k) for j in range(k)
            ]
            weight = self.weight.reshape(*self.weight.shape[:2], k * k)
            out = jnp.einsum("oci,ic...->o...", weight, jnp.stack(windows))
        if self.bias is not None:
            out = out + self.bias.reshape((-1,) + (1,) * d)
        return out


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
    - `key`: initialization key.
    """

    conv1: ScanConv
    conv2: ScanConv
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
        _check_size("ConvField", "channels", channels)
        if kernel_size % 2 != 1:
            raise ValueError(f"ConvField: `kernel_size` must be odd, got {kernel_size}.")
        k1, k2 = jr.split(key)
        d = num_spatial_dims
        self.conv1 = ScanConv(d, channels, channels, kernel_size, key=k1)
        self.conv2 = ScanConv(d, channels, channels, kernel_size, key=k2)
        self.norm = eqx.nn.GroupNorm(math.gcd(4, channels), channels) if norm else None
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
    - `key`: initialization key.

    References: Ruthotto & Haber, "Deep Neural Networks Motivated by Partial Differential
    Equations", J. Math. Imaging Vis. 2020.
    """

    conv: ScanConv
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
        _check_size("PDEField", "channels", channels)
        if kernel_size % 2 != 1:
            raise ValueError(f"PDEField: `kernel_size` must be odd, got {kernel_size}.")
        self.conv = ScanConv(
            num_spatial_dims, channels, channels, kernel_size, use_bias=False, key=key
        )
        self.num_spatial_dims = num_spatial_dims
        self.norm = eqx.nn.GroupNorm(math.gcd(4, channels), channels) if norm else None
        self.channels = channels
        self.activation = activation

    def __call__(self, t: Any, y: Float[Array, "..."], args: Any) -> Float[Array, "..."]:
        _check_image("PDEField", y, self.channels, self.num_spatial_dims)
        u = self.conv(y)
        if self.norm is not None:
            u = self.norm(u)
        (adjoint,) = jax.linear_transpose(self.conv, y)(self.activation(u))
        return -adjoint
