"""The batches `fit` draws: step `i`'s batch is a function of `(key, i)`, so a resumed run
can start at any step without drawing the batches before it."""

from collections.abc import Iterable, Iterator
from typing import Any

import jax
import jax.random as jr
import jax.tree_util as jtu
import numpy as np
from jaxtyping import PRNGKeyArray

from ..data.batching import minibatches


def is_iterator(data: Any) -> bool:
    return isinstance(data, Iterator) or (
        isinstance(data, Iterable)
        and not isinstance(data, (tuple, list, dict, jax.Array, np.ndarray))
    )


def minibatches_from(data: Any, batch_size: int, key: PRNGKeyArray, start: int) -> Iterator:
    """`neurde.data.minibatches(data, batch_size, key=key)` from its batch `start` on,
    without drawing the batches before it: batch `s` is batch `s % per_epoch` of epoch
    `s // per_epoch`, whose permutation is drawn from `fold_in(key, epoch)`."""
    minibatches(data, batch_size, key=key)  # its argument checks
    leaves, treedef = jtu.tree_flatten(data)
    size = np.shape(leaves[0])[0]
    per_epoch = size // batch_size
    epoch, offset = divmod(start, per_epoch)

    def batches() -> Iterator:
        nonlocal epoch, offset
        while True:
            # The same operations as `minibatches`, so the batches are equal bit for bit.
            permutation = np.asarray(jr.permutation(jr.fold_in(key, epoch), size))
            shuffled = [leaf[permutation] for leaf in leaves]
            for b in range(offset * batch_size, size - batch_size + 1, batch_size):
                yield jtu.tree_unflatten(treedef, [leaf[b : b + batch_size] for leaf in shuffled])
            epoch, offset = epoch + 1, 0

    return batches()


def _whole(data: Any) -> Iterator:
    while True:
        yield data


def batch_stream(data: Any, batch_size: int | None, key: PRNGKeyArray, start: int) -> Iterator:
    """The batches of `fit` from step `start` on: an iterator advanced past `start` batches,
    array data whole (`batch_size=None`) or minibatched."""
    if is_iterator(data):
        if batch_size is not None:
            raise ValueError(
                "fit: `batch_size` applies to array data; got an iterator of batches as "
                "well. Drop `batch_size`, or pass the arrays instead of the iterator."
            )
        batches = iter(data)
        for _ in range(start):  # resumed: skip the batches the checkpointed steps used
            next(batches, None)
        return batches
    if batch_size is None:
        return _whole(data)
    return minibatches_from(data, batch_size, key, start)


__all__ = ["batch_stream", "is_iterator", "minibatches_from"]
