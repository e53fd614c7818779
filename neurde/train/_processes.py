"""What `fit` does differently with several processes (`jax.distributed`): host copies of
arrays spread over processes, files written by process 0 only, and barriers."""

from typing import Any

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jax.experimental import multihost_utils


def to_host(tree: Any) -> Any:
    """NumPy copies of `tree`'s arrays; arrays spread over several processes are gathered
    (a collective: every process must call it)."""

    def leaf(x: Any) -> Any:
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return np.asarray(x)

    return jax.tree.map(leaf, tree, is_leaf=lambda x: isinstance(x, jax.Array))


def gathered(tree: Any) -> Any:
    """`tree` with every array that spans several processes gathered to each of them (as a
    NumPy array), so a checkpoint can be written; other leaves kept."""

    def leaf(x: Any) -> Any:
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
                return jr.wrap_key_data(leaf(jr.key_data(x)), impl=jr.key_impl(x))
            return jnp.asarray(multihost_utils.process_allgather(x, tiled=True))
        return x

    return jax.tree.map(leaf, tree)


def is_writer() -> bool:
    """Whether this process writes files (checkpoints, reports): process 0 only."""
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Wait until every process reaches this point (no-op with one process)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


__all__ = ["barrier", "gathered", "is_writer", "to_host"]
