r"""Augmented neural ODEs: solve in $\mathbb R^{d+p}$ so trajectories can go around each other."""

from collections.abc import Callable
from typing import Any, Literal, TypeAlias, cast

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray

from .._types import Args, Input, MaybeKey, SaveTimes, VectorField
from ..fields import AbstractField, MLPField
from ..model import AbstractModel, AbstractWrapper
from ..ode import NeuralODE
from ..solution import ModelSolution

Augmentation: TypeAlias = Literal["zeros", "linear", "mlp"] | Callable[[Array], Array]
Readout: TypeAlias = Literal["first", "all", "linear"] | Callable[[Array], Any]


def check_size(owner: str, name: str, value: Any, example: str) -> int:
    """`value` as an int if it is a positive Python integer, else a `ValueError`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f"{owner}: `{name}` must be a positive int, got {value!r}. Pass e.g. {example}."
        )
    return value


def need_key(owner: str, key: PRNGKeyArray | None, what: str) -> PRNGKeyArray:
    """The initialization `key`, or a `ValueError` saying what needs it."""
    if key is None:
        raise ValueError(
            f"{owner}: a `key` is needed to initialize {what}. Pass e.g. `key=jr.key(0)`."
        )
    return key


def build_inner(
    owner: str,
    field: AbstractField | VectorField | AbstractModel | None,
    state_size: int,
    default_field: Callable[[], AbstractField],
    ode_kwargs: dict[str, Any],
) -> AbstractModel:
    """The inner continuous model: a built model as is, else a `NeuralODE` of the field.

    `field=None` uses `default_field()`; an `MLPField` of the wrong size is an error here
    (other callables are checked by the inner model when a solve is traced).
    """
    if isinstance(field, AbstractModel):
        if ode_kwargs:
            raise ValueError(
                f"{owner}: the solver settings {sorted(ode_kwargs)} were given with an inner "
                "model that is already built. Set them on that model instead, e.g. "
                "`NeuralODE(field, t1=1.0, rtol=...)`."
            )
        return field
    field = default_field() if field is None else field
    if isinstance(field, MLPField) and field.size != state_size:
        raise ValueError(
            f"{owner}: the field is built for states of size {field.size}, but the solved "
            f"state has size {state_size}. Build it with `MLPField({state_size}, ...)`."
        )
    return NeuralODE(field, **ode_kwargs)


class AugmentedODE(AbstractWrapper):
    r"""An augmented neural ODE: lift $x \in \mathbb R^d$ to $[x; a] \in \mathbb R^{d+p}$, solve,
    read out.

    $$z(0) = \begin{bmatrix} x \\ a(x) \end{bmatrix}, \qquad
    \dot z = f_\theta(t, z), \qquad \text{output} = r\bigl(z(t_1)\bigr).$$

    The flow of a neural ODE is a homeomorphism of $\mathbb R^d$, so it cannot map the
    points of an inner disk and of a surrounding annulus to two linearly separable sets, nor
    represent $g(x) = -x$ in one dimension; in $\mathbb R^{d+p}$ the trajectories can pass
    around each other. The augmentation $a$ is zero (the paper) or a learned map of $x$;
    the readout $r$ keeps the first $d$ channels, the whole state, or is a learned linear
    map (the usual classifier head).

    Calling the model returns $r(z(t_1))$, or with save times `ts` the readout at each of
    them; `solve` returns the same in a `neurde.ModelSolution` whose `stats` (NFE) and
    `extras` come from the inner solve. The full lifted trajectory is
    `model.model(model.lift(x), ts)`. Inputs are vectors of shape `(in_size,)`; embed
    images or sequences first (e.g. with `neurde.Composed`). Regularizer transforms
    applied to this model act on the inner ODE in $\mathbb R^{d+p}$.

    **Arguments:**

    - `in_size`: $d$, the input's size.
    - `augment`: $p \geq 1$, the number of augmented channels.
    - `field`: the vector field on $\mathbb R^{d+p}$ (an `AbstractField` or a callable
      `f(t, z, args)`), an already built continuous model on $\mathbb R^{d+p}$ (then the
      solver settings belong to it), or `None` for an `MLPField(in_size + augment,
      width_size, depth)`.
    - `width_size`, `depth`: of the default field and of `augmentation="mlp"`.
    - `augmentation`: `"zeros"` (default, $a = 0$), `"linear"` (a learned `eqx.nn.Linear`
      map of $x$), `"mlp"` (a learned `eqx.nn.MLP`), or any callable $x \mapsto a$ of shape
      `(augment,)`.
    - `readout`: `"first"` (default: $z_{1:d}$), `"all"` (the whole $z$), `"linear"` (a
      learned `eqx.nn.Linear(in_size + augment, out_size)`), or any callable of one state.
    - `out_size`: the output size of `readout="linear"` (default `in_size`).
    - `key`: initialization key, needed when anything is built here.
    - `**ode_kwargs`: settings of the inner `neurde.NeuralODE` (`solver`, `rtol`, `atol`,
      `stepsize_controller`, `adjoint`, `t0`, `t1`, `dt0`, `max_steps`, `throw`).

    References: Dupont, Doucet, Teh, "Augmented Neural ODEs", NeurIPS 2019.
    """

    model: AbstractModel
    augmentation: Callable[[Array], Array] | None
    readout: Callable[[Array], Any] | None
    in_size: int = eqx.field(static=True)
    augment: int = eqx.field(static=True)
    keep_all: bool = eqx.field(static=True)

    def __init__(
        self,
        in_size: int,
        augment: int,
        field: AbstractField | VectorField | AbstractModel | None = None,
        *,
        width_size: int = 64,
        depth: int = 2,
        augmentation: Augmentation = "zeros",
        readout: Readout = "first",
        out_size: int | None = None,
        key: PRNGKeyArray | None = None,
        **ode_kwargs: Any,
    ):
        owner = "AugmentedODE"
        in_size = check_size(owner, "in_size", in_size, "in_size=2")
        augment = check_size(owner, "augment", augment, "augment=2")
        size = in_size + augment
        keys = list(jr.split(key, 3)) if key is not None else [None] * 3

        def default_field() -> AbstractField:
            k = need_key(owner, keys[0], "the default MLPField")
            return MLPField(size, width_size, depth, key=k)

        self.model = build_inner(owner, field, size, default_field, ode_kwargs)
        self.augmentation = _augmentation(
            augmentation, in_size, augment, width_size, depth, keys[1]
        )
        if out_size is not None and readout != "linear":
            raise ValueError(
                f"{owner}: `out_size={out_size!r}` only applies to `readout='linear'`, got "
                f"readout={readout!r}. Drop `out_size` or pass readout='linear'."
            )
        self.readout = _readout(readout, size, in_size if out_size is None else out_size, keys[2])
        self.keep_all = readout == "all"
        self.in_size = in_size
        self.augment = augment

    def __check_init__(self):
        if not isinstance(self.model, AbstractModel):
            raise TypeError(
                f"AugmentedODE: `model` must be a neurde model (e.g. a NeuralODE), got "
                f"{type(self.model).__name__}."
            )

    def lift(self, x: Float[Array, " in_size"]) -> Float[Array, " in_size+augment"]:
        """The initial state $[x; a(x)]$ of the inner ODE for one input `x`."""
        x = jnp.asarray(x)
        if not jnp.issubdtype(x.dtype, jnp.floating):
            raise TypeError(
                f"AugmentedODE: the input has dtype {x.dtype}, but a floating dtype is needed. "
                "Convert it first, e.g. `x.astype(jnp.float32)`."
            )
        if x.shape != (self.in_size,):
            raise ValueError(
                f"AugmentedODE: the input must have shape ({self.in_size},) (in_size), got "
                f"{x.shape}. Call the model on one example and batch with `jax.vmap`, or build "
                f"it with `in_size={x.shape[-1] if x.ndim else 1}`."
            )
        if self.augmentation is None:
            a = jnp.zeros((self.augment,), x.dtype)
        else:
            a = jnp.asarray(self.augmentation(x))
            if a.shape != (self.augment,):
                raise ValueError(
                    f"AugmentedODE: the augmentation returned shape {a.shape}, but "
                    f"({self.augment},) (augment) is needed. Make it map x to `augment` values."
                )
        return jnp.concatenate([x, a.astype(x.dtype)])

    def _read(self, z: Array) -> Any:
        if self.readout is not None:
            return self.readout(z)
        return z if self.keep_all else z[: self.in_size]

    def solve(
        self, y0: Input, ts: SaveTimes = None, *, args: Args = None, key: MaybeKey = None
    ) -> ModelSolution:
        """Lift one input, solve in $\\mathbb R^{d+p}$, read out (at each save time, if any)."""
        solution = self.model.solve(self.lift(y0), ts, args=args, key=key)
        return solution.map(self._read)


def _augmentation(
    augmentation: Any, in_size: int, augment: int, width: int, depth: int, key: Any
) -> Callable[[Array], Array] | None:
    owner = "AugmentedODE"
    if augmentation == "zeros":
        return None
    if augmentation == "linear":
        return eqx.nn.Linear(in_size, augment, key=need_key(owner, key, "the augmentation"))
    if augmentation == "mlp":
        k = need_key(owner, key, "the augmentation")
        return eqx.nn.MLP(in_size, augment, width, depth, activation=jnp.tanh, key=k)
    if isinstance(augmentation, str) or not callable(augmentation):
        raise ValueError(
            f"AugmentedODE: `augmentation` must be 'zeros', 'linear', 'mlp' or a function "
            f"x -> a, got {augmentation!r}."
        )
    return cast(Callable[[Array], Array], augmentation)


def _readout(readout: Any, size: int, out_size: Any, key: Any) -> Callable[[Array], Any] | None:
    owner = "AugmentedODE"
    if readout in ("first", "all"):
        return None
    if readout == "linear":
        out_size = check_size(owner, "out_size", out_size, "out_size=1")
        return eqx.nn.Linear(size, out_size, key=need_key(owner, key, "the linear readout"))
    if isinstance(readout, str) or not callable(readout):
        raise ValueError(
            f"AugmentedODE: `readout` must be 'first', 'all', 'linear' or a function of one "
            f"state, got {readout!r}."
        )
    return readout
