"""Complete classifiers: input embedding, a residual stack of any scheme, pooling, linear head."""

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, PRNGKeyArray

from .._types import Args, Input, MaybeKey, SaveTimes
from ..fields import MLPField
from ..model import AbstractWrapper
from ..solution import ModelSolution
from .coupling import AdditiveCoupling, CouplingBlock, HamiltonianBlock
from .euler import Euler, PolyNet
from .fields import AntisymmetricField, ConvField, PDEField
from .leapfrog import Leapfrog
from .momentum import Momentum
from .multistep import LinearMultistep
from .runge_kutta import RungeKutta
from .scheme import AbstractScheme
from .stack import ResidualStack

_VECTOR_ONLY = ("antisymmetric", "hamiltonian")
_IMAGE_ONLY = ("parabolic", "hyperbolic")
ARCHITECTURES = (
    "resnet",
    "polynet",
    "rk2",
    "rk4",
    "lm-resnet",
    "midpoint",
    "leapfrog",
    "momentum",
    "revnet",
    "antisymmetric",
    "hamiltonian",
    "parabolic",
    "hyperbolic",
)
# Architectures whose blocks take flat feature vectors (MLP fields), and those whose blocks
# take channel-first images or signals (convolutional fields).
VECTOR_ARCHITECTURES = tuple(a for a in ARCHITECTURES if a not in _IMAGE_ONLY)
IMAGE_ARCHITECTURES = tuple(a for a in ARCHITECTURES if a not in _VECTOR_ONLY)


def _scheme(architecture: str, depth: int) -> AbstractScheme:
    schemes: dict[str, Callable[[], AbstractScheme]] = {
        "resnet": Euler,
        "antisymmetric": Euler,
        "parabolic": Euler,
        "polynet": PolyNet,
        "rk2": RungeKutta.rk2,
        "rk4": RungeKutta.rk4,
        "lm-resnet": lambda: LinearMultistep(depth),
        "midpoint": lambda: LinearMultistep.midpoint(depth),
        "leapfrog": Leapfrog,
        "hyperbolic": Leapfrog,
        "momentum": Momentum,
        "revnet": AdditiveCoupling,
        "hamiltonian": AdditiveCoupling,
    }
    return schemes[architecture]()


def _block_maker(
    architecture: str, width: int, spatial_dims: int, hidden: int
) -> Callable[[PRNGKeyArray], Any]:
    def field(size: int, key: PRNGKeyArray) -> Any:
        if spatial_dims:
            return ConvField(size, num_spatial_dims=spatial_dims, key=key)
        return MLPField(size, hidden, 1, activation=jnp.tanh, key=key)

    def make(key: PRNGKeyArray) -> Any:
        if architecture == "revnet":
            k1, k2 = jr.split(key)
            return CouplingBlock(field(width // 2, k1), field(width // 2, k2))
        if architecture == "hamiltonian":
            return HamiltonianBlock(width // 2, key=key)
        if architecture == "antisymmetric":
            return AntisymmetricField(width, key=key)
        if architecture in _IMAGE_ONLY:
            return PDEField(width, num_spatial_dims=spatial_dims, key=key)
        return field(width, key)

    return make


class Classifier(AbstractWrapper):
    r"""A classifier whose body is a residual stack read as a numerical scheme.

    Input embedding (a linear map for vectors, a convolution for images and signals), a
    `ResidualStack` of `depth` blocks in the chosen architecture, mean pooling over space,
    and a linear head returning logits. It is a `neurde.AbstractWrapper` around the stack:
    `classifier(x, *, key=None)` returns the logits, and `neurde.noise` transforms applied to
    the classifier randomize its stack. Vector-only architectures (`antisymmetric`,
    `hamiltonian`) flatten image inputs; image-only ones (`parabolic`, `hyperbolic`)
    require channel-first inputs.

    **Arguments:**

    - `input_shape`: shape of one example: `(features,)`, `(channels, length)` or
      `(channels, height, width)`.
    - `num_classes`: number of classes.
    - `architecture`: one of `ARCHITECTURES`: resnet, polynet, rk2, rk4, lm-resnet, midpoint,
      leapfrog, momentum, revnet, antisymmetric, hamiltonian, parabolic, hyperbolic.
    - `width`: state features or channels (even for revnet/hamiltonian).
    - `depth`: number of blocks.
    - `h`: step; defaults to `1 / depth`.
    - `hidden`: hidden width of the MLP fields (vector inputs).
    - `key`: initialization key.
    """

    embed: eqx.nn.Linear | eqx.nn.Conv
    stack: ResidualStack
    head: eqx.nn.Linear
    spatial_dims: int = eqx.field(static=True)
    flatten: bool = eqx.field(static=True)

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        *,
        architecture: str = "resnet",
        width: int = 32,
        depth: int = 8,
        h: float | None = None,
        hidden: int = 64,
        key: PRNGKeyArray,
    ):
        if architecture not in ARCHITECTURES:
            raise ValueError(
                f"Classifier: unknown `architecture={architecture!r}`; choose one of "
                f"{', '.join(ARCHITECTURES)}."
            )
        for name, value in (("num_classes", num_classes), ("width", width), ("hidden", hidden)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Classifier: `{name}` must be an integer >= 1, got {value!r}.")
        input_shape = tuple(int(s) for s in input_shape)
        if not input_shape or min(input_shape) < 1:
            raise ValueError(
                "Classifier: `input_shape` must be the shape of one example, `(features,)`, "
                f"`(channels, length)` or `(channels, height, width)`, got {input_shape}."
            )
        spatial_dims = len(input_shape) - 1
        if architecture in _IMAGE_ONLY and spatial_dims < 1:
            raise ValueError(
                f"Classifier: architecture={architecture!r} needs channel-first images or "
                f"signals, got input_shape={input_shape}. Reshape to (1, length) or use a "
                "vector architecture such as 'resnet'."
            )
        if architecture in ("revnet", "hamiltonian") and width % 2:
            raise ValueError(
                f"Classifier: {architecture} splits the state in halves; `width` must be "
                f"even, got {width}."
            )
        self.flatten = architecture in _VECTOR_ONLY and spatial_dims > 0
        spatial_dims = 0 if self.flatten else spatial_dims
        k_embed, k_stack, k_head = jr.split(key, 3)
        if spatial_dims:
            self.embed = eqx.nn.Conv(spatial_dims, input_shape[0], width, 3, padding=1, key=k_embed)
        else:
            size = 1
            for s in input_shape:
                size *= s
            self.embed = eqx.nn.Linear(size, width, key=k_embed)
        self.stack = ResidualStack(
            _block_maker(architecture, width, spatial_dims, hidden),
            _scheme(architecture, depth),
            depth,
            h=h,
            key=k_stack,
        )
        self.head = eqx.nn.Linear(width, num_classes, key=k_head)
        self.spatial_dims = spatial_dims

    @property
    def model(self) -> ResidualStack:
        """The residual stack: what regularizer transforms act on."""
        return self.stack

    def _embed(self, x: Array) -> Array:
        if isinstance(self.embed, eqx.nn.Linear):
            if x.size != self.embed.in_features:
                raise ValueError(
                    f"Classifier: the input has shape {x.shape} ({x.size} values), but the "
                    f"classifier was built for {self.embed.in_features} values. Pass one example "
                    "of the `input_shape` it was built with, and vmap over a batch."
                )
            return self.embed(x.reshape(-1))
        channels = self.embed.in_channels
        if x.ndim != self.spatial_dims + 1 or x.shape[0] != channels:
            raise ValueError(
                f"Classifier: the input has shape {x.shape}, but the classifier was built for "
                f"one example with {channels} channels and {self.spatial_dims} spatial axes, "
                "channels first. Pass one example of its `input_shape`, and vmap over a batch."
            )
        return self.embed(x)

    def _head(self, u: Array) -> Array:
        if self.spatial_dims:
            u = jnp.mean(u, axis=tuple(range(1, u.ndim)))
        return self.head(u)

    def solve(
        self, y0: Input, ts: SaveTimes = None, *, args: Args = None, key: MaybeKey = None
    ) -> ModelSolution:
        """Logits for one (unbatched) example `y0` (at each of the stack's save times `ts`, if
        given); `key` is passed to the stack (it draws the noise once a `neurde.noise`
        transform has randomized the stack)."""
        solution = self.stack.solve(self._embed(jnp.asarray(y0)), ts, args=args, key=key)
        return solution.map(self._head)
