r"""Hamiltonian neural networks: a learned energy $H_\theta(q, p)$ whose symplectic gradient is
the vector field, so the learned dynamics conserve the learned energy.

The state is one vector $y = [q; p]$ of even length $2n$ ($n$ positions, $n$ momenta), the
layout of `neurde.data.mass_spring` and `neurde.data.pendulum` and of the symplectic solvers
`neurde.solvers.Leapfrog` and `neurde.solvers.SymplecticEuler`.
"""

import abc
from collections.abc import Callable
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from .._types import Args, Input, MaybeKey, SaveTimes, Scalar
from ..fields import AbstractField
from ..model import AbstractModel, AbstractWrapper, wrapped_models
from ..ode import NeuralODE
from ..solution import ModelSolution
from ..solvers import Leapfrog, SymplecticEuler

_SYMPLECTIC = (Leapfrog, SymplecticEuler)


def _check_dim(owner: str, dim: Any) -> int:
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ValueError(
            f"{owner}: `dim` is the number of positions n (the state [q; p] has length 2n) "
            f"and must be an integer >= 1, got {dim!r}. Pass e.g. dim=1 for a pendulum."
        )
    return dim


def _check_state(owner: str, y: Any, dim: int) -> None:
    """A state `[q; p]`: one vector of length `2 * dim`."""
    shape = jax.tree.map(jnp.shape, y)
    if not isinstance(y, jax.Array) or y.ndim != 1 or y.shape[0] % 2 != 0:
        raise ValueError(
            f"{owner}: the state must be one vector [q; p] of even length 2n (positions, "
            f"then momenta), got {shape}. Concatenate them: `jnp.concatenate([q, p])`."
        )
    if y.shape[0] != 2 * dim:
        raise ValueError(
            f"{owner}: the state has length {y.shape[0]} but the Hamiltonian was built for "
            f"n = {dim} positions (length {2 * dim}). Build it with dim={y.shape[0] // 2}."
        )


def _scalar(owner: str, name: str, fn: Callable[[Array], Any], x: Array) -> Array:
    """`fn(x)`, checked to be a scalar (an energy), at trace time."""
    out = fn(x)
    if jnp.shape(out) != ():
        raise ValueError(
            f"{owner}: `{name}` must return a scalar (an energy), got shape {jnp.shape(out)}. "
            "Build the network with `out_size='scalar'` (e.g. `eqx.nn.MLP(in_size, 'scalar', "
            "width_size, depth, key=key)`), or reduce its output (`lambda x: net(x)[0]`)."
        )
    return jnp.asarray(out)


def _check_callable(owner: str, name: str, fn: Any, what: str) -> None:
    if not callable(fn):
        raise TypeError(
            f"{owner}: `{name}` must be callable as {what} returning a scalar, got an "
            f"object of type {type(fn).__name__}."
        )


def _mlp(in_size: int, width: int, depth: int, activation: Any, key: PRNGKeyArray) -> eqx.nn.MLP:
    return eqx.nn.MLP(in_size, "scalar", width, depth, activation=activation, key=key)


class AbstractHamiltonianField(AbstractField):
    r"""The symplectic gradient $\dot q = \partial H/\partial p$, $\dot p = -\partial H/\partial q$
    of an energy $H(q, p)$, as a field `f(t, y, args)` on $y = [q; p]$.

    Subclasses give `dim` (the number of positions $n$), `separable` (whether
    $H = T(p) + V(q)$, so the explicit symplectic solvers are symplectic) and `energy`.
    """

    dim: eqx.AbstractVar[int]
    separable: eqx.AbstractClassVar[bool]

    @abc.abstractmethod
    def energy(self, y: Float[Array, " 2n"]) -> Float[Array, ""]:
        """The energy $H(q, p)$ of one state $y = [q; p]$."""


class HamiltonianField(AbstractHamiltonianField):
    r"""The symplectic gradient of a general energy $H_\theta(q, p)$, optionally dissipative.

    $$\dot y = J\nabla H(y) + \nabla D(y), \qquad J = \begin{pmatrix} 0 & I \\ -I & 0
    \end{pmatrix},$$

    with $D = 0$ (a conservative Hamiltonian neural network) or a learned scalar $D$ whose
    gradient carries the irreversible part of the dynamics (the dissipative HNN: the
    Helmholtz decomposition of a field into a rotational part $J\nabla H$ and an
    irrotational part $\nabla D$). One evaluation is one gradient of $H$ (and of $D$).

    **Arguments:**

    - `hamiltonian`: $H(y)$, called on the whole state $y = [q; p]$, returning a scalar
      (e.g. `eqx.nn.MLP(2 * n, "scalar", ...)`); a smooth activation (tanh, softplus) so
      that the field, its gradient, is smooth.
    - `dim`: the number of positions $n$.
    - `dissipation`: optional $D(y)$, a scalar function of the state.

    References: Greydanus, Dzamba, Yosinski, "Hamiltonian Neural Networks", NeurIPS 2019;
    Sosanya, Greydanus, "Dissipative Hamiltonian Neural Networks: Learning Dissipative and
    Conservative Dynamics Separately", 2022.
    """

    hamiltonian: Callable[[Array], Array]
    dissipation: Callable[[Array], Array] | None
    dim: int = eqx.field(static=True)
    separable: ClassVar[bool] = False

    def __init__(
        self,
        hamiltonian: Callable[[Array], Array],
        dim: int,
        *,
        dissipation: Callable[[Array], Array] | None = None,
    ):
        self.hamiltonian = hamiltonian
        self.dissipation = dissipation
        self.dim = dim

    def __check_init__(self):
        _check_dim("HamiltonianField", self.dim)
        _check_callable("HamiltonianField", "hamiltonian", self.hamiltonian, "H(y), y = [q; p]")
        if self.dissipation is not None:
            _check_callable("HamiltonianField", "dissipation", self.dissipation, "D(y)")

    def energy(self, y: Float[Array, " 2n"]) -> Float[Array, ""]:
        """$H(y)$ of one state $y = [q; p]$."""
        _check_state("HamiltonianField", y, self.dim)
        return _scalar("HamiltonianField", "hamiltonian", self.hamiltonian, y)

    def __call__(self, t: Scalar, y: Float[Array, " 2n"], args: Args) -> Float[Array, " 2n"]:
        del t, args
        n = self.dim
        dh = jax.grad(self.energy)(y)
        dy = jnp.concatenate([dh[n:], -dh[:n]])
        if self.dissipation is not None:
            dissipation = self.dissipation
            dy = dy + jax.grad(
                lambda x: _scalar("HamiltonianField", "dissipation", dissipation, x)
            )(y)
        return dy


class SeparableHamiltonianField(AbstractHamiltonianField):
    r"""The symplectic gradient of a separable energy $H = T(p) + V(q)$.

    $\dot q = \nabla T(p)$, $\dot p = -\nabla V(q)$. With $T$ left out the kinetic energy is
    $T(p) = |p|^2 / 2m$ with a given `mass`. Separability is what makes the explicit
    symplectic solvers (`neurde.solvers.Leapfrog`, `neurde.solvers.SymplecticEuler`)
    symplectic, so their energy error stays bounded over long rollouts.

    **Arguments:**

    - `potential`: $V(q)$, a scalar function of the positions (length $n$).
    - `kinetic`: $T(p)$, a scalar function of the momenta, or `None` for $|p|^2 / 2m$.
    - `mass`: $m > 0$ of the quadratic kinetic energy (only without `kinetic`).
    - `dim`: the number of positions $n$.

    References: Greydanus, Dzamba, Yosinski, "Hamiltonian Neural Networks", NeurIPS 2019;
    Hairer, Lubich, Wanner, "Geometric Numerical Integration", 2nd ed., Springer 2006.
    """

    potential: Callable[[Array], Array]
    kinetic: Callable[[Array], Array] | None
    mass: float = eqx.field(static=True)
    dim: int = eqx.field(static=True)
    separable: ClassVar[bool] = True

    def __init__(
        self,
        potential: Callable[[Array], Array],
        kinetic: Callable[[Array], Array] | None = None,
        *,
        mass: float = 1.0,
        dim: int,
    ):
        self.potential = potential
        self.kinetic = kinetic
        self.mass = mass
        self.dim = dim

    def __check_init__(self):
        owner = "SeparableHamiltonianField"
        _check_dim(owner, self.dim)
        _check_callable(owner, "potential", self.potential, "V(q)")
        if self.kinetic is not None:
            _check_callable(owner, "kinetic", self.kinetic, "T(p)")
        if isinstance(self.mass, bool) or not isinstance(self.mass, int | float) or self.mass <= 0:
            raise ValueError(f"{owner}: `mass` must be a number > 0, got {self.mass!r}.")

    def _kinetic(self, p: Array) -> Array:
        if self.kinetic is None:
            return jnp.sum(p**2) / (2 * self.mass)
        return _scalar("SeparableHamiltonianField", "kinetic", self.kinetic, p)

    def _potential(self, q: Array) -> Array:
        return _scalar("SeparableHamiltonianField", "potential", self.potential, q)

    def energy(self, y: Float[Array, " 2n"]) -> Float[Array, ""]:
        """$T(p) + V(q)$ of one state $y = [q; p]$."""
        _check_state("SeparableHamiltonianField", y, self.dim)
        n = self.dim
        return self._kinetic(y[n:]) + self._potential(y[:n])

    def __call__(self, t: Scalar, y: Float[Array, " 2n"], args: Args) -> Float[Array, " 2n"]:
        del t, args
        _check_state("SeparableHamiltonianField", y, self.dim)
        n = self.dim
        q, p = y[:n], y[n:]
        dq = p / self.mass if self.kinetic is None else jax.grad(self._kinetic)(p)
        return jnp.concatenate([dq, -jax.grad(self._potential)(q)])


def _check_solver(owner: str, solver: Any, field: AbstractHamiltonianField) -> None:
    """The explicit symplectic solvers are symplectic only for separable conservative H."""
    if not isinstance(solver, _SYMPLECTIC):
        return
    name = type(solver).__name__
    if not field.separable:
        raise ValueError(
            f"{owner}: {name} is an explicit splitting method, symplectic (and of its order) "
            f"only for a separable Hamiltonian H = T(p) + V(q), but the field is a "
            f"{type(field).__name__}. Pass `separable=True` (or a "
            "`SeparableHamiltonianField`), or use an adaptive solver such as "
            "`diffrax.Tsit5()`."
        )


def _inner_ode(owner: str, model: AbstractModel) -> NeuralODE:
    """The `NeuralODE` at the bottom of `model`'s wrappers (noise transforms add some)."""
    innermost = wrapped_models(model)[-1]
    if not isinstance(innermost, NeuralODE) or not isinstance(
        innermost.field, AbstractHamiltonianField
    ):
        raise TypeError(
            f"{owner}: the inner model must be a neurde.NeuralODE with a Hamiltonian field "
            f"(`HamiltonianField` or `SeparableHamiltonianField`), got "
            f"{type(innermost).__name__}. Build it with `HamiltonianNN(dim, ..., key=...)` "
            "or `HamiltonianNN(field=..., ...)`."
        )
    return innermost


class HamiltonianNN(AbstractWrapper):
    r"""A Hamiltonian neural network: a neural ODE whose field is the symplectic gradient of a
    learned energy $H_\theta(q, p)$.

    $$\dot q = \frac{\partial H_\theta}{\partial p}, \qquad
    \dot p = -\frac{\partial H_\theta}{\partial q},$$

    on the state $y = [q; p]$ (one vector of length $2n$). The exact flow conserves
    $H_\theta$, so rollouts do not gain or lose energy the way an unconstrained neural ODE
    fitted to the same data does. With `separable=True`, $H_\theta = T_\theta(p) +
    V_\theta(q)$ (or $|p|^2/2m + V_\theta(q)$ with a given `mass`), and the explicit
    symplectic solvers `neurde.solvers.Leapfrog` (order 2) and
    `neurde.solvers.SymplecticEuler` (order 1) keep the energy error bounded over long
    rollouts; for a non-separable $H_\theta$ they are refused (use an adaptive solver).
    With `dissipative=True` a second scalar network $D_\theta(y)$ adds the irrotational
    part $\nabla D_\theta$ (the dissipative HNN of Sosanya and Greydanus).

    The differential equation is the inner `neurde.NeuralODE` held as `model`: the
    regularizer transforms of `neurde.noise` act on it, and `solve` passes its `stats` and
    `extras` through.

    **Arguments:**

    - `dim`: the number of positions $n$ (the state has length $2n$).
    - `width_size`, `depth`: hidden width and number of hidden layers of each network.
    - `field`: a ready `HamiltonianField` or `SeparableHamiltonianField` with your own
      networks, instead of `dim`/`width_size`/`depth`/`separable`/`mass`/`dissipative`.
    - `separable`: learn $T_\theta(p) + V_\theta(q)$ (two networks) instead of one
      $H_\theta(q, p)$.
    - `mass`: with `separable=True`, a known kinetic energy $|p|^2 / 2m$ (only $V_\theta$ is
      learned).
    - `dissipative`: add a learned dissipation $D_\theta$ (not with `separable=True`).
    - `activation`: hidden activation of the networks (default `tanh`, as in the paper; it
      must be smooth, since the field is a gradient).
    - `key`: initialization key (not needed with `field`).
    - `ode_kwargs`: the settings of the inner `neurde.NeuralODE` (`solver`, `rtol`, `atol`,
      `stepsize_controller`, `adjoint`, `t0`, `t1`, `dt0`, `max_steps`, `throw`).

    References: Greydanus, Dzamba, Yosinski, "Hamiltonian Neural Networks", NeurIPS 2019;
    Sosanya, Greydanus, "Dissipative Hamiltonian Neural Networks", 2022.
    """

    model: AbstractModel

    def __init__(
        self,
        dim: int | None = None,
        width_size: int = 64,
        depth: int = 2,
        *,
        field: AbstractHamiltonianField | None = None,
        separable: bool = False,
        mass: float | None = None,
        dissipative: bool = False,
        activation: Callable[[Array], Array] = jnp.tanh,
        key: PRNGKeyArray | None = None,
        **ode_kwargs: Any,
    ):
        owner = "HamiltonianNN"
        if field is None:
            field = _build_field(
                owner, dim, width_size, depth, separable, mass, dissipative, activation, key
            )
        elif not isinstance(field, AbstractHamiltonianField):
            raise TypeError(
                f"{owner}: `field` must be a `HamiltonianField` or `SeparableHamiltonianField`, "
                f"got {type(field).__name__}. Or pass `dim=...` and `key=...` to build one."
            )
        elif dim is not None and dim != field.dim:
            raise ValueError(
                f"{owner}: got dim={dim!r} and a field built for dim={field.dim}. Drop `dim`."
            )
        _check_solver(owner, ode_kwargs.get("solver"), field)
        self.model = NeuralODE(field, **ode_kwargs)

    def __check_init__(self):
        if not isinstance(self.model, AbstractModel):
            raise TypeError(
                f"HamiltonianNN: `model` must be a neurde model, got {type(self.model).__name__}."
            )

    @property
    def field(self) -> AbstractHamiltonianField:
        """The Hamiltonian field of the inner neural ODE."""
        field = _inner_ode("HamiltonianNN", self.model).field
        assert isinstance(field, AbstractHamiltonianField)  # checked by `_inner_ode`
        return field

    def energy(self, y: Float[Array, " 2n"]) -> Float[Array, ""]:
        """The learned energy $H_\\theta(y)$ of one state $y = [q; p]$ (vmap for a batch)."""
        return self.field.energy(y)

    def solve(
        self, y0: Input, ts: SaveTimes = None, *, args: Args = None, key: MaybeKey = None
    ) -> ModelSolution:
        """Solve from one state $y_0 = [q_0; p_0]$; see `neurde.AbstractModel.solve`."""
        ode = _inner_ode("HamiltonianNN", self.model)
        field = self.field
        _check_state("HamiltonianNN", y0, field.dim)
        # Checked again here: the solver may have been swapped with `eqx.tree_at`.
        _check_solver("HamiltonianNN", ode.solver, field)
        return self.model.solve(y0, ts, args=args, key=key)


def _build_field(
    owner: str,
    dim: Any,
    width: int,
    depth: int,
    separable: bool,
    mass: float | None,
    dissipative: bool,
    activation: Any,
    key: PRNGKeyArray | None,
) -> AbstractHamiltonianField:
    """The field of `HamiltonianNN(dim, ...)`: MLPs with scalar outputs."""
    if dim is None:
        raise ValueError(
            f"{owner}: pass the number of positions `dim` (and `key`) to build the networks, "
            "or a ready `field=HamiltonianField(...)`."
        )
    dim = _check_dim(owner, dim)
    if key is None:
        raise ValueError(f"{owner}: building the networks needs `key=jax.random.key(...)`.")
    if mass is not None and not separable:
        raise ValueError(
            f"{owner}: `mass={mass!r}` sets the kinetic energy |p|^2/2m of a separable "
            "Hamiltonian. Pass `separable=True` too, or drop `mass`."
        )
    if dissipative and separable:
        raise ValueError(
            f"{owner}: `dissipative=True` adds a dissipation D(q, p) to a general H, and the "
            "explicit symplectic solvers would not be symplectic for it. Pass "
            "`separable=False` with `dissipative=True`."
        )
    k1, k2 = jax.random.split(key)
    if separable:
        potential = _mlp(dim, width, depth, activation, k1)
        kinetic = None if mass is not None else _mlp(dim, width, depth, activation, k2)
        return SeparableHamiltonianField(
            potential, kinetic, mass=1.0 if mass is None else mass, dim=dim
        )
    dissipation = _mlp(2 * dim, width, depth, activation, k2) if dissipative else None
    return HamiltonianField(
        _mlp(2 * dim, width, depth, activation, k1), dim, dissipation=dissipation
    )


__all__ = [
    "AbstractHamiltonianField",
    "HamiltonianField",
    "HamiltonianNN",
    "SeparableHamiltonianField",
]
