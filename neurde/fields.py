"""The one vector-field interface, `f(t, y, args)`, and its basic fields.

Every model family in neurde — discrete residual stacks, neural ODEs, SDE drifts and
diffusions, score networks — takes a field of this shape, the signature Diffrax uses, so the
same field can be dropped into a ResNet, a neural ODE or an SDE.
"""

import abc
import functools
import inspect
import os
import sys
import warnings
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray, PyTree

from ._types import Args, Scalar
from ._validation import check_key, is_concrete


class AbstractField(eqx.Module):
    """A vector field `f(t, y, args)`: time, one state (a PyTree), extra arguments.

    Subclasses implement `__call__` for a single, unbatched state and return a PyTree whose
    structure the consuming model defines (the state's own structure for an ODE drift; a
    diffusion may return a matrix).
    """

    @abc.abstractmethod
    def __call__(self, t: Scalar, y: PyTree[Array], args: Args) -> PyTree[Array]:
        """Evaluate the field at time `t` and state `y`."""


def _identity(x: Array) -> Array:
    return x


class MLPField(AbstractField):
    r"""A multilayer perceptron field $f_\theta(t, y)$ on vector states.

    With `time_dependent=True` the time is concatenated to the input, $f_\theta([y; t])$, as in
    Chen et al. (2018); otherwise the field is autonomous. The output is reshaped to
    `out_shape`, so the same class serves as an ODE drift (`out_shape=(size,)`) or a general
    SDE diffusion (`out_shape=(size, noise_size)`).

    **Arguments:**

    - `size`: dimension of the state `y`.
    - `width_size`, `depth`: hidden width and number of hidden layers.
    - `out_shape`: shape of the output; defaults to `(size,)`.
    - `time_dependent`: concatenate `t` to the input.
    - `activation`: hidden activation (default `softplus`, smooth so solvers take large steps).
    - `final_activation`: applied to the output (e.g. `jnp.tanh` to bound the field).
    - `dtype`: parameter dtype; defaults to JAX's default float.
    - `key`: initialization key.

    References: Chen, Rubanova, Bettencourt, Duvenaud, "Neural Ordinary Differential
    Equations", NeurIPS 2018.
    """

    mlp: eqx.nn.MLP
    size: int = eqx.field(static=True)
    out_shape: tuple[int, ...] = eqx.field(static=True)
    time_dependent: bool = eqx.field(static=True)

    def __init__(
        self,
        size: int,
        width_size: int = 64,
        depth: int = 2,
        *,
        out_shape: tuple[int, ...] | None = None,
        time_dependent: bool = False,
        activation: Callable[[Array], Array] = jax.nn.softplus,
        final_activation: Callable[[Array], Array] = _identity,
        dtype: Any = None,
        key: PRNGKeyArray,
    ):
        for name, value, low in (("size", size, 1), ("width_size", width_size, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"MLPField: `{name}` must be an integer >= {low}, got {value!r}.")
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
            raise ValueError(f"MLPField: `depth` must be an integer >= 0, got {depth!r}.")
        check_key("MLPField", key)
        if dtype is not None and not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(
                f"MLPField: `dtype` must be a floating dtype (the parameters' dtype), got "
                f"{dtype!r}. Pass e.g. `dtype=jnp.float64`, or leave it out for JAX's default."
            )
        out_shape = (size,) if out_shape is None else tuple(int(s) for s in out_shape)
        if any(s < 1 for s in out_shape):
            raise ValueError(f"MLPField: `out_shape` must be positive, got {out_shape}.")
        self.size = size
        self.out_shape = out_shape
        self.time_dependent = time_dependent
        out_size = 1
        for s in out_shape:
            out_size *= s
        self.mlp = eqx.nn.MLP(
            in_size=size + int(time_dependent),
            out_size=out_size,
            width_size=width_size,
            depth=depth,
            activation=activation,
            final_activation=final_activation,
            dtype=dtype,
            key=key,
        )

    def __call__(self, t: Scalar, y: Float[Array, " size"], args: Args) -> Float[Array, "..."]:
        del args
        if y.shape != (self.size,):
            hint = f"Build it with `size={y.shape[0]}`" if y.ndim == 1 else "Flatten the state"
            raise ValueError(
                f"MLPField: the state has shape {y.shape} but this field was built for "
                f"states of shape ({self.size},). {hint}, or use a field for this shape."
            )
        if self.time_dependent:
            y = jnp.concatenate([y, jnp.broadcast_to(jnp.asarray(t, y.dtype), (1,))])
        return self.mlp(y).reshape(self.out_shape)


class LinearField(AbstractField):
    r"""The linear field $f(t, y) = A y$; the exact flow is $y(t) = e^{A t} y_0$.

    Used for convergence tests and as a trainable linear model.

    **Arguments:**

    - `matrix`: the square matrix $A$.
    """

    matrix: Float[Array, "size size"]

    def __init__(self, matrix: Float[ArrayLike, "size size"]):
        matrix = jnp.asarray(matrix)
        if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] == 0:
            raise ValueError(f"LinearField: `matrix` must be square, got shape {matrix.shape}.")
        if not jnp.issubdtype(matrix.dtype, jnp.floating):
            raise TypeError(
                f"LinearField: `matrix` must be floating, got dtype {matrix.dtype}. Convert it, "
                "e.g. `matrix.astype(float)`."
            )
        if is_concrete(matrix) and not np.all(np.isfinite(np.asarray(matrix))):
            raise ValueError("LinearField: `matrix` contains NaN or inf.")
        self.matrix = matrix

    def __call__(self, t: Scalar, y: Float[Array, " size"], args: Args) -> Float[Array, " size"]:
        del t, args
        size = self.matrix.shape[-1]
        if jnp.shape(y) != (size,):
            raise ValueError(
                f"LinearField: the state `y` has shape {jnp.shape(y)}, but the matrix has shape "
                f"{self.matrix.shape[-2:]}, so states of shape ({size},) are needed. Build the "
                "field with a matrix of the state's size, or reshape the state."
            )
        return self.matrix @ y

    @classmethod
    def random(cls, size: int, *, scale: float = 1.0, key: PRNGKeyArray) -> "LinearField":
        """A linear field with i.i.d. normal entries of standard deviation `scale / sqrt(size)`."""
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"LinearField.random: `size` must be an integer >= 1, got {size!r}.")
        return cls(scale * jr.normal(key, (size, size)) / jnp.sqrt(size))


class FunctionField(AbstractField):
    """Wrap any callable (a plain function or an Equinox module) as a field.

    `fn` is called as `fn(t, y, args)`; with `autonomous=True` it is called as `fn(y)`, so an
    `eqx.nn.MLP` or any `y -> dy` module becomes a field directly. If `fn` is an Equinox module
    its parameters are part of the field and are trained with it.

    Only arrays that are leaves of `fn` as a PyTree are trained. A plain Python function
    hides the arrays it reaches, so they are checked here: a JAX-transformed module
    (`jax.vmap(mlp)`, `jax.jit(mlp)`) or a bound method of a module (`mlp.__call__`) is a
    `TypeError` (pass the module, or transform it with `eqx.filter_vmap`/`eqx.filter_jit`,
    which keep its parameters visible); a closure, a `functools.partial` or a function
    reading a global that reaches an Equinox module with floating arrays (a network's
    parameters) gets a `UserWarning` (parameters go in a module the field holds, e.g.
    `eqx.Partial(fn, mlp)`). Closing over plain arrays is fine: they are constants. A field
    for a batch of states (`eqx.filter_vmap(mlp)`) is rarely needed: keep the field for one
    example and solve the batch as one state with `neurde.batched(model)`.

    **Arguments:**

    - `fn`: the callable.
    - `autonomous`: call `fn(y)` instead of `fn(t, y, args)`.
    """

    fn: Callable[..., Any]
    autonomous: bool = eqx.field(static=True)

    def __init__(self, fn: Callable[..., Any], *, autonomous: bool = False):
        if not callable(fn):
            raise TypeError(
                f"FunctionField: `fn` must be callable as fn(t, y, args) (or fn(y) with "
                f"autonomous=True), got an object of type {type(fn).__name__}."
            )
        _check_visible(fn)
        self.fn = fn
        self.autonomous = autonomous

    def __call__(self, t: Scalar, y: PyTree[Array], args: Args) -> PyTree[Array]:
        if self.autonomous:
            return self.fn(y)
        return self.fn(t, y, args)


def _has_parameters(x: Any) -> bool:
    """Whether `x`, as a PyTree, holds floating arrays (parameters, or constants)."""
    try:
        leaves = jax.tree.leaves(x)
    except Exception:  # an object JAX cannot flatten holds nothing we can see
        return False
    return any(eqx.is_inexact_array(leaf) for leaf in leaves)


def _holds_module(x: Any) -> bool:
    """Whether `x` is, or holds, an Equinox module with floating arrays (parameters)."""
    is_module = lambda node: isinstance(node, eqx.Module)  # noqa: E731
    try:
        nodes = jax.tree.leaves(x, is_leaf=is_module)
    except Exception:  # an object JAX cannot flatten holds nothing we can see
        return False
    return any(is_module(node) and _has_parameters(node) for node in nodes)


def _hidden(fn: Any, depth: int = 0) -> tuple[str, str] | None:
    """What parameters the plain callable `fn` reaches without holding them as leaves:
    `("transformed", what)` for a wrapped or bound module, `("closure", what)` for modules
    closed over, bound or read from globals; `None` when there are none (plain arrays are
    constants), or `fn` is a PyTree (e.g. a module)."""
    if isinstance(fn, eqx.Module) or depth > 2:
        return None
    name = type(fn).__name__
    wrapped = getattr(fn, "__wrapped__", None)
    owner = getattr(fn, "__self__", None)
    for inner, how in ((wrapped, "a JAX-transformed"), (owner, "a bound method of a")):
        if isinstance(inner, eqx.Module) and _has_parameters(inner):
            return "transformed", f"{how} {type(inner).__name__} (a plain {name})"
    if wrapped is not None:
        found = _hidden(wrapped, depth + 1)
        if found is not None:
            return found
    if isinstance(fn, functools.partial):
        values = [fn.func, *fn.args, *fn.keywords.values()]
        what = "a functools.partial whose bound arguments"
    else:
        code, cells = getattr(fn, "__code__", None), getattr(fn, "__closure__", None) or ()
        values = [c.cell_contents for c in cells if _filled(c)]
        names = getattr(code, "co_names", ())
        scope = getattr(fn, "__globals__", {})
        values += [scope[n] for n in names if n in scope]
        what = f"the function {getattr(fn, '__qualname__', name)}, whose closure or globals"
    for value in values:
        if callable(value) and not isinstance(value, eqx.Module):
            found = _hidden(value, depth + 1)
            if found is not None:
                return found
        elif _holds_module(value):
            return (
                "closure",
                f"{what} hold a module with floating arrays (e.g. one of type "
                f"{type(value).__name__})",
            )
    return None


def _filled(cell: Any) -> bool:
    try:
        _ = cell.cell_contents
    except ValueError:  # a cell not yet assigned
        return False
    return True


def _check_visible(fn: Any) -> None:
    """Refuse a callable that hides a module's parameters from training; warn about closures
    over modules with floating arrays (see `FunctionField`)."""
    found = _hidden(fn)
    if found is None:
        return
    kind, what = found
    batch = (
        " To solve a batch as one state, keep the field for one example and use "
        "`neurde.batched(model)`."
    )
    if kind == "transformed":
        raise TypeError(
            f"FunctionField: `fn` is {what}, which hides the module's parameters from "
            "`jax.grad`, so training (e.g. `neurde.fit`) would never update them. Pass the "
            "module itself (`FunctionField(mlp, autonomous=True)` for a `y -> dy` module), or "
            "transform it with Equinox, `eqx.filter_vmap(mlp)` / `eqx.filter_jit(mlp)`, which "
            f"keep its parameters visible.{batch}"
        )
    warnings.warn(
        f"FunctionField: `fn` is {what}. Its arrays are constants of the field: training "
        "does not see them. If they are parameters, pass a module that holds them instead "
        f"(the module itself, or `eqx.Partial(fn, module)`).{batch}",
        UserWarning,
        stacklevel=_caller_stacklevel(),
    )


def _caller_stacklevel() -> int:
    """The `stacklevel` of the first frame outside neurde, Equinox and JAX: the user's line
    that built the field (through a model's constructor and Equinox's module machinery)."""
    packages = (sys.modules["neurde"], eqx, jax)
    inside = tuple(os.path.dirname(m.__file__) + os.sep for m in packages if m.__file__)
    here = inspect.currentframe()
    frame, level = (here.f_back if here is not None else None), 1
    while frame is not None and frame.f_code.co_filename.startswith(inside):
        frame, level = frame.f_back, level + 1
    return level


def as_field(field: Any) -> AbstractField:
    """Return `field` as an `AbstractField`: fields pass through, callables are wrapped.

    **Arguments:**

    - `field`: an `AbstractField`, or a callable `f(t, y, args)`.

    **Returns:**

    An `AbstractField`. Raises `TypeError` for anything that is not callable.
    """
    if isinstance(field, AbstractField):
        return field
    if callable(field):
        return FunctionField(field)
    raise TypeError(
        "Expected a vector field: an `neurde.AbstractField` or a callable f(t, y, args), "
        f"got an object of type {type(field).__name__}. Wrap an autonomous module with "
        "`neurde.FunctionField(module, autonomous=True)`."
    )


__all__ = ["AbstractField", "FunctionField", "LinearField", "MLPField", "as_field"]
