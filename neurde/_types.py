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

__all__ = ["Args", "Key", "Scalar", "State", "Times", "VectorField"]
