"""`Sharding`: how a training run or an inference call is laid out on a device mesh.

Data parallelism shards the batch's leading axis over a mesh axis and replicates the
parameters and optimizer state; ensemble parallelism shards the members' leading axis; a
2-D mesh does both. The layout is JAX's own (`jax.sharding.Mesh`, `NamedSharding`): the
step is one `jax.jit` program whose inputs and outputs carry these shardings, and XLA's
partitioner inserts the collectives, so the loss is the mean over the *global* batch and
its gradient is the one unsharded training computes. Models are unchanged.

Several processes (`jax.distributed.initialize`, one per host) see one global mesh of all
their devices; each process holds the rows of a batch that its own devices need
(`jax.make_array_from_callback`), so a data loader only has to produce its share.
"""

import functools
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec


class Sharding(eqx.Module):
    """A device mesh and the names of its axes that carry the batch and the ensemble members.

    `fit(..., mesh=Sharding(mesh, data="data"))` trains data parallel: each step's batch is
    split along its leading axis over the mesh axis `data`, the parameters and optimizer
    state are replicated, and the loss is the mean over the global batch, as unsharded.
    `members="members"` shards a stacked ensemble (`fit(..., ensemble=True)`) over that axis:
    each device trains its own members. Both at once on a 2-D mesh:

    ```python
    mesh = jax.make_mesh((2, 4), ("members", "data"))
    fit(ensemble, loss, data, ensemble=True, mesh=neurde.Sharding(mesh, data="data",
        members="members"), ...)
    ```

    A plain `jax.sharding.Mesh` with one axis may be passed instead: its axis carries the
    batch (or, with `ensemble=True`, the members).

    **Arguments:**

    - `mesh`: a `jax.sharding.Mesh`, e.g. `jax.make_mesh((8,), ("data",))`; with several
      processes, a mesh of all their devices (`jax.devices()`).
    - `data`: the mesh axis the batch's leading axis is split over, or `None` (the batch is
      replicated).
    - `members`: the mesh axis an ensemble's member axis is split over, or `None`.
    - `per_example_loss`: `True` promises that the loss is a mean of per-example terms
      (`jnp.mean` over the batch of a loss of each example, as in
      `jnp.mean(jax.vmap(lambda y, t: (model(y) - t) ** 2)(y0, target))`): each device
      then evaluates the loss and its gradient on its own rows alone, and the devices
      average the losses and gradients once per step. Its solves run as one local loop
      per device, without the collective that every iteration of a sharded adaptive
      solve otherwise needs (the loop runs while *any* example of the global batch is
      unfinished), so it is faster; it equals the default whenever the promise holds
      (up to rounding). Each device's `key` is `jax.random.fold_in(key, i)` for its
      index `i` along `data`, so a loss drawing noise from `key` draws different (as
      distributed) noise than unsharded. Of the loss's aux dict, scalars are averaged
      over the devices and other arrays are joined along their leading axis (per-example
      values such as `solution.result`). Data parallel training only (`make_step`, `fit`
      without `ensemble=True`). Default `False`: the exact path, any loss.

    Batch sizes must be divisible by the size of the `data` axis and member counts by the
    size of the `members` axis; the step builders and `fit` check this before compiling.
    """

    mesh: Mesh = eqx.field(static=True)
    data: str | None = eqx.field(static=True, default=None)
    members: str | None = eqx.field(static=True, default=None)
    per_example_loss: bool = eqx.field(static=True, default=False)

    def __check_init__(self) -> None:
        if not isinstance(self.mesh, Mesh):
            raise TypeError(
                f"Sharding: `mesh` must be a jax.sharding.Mesh, got {type(self.mesh).__name__} "
                f"({self.mesh!r}). Build one with `jax.make_mesh((8,), ('data',))`."
            )
        names = tuple(self.mesh.axis_names)
        for arg in ("data", "members"):
            axis = getattr(self, arg)
            if axis is not None and axis not in names:
                raise ValueError(
                    f"Sharding: `{arg}={axis!r}` is not an axis of the mesh, whose axes are "
                    f"{names}. Pass one of these names, or build the mesh with an axis "
                    f"named {axis!r}."
                )
        if self.data is None and self.members is None:
            raise ValueError(
                f"Sharding: give the mesh axis of the batch (`data=`) or of the ensemble "
                f"members (`members=`), or both; the mesh's axes are {names}."
            )
        if not isinstance(self.per_example_loss, bool):
            raise TypeError(
                f"Sharding: `per_example_loss` must be True or False, got "
                f"{self.per_example_loss!r}."
            )
        if self.per_example_loss and (self.data is None or self.members is not None):
            raise ValueError(
                f"Sharding: `per_example_loss=True` splits the loss over the `data` axis of "
                f"data parallel training, but this Sharding has data={self.data!r} and "
                f"members={self.members!r}. Give `data=` and no `members=`, or drop "
                "`per_example_loss`."
            )
        if self.data is not None and self.data == self.members:
            raise ValueError(
                f"Sharding: `data` and `members` name the same mesh axis {self.data!r}; "
                "use a 2-D mesh with one axis for each, e.g. "
                "`jax.make_mesh((2, 4), ('members', 'data'))`."
            )

    def axis_size(self, axis: str | None) -> int:
        """The number of devices along `axis` (1 for `None`)."""
        return 1 if axis is None else int(self.mesh.shape[axis])

    def spec(self, *axes: str | None) -> NamedSharding:
        """`NamedSharding(mesh, PartitionSpec(*axes))`: array axis `i` split over `axes[i]`.

        The mesh's axes are used in `AxisType.Auto` mode whatever their declared type
        (`jax.make_mesh` declares them `Explicit`): inputs and outputs have the stated
        layout and XLA's partitioner lays out everything in between. Diffrax's and
        Equinox's loops (the checkpointed `while_loop` of a solve) do not trace under
        explicit sharding, and models are not to change to be sharded.
        """
        return _named_sharding(self.mesh, axes)

    def replicate(self, tree: Any) -> Any:
        """Every array of `tree` copied to every device of the mesh (parameters)."""
        return put(tree, self.spec())

    def shard_batch(self, tree: Any) -> Any:
        """The arrays of `tree` split along their leading (batch) axis over `data`."""
        check_batch("Sharding.shard_batch", self, "tree", tree)
        return put(tree, self.spec(self.data))

    def shard_members(self, ensemble: Any) -> Any:
        """A stacked ensemble's arrays split along their member axis over `members`."""
        n = leading_size(ensemble)
        check_members("Sharding.shard_members", self, "ensemble", n)
        return put(ensemble, self.spec(self.members))


@functools.lru_cache(maxsize=64)
def _named_sharding(mesh: Mesh, axes: tuple[str | None, ...]) -> NamedSharding:
    # Cached: every call of a sharded step lays out its inputs with these, and building
    # a Mesh and comparing new shardings costs milliseconds per call on 8 devices.
    auto = (AxisType.Auto,) * len(mesh.axis_names)
    if tuple(mesh.axis_types) != auto:
        mesh = Mesh(mesh.devices, mesh.axis_names, axis_types=auto)
    return NamedSharding(mesh, PartitionSpec(*axes))


def as_sharding(fn: str, mesh: Any, ensemble: bool) -> Sharding | None:
    """`mesh` (a `Sharding`, a 1-D `Mesh` or `None`) as a `Sharding`, or a `TypeError`."""
    if mesh is None or isinstance(mesh, Sharding):
        if isinstance(mesh, Sharding) and not ensemble and mesh.members is not None:
            raise ValueError(
                f"{fn}: `mesh` shards ensemble members over {mesh.members!r}, but the model is "
                "trained as one model. Pass `ensemble=True` for a stacked ensemble (or "
                "`make_ensemble_step`), or drop `members=` from the Sharding."
            )
        if isinstance(mesh, Sharding) and ensemble and mesh.per_example_loss:
            raise ValueError(
                f"{fn}: `per_example_loss=True` is for data parallel training of one model; "
                "an ensemble's members are already trained independently. Drop "
                "`per_example_loss` from the Sharding."
            )
        return mesh
    if isinstance(mesh, Mesh):
        if len(mesh.axis_names) != 1:
            raise ValueError(
                f"{fn}: a plain `mesh` must have one axis, got axes {tuple(mesh.axis_names)}. "
                "For a 2-D mesh say which axis is which: "
                "`neurde.Sharding(mesh, data=..., members=...)`."
            )
        axis = mesh.axis_names[0]
        return Sharding(mesh, members=axis) if ensemble else Sharding(mesh, data=axis)
    raise TypeError(
        f"{fn}: `mesh` must be a neurde.Sharding, a jax.sharding.Mesh or None, got "
        f"{type(mesh).__name__} ({mesh!r})."
    )


def data_parallel(fn: str, devices: int, *, per_example_loss: bool = False) -> Sharding | None:
    """A `Sharding` splitting batches over the first `devices` devices (`None` for 1): what
    `neurde run NAME --devices N` trains with; `per_example_loss` as for `Sharding`, for an
    experiment whose loss is a mean of per-example terms."""
    if isinstance(devices, bool) or not isinstance(devices, int) or devices < 1:
        raise ValueError(f"{fn}: `devices` must be an integer >= 1, got {devices!r}.")
    if devices == 1:
        return None
    available = jax.devices()
    if devices > len(available):
        raise ValueError(
            f"{fn}: `devices={devices}` but JAX sees {len(available)} "
            f"({available[0].platform}). On a CPU, `neurde run ... --devices N` makes N host "
            "devices; elsewhere pass at most the number of accelerators."
        )
    mesh = jax.make_mesh((devices,), ("data",), devices=available[:devices])
    return Sharding(mesh, data="data", per_example_loss=per_example_loss)


def leading_size(tree: Any) -> int | None:
    shapes = [np.shape(x) for x in jax.tree.leaves(tree) if eqx.is_array(x) or _is_host(x)]
    sizes = {s[0] for s in shapes if s}
    return sizes.pop() if len(sizes) == 1 else None


def _is_host(x: Any) -> bool:
    return isinstance(x, np.ndarray)


def check_batch(fn: str, sharding: Sharding, name: str, batch: Any, axis: int = 0) -> None:
    """Every array of `batch` has a leading axis divisible by the `data` axis's size."""
    k = sharding.axis_size(sharding.data)
    if sharding.data is None:
        return
    for x in jax.tree.leaves(batch):
        if not (eqx.is_array(x) or _is_host(x)):
            continue
        shape = np.shape(x)
        if len(shape) <= axis or shape[axis] % k:
            size = shape[axis] if len(shape) > axis else "no such axis"
            raise ValueError(
                f"{fn}: `{name}` has batch size {size} (an array of shape {shape}), which "
                f"the mesh axis {sharding.data!r} cannot split evenly over its {k} devices. "
                f"Use a batch size divisible by {k} (e.g. {max(k, (_int(size) // k) * k)})."
            )


def _int(size: Any) -> int:
    return size if isinstance(size, int) else 0


def check_members(fn: str, sharding: Sharding, name: str, n: int | None) -> None:
    """The ensemble's member count is divisible by the `members` axis's size."""
    k = sharding.axis_size(sharding.members)
    if n is None or n % k:
        raise ValueError(
            f"{fn}: `{name}` has {n} members, which the mesh axis {sharding.members!r} "
            f"cannot split evenly over its {k} devices. Build an ensemble of a multiple "
            f"of {k} members, or use a smaller `members` axis."
        )


def _put_leaf(x: Any, sharding: NamedSharding) -> Any:
    if isinstance(x, jax.Array):
        if x.sharding.is_equivalent_to(sharding, x.ndim):
            return x
        if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            return jr.wrap_key_data(_put_leaf(jr.key_data(x), sharding), impl=jr.key_impl(x))
        if jax.process_count() == 1 or not x.is_fully_addressable:
            return jax.device_put(x, sharding)
    # Several processes: each builds the shards of its own devices from its host copy.
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def put(tree: Any, sharding: NamedSharding) -> Any:
    """`tree` with its arrays (and NumPy arrays) laid out as `sharding`; other leaves kept."""
    return jax.tree.map(
        lambda x: _put_leaf(x, sharding) if eqx.is_array(x) or _is_host(x) else x, tree
    )


def put_member_tree(tree: Any, sharding: Sharding) -> Any:
    """An ensemble's (or its optimizer states') arrays split along the member axis; scalar
    leaves (none in `make_ensemble`'s output) are replicated."""
    split, whole = sharding.spec(sharding.members), sharding.spec()
    return jax.tree.map(
        lambda x: (
            _put_leaf(x, split if np.ndim(x) else whole) if eqx.is_array(x) or _is_host(x) else x
        ),
        tree,
    )


__all__ = [
    "Sharding",
    "as_sharding",
    "check_batch",
    "check_members",
    "data_parallel",
    "leading_size",
    "put",
    "put_member_tree",
]
