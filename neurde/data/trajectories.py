"""A batch of trajectories sampled on a shared time grid."""

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Bool, Float


def _optional_array(x: ArrayLike | None) -> Array | None:
    return None if x is None else jnp.asarray(x)


class Trajectories(eqx.Module):
    """A batch of `n` trajectories of a `dim`-dimensional system on shared times `ts`.

    Returned by every generator in `neurde.data`. It is a PyTree, so it passes through
    `jax.jit` and can be saved with `eqx.tree_serialise_leaves`.
    This class is final: compose it, do not subclass it.

    **Fields:**

    - `ts`: observation times shared by all trajectories, shape `(times,)`.
    - `ys`: observations, shape `(n, times, dim)`; noisy where the generator adds noise.
    - `clean`: the noise-free values, same shape as `ys`, or `None` where there is no
      separate noise-free signal (e.g. sample paths of an SDE).
    - `mask`: `True` where a value is observed, shape `(n, times)`, or `None` when every
      value is observed. Entries of `ys` where the mask is `False` carry no information.
    """

    ts: Float[Array, " times"]
    ys: Float[Array, "n times dim"]
    clean: Float[Array, "n times dim"] | None = None
    mask: Bool[Array, "n times"] | None = None

    def __init__(
        self,
        ts: Float[ArrayLike, " times"],
        ys: Float[ArrayLike, "n times dim"],
        clean: Float[ArrayLike, "n times dim"] | None = None,
        mask: Bool[ArrayLike, "n times"] | None = None,
    ):
        """**Arguments:**

        - `ts`: observation times, shape `(times,)`.
        - `ys`: observations, shape `(n, times, dim)`.
        - `clean`: optional noise-free values, shape `(n, times, dim)`.
        - `mask`: optional boolean observation mask, shape `(n, times)`.
        """
        self.ts = jnp.asarray(ts)
        self.ys = jnp.asarray(ys)
        self.clean = _optional_array(clean)
        self.mask = _optional_array(mask)

    def __check_init__(self):
        if self.ts.ndim != 1:
            raise ValueError(
                f"`Trajectories(ts=...)`: `ts` must have shape (times,), got {self.ts.shape}. "
                "Pass one time grid shared by all trajectories."
            )
        if self.ys.ndim != 3 or self.ys.shape[1] != self.ts.shape[0]:
            raise ValueError(
                f"`Trajectories(ys=...)`: `ys` must have shape (n, times, dim) = "
                f"(n, {self.ts.shape[0]}, dim) to match `ts`, got {self.ys.shape}. "
                "Add a trailing axis of size 1 for scalar systems."
            )
        if self.clean is not None and self.clean.shape != self.ys.shape:
            raise ValueError(
                f"`Trajectories(clean=...)`: `clean` must have the shape of `ys`, "
                f"{self.ys.shape}, got {self.clean.shape}."
            )
        if self.mask is not None:
            if self.mask.shape != self.ys.shape[:2]:
                raise ValueError(
                    f"`Trajectories(mask=...)`: `mask` must have shape (n, times) = "
                    f"{self.ys.shape[:2]}, got {self.mask.shape}."
                )
            if self.mask.dtype != jnp.bool_:
                raise TypeError(
                    f"`Trajectories(mask=...)`: `mask` must be boolean, got {self.mask.dtype}. "
                    "Pass `mask=mask.astype(bool)`."
                )

    @property
    def y0(self) -> Float[Array, "n dim"]:
        """Initial states: `clean[:, 0]` if `clean` is available, else `ys[:, 0]`."""
        return (self.ys if self.clean is None else self.clean)[:, 0]

    @property
    def n(self) -> int:
        """Number of trajectories."""
        return self.ys.shape[0]

    @property
    def dim(self) -> int:
        """Dimension of the state."""
        return self.ys.shape[2]

    def split(self, fraction: float) -> tuple["Trajectories", "Trajectories"]:
        """Split along the trajectory axis into `(train, test)`.

        The first `round(fraction * n)` trajectories form `train` and the rest `test`; the
        generators draw trajectories independently, so no shuffling is needed.

        **Arguments:**

        - `fraction`: the share of trajectories in `train`, strictly between 0 and 1.

        **Returns:**

        A pair `(train, test)` of `Trajectories` sharing `ts`.
        """
        if isinstance(fraction, bool) or not 0 < fraction < 1:
            raise ValueError(
                f"`Trajectories.split(fraction={fraction!r})`: `fraction` must lie strictly "
                "between 0 and 1. Pass e.g. `fraction=0.8` for an 80/20 split."
            )
        n_train = round(fraction * self.n)
        if n_train == 0 or n_train == self.n:
            raise ValueError(
                f"`Trajectories.split(fraction={fraction!r})` on {self.n} trajectories "
                f"puts {n_train} in train and {self.n - n_train} in test; both must be "
                "non-empty. Use a fraction closer to 0.5 or generate more trajectories."
            )
        return self[:n_train], self[n_train:]

    def __getitem__(self, index) -> "Trajectories":
        """Select trajectories (not times) with a slice, an index array or a boolean mask."""
        ys = self.ys[index]
        if ys.ndim != 3:
            raise TypeError(
                f"`Trajectories[{index!r}]` must keep the trajectory axis. "
                "Use a slice such as `traj[i : i + 1]` or an index array."
            )
        return Trajectories(
            ts=self.ts,
            ys=ys,
            clean=None if self.clean is None else self.clean[index],
            mask=None if self.mask is None else self.mask[index],
        )
