"""Shared type aliases (jaxtyping) used across neurde."""

from collections.abc import Callable
from typing import Any, TypeAlias

from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray, PyTree

Scalar: TypeAlias = Float[ArrayLike, ""]
Times: TypeAlias = Float[Array, " times"]
State: TypeAlias = PyTree[Float[Array, "..."]]
Args: TypeAlias = PyTree[Any]
Key: TypeAlias = PRNGKeyArray
VectorField: TypeAlias = Callable[[Scalar, State, Args], PyTree[Array]]
# The arguments of every model call, `model(y0, ts=None, *, args=None, key=None)`.
Input: TypeAlias = PyTree[ArrayLike]
SaveTimes: TypeAlias = Float[ArrayLike, " times"] | None
MaybeKey: TypeAlias = PRNGKeyArray | None
