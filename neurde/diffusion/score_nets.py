r"""Small score networks: an MLP for vectors and a U-Net-like conv net for 8x8 images.

Both are neurde fields, `net(t, x, args)` for ONE example, returning an array of `x`'s shape;
what that output means (score or noise) is fixed by the training loss and read back with
`neurde.diffusion.Score(net, sde, parameterization)`. Time enters through a fixed sinusoidal
(Vaswani et al. 2017; Ho et al. 2020) or random Gaussian Fourier embedding (Tancik et al.
2020; Song et al. 2021).
"""

import math
from typing import Literal, TypeAlias

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray

from .._types import Args, Scalar
from ..discrete.fields import ScanConv
from ..fields import AbstractField
from ._checks import check_choice, check_integer

# A time embedding: `"sinusoidal"` (fixed) or `"fourier"` (random features) (`TimeEmbedding`).
Embedding: TypeAlias = Literal["sinusoidal", "fourier"]
EMBEDDINGS = {"sinusoidal": "DDPM's fixed frequencies", "fourier": "random Gaussian frequencies"}


class TimeEmbedding(eqx.Module):
    r"""A fixed embedding of the time $t \in [0, 1]$ into `size` features.

    `"sinusoidal"`: $[\sin(1000\,t\,\omega_k), \cos(1000\,t\,\omega_k)]$ with
    $\omega_k = 10000^{-k/(n-1)}$, DDPM's embedding of the step index $1000\,t$.
    `"fourier"`: $[\sin(2\pi W_k t), \cos(2\pi W_k t)]$ with $W_k \sim \mathcal{N}(0, s^2)$
    drawn once and never trained (gradients are stopped).

    **Arguments:**

    - `size`: number of features (even).
    - `kind`: `"sinusoidal"` (default) or `"fourier"`.
    - `scale`: $s$ for `"fourier"` (default 4; Song et al. use 16 on $\log\sigma$).
    - `key`: draws $W$ for `"fourier"`.
    """

    frequencies: Float[Array, " half"]
    kind: Embedding = eqx.field(static=True)

    def __init__(
        self, size: int, kind: Embedding = "sinusoidal", scale: float = 4.0, *, key: PRNGKeyArray
    ):
        check_choice("TimeEmbedding", "kind", kind, EMBEDDINGS)
        if isinstance(size, bool) or not isinstance(size, int) or size < 2 or size % 2:
            raise ValueError(
                f"TimeEmbedding: `size` must be an even integer >= 2, got {size!r}. Half the "
                "features are sines, half cosines."
            )
        half = size // 2
        if kind == "sinusoidal":
            self.frequencies = 1000.0 * jnp.exp(
                -math.log(10000.0) * jnp.arange(half) / max(half - 1, 1)
            )
        else:
            self.frequencies = 2 * math.pi * scale * jr.normal(key, (half,))
        self.kind = kind

    def __call__(self, t: Scalar) -> Float[Array, " size"]:
        """The features of one time."""
        freqs = jax.lax.stop_gradient(self.frequencies)
        angles = jnp.asarray(t, freqs.dtype) * freqs
        return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)])


class ScoreMLP(AbstractField):
    r"""A score network for vectors: an MLP on $[x; \mathrm{emb}(t)]$.

    **Arguments:**

    - `size`: dimension of the data.
    - `width_size`, `depth`: hidden width and number of hidden layers (SiLU activations).
    - `embedding_size`: number of time features.
    - `embedding`: `"sinusoidal"` (default) or `"fourier"` (`TimeEmbedding`).
    - `key`: initialization key.
    """

    embed: TimeEmbedding
    mlp: eqx.nn.MLP
    size: int = eqx.field(static=True)

    def __init__(
        self,
        size: int,
        width_size: int = 128,
        depth: int = 3,
        *,
        embedding_size: int = 32,
        embedding: Embedding = "sinusoidal",
        key: PRNGKeyArray,
    ):
        check_integer("ScoreMLP", "size", size, fix="It is the dimension of the data.")
        check_integer("ScoreMLP", "width_size", width_size)
        check_integer("ScoreMLP", "depth", depth, minimum=0)
        embed_key, mlp_key = jr.split(key)
        self.embed = TimeEmbedding(embedding_size, embedding, key=embed_key)
        self.mlp = eqx.nn.MLP(
            size + embedding_size, size, width_size, depth, activation=jax.nn.silu, key=mlp_key
        )
        self.size = size

    def __call__(self, t: Scalar, y: Float[Array, " size"], args: Args = None) -> Array:
        """The network's output (score or noise) at one example."""
        del args
        if y.shape != (self.size,):
            raise ValueError(
                f"ScoreMLP: the input `y` must have shape ({self.size},), the one the network "
                f"was built for, got {y.shape}. Pass one example (vmap over a batch), or build "
                "it with the right `size`."
            )
        return self.mlp(jnp.concatenate([y, self.embed(t).astype(y.dtype)]))


class _ConvBlock(eqx.Module):
    conv: ScanConv
    time_bias: eqx.nn.Linear

    def __init__(self, channels_in: int, channels_out: int, embed: int, *, key: PRNGKeyArray):
        k1, k2 = jr.split(key)
        self.conv = ScanConv(2, channels_in, channels_out, 3, key=k1)
        self.time_bias = eqx.nn.Linear(embed, channels_out, key=k2)

    def __call__(self, x: Array, emb: Array) -> Array:
        return jax.nn.silu(self.conv(x) + self.time_bias(emb)[:, None, None])


class _Upsample(eqx.Module):
    """A 2x2 transposed convolution with stride 2 (each pixel becomes a 2x2 patch), one einsum."""

    weight: Float[Array, "out in 2 2"]
    bias: Float[Array, " out"]

    def __init__(self, channels_in: int, channels_out: int, *, key: PRNGKeyArray):
        wkey, bkey = jr.split(key)
        lim = 1 / math.sqrt(channels_in * 4)
        shape = (channels_out, channels_in, 2, 2)
        self.weight = jr.uniform(wkey, shape, minval=-lim, maxval=lim)
        self.bias = jr.uniform(bkey, (channels_out,), minval=-lim, maxval=lim)

    def __call__(self, x: Array) -> Array:
        out = jnp.einsum("oiab,ihw->ohawb", self.weight, x)
        c, h, _, w, _ = out.shape
        return out.reshape(c, 2 * h, 2 * w) + self.bias[:, None, None]


class ScoreConvNet(AbstractField):
    r"""A small U-Net-like score network for single-channel 8x8 images, shape `(1, 8, 8)`.

    Channels first, as `eqx.nn.Conv2d` expects. Layout: a 3x3 block at 8x8 ($c$ channels),
    a stride-2 convolution to 4x4 ($2c$), a block there, a transposed convolution back to
    8x8, concatenation with the skip connection, a block, and a 3x3 convolution to the input
    channels. Each block adds a per-channel bias computed from the time embedding (as in
    Ho et al. 2020's residual blocks). Samplers call the network inside `lax.scan`, where
    XLA:CPU runs `lax.conv` much slower than shifted slices and an einsum, so the
    convolutions are `neurde.discrete.ScanConv` (the stride-2 one is a same-padded one
    subsampled, the transposed one a single einsum). Any even height and width work; the
    default sizes are chosen for 8x8.

    **Arguments:**

    - `channels`: $c$, the width at full resolution (default 32).
    - `in_channels`: channels of the image (default 1).
    - `embedding_size`: number of time features.
    - `embedding`: `"sinusoidal"` (default) or `"fourier"`.
    - `key`: initialization key.

    References: Ronneberger, Fischer, Brox, "U-Net", MICCAI 2015; Ho et al. 2020.
    """

    embed: TimeEmbedding
    embed_mlp: eqx.nn.Linear
    conv_in: ScanConv
    block_high: _ConvBlock
    down: ScanConv
    block_low: _ConvBlock
    up: _Upsample
    block_out: _ConvBlock
    conv_out: ScanConv
    in_channels: int = eqx.field(static=True)

    def __init__(
        self,
        channels: int = 32,
        in_channels: int = 1,
        *,
        embedding_size: int = 32,
        embedding: Embedding = "sinusoidal",
        key: PRNGKeyArray,
    ):
        check_integer("ScoreConvNet", "channels", channels)
        check_integer("ScoreConvNet", "in_channels", in_channels)
        keys = jr.split(key, 9)
        c, e = channels, embedding_size
        self.embed = TimeEmbedding(e, embedding, key=keys[0])
        self.embed_mlp = eqx.nn.Linear(e, e, key=keys[1])
        self.conv_in = ScanConv(2, in_channels, c, 3, key=keys[2])
        self.block_high = _ConvBlock(c, c, e, key=keys[3])
        self.down = ScanConv(2, c, 2 * c, 3, key=keys[4])
        self.block_low = _ConvBlock(2 * c, 2 * c, e, key=keys[5])
        self.up = _Upsample(2 * c, c, key=keys[6])
        self.block_out = _ConvBlock(2 * c, c, e, key=keys[7])
        self.conv_out = ScanConv(2, c, in_channels, 3, key=keys[8])
        self.in_channels = in_channels

    def __call__(self, t: Scalar, y: Float[Array, "C H W"], args: Args = None) -> Array:
        """The network's output (score or noise) at one image."""
        del args
        if y.ndim != 3 or y.shape[0] != self.in_channels or y.shape[1] % 2 or y.shape[2] % 2:
            raise ValueError(
                f"ScoreConvNet: the input `y` must be one image of shape ({self.in_channels}, "
                f"H, W) with even H and W (e.g. (1, 8, 8)), got {y.shape}. Add the channel "
                "axis with `x[None]`, and vmap over a batch."
            )
        emb = jax.nn.silu(self.embed_mlp(self.embed(t).astype(y.dtype)))
        high = self.block_high(self.conv_in(y), emb)
        # A stride-2 3x3 convolution with padding 1 = the same-padded one at even pixels.
        low = self.block_low(jax.nn.silu(self.down(high)[:, ::2, ::2]), emb)
        up = self.up(low)
        out = self.block_out(jnp.concatenate([up, high], axis=0), emb)
        return self.conv_out(out)


__all__ = ["Embedding", "ScoreConvNet", "ScoreMLP", "TimeEmbedding"]
