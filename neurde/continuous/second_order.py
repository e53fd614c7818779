r"""Second-order neural ODEs: $\ddot x = f(t, x, \dot x)$ (SONODE) and the heavy ball
$\ddot h + \gamma \dot h = f(t, h)$ (HBNODE), solved as first-order systems in phase space."""

from collections.abc import Callable
from typing import Any, Literal, TypeAlias, cast

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from .._types import Args, Input, MaybeKey, SaveTimes, Scalar, VectorField
from ..fields import AbstractField, MLPField, as_field
from ..model import AbstractModel, AbstractWrapper
from ..solution import ModelSolution
from .augmented import build_inner, check_size, need_key

Initial: TypeAlias = Literal["given", "zero", "learned"] | Callable[[Array], Array]
Output: TypeAlias = Literal["position", "state"]


class SecondOrderField(AbstractField):
    r"""The first-order form of $\ddot x = a(t, x, \dot x)$ on the state $[x; v]$:
    $(\dot x, \dot v) = (v, a(t, [x; v]))$.

    **Arguments:**

    - `acceleration`: $a$, a field `a(t, [x; v], args)` from $\mathbb R^{2d}$ to
      $\mathbb R^d$ (an `AbstractField` or a callable).
    - `size`: $d$, the size of the position.

    References: Norcliffe, Bodnar, Day, Simidjievski, Liò, "On Second Order Behaviour in
    Augmented Neural ODEs", NeurIPS 2020.
    """

    acceleration: AbstractField
    size: int = eqx.field(static=True)

    def __init__(self, acceleration: AbstractField | VectorField, size: int):
        self.acceleration = as_field(acceleration)
        self.size = check_size("SecondOrderField", "size", size, "size=1")

    def __call__(self, t: Scalar, y: Float[Array, " phase"], args: Args) -> Float[Array, " phase"]:
        return jnp.concatenate([y[self.size :], self.acceleration(t, y, args)])


class HeavyBallField(AbstractField):
    r"""The heavy-ball system $\dot h = m$, $\dot m = -\gamma m + f(t, h)$ on $[h; m]$.

    The damping is $\gamma = \sigma(\theta) \in (0, 1)$ with a learnable logit $\theta$, the
    parameterization of the authors' code, which keeps $\gamma$ positive (a dissipative
    system) however training moves $\theta$.

    **Arguments:**

    - `force`: $f$, a field `f(t, h, args)` on $\mathbb R^d$ (an `AbstractField` or a
      callable).
    - `size`: $d$, the size of $h$.
    - `damping`: the initial $\gamma$, in $(0, 1)$.
    - `learn_damping`: train $\theta$ (default) or keep $\gamma$ fixed.

    References: Xia, Suliafu, Ji, Nguyen, Bertozzi, Osher, Wang, "Heavy Ball Neural
    Ordinary Differential Equations", NeurIPS 2021.
    """

    force: AbstractField
    damping_logit: Float[Array, ""]
    size: int = eqx.field(static=True)
    learn_damping: bool = eqx.field(static=True)

    def __init__(
        self,
        force: AbstractField | VectorField,
        size: int,
        *,
        damping: float = 0.5,
        learn_damping: bool = True,
    ):
        owner = "HeavyBallField"
        if not isinstance(damping, int | float) or not 0 < damping < 1:
            raise ValueError(
                f"{owner}: `damping` must be a number in (0, 1) (gamma = sigmoid(logit)), got "
                f"{damping!r}. Pass e.g. damping=0.5, or rescale time for stronger damping."
            )
        self.force = as_field(force)
        self.size = check_size(owner, "size", size, "size=1")
        self.damping_logit = jnp.asarray(np.log(damping / (1 - damping)), dtype=float)
        self.learn_damping = learn_damping

    @property
    def damping(self) -> Float[Array, ""]:
        """$\\gamma = \\sigma(\\theta)$."""
        logit = self.damping_logit
        return jax.nn.sigmoid(logit if self.learn_damping else jax.lax.stop_gradient(logit))

    def __call__(self, t: Scalar, y: Float[Array, " phase"], args: Args) -> Float[Array, " phase"]:
        h, m = y[: self.size], y[self.size :]
        gamma = self.damping.astype(y.dtype)
        return jnp.concatenate([m, -gamma * m + self.force(t, h, args)])


class _AbstractSecondOrder(AbstractWrapper):
    """A second-order model solved in phase space $[x; v]$: the lift of the input, the
    readout of the position and `solve`, shared by `SecondOrderODE` and `HeavyBallODE`."""

    model: eqx.AbstractVar[AbstractModel]
    initial: eqx.AbstractVar[Callable[[Array], Array] | None]
    size: eqx.AbstractVar[int]
    given: eqx.AbstractVar[bool]
    output: eqx.AbstractVar[str]

    def lift(self, y0: Input) -> Float[Array, " 2*size"]:
        """The phase-space initial state $[x_0; v_0]$ for one input."""
        owner, d = type(self).__name__, self.size
        if self.given:
            if not isinstance(y0, tuple | list) or len(y0) != 2:
                raise ValueError(
                    f"{owner}: with `initial='given'` the input is a pair (x0, v0) of arrays of "
                    f"shape ({d},), got {type(y0).__name__}. Pass `model((x0, v0))`, or build "
                    "the model with initial='learned' or 'zero' to pass x0 alone."
                )
            x0, v0 = _vector(owner, "x0", y0[0], d), _vector(owner, "v0", y0[1], d)
            return jnp.concatenate([x0, v0.astype(x0.dtype)])
        x0 = _vector(owner, "x0", y0, d)
        if self.initial is None:
            return jnp.concatenate([x0, jnp.zeros_like(x0)])
        v0 = jnp.asarray(self.initial(x0))
        if v0.shape != (d,):
            raise ValueError(
                f"{owner}: the initial-velocity network returned shape {v0.shape}, but ({d},) "
                "is needed (the position's shape)."
            )
        return jnp.concatenate([x0, v0.astype(x0.dtype)])

    def _read(self, z: Array) -> Array:
        return z if self.output == "state" else z[: self.size]

    def solve(
        self, y0: Input, ts: SaveTimes = None, *, args: Args = None, key: MaybeKey = None
    ) -> ModelSolution:
        """Lift one input to phase space, solve, keep the position (or the whole state)."""
        solution = self.model.solve(self.lift(y0), ts, args=args, key=key)
        return solution.map(self._read)


class SecondOrderODE(_AbstractSecondOrder):
    r"""A second-order neural ODE (SONODE): $\ddot x = a_\theta(t, x, \dot x)$.

    Solved as the first-order system $(\dot x, \dot v) = (v, a_\theta(t, [x; v]))$ on
    $\mathbb R^{2d}$ by an inner neural ODE of a `SecondOrderField`. The initial velocity is
    given with the input (`model((x0, v0))`), zero, or learned as a network of $x_0$ as in
    the paper. A call returns the position $x(t_1)$ (or at each save time); with
    `output="state"` the phase-space state $[x; v]$. `solve`'s `stats` and `extras` come
    from the inner solve; regularizer transforms act on the inner phase-space ODE.

    **Arguments:**

    - `size`: $d$, the size of the position.
    - `acceleration`: $a_\theta(t, [x; v], \text{args}) \in \mathbb R^d$ (an `AbstractField`
      or callable), an already built continuous model on $\mathbb R^{2d}$ (then the solver
      settings belong to it), or `None` for an
      `MLPField(2 * size, width_size, depth, out_shape=(size,))`.
    - `width_size`, `depth`: of the default acceleration and of the initial-velocity network.
    - `initial`: the initial velocity: `"learned"` (default, an `eqx.nn.MLP` of $x_0$),
      `"given"` (the input is the pair `(x0, v0)`), `"zero"`, or a callable $x_0 \mapsto v_0$.
    - `output`: `"position"` (default) or `"state"` ($[x; v]$, of size $2d$).
    - `key`: initialization key, needed when anything is built here.
    - `**ode_kwargs`: settings of the inner `neurde.NeuralODE` (`solver`, `rtol`, `atol`,
      `t0`, `t1`, ...).

    References: Norcliffe, Bodnar, Day, Simidjievski, Liò, "On Second Order Behaviour in
    Augmented Neural ODEs", NeurIPS 2020.
    """

    model: AbstractModel
    initial: Callable[[Array], Array] | None
    size: int = eqx.field(static=True)
    given: bool = eqx.field(static=True)
    output: str = eqx.field(static=True)

    def __init__(
        self,
        size: int,
        acceleration: AbstractField | VectorField | AbstractModel | None = None,
        *,
        width_size: int = 64,
        depth: int = 2,
        initial: Initial = "learned",
        output: Output = "position",
        key: PRNGKeyArray | None = None,
        **ode_kwargs: Any,
    ):
        owner = "SecondOrderODE"
        size = check_size(owner, "size", size, "size=1")
        keys = list(jr.split(key, 2)) if key is not None else [None, None]

        def default() -> AbstractField:
            k = need_key(owner, keys[0], "the default acceleration MLPField")
            return MLPField(2 * size, width_size, depth, out_shape=(size,), key=k)

        if acceleration is None or isinstance(acceleration, AbstractModel):
            field = acceleration
        else:
            if isinstance(acceleration, MLPField) and acceleration.size != 2 * size:
                raise ValueError(
                    f"{owner}: the acceleration field takes states of size {acceleration.size}"
                    f", but [x; v] has size 2 * size = {2 * size}. Build it with "
                    f"`MLPField({2 * size}, ..., out_shape=({size},))`."
                )
            field = SecondOrderField(acceleration, size)
        self.model = build_inner(
            owner, field, 2 * size, lambda: SecondOrderField(default(), size), ode_kwargs
        )
        self.initial, self.given = _initial(owner, initial, size, width_size, depth, keys[1])
        self.size = size
        self.output = _output(owner, output)


class HeavyBallODE(_AbstractSecondOrder):
    r"""A heavy-ball neural ODE (HBNODE): $\ddot h + \gamma \dot h = f_\theta(t, h)$.

    Solved as $\dot h = m$, $\dot m = -\gamma m + f_\theta(t, h)$ by an inner neural ODE of a
    `HeavyBallField`, with a learnable damping $\gamma = \sigma(\theta) \in (0, 1)$. The
    initial momentum $m_0$ is zero (default), given with the input (`model((h0, m0))`) or
    learned as a network of $h_0$. A call returns $h(t_1)$ (or at each save time); with
    `output="state"` the state $[h; m]$. `solve`'s `stats` and `extras` come from the inner
    solve; regularizer transforms act on the inner phase-space ODE.

    **Arguments:**

    - `size`: $d$, the size of $h$.
    - `force`: $f_\theta(t, h, \text{args}) \in \mathbb R^d$ (an `AbstractField` or callable),
      an already built continuous model on $\mathbb R^{2d}$ (then `damping` and the solver
      settings belong to it), or `None` for an `MLPField(size, width_size, depth)`.
    - `width_size`, `depth`: of the default force and of a learned initial momentum.
    - `damping`: the initial $\gamma \in (0, 1)$; `learn_damping`: train it (default).
    - `initial`: the initial momentum: `"zero"` (default), `"given"`, `"learned"`, or a
      callable $h_0 \mapsto m_0$.
    - `output`: `"position"` (default, $h$) or `"state"` ($[h; m]$).
    - `key`: initialization key, needed when anything is built here.
    - `**ode_kwargs`: settings of the inner `neurde.NeuralODE`.

    References: Xia, Suliafu, Ji, Nguyen, Bertozzi, Osher, Wang, "Heavy Ball Neural
    Ordinary Differential Equations", NeurIPS 2021.
    """

    model: AbstractModel
    initial: Callable[[Array], Array] | None
    size: int = eqx.field(static=True)
    given: bool = eqx.field(static=True)
    output: str = eqx.field(static=True)

    def __init__(
        self,
        size: int,
        force: AbstractField | VectorField | AbstractModel | None = None,
        *,
        width_size: int = 64,
        depth: int = 2,
        damping: float = 0.5,
        learn_damping: bool = True,
        initial: Initial = "zero",
        output: Output = "position",
        key: PRNGKeyArray | None = None,
        **ode_kwargs: Any,
    ):
        owner = "HeavyBallODE"
        size = check_size(owner, "size", size, "size=1")
        keys = list(jr.split(key, 2)) if key is not None else [None, None]

        def default() -> AbstractField:
            return MLPField(size, width_size, depth, key=need_key(owner, keys[0], "the force"))

        if force is None or isinstance(force, AbstractModel):
            field = force
        else:
            if isinstance(force, MLPField) and force.size != size:
                raise ValueError(
                    f"{owner}: the force field takes states of size {force.size}, but h has "
                    f"size {size}. Build it with `MLPField({size}, ...)`."
                )
            field = HeavyBallField(force, size, damping=damping, learn_damping=learn_damping)

        def heavy_ball() -> AbstractField:
            return HeavyBallField(default(), size, damping=damping, learn_damping=learn_damping)

        self.model = build_inner(owner, field, 2 * size, heavy_ball, ode_kwargs)
        self.initial, self.given = _initial(owner, initial, size, width_size, depth, keys[1])
        self.size = size
        self.output = _output(owner, output)


def _vector(owner: str, name: str, x: Any, size: int) -> Array:
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(
            f"{owner}: `{name}` has dtype {x.dtype}, but a floating dtype is needed. Convert "
            "it first, e.g. `x.astype(jnp.float32)`."
        )
    if x.shape != (size,):
        raise ValueError(
            f"{owner}: `{name}` must have shape ({size},) (size), got {x.shape}. Call the model "
            "on one example and batch with `jax.vmap`."
        )
    return x


def _initial(
    owner: str, initial: Any, size: int, width: int, depth: int, key: Any
) -> tuple[Callable[[Array], Array] | None, bool]:
    if initial in ("given", "zero"):
        return None, initial == "given"
    if initial == "learned":
        k = need_key(owner, key, "the initial-velocity network")
        return eqx.nn.MLP(size, size, width, depth, activation=jnp.tanh, key=k), False
    if isinstance(initial, str) or not callable(initial):
        raise ValueError(
            f"{owner}: `initial` must be 'given', 'zero', 'learned' or a function x0 -> v0, "
            f"got {initial!r}."
        )
    return cast(Callable[[Array], Array], initial), False


def _output(owner: str, output: Any) -> str:
    if output not in ("position", "state"):
        raise ValueError(
            f"{owner}: `output` must be 'position' or 'state', got {output!r}. Pass "
            "output='state' for the position and velocity [x; v]."
        )
    return output
