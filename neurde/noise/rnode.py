"""RNODE: kinetic-energy and Jacobian-norm penalties integrated along a neural ODE's solve."""

from collections.abc import Callable
from typing import Any, Literal

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray, PyTree

from .._solve import resolve_interval, run_solve, squeeze_final
from .._types import Args, Scalar
from .._validation import check_field_output, check_state
from ..fields import AbstractField
from ..ode import NeuralODE
from .transform import replace_model

_OWNER = "RNODE"
Jacobian = Literal["hutchinson", "exact"]
Probe = Literal["gaussian", "rademacher"]


def _sq_norm(tree: PyTree[Array]) -> Float[Array, ""]:
    """Squared Euclidean norm of all the entries of a PyTree (Frobenius for matrices)."""
    return sum((jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree)), start=jnp.zeros(()))


class _AugState(eqx.Module):
    # A dedicated node type (not a tuple) so `_StateNorm` can recognise the forward state.
    y: PyTree[Array]
    kinetic: Float[Array, ""]
    jacobian: Float[Array, ""]


class _StateNorm(eqx.Module):
    """An error norm that sees only the ODE state `y` of the augmented forward solve.

    The penalties are running integrals of non-negative functions: they grow with time and
    nothing feeds back from them into `y`, so their local error only matters to the
    penalties' own accuracy. Letting them drive step-size control would make the regularized
    solve take different (usually more) steps than the plain one. Finlay et al. do the same
    by giving the penalty components tolerances of 1e20. Any other structure (e.g. the
    backward state of `diffrax.BacksolveAdjoint`) is measured in full.
    """

    norm: Callable[[PyTree], Scalar]

    def __call__(self, tree: PyTree) -> Scalar:
        if isinstance(tree, _AugState):
            return self.norm(tree.y)
        return self.norm(tree)


def _state_only(controller: Any) -> Any:
    """`controller` with its error norm restricted to `y` (PID controllers, also clipped)."""
    if isinstance(controller, diffrax.PIDController):
        return eqx.tree_at(lambda c: c.norm, controller, _StateNorm(controller.norm))
    if isinstance(controller, diffrax.ClipStepSizeController):
        inner = _state_only(controller.controller)
        return eqx.tree_at(lambda c: c.controller, controller, inner)
    return controller


class _AugmentedField(eqx.Module):
    """The field of `(y, E_k, E_j)`: `(f, ||f||^2, ||df/dy||_F^2 or ||e^T df/dy||^2)`."""

    field: AbstractField
    probe: PyTree[Array] | None
    jacobian: Jacobian | None = eqx.field(static=True)
    kinetic: bool = eqx.field(static=True)

    def __call__(self, t: Scalar, state: _AugState, args: Args) -> _AugState:
        def f(y):
            return self.field(t, y, args)

        zero = jnp.zeros((), state.kinetic.dtype)
        if self.jacobian == "hutchinson":
            # One reverse-mode product per evaluation, with the probe fixed along the solve
            # (as in FFJORD/RNODE): E||e^T J||^2 = tr(J J^T) = ||J||_F^2 for E[e e^T] = I.
            dy, vjp = jax.vjp(f, state.y)
            (e_jac,) = vjp(self.probe)
            jac = _sq_norm(e_jac)
        elif self.jacobian == "exact":

            def f_and_value(y):
                # The output doubles as the auxiliary value, so f is traced once.
                out = f(y)
                return out, out

            jac_tree, dy = jax.jacfwd(f_and_value, has_aux=True)(state.y)
            jac = _sq_norm(jac_tree)
        else:
            dy, jac = f(state.y), zero
        kin = _sq_norm(dy) if self.kinetic else zero
        return _AugState(dy, kin.astype(zero.dtype), jac.astype(zero.dtype))


class RNODE(eqx.Module):
    r"""Kinetic and Jacobian regularization (RNODE) of a `neurde.NeuralODE`.

    A call solves $\dot y = f_\theta(t, y)$ from $t_0$ to $t_1$ together with the penalties

    $$E_k = \int_{t_0}^{t_1} \|f_\theta(t, y(t))\|_2^2\,dt, \qquad
      E_j = \int_{t_0}^{t_1} \|\partial_y f_\theta(t, y(t))\|_F^2\,dt,$$

    as two extra components of the state, in the same solve (same solver, controller,
    tolerances, adjoint, `dt0`, `max_steps`). It returns $y(t_1)$ and the penalties, for a loss
    `task_loss(y1) + lambda_k * pen["kinetic"] + lambda_j * pen["jacobian"]`. Finlay et al.
    show these terms select simple, nearly straight trajectories, so adaptive solvers take
    fewer steps.

    The definitions are those of Finlay et al.'s objective (squared norms summed over the
    state, integrated over time, no 1/2). Their code scales the integrands differently:
    $\tfrac12$ of the *mean* over the $d$ state entries for the kinetic term, the mean over
    $d$ for the Jacobian term. A coefficient $\lambda$ in their code is $\lambda / (2d)$
    (kinetic) and $\lambda / d$ (Jacobian) here.

    - `jacobian="exact"` forms $\partial_y f$ with `jax.jacfwd` ($d$ forward passes per
      evaluation): for small states.
    - `jacobian="hutchinson"` estimates $\|\partial_y f\|_F^2$ by $\|e^\top \partial_y f\|^2$
      with one probe $e$ (Gaussian, or Rademacher with `probe="rademacher"`) drawn from the
      call's `key` and held fixed along the solve, as in FFJORD and RNODE: one vector-Jacobian
      product per evaluation, an unbiased estimate of $E_j$.

    Step-size control sees only $y$: with an adaptive `diffrax.PIDController` (the default,
    or wrapped in `diffrax.ClipStepSizeController`) the error norm is restricted to the ODE
    state, as Finlay et al. do with tolerances of 1e20 on the penalties. The steps, and so
    $y(t_1)$ and the number of function evaluations, are then those of the plain solve, and
    the penalties are integrated by the solver's own quadrature on those steps. (The backward
    solve of `diffrax.BacksolveAdjoint` measures its whole state.)

    In inference mode (`inference=True`, set by `eqx.nn.inference_mode`) a call runs the
    wrapped model alone, returns exactly its output, needs no key, and returns zeros for both
    penalties. A disabled term (`kinetic=False` or `jacobian=None`) is always zero.

    **Arguments:**

    - `model`: the `neurde.NeuralODE` to regularize; its `t1` must be set. The state may be
      any PyTree of arrays; the norms run over all its entries.
    - `jacobian`: `"hutchinson"` (default), `"exact"`, or `None` for no Jacobian term.
    - `kinetic`: include the kinetic term (default True).
    - `probe`: the Hutchinson probe distribution, `"gaussian"` (default, as in the
      reference code) or `"rademacher"` (lower variance).
    - `inference`: solve the plain ODE and return zero penalties.

    References: Finlay, Jacobsen, Nurbekyan, Oberman, "How to train your neural ODE: the
    world of Jacobian and kinetic regularization", ICML 2020. Grathwohl, Chen, Bettencourt,
    Sutskever, Duvenaud, "FFJORD", ICLR 2019 (the fixed-probe estimator).
    """

    model: NeuralODE
    jacobian: Jacobian | None = eqx.field(static=True)
    kinetic: bool = eqx.field(static=True)
    probe: Probe = eqx.field(static=True)
    inference: bool = False

    def __init__(
        self,
        model: NeuralODE,
        *,
        jacobian: Jacobian | None = "hutchinson",
        kinetic: bool = True,
        probe: Probe = "gaussian",
        inference: bool = False,
    ):
        if not isinstance(model, NeuralODE):
            raise TypeError(
                f"{_OWNER}: `model` must be a `neurde.NeuralODE`, got an object of type "
                f"{type(model).__name__}. Wrap a field first: "
                "`RNODE(neurde.NeuralODE(field, t1=1.0))`."
            )
        if model.t1 is None:
            raise ValueError(
                f"{_OWNER}: the wrapped NeuralODE has no end time (`t1=None`), and the "
                "penalties are integrals over [t0, t1]. Build it with one, e.g. "
                "`NeuralODE(field, t1=1.0)`."
            )
        if jacobian not in ("hutchinson", "exact", None):
            raise ValueError(
                f"{_OWNER}: unknown `jacobian={jacobian!r}`. Choose 'hutchinson' (one "
                "vector-Jacobian product per step, any size), 'exact' (jax.jacfwd, small "
                "states) or None (no Jacobian term)."
            )
        if probe not in ("gaussian", "rademacher"):
            raise ValueError(
                f"{_OWNER}: unknown `probe={probe!r}`. Choose 'gaussian' or 'rademacher'."
            )
        if jacobian is None and not kinetic:
            raise ValueError(
                f"{_OWNER}: `jacobian=None` and `kinetic=False` switch off both penalties. "
                "Enable one, or use the NeuralODE directly."
            )
        self.model = model
        self.jacobian = jacobian
        self.kinetic = bool(kinetic)
        self.probe = probe
        self.inference = inference

    def _probe(self, y0: PyTree[Array], key: PRNGKeyArray | None) -> PyTree[Array] | None:
        if self.jacobian != "hutchinson":
            return None
        if key is None:
            raise ValueError(
                f"{_OWNER}: a `key` is needed in training mode with `jacobian='hutchinson'` "
                "to draw the probe: call `rnode(y0, key=jr.key(0))`. Alternatively use "
                "`jacobian='exact'` (no randomness), or `eqx.nn.inference_mode(rnode)` to "
                "solve without penalties."
            )
        leaves, treedef = jax.tree.flatten(y0)
        keys = jr.split(key, len(leaves))
        sample = jr.rademacher if self.probe == "rademacher" else jr.normal
        probes = [sample(k, x.shape, x.dtype) for k, x in zip(keys, leaves, strict=True)]
        return jax.tree.unflatten(treedef, probes)

    def solve(
        self,
        y0: PyTree[Float[ArrayLike, "..."]],
        *,
        args: Args = None,
        key: PRNGKeyArray | None = None,
    ) -> diffrax.Solution:
        """Solve from `y0` and return the full `diffrax.Solution`.

        In training mode `solution.ys` is an augmented state with attributes `y`, `kinetic`
        and `jacobian`, each with a leading axis of length 1 (the save time `t1`); in
        inference mode it is the wrapped model's solution. Use `stats(solution)` for the
        number of function evaluations.
        """
        if self.inference:
            return self.model.solve(y0, args=args)
        model = self.model
        start, end = resolve_interval(_OWNER, model.t0, model.t1, None, None, None)
        y0 = check_state(_OWNER, y0)
        check_field_output(_OWNER, "vector field", model.field, start, y0, args, want=y0)
        dtype = jnp.result_type(*jax.tree.leaves(y0))
        zero = jnp.zeros((), dtype)
        state0 = _AugState(y0, zero, zero)
        field = _AugmentedField(model.field, self._probe(y0, key), self.jacobian, self.kinetic)
        # Same configuration as the wrapped model, except that step-size control sees y only.
        controlled = eqx.tree_at(
            lambda m: m.stepsize_controller,
            model,
            _state_only(model.controller()),
            is_leaf=lambda x: x is None,
        )
        terms = diffrax.ODETerm(field)
        return run_solve(_OWNER, controlled, terms, model.solver, start, end, state0, args, None)

    def __call__(
        self,
        y0: PyTree[Float[ArrayLike, "..."]],
        *,
        args: Args = None,
        key: PRNGKeyArray | None = None,
    ) -> tuple[PyTree[Float[Array, "..."]], dict[str, Float[Array, ""]]]:
        """Solve from one (unbatched) initial state and integrate the penalties.

        **Arguments:**

        - `y0`: the initial state at `t0`, any PyTree of floating arrays.
        - `args`: passed to the field as its third argument.
        - `key`: draws the Hutchinson probe; required in training mode with
          `jacobian="hutchinson"`, ignored otherwise.

        **Returns:**

        `(y1, penalties)`: the state at `t1` (structure of `y0`) and a dict with scalars
        `"kinetic"` and `"jacobian"` (zero when disabled or in inference mode).
        """
        if self.inference:
            y1 = self.model(y0, args=args)
            zero = jnp.zeros((), jnp.result_type(*jax.tree.leaves(y1)))
            return y1, {"kinetic": zero, "jacobian": zero}
        final = squeeze_final(self.solve(y0, args=args, key=key).ys)
        return final.y, {"kinetic": final.kinetic, "jacobian": final.jacobian}

    def stats(self, solution: diffrax.Solution) -> dict[str, Int[Array, ""]]:
        """Number of function evaluations and steps of a solve made by `solve`.

        An evaluation here is one of the augmented field: the field plus its vector-Jacobian
        product (Hutchinson) or Jacobian (exact).
        """
        return self.model.stats(solution)


def rnode(model: Any, **options: Any) -> Any:
    """Wrap `model`'s `NeuralODE` (or the `NeuralODE` itself) in `RNODE(ode, **options)`.

    The wrapped model then returns `(output, penalties)`: a module around it must pass the
    penalties through to its loss.
    """
    return replace_model(
        "neurde.noise.rnode", model, lambda ode: RNODE(ode, **options), (NeuralODE,), "a NeuralODE"
    )


__all__ = ["RNODE", "rnode"]
