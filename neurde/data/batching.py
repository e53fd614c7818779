"""An infinite iterator over shuffled minibatches."""

from collections.abc import Iterator
from typing import Any, TypeVar

import jax.random as jr
import jax.tree_util as jtu
import numpy as np
from jaxtyping import PRNGKeyArray

from . import _checks

_PyTree = TypeVar("_PyTree")


def minibatches(arrays: _PyTree, batch_size: int, *, key: PRNGKeyArray) -> Iterator[_PyTree]:
    r"""An infinite iterator over shuffled minibatches of a PyTree of arrays.

    Every leaf of `arrays` shares a leading (example) axis of size $N$. Epoch $e$ is a fresh
    permutation drawn from `jax.random.fold_in(key, e)`, cut into $\lfloor N / B \rfloor$
    batches of size $B$ = `batch_size`; the last $N \bmod B$ examples of the permutation are
    dropped, so every batch has the same shape and a jitted step compiles once. The
    iterator is deterministic for a fixed key.

    ```python
    data = neurde.data.spiral(key=jr.key(0))
    batches = neurde.data.minibatches((data.ys, data.y0), 32, key=jr.key(1))
    for step, (ys, y0) in zip(range(1000), batches):
        ...
    ```

    Arguments are checked when `minibatches` is called, not when the first batch is drawn.

    **Arguments:**

    - `arrays`: a PyTree of arrays (JAX or NumPy) with a common leading axis.
    - `batch_size`: the number of examples per batch, between 1 and $N$.
    - `key`: a JAX PRNG key.

    **Returns:**

    An infinite iterator of PyTrees with the structure of `arrays`, each leaf holding
    `batch_size` examples. Leaves keep their type (NumPy leaves stay NumPy).
    """
    fn = "minibatches"
    leaves, treedef = jtu.tree_flatten(arrays)
    if not leaves:
        raise ValueError(
            f"`{fn}(arrays={arrays!r})`: `arrays` has no array leaves. "
            "Pass an array or a PyTree of arrays."
        )
    shapes = [np.shape(leaf) for leaf in leaves]
    if any(len(shape) == 0 for shape in shapes):
        raise ValueError(
            f"`{fn}`: every leaf of `arrays` needs a leading example axis, got leaf shapes "
            f"{shapes}. Add a leading axis or move scalars out of `arrays`."
        )
    if len({shape[0] for shape in shapes}) != 1:
        raise ValueError(
            f"`{fn}`: every leaf of `arrays` must share the leading axis, got leaf shapes "
            f"{shapes}. Pass only per-example arrays (e.g. `traj.ys`, not `traj.ts`)."
        )
    size = shapes[0][0]
    if size == 0:
        raise ValueError(f"`{fn}`: `arrays` is empty (leaf shapes {shapes}). Pass some data.")
    batch_size = _checks.count(fn, "batch_size", batch_size, 1)
    if batch_size > size:
        raise ValueError(
            f"`{fn}(..., batch_size={batch_size})`: `batch_size` must be at most the number "
            f"of examples, {size}. Pass `batch_size={size}` or smaller."
        )
    _checks.prng_key(fn, key)
    return _batches(leaves, treedef, size, batch_size, key)


def _batches(
    leaves: list[Any], treedef: Any, size: int, batch_size: int, key: PRNGKeyArray
) -> Iterator[Any]:
    epoch = 0
    while True:
        permutation = np.asarray(jr.permutation(jr.fold_in(key, epoch), size))
        # One gather per leaf per epoch, then cheap contiguous slices per batch.
        shuffled = [leaf[permutation] for leaf in leaves]
        for start in range(0, size - batch_size + 1, batch_size):
            batch = [leaf[start : start + batch_size] for leaf in shuffled]
            yield jtu.tree_unflatten(treedef, batch)
        epoch += 1
