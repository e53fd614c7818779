"""A labelled classification data set, split into train and test."""

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, Int


class Classification(eqx.Module):
    """A classification data set: inputs and integer labels, split into train and test.

    Returned by `neurde.data.digits` and `neurde.data.mnist1d`. It is a PyTree, so
    it passes through `jax.jit` and `neurde.data.minibatches` takes
    `(data.x_train, data.y_train)` directly. `num_classes` and `name` are static.
    This class is final: compose it, do not subclass it.

    **Fields:**

    - `x_train`: training inputs, shape `(n_train, *input_shape)`, floating.
    - `y_train`: training labels in `0, ..., num_classes - 1`, shape `(n_train,)`, integer.
    - `x_test`: test inputs, shape `(n_test, *input_shape)`, floating.
    - `y_test`: test labels, shape `(n_test,)`, integer.
    - `num_classes`: the number of classes.
    - `name`: a short name of the data set, e.g. `"digits"`.
    """

    x_train: Float[Array, "n_train ..."]
    y_train: Int[Array, " n_train"]
    x_test: Float[Array, "n_test ..."]
    y_test: Int[Array, " n_test"]
    num_classes: int = eqx.field(static=True)
    name: str = eqx.field(static=True)

    def __init__(
        self,
        x_train: Float[ArrayLike, "n_train ..."],
        y_train: Int[ArrayLike, " n_train"],
        x_test: Float[ArrayLike, "n_test ..."],
        y_test: Int[ArrayLike, " n_test"],
        *,
        num_classes: int,
        name: str,
    ):
        """**Arguments:**

        - `x_train`, `y_train`: training inputs `(n_train, ...)` and integer labels
          `(n_train,)`.
        - `x_test`, `y_test`: test inputs `(n_test, ...)` and integer labels `(n_test,)`.
        - `num_classes`: the number of classes, at least 2.
        - `name`: a short name of the data set.
        """
        self.x_train = jnp.asarray(x_train)
        self.y_train = jnp.asarray(y_train)
        self.x_test = jnp.asarray(x_test)
        self.y_test = jnp.asarray(y_test)
        self.num_classes = num_classes
        self.name = name

    def __check_init__(self):
        for part in ("train", "test"):
            x, y = getattr(self, f"x_{part}"), getattr(self, f"y_{part}")
            if not jnp.issubdtype(x.dtype, jnp.floating):
                raise TypeError(
                    f"`Classification(x_{part}=...)`: `x_{part}` must be floating, got "
                    f"{x.dtype}. Pass `x_{part}.astype(jnp.float32)`."
                )
            if not jnp.issubdtype(y.dtype, jnp.integer):
                raise TypeError(
                    f"`Classification(y_{part}=...)`: `y_{part}` must hold integer class "
                    f"labels, got {y.dtype}. Pass `y_{part}.astype(jnp.int32)`."
                )
            if x.ndim < 2 or y.shape != x.shape[:1]:
                raise ValueError(
                    f"`Classification(x_{part}=..., y_{part}=...)`: expected `x_{part}` of "
                    f"shape (n, ...) and `y_{part}` of shape (n,), got {x.shape} and "
                    f"{y.shape}. Pass one label per example, along the leading axis."
                )
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise ValueError(
                "`Classification`: train and test examples must share a shape, got "
                f"{self.x_train.shape[1:]} and {self.x_test.shape[1:]}."
            )
        if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int):
            raise TypeError(
                f"`Classification(num_classes={self.num_classes!r})`: `num_classes` must be "
                "a Python integer."
            )
        if self.num_classes < 2:
            raise ValueError(
                f"`Classification(num_classes={self.num_classes!r})`: `num_classes` must be "
                ">= 2. Pass the number of distinct labels."
            )

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one example, e.g. `(1, 8, 8)` for channel-first images."""
        return tuple(self.x_train.shape[1:])
