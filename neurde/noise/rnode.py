"""RNODE: kinetic-energy and Jacobian-norm penalties integrated along a continuous solve."""

import dataclasses
from collections.abc import Callable
from typing import Any, Literal, TypeAlias

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray, PyTree

from .._types import Args, Input, MaybeKey, SaveTimes
from .._validation import require_key
from ..model import PROBE_KEY, AbstractContinuousModel, AbstractContinuousWrapper
from ..problem import Problem
from .transform import Where, apply, check_wrappable

_OWNER = "RNODE"
Estimator: TypeAlias = Literal["hutchinson", "exact"]
Probe: TypeAlias = Literal["gaussian", "rademacher"]
PENALTIES = ("kinetic", "jacobian")


def _sq_norm(tree: PyTree[Array]) -> Float[Array, ""]:
    """Squared Euclidean norm of all the entries of a PyTree (Frobenius for matrices)."""
    return sum((jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree)), start=jnp.zeros(()))


class _Plain(eqx.Module):
    """A drift with no extra outputs, in the form `(t, y, args) -> (dy, {})`."""

    drift: Callable[..., Any]

    def __call__(self, t: Any, y: Any, args: Any) -> tuple[Any, dict[str, Array]]:
        return self.drift(t, y, args), {}


class _Penalized(eqx.Module):
    """`(t, y, args) -> (dy, dextras)` with the kinetic and Jacobian integrands added.

    A module (not a closure) so that the field's parameters and the probe stay visible to
    adjoints such as `diffrax.BacksolveAdjoint`.
    """

    field: Callable[..., Any]
    probe: PyTree[Array] | None
    kinetic: bool = eqx.field(static=True)
    jacobian: bool = eqx.field(static=True)
    exact: bool = eqx.field(static=True)

    def __call__(self, t: Any, y: Any, args: Any) -> tuple[Any, dict[str, Array]]:
        def f(y_):
            return self.field(t, y_, args)

        dtype = jnp.result_type(*jax.tree.leaves(y))
        zero = jnp.zeros((), dtype)
        if self.jacobian and not self.exact:
            # One reverse-mode product per evaluation, with the probe fixed along the solve
            # (as in FFJORD/RNODE): E||e^T J||^2 = tr(J J^T) = ||J||_F^2 for E[e e^T] = I.
            (dy, dextras), vjp = jax.vjp(f, y)
            # The probe in the dtype the solver runs in (Diffrax may promote the state).
            probe = jax.tree.map(lambda e, d: e.astype(d.dtype), self.probe, dy)
            (e_jac,) = vjp((probe, jax.tree.map(jnp.zeros_like, dextras)))
            jac = _sq_norm(e_jac)
        elif self.jacobian:

            def f_aux(y_):
                # The output doubles as the auxiliary value, so f is traced once.
                out = f(y_)
                return out[0], out

            jac_tree, (dy, dextras) = jax.jacfwd(f_aux, has_aux=True)(y)
            jac = _sq_norm(jac_tree)
        else:
            (dy, dextras), jac = f(y), zero
        kin = _sq_norm(dy) if self.kinetic else zero
        penalties = {"kinetic": kin.astype(dtype), "jacobian": jac.astype(dtype)}
        return dy, {**dextras, **penalties}


class RNODE(AbstractContinuousWrapper):
    r"""Kinetic and Jacobian regularization (RNODE) of a continuous model.

    A call solves the wrapped model's problem from $t_0$ to $t_1$ together with the penalties

    $$E_k = \int_{t_0}^{t_1} \|f_\theta(t, y(t))\|_2^2\,dt, \qquad
      E_j = \int_{t_0}^{t_1} \|\partial_y f_\theta(t, y(t))\|_F^2\,dt$$

    of its drift $f_\theta$, as two extra outputs integrated in the same solve (same solver,
    controller, tolerances, adjoint, `dt0`, `max_steps`). A call returns the state, as every
    model does; `solve(...).extras["kinetic"]` and `["jacobian"]` are the penalties, for a
    loss `task_loss(sol.ys) + lambda_k * sol.extras["kinetic"] + lambda_j *
    sol.extras["jacobian"]`. Finlay et al. show these terms select simple, nearly straight
    trajectories, so adaptive solvers take fewer steps.

    Any continuous model can be regularized: over a noisy model (`noise.additive(...)`, in
    either order) the penalties are integrated along the stochastic path (the integrands
    depend on the drift only, so they are $dt$ integrals); over STEER, up to the random end
    time. With save times `ts` the penalties still cover the whole interval.

    The definitions are those of Finlay et al.'s objective (squared norms summed over the
    state, integrated over time, no 1/2). Their code scales the integrands differently:
    $\tfrac12$ of the *mean* over the $d$ state entries for the kinetic term, the mean over
    $d$ for the Jacobian term. A coefficient $\lambda$ in their code is $\lambda / (2d)$
    (kinetic) and $\lambda / d$ (Jacobian) here.

    - `estimator="exact"` forms $\partial_y f$ with `jax.jacfwd` ($d$ forward passes per
      evaluation): for small states.
    - `estimator="hutchinson"` estimates $\|\partial_y f\|_F^2$ by $\|e^\top \partial_y f\|^2$
      with one probe $e$ (Gaussian, or Rademacher with `probe="rademacher"`) drawn from
      `jr.fold_in(key, 2)` and held fixed along the solve, as in FFJORD and RNODE: one
      vector-Jacobian product per evaluation, an unbiased estimate of $E_j$.

    Step-size control sees only the state: with an adaptive `diffrax.PIDController` (the
    default, or wrapped in `diffrax.ClipStepSizeController`) the error norm leaves the
    penalties out, as Finlay et al. do with tolerances of 1e20 on them. The steps, and so the
    state and the number of function evaluations, are then those of the plain solve, and the
    penalties are integrated by the solver's own quadrature on those steps. (The backward
    solve of `diffrax.BacksolveAdjoint` measures its whole state.)

    In inference mode (`inference=True`, set by `eqx.nn.inference_mode`) a call is exactly
    the wrapped model's, needs no key, and both penalties are zero. A disabled term
    (`kinetic=False` or `jacobian=False`) is always zero.

    **Arguments:**

    - `model`: the continuous model to regularize. The state may be any PyTree of arrays;
      the norms run over all its entries.
    - `kinetic`: include the kinetic term (default True).
    - `jacobian`: include the Jacobian term (default True).
    - `estimator`: how the Jacobian term is computed: `"hutchinson"` (default) or `"exact"`.
    - `probe`: the Hutchinson probe distribution, `"gaussian"` (default, as in the reference
      code) or `"rademacher"` (lower variance).
    - `inference`: solve the plain problem; the penalties are zero.

    References: Finlay, Jacobsen, Nurbekyan, Oberman, "How to train your neural ODE: the
    world of Jacobian and kinetic regularization", ICML 2020. Grathwohl, Chen, Bettencourt,
    Sutskever, Duvenaud, "FFJORD", ICLR 2019 (the fixed-probe estimator).
    """

    model: AbstractContinuousModel
    kinetic: bool = eqx.field(static=True)
    jacobian: bool = eqx.field(static=True)
    estimator: Estimator = eqx.field(static=True)
    probe: Probe = eqx.field(static=True)
    inference: bool = False

    def __init__(
        self,
        model: AbstractContinuousModel,
        *,
        kinetic: bool = True,
        jacobian: bool = True,
        estimator: Estimator = "hutchinson",
        probe: Probe = "gaussian",
        inference: bool = False,
    ):
        self.model = model
        self.kinetic = kinetic
        self.jacobian = jacobian
        self.estimator = estimator
        self.probe = probe
        self.inference = inference

    def __check_init__(self):
        check_wrappable(
            _OWNER,
            self.model,
            RNODE,
            "RNODE(neurde.NeuralODE(field, t1=1.0))",
            "which integrates the same penalties; apply RNODE once (choose its terms with "
            "`kinetic=` and `jacobian=`).",
        )
        for name in ("kinetic", "jacobian"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(
                    f"{_OWNER}: `{name}` must be True or False, got {getattr(self, name)!r}."
                )
        if self.estimator not in ("hutchinson", "exact"):
            raise ValueError(
                f"{_OWNER}: unknown `estimator={self.estimator!r}`. Choose 'hutchinson' (one "
                "vector-Jacobian product per step, any size) or 'exact' (jax.jacfwd, small "
                "states)."
            )
        if self.probe not in ("gaussian", "rademacher"):
            raise ValueError(
                f"{_OWNER}: unknown `probe={self.probe!r}`. Choose 'gaussian' or 'rademacher'."
            )
        if not (self.kinetic or self.jacobian):
            raise ValueError(
                f"{_OWNER}: `jacobian=False` and `kinetic=False` switch off both penalties. "
                "Enable one, or use the wrapped model directly."
            )

    def _probe(self, y0: PyTree[Any], key: PRNGKeyArray | None) -> PyTree[Array] | None:
        if not self.jacobian or self.estimator != "hutchinson":
            return None
        key = require_key(
            _OWNER,
            key,
            "draw the Hutchinson probe (`estimator='hutchinson'`)",
            "Alternatively use `estimator='exact'` (no randomness), or "
            "`eqx.nn.inference_mode(rnode)` to solve without penalties.",
        )
        leaves, treedef = jax.tree.flatten(y0)
        keys = jr.split(jr.fold_in(key, PROBE_KEY), len(leaves))
        sample = jr.rademacher if self.probe == "rademacher" else jr.normal
        probes = [
            sample(k, jnp.shape(x), jnp.result_type(x, float))
            for k, x in zip(keys, leaves, strict=True)
        ]
        return jax.tree.unflatten(treedef, probes)

    def problem(
        self, y0: Input, ts: SaveTimes = None, *, args: Args = None, key: MaybeKey = None
    ) -> Problem:
        """The wrapped model's problem with the two penalties as extra outputs."""
        inner = self.model.problem(y0, ts, args=args, key=key)
        # The penalties take the state's dtype (an integer state is refused by the solve).
        dtype = jnp.result_type(*jax.tree.leaves(y0))
        dtype = dtype if jnp.issubdtype(dtype, jnp.floating) else jnp.result_type(float)
        zeros = {name: jnp.zeros((), dtype) for name in PENALTIES}
        extras = {**inner.extras, **zeros}
        if self.inference:
            # No integrands: the penalties keep their initial value, zero.
            return dataclasses.replace(inner, extras=extras)
        field = _Plain(inner.drift) if inner.augmented is None else inner.augmented
        exact = self.estimator == "exact"
        probe = self._probe(y0, key)
        augmented = _Penalized(field, probe, self.kinetic, self.jacobian, exact)
        return dataclasses.replace(inner, extras=extras, augmented=augmented)


def rnode(model: Any, *, where: Where = None, **options: Any) -> Any:
    """Wrap a continuous model in `RNODE(model, **options)`: kinetic and Jacobian penalties
    as `solve(...).extras`.

    `model` may also be a wrapper (a `neurde.Composed`, a `discrete.Classifier`), whose inner
    model is regularized and whose `solve` passes the penalties through, or an AbstractModel
    holding a model that `where` selects.
    """
    return apply(
        "neurde.noise.rnode",
        model,
        where,
        continuous=lambda m: RNODE(m, **options),
        discrete="RNODE integrates penalties along a continuous solve, and a discrete stack "
        "takes fixed blocks; regularize its blocks' weights in the loss instead.",
        extras=True,
    )
