# ruff: noqa: E501
"""The validation sweep: every public argument, each class of invalid value, one line a case.

Each case is `(id, call, exception, message)`: `call()` must raise `exception` with a message
matching `message` (a regex that names the argument or the fix). The public API swept is
what `neurde`, `neurde.discrete`, `neurde.continuous`, `neurde.stochastic`, `neurde.noise`,
`neurde.diffusion` and `neurde.data` export, except the training loop (`neurde.train`) and
the diffusion samplers, which have their own error tests. Classes of invalid value: wrong
type, wrong shape or width, non-positive where positive is needed, NaN/inf, out-of-range
numbers, unknown choice strings, a missing or malformed key, and values only known inside
`jit` (checked with `eqx.error_if`, so they surface as `EquinoxRuntimeError`).

To add a case, add a line to `CASES`.
"""

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import neurde
from neurde import (
    continuous as nc,
    data as nda,
    diffusion as nd,
    discrete as ndi,
    noise as nn,
    stochastic as ns,
)

K = jr.key(0)
NAN, INF = float("nan"), float("inf")
RUNTIME = eqx.EquinoxRuntimeError


class Case(NamedTuple):
    id: str
    call: Callable[[], Any]
    exception: type[BaseException] | tuple[type[BaseException], ...]
    match: str


@functools.cache
def field() -> neurde.MLPField:
    return neurde.MLPField(2, 4, 1, key=K)


@functools.cache
def ode() -> neurde.NeuralODE:
    return neurde.NeuralODE(field(), t1=1.0)


@functools.cache
def sde() -> neurde.NeuralSDE:
    return neurde.NeuralSDE(field(), neurde.MLPField(2, 4, 1, key=jr.key(1)), t1=1.0, dt0=0.25)


@functools.cache
def jit_call() -> Callable[..., Any]:
    return eqx.filter_jit(lambda m, y0, ts: m(y0, ts))


@functools.cache
def jit_tolerances() -> Callable[..., Any]:
    def run(rtol: Any, atol: Any) -> Any:
        model = eqx.tree_at(lambda m: (m.tolerances.rtol, m.tolerances.atol), ode(), (rtol, atol))
        return model(jnp.ones(2))

    return eqx.filter_jit(run)


def stack(make_block: Callable[[Any], Any], scheme: Any = None, depth: int = 2) -> Any:
    return ndi.ResidualStack(make_block, scheme or ndi.Euler(), depth, key=K)


def linear(n: int) -> neurde.LinearField:
    return neurde.LinearField(-jnp.eye(n))


def gaussian(s: Any = None) -> nd.GaussianScore:
    return nd.GaussianScore(s or nd.VPSDE(), jnp.zeros(2), jnp.eye(2))


NOT_SYMMETRIC = jnp.array([[1.0, 0.5], [0.0, 1.0]])
INDEFINITE = jnp.array([[1.0, 0.0], [0.0, -1.0]])

# One line a case, so adding one is a line (hence no formatting and long lines).
# fmt: off
CORE = [
    # MLPField / LinearField / FunctionField / as_field
    Case("MLPField.size=0", lambda: neurde.MLPField(0, key=K), ValueError, "size"),
    Case("MLPField.size=float", lambda: neurde.MLPField(2.5, key=K), ValueError, "`size` must be an integer >= 1, got 2.5"),  # type: ignore[arg-type]
    Case("MLPField.width_size=0", lambda: neurde.MLPField(2, 0, key=K), ValueError, "width_size"),
    Case("MLPField.depth=-1", lambda: neurde.MLPField(2, 4, -1, key=K), ValueError, "depth"),
    Case("MLPField.dtype=int", lambda: neurde.MLPField(2, dtype=jnp.int32, key=K), TypeError, "dtype"),
    Case("MLPField.key=None", lambda: neurde.MLPField(2, key=None), TypeError, "`key` must be one JAX PRNG key, got NoneType"),  # type: ignore[arg-type]
    Case("MLPField.call width", lambda: field()(0.0, jnp.ones(3), None), ValueError, r"size=3"),
    Case("MLPField.size=True", lambda: neurde.MLPField(True, key=K), ValueError, "`size` must be an integer"),  # type: ignore[arg-type]
    Case("MLPField.key=3", lambda: neurde.MLPField(2, key=3), TypeError, "`key` must be one JAX PRNG key, got int"),  # type: ignore[arg-type]
    Case("MLPField.out_shape=(0,)", lambda: neurde.MLPField(2, out_shape=(0,), key=K), ValueError, "`out_shape` must be positive"),
    Case("LinearField.matrix nan", lambda: neurde.LinearField(jnp.full((2, 2), NAN)), ValueError, "NaN or inf"),
    Case("LinearField.matrix int", lambda: neurde.LinearField(jnp.eye(2, dtype=int)), TypeError, "`matrix` must be floating"),
    Case("LinearField.random size=0", lambda: neurde.LinearField.random(0, key=K), ValueError, "`size` must be an integer >= 1"),
    Case("LinearField.matrix 1-D", lambda: neurde.LinearField(jnp.ones(2)), ValueError, "square"),
    Case("LinearField.matrix 2x3", lambda: neurde.LinearField(jnp.ones((2, 3))), ValueError, "square"),
    Case("LinearField.call width", lambda: linear(3)(0.0, jnp.ones(2), None), ValueError, r"matrix has shape \(3, 3\)"),
    Case("FunctionField.fn", lambda: neurde.FunctionField(3), TypeError, "fn"),  # type: ignore[arg-type]
    Case("as_field(3)", lambda: neurde.as_field(3), TypeError, "field"),
    # NeuralODE construction
    Case("NeuralODE.field", lambda: neurde.NeuralODE(3, t1=1.0), TypeError, "field"),  # type: ignore[arg-type]
    Case("NeuralODE.solver str", lambda: neurde.NeuralODE(field(), solver="tsit5"), TypeError, "`solver` must be a Diffrax solver"),  # type: ignore[arg-type]
    Case("NeuralODE.controller str", lambda: neurde.NeuralODE(field(), stepsize_controller="pid"), TypeError, "stepsize_controller"),  # type: ignore[arg-type]
    Case("NeuralODE.controller+rtol", lambda: neurde.NeuralODE(field(), stepsize_controller=diffrax.ConstantStepSize(), rtol=1e-3, dt0=0.1), ValueError, "ignored"),
    Case("NeuralODE.rtol<0", lambda: neurde.NeuralODE(field(), rtol=-1e-3), ValueError, "`rtol` must be > 0"),
    Case("NeuralODE.rtol=0", lambda: neurde.NeuralODE(field(), rtol=0.0), ValueError, "`rtol` must be > 0"),
    Case("NeuralODE.rtol=nan", lambda: neurde.NeuralODE(field(), rtol=NAN), ValueError, "`rtol` must be > 0"),
    Case("NeuralODE.atol=inf", lambda: neurde.NeuralODE(field(), atol=INF), ValueError, "`atol` must be > 0 and finite"),
    Case("NeuralODE.adjoint", lambda: neurde.NeuralODE(field(), adjoint="magic"), ValueError, "unknown `adjoint='magic'`"),
    Case("NeuralODE.t1<t0", lambda: neurde.NeuralODE(field(), t0=1.0, t1=0.0), ValueError, "t1 > t0"),
    Case("NeuralODE.t1=t0", lambda: neurde.NeuralODE(field(), t0=1.0, t1=1.0), ValueError, "t1 > t0"),
    Case("NeuralODE.dt0=0", lambda: neurde.NeuralODE(field(), dt0=0.0), ValueError, "`dt0` must be > 0"),
    Case("NeuralODE.dt0<0", lambda: neurde.NeuralODE(field(), dt0=-0.1), ValueError, "`dt0` must be > 0"),
    Case("NeuralODE.max_steps=0", lambda: neurde.NeuralODE(field(), max_steps=0), ValueError, "`max_steps` must be an integer >= 1"),
    Case("NeuralODE.max_steps float", lambda: neurde.NeuralODE(field(), max_steps=1.5), ValueError, "`max_steps` must be an integer"),  # type: ignore[arg-type]
    Case("NeuralODE.RK4 no dt0", lambda: neurde.NeuralODE(field(), solver=neurde.RK4()), ValueError, "`dt0` is"),
    Case("NeuralODE.t1=inf", lambda: neurde.NeuralODE(field(), t1=INF), ValueError, "finite t1 > t0"),
    Case("NeuralODE.t0=nan", lambda: neurde.NeuralODE(field(), t0=NAN, t1=1.0), ValueError, "finite t1 > t0"),
    Case("NeuralODE.dt0=nan", lambda: neurde.NeuralODE(field(), dt0=NAN, t1=1.0), ValueError, "`dt0` must be > 0"),
    Case("NeuralODE.throw str", lambda: neurde.NeuralODE(field(), t1=1.0, throw="no"), TypeError, "`throw` must be True or False"),  # type: ignore[arg-type]
    Case("NeuralODE.adjoint=3", lambda: neurde.NeuralODE(field(), t1=1.0, adjoint=3), ValueError, "unknown `adjoint=3`"),  # type: ignore[arg-type]
    Case("NeuralODE.Leapfrog odd", lambda: neurde.NeuralODE(linear(3), solver=neurde.Leapfrog(), dt0=0.1, t1=1.0)(jnp.ones(3)), ValueError, "even length"),
    Case("NeuralODE.SymplecticEuler odd", lambda: neurde.NeuralODE(linear(3), solver=neurde.SymplecticEuler(), dt0=0.1, t1=1.0)(jnp.ones(3)), ValueError, "even length"),
    Case("NeuralODE(y0 complex)", lambda: ode()(jnp.ones(2, complex)), TypeError, "floating dtype"),
    Case("NeuralODE(y0 2-D)", lambda: ode()(jnp.ones((2, 2))), ValueError, r"state has shape \(2, 2\)"),
    Case("NeuralODE(ts scalar)", lambda: ode()(jnp.ones(2), 0.5), ValueError, "non-empty 1-D"),
    Case("NeuralODE(LinearField width)", lambda: neurde.NeuralODE(linear(3), t1=1.0)(jnp.ones(2)), ValueError, r"LinearField: the state `y` has shape \(2,\)"),
    # NeuralODE call
    Case("NeuralODE(y0 int)", lambda: ode()(jnp.ones(2, int)), TypeError, "floating dtype"),
    Case("NeuralODE(y0 nan)", lambda: ode()(jnp.array([NAN, 0.0])), ValueError, "NaN or inf"),
    Case("NeuralODE(y0 inf)", lambda: ode()(jnp.array([INF, 0.0])), ValueError, "NaN or inf"),
    Case("NeuralODE(y0 width)", lambda: ode()(jnp.ones(3)), ValueError, r"built for states of shape \(2,\)"),
    Case("NeuralODE(y0 empty)", lambda: ode()({}), ValueError, "empty"),
    Case("NeuralODE(ts 2-D)", lambda: ode()(jnp.ones(2), jnp.zeros((2, 2))), ValueError, "non-empty 1-D"),
    Case("NeuralODE(ts empty)", lambda: ode()(jnp.ones(2), jnp.zeros(0)), ValueError, "non-empty 1-D"),
    Case("NeuralODE(ts decreasing)", lambda: ode()(jnp.ones(2), jnp.array([0.5, 0.1])), ValueError, "strictly increasing"),
    Case("NeuralODE(ts nan)", lambda: ode()(jnp.ones(2), jnp.array([0.1, NAN])), ValueError, "strictly increasing|inside"),
    Case("NeuralODE(ts outside)", lambda: ode()(jnp.ones(2), jnp.array([0.5, 2.0])), ValueError, r"inside \[t0, t1\]"),
    Case("NeuralODE(no t1, no ts)", lambda: neurde.NeuralODE(field())(jnp.ones(2)), ValueError, "no end time"),
    Case("jit NeuralODE(y0 nan)", lambda: jit_call()(ode(), jnp.array([NAN, 0.0]), None), RUNTIME, "NaN or inf"),
    Case("jit NeuralODE(ts decreasing)", lambda: jit_call()(ode(), jnp.ones(2), jnp.array([0.5, 0.1])), RUNTIME, "strictly increasing"),
    Case("jit NeuralODE(traced t1<t0)", lambda: jit_call()(neurde.NeuralODE(field()), jnp.ones(2), jnp.array([-1.0])), RUNTIME, r"t1 > t0|inside \[t0, t1\] = \[0.0, traced\]"),
    Case("jit NeuralODE(rtol<0)", lambda: jit_tolerances()(jnp.array(-1e-3), jnp.array(1e-6)), RUNTIME, "`rtol` must be finite and > 0"),
    Case("jit NeuralODE(atol nan)", lambda: jit_tolerances()(jnp.array(1e-3), jnp.array(NAN)), RUNTIME, "`atol` must be finite and > 0"),
    Case("tree_at NeuralODE(rtol<0)", lambda: eqx.tree_at(lambda m: m.tolerances.rtol, ode(), jnp.array(-1.0))(jnp.ones(2)), ValueError, "`rtol` must be finite and > 0"),
    # NeuralSDE
    Case("NeuralSDE.noise", lambda: neurde.NeuralSDE(field(), field(), noise="pink", t1=1.0, dt0=0.25), ValueError, "unknown `noise='pink'`"),  # type: ignore[arg-type]
    Case("NeuralSDE.noise_size diagonal", lambda: neurde.NeuralSDE(field(), field(), noise_size=2, t1=1.0, dt0=0.25), ValueError, "`noise_size` only applies"),
    Case("NeuralSDE.general no size", lambda: neurde.NeuralSDE(field(), field(), noise="general", t1=1.0, dt0=0.25), ValueError, "noise_size"),
    Case("NeuralSDE.brownian", lambda: neurde.NeuralSDE(field(), field(), brownian="white", t1=1.0, dt0=0.25), ValueError, "`brownian` must be"),  # type: ignore[arg-type]
    Case("NeuralSDE.brownian_tol=0", lambda: neurde.NeuralSDE(field(), field(), brownian_tol=0.0, t1=1.0, dt0=0.25), ValueError, "`brownian_tol` must be > 0"),
    Case("NeuralSDE.diffusion", lambda: neurde.NeuralSDE(field(), 3, t1=1.0, dt0=0.25), TypeError, "Expected a vector field.*got an object of type int"),  # type: ignore[arg-type]
    Case("NeuralSDE(no key)", lambda: sde()(jnp.ones(2)), ValueError, "key"),
    Case("NeuralSDE(y0 width)", lambda: sde()(jnp.ones(3), key=K), ValueError, r"shape \(2,\)"),
    Case("NeuralSDE(y0 nan)", lambda: sde()(jnp.array([NAN, 1.0]), key=K), ValueError, "NaN or inf"),
    Case("NeuralSDE(grid, dt0 not dividing)", lambda: neurde.NeuralSDE(field(), field(), t1=1.0, dt0=0.3, brownian="grid")(jnp.ones(2), key=K), ValueError, "not a multiple"),
    Case("NeuralSDE(key=3)", lambda: sde()(jnp.ones(2), key=3), TypeError, "PRNG key"),  # type: ignore[arg-type]
    Case("NeuralSDE.noise_size=0", lambda: neurde.NeuralSDE(field(), field(), noise="general", noise_size=0, t1=1.0, dt0=0.25), ValueError, "noise_size"),
    Case("NeuralSDE(general diffusion shape)", lambda: neurde.NeuralSDE(field(), field(), noise="general", noise_size=3, t1=1.0, dt0=0.25)(jnp.ones(2), key=K), ValueError, r"returns shape \(2,\), but shape \(2, 3\)"),
    Case("NeuralSDE.grid+adaptive", lambda: neurde.NeuralSDE(field(), field(), t1=1.0, brownian="grid", solver=diffrax.Heun(), stepsize_controller=diffrax.PIDController(rtol=1e-3, atol=1e-3)), ValueError, "constant step size"),
    # Tolerances, GridBrownianPath, Composed, Reversible, evaluations_per_step
    Case("Tolerances.rtol<0", lambda: neurde.Tolerances(-1.0), ValueError, "`rtol` must be > 0 and finite"),
    Case("Tolerances.atol nan", lambda: neurde.Tolerances(1e-3, NAN), ValueError, "`atol` must be > 0"),
    Case("Tolerances.atol inf", lambda: neurde.Tolerances(1e-3, INF), ValueError, "`atol` must be > 0 and finite"),
    Case("GridBrownianPath.dt=0", lambda: neurde.GridBrownianPath(0.0, 1.0, 0.0, (2,), key=K), ValueError, "dt"),
    Case("GridBrownianPath.t1<t0", lambda: neurde.GridBrownianPath(1.0, 0.0, 0.1, (2,), key=K), ValueError, "t1"),
    Case("GridBrownianPath.no key", lambda: neurde.GridBrownianPath(0.0, 1.0, 0.1, (2,)), ValueError, "key"),
    Case("GridBrownianPath.shape<0", lambda: neurde.GridBrownianPath(0.0, 1.0, 0.1, (-1,), key=K), ValueError, "`shape` must be a tuple of non-negative integers"),
    Case("GridBrownianPath.dt=nan", lambda: neurde.GridBrownianPath(0.0, 1.0, NAN, (2,), key=K), ValueError, "dt > 0"),
    Case("GridBrownianPath.increments nan", lambda: neurde.GridBrownianPath(0.0, 1.0, 0.5, increments=jnp.full((2, 2), NAN)), ValueError, "`increments` contain NaN"),
    Case("GridBrownianPath.increments count", lambda: neurde.GridBrownianPath(0.0, 1.0, 0.5, increments=jnp.zeros((5, 2))), ValueError, r"`increments` must have shape \(2, \*shape\)"),
    Case("GridBrownianPath.key and increments", lambda: neurde.GridBrownianPath(0.0, 1.0, 0.5, (2,), key=K, increments=jnp.zeros((2, 2))), ValueError, "exactly one of `key`"),
    Case("GridBrownianPath.key=3", lambda: neurde.GridBrownianPath(0.0, 1.0, 0.5, (2,), key=3), TypeError, "`key` must be one JAX PRNG key"),  # type: ignore[arg-type]
    Case("Composed.decoder", lambda: neurde.Composed(None, ode(), 3), TypeError, "`decoder` must be a function"),  # type: ignore[arg-type]
    Case("Reversible.coupling nan", lambda: neurde.Reversible(NAN), ValueError, "coupling"),
    Case("Composed.model", lambda: neurde.Composed(None, 3, None), TypeError, "model"),  # type: ignore[arg-type]
    Case("Composed.encoder", lambda: neurde.Composed(3, ode(), None), TypeError, "encoder"),  # type: ignore[arg-type]
    Case("Reversible.coupling=0", lambda: neurde.Reversible(0.0), ValueError, "coupling"),
    Case("Reversible.coupling>1", lambda: neurde.Reversible(1.5), ValueError, "coupling"),
    Case("evaluations_per_step", lambda: neurde.evaluations_per_step("tsit5"), TypeError, "solver"),  # type: ignore[arg-type]
]

DISCRETE = [
    Case("ResidualStack.depth=0", lambda: stack(lambda k: linear(2), depth=0), ValueError, "`depth` must be an integer >= 1"),
    Case("ResidualStack.depth float", lambda: stack(lambda k: linear(2), depth=1.5), ValueError, "`depth` must be an integer"),  # type: ignore[arg-type]
    Case("ResidualStack.h=0", lambda: ndi.ResidualStack(lambda k: linear(2), ndi.Euler(), 2, h=0.0, key=K), ValueError, "`h` must be > 0"),
    Case("ResidualStack.scheme", lambda: ndi.ResidualStack(lambda k: linear(2), "euler", 2, key=K), TypeError, "scheme"),  # type: ignore[arg-type]
    Case("ResidualStack(LinearField width)", lambda: stack(lambda k: linear(3))(jnp.ones(2)), ValueError, r"LinearField: the state `y` has shape \(2,\)"),
    Case("ResidualStack(MLPField width)", lambda: stack(lambda k: neurde.MLPField(3, 4, 1, key=k))(jnp.ones(2)), ValueError, "size=2"),
    Case("ResidualStack(HamiltonianBlock width)", lambda: stack(lambda k: ndi.HamiltonianBlock(3, key=k), ndi.AdditiveCoupling())(jnp.ones(4)), ValueError, r"HamiltonianBlock: .*state needs shape \(6,\)"),
    Case("ResidualStack(odd width coupling)", lambda: stack(lambda k: ndi.HamiltonianBlock(1, key=k), ndi.AdditiveCoupling())(jnp.ones(3)), ValueError, "odd size"),
    Case("ResidualStack(AntisymmetricField width)", lambda: stack(lambda k: ndi.AntisymmetricField(3, key=k))(jnp.ones(2)), ValueError, "size=2"),
    Case("AntisymmetricField.gamma<0", lambda: ndi.AntisymmetricField(2, gamma=-1.0, key=K), ValueError, "`gamma` must be >= 0"),
    Case("ConvField.kernel_size even", lambda: ndi.ConvField(2, 2, key=K), ValueError, "`kernel_size` must be odd"),
    Case("PDEField.kernel_size even", lambda: ndi.PDEField(2, 4, key=K), ValueError, "`kernel_size` must be odd"),
    Case("ConvField(vector)", lambda: ndi.ConvField(2, key=K)(0.0, jnp.ones(2), None), ValueError, "channel-first"),
    Case("LinearMultistep.depth=0", lambda: ndi.LinearMultistep(0), ValueError, "depth"),
    Case("Momentum.gamma>1", lambda: ndi.Momentum(1.5), ValueError, "gamma"),
    Case("Momentum.gamma<0", lambda: ndi.Momentum(-0.1), ValueError, "gamma"),
    Case("RungeKutta.shapes", lambda: ndi.RungeKutta(jnp.zeros((2, 2)), jnp.ones(3)), ValueError, r"`a`|`b`"),
    Case("Classifier.architecture", lambda: ndi.Classifier((4,), 3, architecture="vgg", key=K), ValueError, "architecture"),
    Case("Classifier.num_classes=0", lambda: ndi.Classifier((4,), 0, key=K), ValueError, "num_classes"),
    Case("Classifier.input_shape empty", lambda: ndi.Classifier((), 3, key=K), ValueError, "`input_shape` must be the shape of one example"),
    Case("Classifier.depth=0", lambda: ndi.Classifier((4,), 3, depth=0, key=K), ValueError, "`depth` must be an integer >= 1"),
    Case("Classifier(x width)", lambda: ndi.Classifier((4,), 3, width=4, depth=2, hidden=4, key=K)(jnp.ones(5)), ValueError, "built for 4 values"),
    Case("ResidualStack.key=None", lambda: ndi.ResidualStack(lambda k: linear(2), ndi.Euler(), 2, key=None), TypeError, "`key` must be one JAX PRNG key, got NoneType"),  # type: ignore[arg-type]
    Case("ResidualStack.h nan", lambda: ndi.ResidualStack(lambda k: linear(2), ndi.Euler(), 2, h=NAN, key=K), ValueError, "`h` must be > 0"),
    Case("ResidualStack.make_block=3", lambda: ndi.ResidualStack(3, ndi.Euler(), 2, key=K), TypeError, "`make_block` must be a function"),  # type: ignore[arg-type]
    Case("ResidualStack(x nan)", lambda: stack(lambda k: linear(2))(jnp.array([NAN, 1.0])), ValueError, "NaN or inf"),
    Case("ResidualStack(x int)", lambda: stack(lambda k: linear(2))(jnp.ones(2, int)), TypeError, "floating dtype"),
    Case("ResidualStack(ts off grid)", lambda: stack(lambda k: linear(2))(jnp.ones(2), jnp.array([0.3])), ValueError, "multiples of the step"),
    Case("ResidualStack.memory_saving non-reversible", lambda: ndi.ResidualStack(lambda k: linear(2), ndi.Euler(), 2, memory_saving=True, key=K), ValueError, "needs a reversible scheme"),
    Case("LinearMultistep.k nan", lambda: ndi.LinearMultistep(2, NAN), ValueError, "`k` must lie in"),
    Case("LinearMultistep.depth mismatch", lambda: stack(lambda k: linear(2), ndi.LinearMultistep(3)), ValueError, "built for depth 3"),
    Case("RungeKutta.a implicit", lambda: ndi.RungeKutta(jnp.ones((2, 2)), jnp.array([0.5, 0.5])), ValueError, "strictly lower triangular"),
    Case("RungeKutta.b sum", lambda: ndi.RungeKutta(jnp.array([[0.0, 0.0], [1.0, 0.0]]), jnp.array([0.2, 0.2])), ValueError, "must sum to 1"),
    Case("ConvField.channels=0", lambda: ndi.ConvField(0, key=K), ValueError, "`channels` must be an integer >= 1"),
    Case("ConvField.num_spatial_dims=0", lambda: ndi.ConvField(2, num_spatial_dims=0, key=K), ValueError, "`num_spatial_dims` must be 1 or 2"),
    Case("PDEField.channels=0", lambda: ndi.PDEField(0, key=K), ValueError, "`channels` must be an integer >= 1"),
    Case("AntisymmetricField.size=0", lambda: ndi.AntisymmetricField(0, key=K), ValueError, "`size` must be an integer >= 1"),
    Case("HamiltonianBlock.size=0", lambda: ndi.HamiltonianBlock(0, key=K), ValueError, "`size` must be an integer >= 1"),
]

CONTINUOUS = [
    Case("AugmentedODE.augment<0", lambda: nc.AugmentedODE(2, -1, key=K, t1=1.0), ValueError, "augment"),
    Case("AugmentedODE.augmentation", lambda: nc.AugmentedODE(2, 1, augmentation="ones", key=K, t1=1.0), ValueError, "augmentation"),  # type: ignore[arg-type]
    Case("AugmentedODE.readout", lambda: nc.AugmentedODE(2, 1, readout="last", key=K, t1=1.0), ValueError, "readout"),  # type: ignore[arg-type]
    Case("AugmentedODE(x width)", lambda: nc.AugmentedODE(2, 1, width_size=4, depth=1, key=K, t1=1.0)(jnp.ones(3)), ValueError, r"\(2,\)|in_size"),
    Case("CNF.estimator", lambda: nc.CNF(field(), estimator="skilling", t1=1.0), ValueError, "estimator"),  # type: ignore[arg-type]
    Case("CNF.probe", lambda: nc.CNF(field(), estimator="hutchinson", probe="uniform", t1=1.0), ValueError, "probe"),  # type: ignore[arg-type]
    Case("HamiltonianNN.dim=0", lambda: nc.HamiltonianNN(0, key=K, t1=1.0), ValueError, "dim"),
    Case("HamiltonianNN(x width)", lambda: nc.HamiltonianNN(1, 4, 1, key=K, t1=1.0)(jnp.ones(3)), ValueError, r"one vector \[q; p\] of even length"),
    Case("SecondOrderODE.initial", lambda: nc.SecondOrderODE(2, initial="random", key=K, t1=1.0), ValueError, "initial"),  # type: ignore[arg-type]
    Case("SecondOrderODE.output", lambda: nc.SecondOrderODE(2, output="velocity", key=K, t1=1.0), ValueError, "output"),  # type: ignore[arg-type]
    Case("SecondOrderODE(x width)", lambda: nc.SecondOrderODE(2, width_size=4, depth=1, key=K, t1=1.0)(jnp.ones(3)), ValueError, r"shape"),
    Case("HeavyBallODE.damping<0", lambda: nc.HeavyBallODE(2, damping=-1.0, key=K, t1=1.0), ValueError, "damping"),
    Case("LatentODE.latent_size=0", lambda: nc.LatentODE(2, 0, key=K, t1=1.0), ValueError, "latent_size"),
    Case("NeuralCDE.interpolation", lambda: nc.NeuralCDE(2, 3, 1, interpolation="cubic", key=K), ValueError, "interpolation"),  # type: ignore[arg-type]
    Case("NeuralCDE.output", lambda: nc.NeuralCDE(2, 3, 1, output="all", key=K), ValueError, "output"),  # type: ignore[arg-type]
    Case("control_path.times 2-D", lambda: nc.control_path(jnp.zeros((3, 2)), jnp.zeros((3, 2))), ValueError, "times"),
    Case("control_path.values rank", lambda: nc.control_path(jnp.linspace(0, 1, 3), jnp.zeros(3)), ValueError, "values"),
    Case("control_path.decreasing", lambda: nc.control_path(jnp.array([0.0, 2.0, 1.0]), jnp.zeros((3, 2))), ValueError, "increasing"),
    Case("ODERNN.hidden_size=0", lambda: nc.ODERNN(2, 0, key=K, t1=1.0), ValueError, "hidden_size"),
    Case("gaussian_kl.std<0", lambda: nc.gaussian_kl(jnp.zeros(2), -jnp.ones(2)), ValueError, "std"),
    Case("gaussian_kl.shape", lambda: nc.gaussian_kl(jnp.zeros(2), jnp.ones(3)), ValueError, "same shape"),
    Case("jit gaussian_kl.std=0", lambda: eqx.filter_jit(nc.gaussian_kl)(jnp.zeros(2), jnp.zeros(2)), RUNTIME, "`std` must be > 0"),
    Case("AugmentedODE.in_size=0", lambda: nc.AugmentedODE(0, 1, key=K, t1=1.0), ValueError, "`in_size` must be a positive int"),
    Case("AugmentedODE.key missing", lambda: nc.AugmentedODE(2, 1, t1=1.0), ValueError, "a `key` is needed"),
    Case("CNF.max_exact_dim=0", lambda: nc.CNF(field(), max_exact_dim=0, t1=1.0), ValueError, "`max_exact_dim` must be a positive int"),
    Case("log_prob(x width)", lambda: nc.log_prob(nc.CNF(field(), t1=1.0), jnp.ones(3)), ValueError, "size=3"),
    Case("HamiltonianNN.mass=0", lambda: nc.HamiltonianNN(1, 4, 1, separable=True, mass=0.0, key=K, t1=1.0), ValueError, "`mass` must be a number > 0"),
    Case("HamiltonianNN.no dim", lambda: nc.HamiltonianNN(key=K, t1=1.0), ValueError, "pass the number of positions `dim`"),
    Case("HeavyBallODE.size=0", lambda: nc.HeavyBallODE(0, key=K, t1=1.0), ValueError, "`size` must be a positive int"),
    Case("SecondOrderODE.size=0", lambda: nc.SecondOrderODE(0, key=K, t1=1.0), ValueError, "`size` must be a positive int"),
    Case("LatentODE.data_size=0", lambda: nc.LatentODE(0, 2, key=K, t1=1.0), ValueError, "`data_size` must be a positive int"),
    Case("NeuralCDE.hidden_size=0", lambda: nc.NeuralCDE(2, 0, 1, key=K), ValueError, "`hidden_size` must be an integer >= 1"),
    Case("NeuralCDE(path channels)", lambda: nc.NeuralCDE(2, 3, 1, width_size=4, depth=1, key=K)(nc.control_path(jnp.linspace(0, 1, 4), jnp.zeros((4, 3)))), ValueError, "the path has 4 channels"),
    Case("control_path.values nan", lambda: nc.control_path(jnp.linspace(0, 1, 3), jnp.full((3, 2), NAN)), ValueError, "no observation"),
    Case("control_path.lengths", lambda: nc.control_path(jnp.linspace(0, 1, 3), jnp.zeros((4, 2))), ValueError, "one time per row"),
    Case("IrregularSeries.shapes", lambda: nc.IrregularSeries(jnp.zeros(3), jnp.zeros((4, 2)), jnp.ones((3, 2), bool)), ValueError, r"`times` must have shape \(N,\)"),
    Case("TimeGapRNN.hidden_size=0", lambda: nc.TimeGapRNN(2, 0, 1, key=K), ValueError, "`hidden_size` must be a positive int"),
    Case("union_grid(3)", lambda: nc.union_grid(3), ValueError, "non-empty list"),  # type: ignore[arg-type]
    Case("HamiltonianField.dim=0", lambda: nc.HamiltonianField(lambda q: q, 0), ValueError, "`dim` is the number of positions"),
    Case("SeparableHamiltonianField.mass<0", lambda: nc.SeparableHamiltonianField(lambda q: q, mass=-1.0, dim=1), ValueError, "`mass` must be a number > 0"),
    Case("SecondOrderField.size=0", lambda: nc.SecondOrderField(field(), 0), ValueError, "`size` must be a positive int"),
    Case("HeavyBallField.damping<0", lambda: nc.HeavyBallField(field(), 2, damping=-1.0), ValueError, "`damping` must be a number in"),
]

STOCHASTIC = [
    Case("LatentSDE.latent_size=0", lambda: ns.LatentSDE(2, 0, key=K, t1=1.0, dt0=0.1), ValueError, "latent_size"),
    Case("SDENet.sigma_max<0", lambda: ns.SDENet(2, 3, 4, width_size=4, sigma_max=-1.0, key=K), ValueError, "sigma_max"),
    Case("SDENet.steps=0", lambda: ns.SDENet(2, 3, 4, width_size=4, steps=0, key=K), ValueError, "steps"),
    Case("SDENet.num_classes=0", lambda: ns.SDENet(2, 0, 4, width_size=4, key=K), ValueError, "num_classes"),
    Case("SDEGenerator.dt0=0", lambda: ns.SDEGenerator(1, 2, 2, 4, t1=1.0, dt0=0.0, key=K), ValueError, "dt0"),
    Case("CDEDiscriminator.steps=0", lambda: ns.CDEDiscriminator(1, 4, steps=0, key=K), ValueError, "steps"),
    Case("LatentSDE.context_size=0", lambda: ns.LatentSDE(2, 2, 0, key=K, t1=1.0, dt0=0.1), ValueError, "`context_size` must be a positive int"),
    Case("SDENet.t1<0", lambda: ns.SDENet(2, 3, 4, width_size=4, t1=-1.0, key=K), ValueError, "`t1` must be a number > 0"),
    Case("SDENet(x width)", lambda: ns.SDENet(2, 3, 4, width_size=4, key=K)(jnp.ones(3), key=K), ValueError, "built with `input_size=2`"),
    Case("SDEGenerator.t1=0", lambda: ns.SDEGenerator(1, 2, 2, 4, t1=0.0, dt0=0.1, key=K), ValueError, "t1 > t0"),
    Case("SDEGenerator.noise_size=0", lambda: ns.SDEGenerator(1, 2, 0, 4, t1=1.0, dt0=0.1, key=K), ValueError, "`noise_size` must be an integer >= 1"),
    Case("DiagonalDiffusion.size=0", lambda: ns.DiagonalDiffusion(0, 4, key=K), ValueError, "`size` must be a positive int"),
    Case("sde_net_task_loss.label range", lambda: ns.sde_net_task_loss(ns.SDENet(2, 3, 4, width_size=4, key=K), jnp.ones(2), 7, key=K), ValueError, r"`label` must lie in \[0, 3\)"),
    Case("sde_net_task_loss.label float", lambda: ns.sde_net_task_loss(ns.SDENet(2, 3, 4, width_size=4, key=K), jnp.ones(2), 1.0, key=K), TypeError, "integer class index"),  # type: ignore[arg-type]
    Case("jit sde_net_loss.labels", lambda: ns.sde_net_loss(ns.SDENet(2, 3, 4, width_size=4, key=K), (jnp.ones((2, 2)), jnp.array([0, 5])), K), RUNTIME, r"`label` must lie in \[0, 3\)"),
    Case("make_gan_step.optim str", lambda: ns.make_gan_step("adam", "adam"), TypeError, "`generator_optim` must be an Optax transformation"),  # type: ignore[arg-type]
]

NOISE = [
    Case("additive.sigma<0", lambda: nn.additive(neurde.NeuralODE(linear(2), t1=1.0, dt0=0.1), -0.1), ValueError, "`sigma` must be a finite number >= 0"),
    Case("additive.sigma nan", lambda: nn.additive(neurde.NeuralODE(linear(2), t1=1.0, dt0=0.1), NAN), ValueError, "`sigma` must be a finite number >= 0"),
    Case("additive.model", lambda: nn.additive(3, 0.1), TypeError, "model"),
    Case("dropout_diffusion.p=1", lambda: nn.dropout_diffusion(neurde.NeuralODE(linear(2), t1=1.0, dt0=0.1), 1.0), ValueError, "`p` must lie strictly between 0 and 1"),
    Case("residual_dropout.p<0", lambda: nn.residual_dropout(stack(lambda k: linear(2)), -0.5), ValueError, "`p` must lie strictly between 0 and 1"),
    Case("stochastic_depth.survival_last", lambda: nn.stochastic_depth(stack(lambda k: linear(2)), 1.5), ValueError, "`survival_last` must lie strictly between 0 and 1"),
    Case("stochastic_depth.form", lambda: nn.stochastic_depth(stack(lambda k: linear(2)), 0.5, form="ode"), ValueError, "form"),  # type: ignore[arg-type]
    Case("steer.b<0", lambda: nn.steer(ode(), -0.1), ValueError, "`b`"),
    Case("steer.b too big", lambda: nn.steer(ode(), 1.5), ValueError, "`b`"),
    Case("rnode.kinetic=-1", lambda: nn.rnode(ode(), kinetic=-1.0), TypeError, "`kinetic` must be True or False"),
    Case("rnode.estimator", lambda: nn.rnode(ode(), jacobian=True, estimator="exactish"), ValueError, "estimator"),
    Case("MonteCarlo.num_samples=0", lambda: nn.MonteCarlo(ode(), 0), ValueError, "num_samples"),
    Case("additive(no key)", lambda: nn.additive(neurde.NeuralODE(linear(2), t1=1.0, dt0=0.25), 0.1)(jnp.ones(2)), ValueError, "key"),
    Case("multiplicative.sigma inf", lambda: nn.multiplicative(neurde.NeuralODE(linear(2), t1=1.0, dt0=0.1), INF), ValueError, "`sigma` must be a finite number >= 0"),
    Case("additive.schedule str", lambda: nn.additive(neurde.NeuralODE(linear(2), t1=1.0, dt0=0.1), 0.1, schedule="cosine"), TypeError, "`schedule` must be a function of time"),  # type: ignore[arg-type]
    Case("additive.where=3", lambda: nn.additive(ode(), 0.1, where=3), TypeError, "`where` must be a function"),  # type: ignore[arg-type]
    Case("inject.noises list of int", lambda: nn.inject(ode(), [3]), TypeError, "noises must be neurde.noise.AbstractNoise"),  # type: ignore[arg-type]
    Case("Additive.sigma<0", lambda: nn.Additive(-1.0), ValueError, "`sigma` must be a finite number >= 0"),  # type: ignore[arg-type]
    Case("DropoutDiffusion.p=0", lambda: nn.DropoutDiffusion(0.0), ValueError, "`p` must lie strictly between 0 and 1"),
    Case("ShakeDrop.alpha", lambda: nn.ShakeDrop(0.5, alpha=(1.0, -1.0)), ValueError, "`alpha` must be a range"),
    Case("StochasticDepth.survival_last=0", lambda: nn.StochasticDepth(0.0), ValueError, "`survival_last` must lie strictly between 0 and 1"),
    Case("StochasticEuler.depth=0", lambda: nn.StochasticEuler(0), ValueError, "`depth` must be an integer >= 1"),
    Case("MonteCarlo.num_samples float", lambda: nn.MonteCarlo(ode(), 2.5), TypeError, "`num_samples` must be an integer"),  # type: ignore[arg-type]
    Case("MonteCarlo.post=3", lambda: nn.MonteCarlo(ode(), 2, post=3), TypeError, "`post` must be a function"),  # type: ignore[arg-type]
    Case("MonteCarlo(no key)", lambda: nn.MonteCarlo(nn.additive(neurde.NeuralODE(linear(2), t1=1.0, dt0=0.25), 0.1), 2)(jnp.ones(2)), ValueError, "a `key` is needed"),
    Case("steer.b nan", lambda: nn.steer(ode(), NAN), ValueError, "`b` must satisfy"),
    Case("steer(no t1)", lambda: nn.steer(neurde.NeuralODE(field()), 0.1), ValueError, "no end time"),
    Case("shake_shake(no Branches)", lambda: nn.shake_shake(stack(lambda k: linear(2))), TypeError, "must be a `neurde.noise.Branches"),
    Case("shake_drop.form", lambda: nn.shake_drop(stack(lambda k: linear(2)), 0.5, form="x"), ValueError, "`form` must be"),  # type: ignore[arg-type]
    Case("residual_dropout(NeuralODE)", lambda: nn.residual_dropout(ode(), 0.5), TypeError, "cannot be applied to NeuralODE"),
    Case("regularize.branch=3", lambda: nn.regularize(stack(lambda k: linear(2)), 3), TypeError, "`branch` must be a branch regularizer"),  # type: ignore[arg-type]
    Case("rnode.probe", lambda: nn.rnode(ode(), jacobian=True, estimator="hutchinson", probe="uniform"), ValueError, "unknown `probe='uniform'`"),
    Case("rnode(ResidualStack)", lambda: nn.rnode(stack(lambda k: linear(2)), kinetic=True), TypeError, "cannot be applied to a ResidualStack"),
    Case("Branches(3, 3)", lambda: nn.Branches(3, 3), TypeError, "Expected a vector field"),  # type: ignore[arg-type]
]

DIFFUSION = [
    Case("VESDE.sigma_min>sigma_max", lambda: nd.VESDE(10.0, 1.0), ValueError, "sigma"),
    Case("VESDE.sigma_min<0", lambda: nd.VESDE(-1.0, 1.0), ValueError, "sigma_min"),
    Case("VPSDE.beta_min<0", lambda: nd.VPSDE(-0.1, 20.0), ValueError, "beta_min"),
    Case("VPSDE.beta nan", lambda: nd.VPSDE(0.1, NAN), ValueError, "beta_max"),
    Case("SubVPSDE.beta_min>beta_max", lambda: nd.SubVPSDE(20.0, 0.1), ValueError, "beta"),
    Case("Score.sde", lambda: nd.Score(field(), "vp"), TypeError, "`sde` must be a forward SDE"),  # type: ignore[arg-type]
    Case("Score.parameterization", lambda: nd.Score(field(), nd.VPSDE(), "x0"), ValueError, "`parameterization` must be"),  # type: ignore[arg-type]
    Case("GaussianScore.shapes", lambda: nd.GaussianScore(nd.VPSDE(), jnp.zeros(2), jnp.eye(3)), ValueError, r"shapes \(d,\) and \(d, d\)"),
    Case("GaussianScore.not symmetric", lambda: nd.GaussianScore(nd.VPSDE(), jnp.zeros(2), NOT_SYMMETRIC), ValueError, "`cov` must be symmetric"),
    Case("GaussianScore.indefinite", lambda: nd.GaussianScore(nd.VPSDE(), jnp.zeros(2), INDEFINITE), ValueError, "`cov` must be positive semi-definite"),
    Case("GaussianScore.nan", lambda: nd.GaussianScore(nd.VPSDE(), jnp.array([NAN, 0.0]), jnp.eye(2)), ValueError, "finite"),
    Case("GaussianScore.sde", lambda: nd.GaussianScore("vp", jnp.zeros(2), jnp.eye(2)), TypeError, "`sde` must be a forward SDE"),  # type: ignore[arg-type]
    Case("sample_from(score of another SDE)", lambda: nd.sample_from(nd.EulerMaruyama(4), gaussian(), nd.VESDE(), jnp.ones((2, 2)), key=K), ValueError, r"built for the forward SDE VPSDE.*sde=VESDE"),
    Case("sample(score, other VPSDE)", lambda: nd.sample(nd.EulerMaruyama(4), gaussian(), nd.VPSDE(0.1, 10.0), 2, (2,), key=K), ValueError, r"built for the forward SDE"),
    Case("log_likelihood(score of another SDE)", lambda: nd.log_likelihood(gaussian(), nd.SubVPSDE(), jnp.ones(2)), ValueError, "built for the forward SDE"),
    Case("dsm_loss(Score of another SDE)", lambda: nd.dsm_loss(nd.Score(field(), nd.VPSDE()), nd.VESDE(), jnp.ones((2, 2)), key=K), ValueError, "built for the forward SDE"),
    Case("ScoreMLP.size=0", lambda: nd.ScoreMLP(0, key=K), ValueError, "size"),
    Case("ScoreMLP.embedding", lambda: nd.ScoreMLP(2, embedding="learned", key=K), ValueError, "`kind` must be .*got 'learned'"),  # type: ignore[arg-type]
    Case("TimeEmbedding.size odd", lambda: nd.TimeEmbedding(3, key=K), ValueError, "size"),
    Case("TimeEmbedding.kind", lambda: nd.TimeEmbedding(4, "linear", key=K), ValueError, "kind"),  # type: ignore[arg-type]
    Case("sample_times.num=0", lambda: nd.sample_times(nd.VPSDE(), 0, key=K), ValueError, "num"),
    Case("sample_times.method", lambda: nd.sample_times(nd.VPSDE(), 4, method="sobol", key=K), ValueError, "method"),  # type: ignore[arg-type]
    Case("sample_times.eps=0", lambda: nd.sample_times(nd.VPSDE(), 4, eps=0.0, key=K), ValueError, "eps"),
    Case("ddpm_schedule.num_steps=1", lambda: nd.ddpm_schedule(nd.VPSDE(), 1), ValueError, "num_steps"),
    Case("ddpm_schedule.sde", lambda: nd.ddpm_schedule(nd.VESDE(), 10), TypeError, "sde"),  # type: ignore[arg-type]
    Case("bits_per_dim.dim=0", lambda: nd.bits_per_dim(jnp.array(-1.0), 0), ValueError, "dim"),
    Case("ema_update.decay>1", lambda: nd.ema_update(field(), field(), 1.5), ValueError, "decay"),
    Case("log_likelihood.eps=0", lambda: nd.log_likelihood(gaussian(), nd.VPSDE(), jnp.ones(2), eps=0.0), ValueError, "eps"),
    Case("log_likelihood.rtol<0", lambda: nd.log_likelihood(gaussian(), nd.VPSDE(), jnp.ones(2), rtol=-1.0), ValueError, "rtol"),
    Case("log_likelihood.estimator", lambda: nd.log_likelihood(gaussian(), nd.VPSDE(), jnp.ones(2), estimator="trace"), ValueError, "estimator"),  # type: ignore[arg-type]
    Case("log_likelihood.hutchinson no key", lambda: nd.log_likelihood(gaussian(), nd.VPSDE(), jnp.ones(2), estimator="hutchinson"), ValueError, "key"),
    Case("log_likelihood.x int", lambda: nd.log_likelihood(gaussian(), nd.VPSDE(), jnp.ones(2, int)), TypeError, "floating"),
    Case("dsm_loss.x0 1-D", lambda: nd.dsm_loss(field(), nd.VPSDE(), jnp.ones(2), key=K), ValueError, "batch"),
    Case("dsm_loss.weighting", lambda: nd.dsm_loss(field(), nd.VPSDE(), jnp.ones((2, 2)), weighting="snr", key=K), ValueError, "weighting"),  # type: ignore[arg-type]
    Case("DSMLoss.time_sampling", lambda: nd.DSMLoss(nd.VPSDE(), time_sampling="sobol"), ValueError, "time_sampling"),  # type: ignore[arg-type]
    Case("denoising_score_matching.t=0", lambda: nd.denoising_score_matching(field(), nd.VPSDE(), jnp.ones(2), 0.0, key=K), ValueError, r"`t` must lie in \(0, 1\]"),
    Case("reverse_drift.sde", lambda: nd.reverse_drift("vp", gaussian(), 0.5, jnp.ones(2)), TypeError, "sde"),  # type: ignore[arg-type]
    Case("probability_flow_drift.sde", lambda: nd.probability_flow_drift(3, gaussian(), 0.5, jnp.ones(2)), TypeError, "`sde` must be a forward SDE"),  # type: ignore[arg-type]
    Case("VESDE.sigma nan", lambda: nd.VESDE(NAN, 1.0), ValueError, "0 < sigma_min < sigma_max"),
    Case("VESDE.sigma str", lambda: nd.VESDE("a", 1.0), ValueError, "0 < sigma_min < sigma_max"),  # type: ignore[arg-type]
    Case("VESDE.sigma_max inf", lambda: nd.VESDE(0.01, INF), ValueError, "0 < sigma_min < sigma_max"),
    Case("VPSDE.beta_max inf", lambda: nd.VPSDE(0.1, INF), ValueError, "0 < beta_min < beta_max"),
    Case("VPSDE.sample_prior shape", lambda: nd.VPSDE().sample_prior(K, (-1,)), ValueError, "`shape` must be a tuple of non-negative integers"),
    Case("VPSDE.sample_prior dtype", lambda: nd.VPSDE().sample_prior(K, (2,), jnp.int32), TypeError, "`dtype` must be floating"),
    Case("Score.model=3", lambda: nd.Score(3, nd.VPSDE()), TypeError, "`model` must be callable"),  # type: ignore[arg-type]
    Case("Score(t=0)", lambda: nd.Score(field(), nd.VPSDE())(0.0, jnp.ones(2)), ValueError, r"`t` must lie in \(0, 1\]"),
    Case("ScoreMLP.width_size=0", lambda: nd.ScoreMLP(2, 0, key=K), ValueError, "`width_size` must be an integer >= 1"),
    Case("ScoreMLP.depth=-1", lambda: nd.ScoreMLP(2, 4, -1, key=K), ValueError, "`depth` must be an integer >= 0"),
    Case("ScoreMLP.embedding_size odd", lambda: nd.ScoreMLP(2, embedding_size=3, key=K), ValueError, "`size` must be an even integer"),
    Case("ScoreMLP(x width)", lambda: nd.ScoreMLP(2, 4, 1, key=K)(0.5, jnp.ones(3)), ValueError, r"must have shape \(2,\)"),
    Case("ScoreConvNet.channels=0", lambda: nd.ScoreConvNet(0, key=K), ValueError, "`channels` must be an integer >= 1"),
    Case("respaced_betas.decreasing", lambda: nd.respaced_betas(nd.VPSDE(), jnp.array([0.5, 0.1])), ValueError, "strictly increasing"),
    Case("respaced_betas.sde", lambda: nd.respaced_betas(nd.VESDE(), jnp.array([0.1, 0.5])), TypeError, "`sde` must be a VPSDE"),  # type: ignore[arg-type]
    Case("ddpm_schedule.num_steps float", lambda: nd.ddpm_schedule(nd.VPSDE(), 10.5), ValueError, "`num_steps` must be an integer"),  # type: ignore[arg-type]
    Case("bits_per_dim.bin_width=0", lambda: nd.bits_per_dim(-1.0, 2, 0.0), ValueError, "`bin_width` must be > 0"),
    Case("bits_per_dim.dim float", lambda: nd.bits_per_dim(-1.0, 2.5), ValueError, "`dim` must be an integer >= 1"),  # type: ignore[arg-type]
    Case("ema_update.decay nan", lambda: nd.ema_update(field(), field(), NAN), ValueError, r"`decay` must lie in \[0, 1\]"),
    Case("ema_update.structure", lambda: nd.ema_update(field(), neurde.MLPField(3, 4, 1, key=K), 0.9), ValueError, "must have the structure"),
    Case("log_likelihood.num_probes=0", lambda: nd.log_likelihood(gaussian(), nd.VPSDE(), jnp.ones(2), estimator="hutchinson", num_probes=0, key=K), ValueError, "`num_probes` must be an integer >= 1"),
    Case("log_likelihood.probe", lambda: nd.log_likelihood(gaussian(), nd.VPSDE(), jnp.ones(2), estimator="hutchinson", probe="x", key=K), ValueError, "`probe` must be"),  # type: ignore[arg-type]
    Case("log_likelihood.solver str", lambda: nd.log_likelihood(gaussian(), nd.VPSDE(), jnp.ones(2), solver="tsit5"), TypeError, "`solver` must be a Diffrax solver"),  # type: ignore[arg-type]
    Case("log_likelihood.max_steps=0", lambda: nd.log_likelihood(gaussian(), nd.VPSDE(), jnp.ones(2), max_steps=0), ValueError, "`max_steps` must be an integer >= 1"),
    Case("log_likelihood.x nan", lambda: nd.log_likelihood(gaussian(), nd.VPSDE(), jnp.array([NAN, 1.0])), ValueError, "NaN or inf"),
    Case("log_likelihood.x width", lambda: nd.log_likelihood(gaussian(), nd.VPSDE(), jnp.ones(3)), ValueError, r"one example of shape \(3,\) failed"),
    Case("log_likelihood.bin_width<0", lambda: nd.log_likelihood(gaussian(), nd.VPSDE(), jnp.ones(2), bin_width=-1.0), ValueError, "log_likelihood: `bin_width` must be > 0"),
    Case("dsm_loss.x0 nan", lambda: nd.dsm_loss(field(), nd.VPSDE(), jnp.full((2, 2), NAN), key=K), ValueError, "`x0` contains NaN or inf"),
    Case("jit dsm_loss.x0 nan", lambda: eqx.filter_jit(nd.dsm_loss)(field(), nd.VPSDE(), jnp.full((2, 2), NAN), key=K), RUNTIME, "`x0` contains NaN or inf"),
    Case("dsm_loss.x0 int", lambda: nd.dsm_loss(field(), nd.VPSDE(), jnp.ones((2, 2), int), key=K), TypeError, "`x0` must be floating"),
    Case("dsm_loss.key=None", lambda: nd.dsm_loss(field(), nd.VPSDE(), jnp.ones((2, 2)), key=None), TypeError, "`key` must be one JAX PRNG key"),  # type: ignore[arg-type]
    Case("dsm_loss.eps=2", lambda: nd.dsm_loss(field(), nd.VPSDE(), jnp.ones((2, 2)), eps=2.0, key=K), ValueError, r"`eps` .* must be a float in \(0, 1\)"),
    Case("dsm_loss.importance+score", lambda: nd.dsm_loss(field(), nd.VPSDE(), jnp.ones((2, 2)), time_sampling="importance", key=K), ValueError, "`weighting` must be 'likelihood'"),
    Case("DSMLoss.eps=0", lambda: nd.DSMLoss(nd.VPSDE(), eps=0.0), ValueError, "`eps`"),
    Case("denoising_score_matching.x0 int", lambda: nd.denoising_score_matching(field(), nd.VPSDE(), jnp.ones(2, int), 0.5, key=K), TypeError, "`x0` must be floating"),
]

DATA = [
    Case("spiral.n_trajectories=0", lambda: nda.spiral(0, key=K), ValueError, "n_trajectories"),
    Case("spiral.n_times=1.5", lambda: nda.spiral(4, 1.5, key=K), TypeError, "`n_times` must be a Python integer"),  # type: ignore[arg-type]
    Case("spiral.t1<0", lambda: nda.spiral(4, t1=-1.0, key=K), ValueError, "t1"),
    Case("spiral.noise<0", lambda: nda.spiral(4, noise=-0.1, key=K), ValueError, "noise"),
    Case("spiral.noise nan", lambda: nda.spiral(4, noise=NAN, key=K), ValueError, "noise"),
    Case("spiral.dtype int", lambda: nda.spiral(4, dtype=jnp.int32, key=K), TypeError, "dtype"),
    Case("spiral.key=None", lambda: nda.spiral(4, key=None), TypeError, "`key` must be a single JAX PRNG key"),  # type: ignore[arg-type]
    Case("spiral.key=3", lambda: nda.spiral(4, key=3), TypeError, "`key` must be a single JAX PRNG key"),  # type: ignore[arg-type]
    Case("spiral.radius order", lambda: nda.spiral(4, min_radius=2.0, max_radius=1.0, key=K), ValueError, "radius"),
    Case("oscillator.damping<0", lambda: nda.oscillator(4, damping=-1.0, key=K), ValueError, "damping"),
    Case("lotka_volterra.alpha=0", lambda: nda.lotka_volterra(4, alpha=0.0, key=K), ValueError, "alpha"),
    Case("ornstein_uhlenbeck.sigma<0", lambda: nda.ornstein_uhlenbeck(4, sigma=-1.0, key=K), ValueError, "sigma"),
    Case("ornstein_uhlenbeck.dim=0", lambda: nda.ornstein_uhlenbeck(4, dim=0, key=K), ValueError, "dim"),
    Case("mass_spring.mass=0", lambda: nda.mass_spring(4, mass=0.0, key=K), ValueError, "mass"),
    Case("pendulum.length<0", lambda: nda.pendulum(4, length=-1.0, key=K), ValueError, "length"),
    Case("concentric_annuli.radii", lambda: nda.concentric_annuli(4, 4, radii=(1.0, 0.5, 2.0), key=K), ValueError, "radii"),
    Case("two_moons.n=0", lambda: nda.two_moons(0, key=K), ValueError, "`n`"),
    Case("eight_gaussians.std<0", lambda: nda.eight_gaussians(4, std=-1.0, key=K), ValueError, "std"),
    Case("checkerboard.key", lambda: nda.checkerboard(4, key="k"), TypeError, "`key` must be a single JAX PRNG key"),  # type: ignore[arg-type]
    Case("periodic.keep_prob>1", lambda: nda.periodic(4, keep_prob=1.5, key=K), ValueError, "keep_prob"),
    Case("random_mask.keep_prob<0", lambda: nda.random_mask((4, 3), -0.1, key=K), ValueError, "keep_prob"),
    Case("minibatches.batch_size=0", lambda: next(nda.minibatches(jnp.zeros((4, 2)), 0, key=K)), ValueError, "batch_size"),
    Case("minibatches.lengths", lambda: next(nda.minibatches((jnp.zeros((4, 2)), jnp.zeros(3)), 2, key=K)), ValueError, "leading"),
    Case("masked_mse.mask dtype", lambda: nda.masked_mse(jnp.zeros((3, 2)), jnp.zeros((3, 2)), jnp.ones(3)), TypeError, "mask"),
    Case("digits.test_fraction", lambda: nda.digits(test_fraction=1.5), ValueError, "test_fraction"),
    Case("mnist1d.train_split", lambda: nda.mnist1d(num_samples=10, train_split=0.0), ValueError, "train_split"),
    Case("spiral_directions.drop", lambda: nda.spiral_directions(4, 4, drop=1.0, key=K), ValueError, "drop"),
    Case("data_cross_entropy.name", lambda: nda.data_cross_entropy("spiral", n=4, key=K), ValueError, "unknown density 'spiral'"),
    Case("spiral.n_times=1", lambda: nda.spiral(4, 1, key=K), ValueError, "`n_times` must be >= 2"),
    Case("spiral.t1 nan", lambda: nda.spiral(4, t1=NAN, key=K), ValueError, "`t1` must be finite"),
    Case("oscillator.frequency=0", lambda: nda.oscillator(4, frequency=0.0, key=K), ValueError, "`frequency` must be > 0"),
    Case("oscillator.nonlinear str", lambda: nda.oscillator(4, nonlinear="yes", key=K), TypeError, "`nonlinear` must be a Python bool"),  # type: ignore[arg-type]
    Case("lotka_volterra.noise inf", lambda: nda.lotka_volterra(4, noise=INF, key=K), ValueError, "`noise` must be finite"),
    Case("ornstein_uhlenbeck.x0 shape", lambda: nda.ornstein_uhlenbeck(4, x0=jnp.ones(3), dim=2, key=K), ValueError, r"`x0` must be a number or have shape \(2,\)"),
    Case("ornstein_uhlenbeck.theta<0", lambda: nda.ornstein_uhlenbeck(4, theta=-1.0, key=K), ValueError, "`theta` must be > 0"),
    Case("mass_spring.radius order", lambda: nda.mass_spring(4, radius=(2.0, 1.0), key=K), ValueError, "radius"),
    Case("pendulum.gravity nan", lambda: nda.pendulum(4, gravity=NAN, key=K), ValueError, "`gravity` must be finite"),
    Case("concentric_annuli.dim=0", lambda: nda.concentric_annuli(4, 4, dim=0, key=K), ValueError, "`dim` must be >= 1"),
    Case("concentric_annuli.n_train=0", lambda: nda.concentric_annuli(0, 4, key=K), ValueError, "`n_train` must be >= 2"),
    Case("checkerboard.n=0", lambda: nda.checkerboard(0, key=K), ValueError, "`n` must be an integer >= 1"),
    Case("two_moons.noise<0", lambda: nda.two_moons(4, noise=-1.0, key=K), ValueError, "`noise` must be a finite number >= 0"),
    Case("checkerboard_log_prob.x shape", lambda: nda.checkerboard_log_prob(jnp.ones(3)), ValueError, "last axis of size 2"),
    Case("two_moons_log_prob.noise<0", lambda: nda.two_moons_log_prob(jnp.ones((2, 2)), noise=-1.0), ValueError, "`noise` must be a finite number > 0"),
    Case("two_moons_log_prob.panels=0", lambda: nda.two_moons_log_prob(jnp.ones((2, 2)), panels=0), ValueError, "`panels` must be an integer >= 1"),
    Case("eight_gaussians_log_prob.std=0", lambda: nda.eight_gaussians_log_prob(jnp.ones((2, 2)), std=0.0), ValueError, "`std` must be a finite number > 0"),
    Case("ou_variance.theta=0", lambda: nda.ou_variance(1.0, 0.0, 1.0), ValueError, "`theta` .* must be > 0"),
    Case("mass_spring_energy.y shape", lambda: nda.mass_spring_energy(jnp.ones(3)), ValueError, "last axis of size 2"),
    Case("pendulum_energy.y shape", lambda: nda.pendulum_energy(jnp.ones(3)), ValueError, "last axis of size 2"),
    Case("spiral_field.y shape", lambda: nda.spiral_field(0.0, jnp.ones(3), None), ValueError, "last axis of size 2"),
    Case("oscillator_field.y shape", lambda: nda.oscillator_field(0.0, jnp.ones(3), (1.0, 0.1, False)), ValueError, "last axis of size 2"),
    Case("lotka_volterra_field.y shape", lambda: nda.lotka_volterra_field(0.0, jnp.ones(3), (1.0, 1.0, 1.0, 1.0)), ValueError, "last axis of size 2"),
    Case("digits.seed<0", lambda: nda.digits(seed=-1), ValueError, "`seed` must be >= 0"),
    Case("digits.image str", lambda: nda.digits(image="yes"), TypeError, "`image` must be `True`"),  # type: ignore[arg-type]
    Case("mnist1d.num_samples=0", lambda: nda.mnist1d(num_samples=0), ValueError, "`num_samples` must be >= 10"),
    Case("periodic.times=1", lambda: nda.periodic(4, times=1, key=K), ValueError, "`times` must be >= 2"),
    Case("periodic.frequency order", lambda: nda.periodic(4, frequency=(1.0, 0.5), key=K), ValueError, "low <= high"),
    Case("irregular.keep_prob=0", lambda: nda.irregular(nda.Trajectories(jnp.linspace(0, 1, 3), jnp.zeros((2, 3, 1))), 0.0, key=K), ValueError, r"`keep_prob` must lie in \(0, 1\]"),
    Case("irregular.traj", lambda: nda.irregular(3, 0.5, key=K), TypeError, "`traj` must be a `neurde.data.Trajectories`"),  # type: ignore[arg-type]
    Case("random_mask.shape<0", lambda: nda.random_mask((-1,), 0.5, key=K), ValueError, "`shape` must be a tuple"),
    Case("minibatches.batch_size>n", lambda: next(nda.minibatches(jnp.zeros((4, 2)), 8, key=K)), ValueError, "at most the number of examples"),
    Case("minibatches.key=None", lambda: next(nda.minibatches(jnp.zeros((4, 2)), 2, key=None)), TypeError, "`key` must be a single JAX PRNG key"),  # type: ignore[arg-type]
    Case("Trajectories.ys shape", lambda: nda.Trajectories(jnp.zeros(3), jnp.zeros((2, 4, 1)), jnp.zeros((2, 4, 1))), ValueError, "to match `ts`"),
    Case("spiral_directions.length=1", lambda: nda.spiral_directions(4, 4, length=1, key=K), ValueError, "`length` must be >= 3"),
]

# fmt: on

CASES = CORE + DISCRETE + CONTINUOUS + STOCHASTIC + NOISE + DIFFUSION + DATA


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_invalid_argument(case: Case):
    with pytest.raises(case.exception, match=case.match):
        jax.block_until_ready(case.call())


def test_case_ids_are_unique():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))


def test_mixed_precision_promotes_to_the_field_dtype():
    # float32 `y0`/`ts` with a float64 field (x64 on) used to fail inside Diffrax
    # (`buffer.at[i].set`); the state is promoted to the field's dtype, as Diffrax promotes
    # it to the dtype of the times.
    with jax.enable_x64(True):
        matrix = jnp.array([[-0.5, 1.0], [-1.0, -0.5]], jnp.float64)
        model = neurde.NeuralODE(neurde.LinearField(matrix), t1=1.0, rtol=1e-10, atol=1e-12)
        ts = jnp.linspace(0.0, 1.0, 3)
        y0 = jnp.array([1.0, 0.5])
        ys = model(y0.astype(jnp.float32), ts.astype(jnp.float32))
        assert ys.dtype == jnp.float64
        exact = jnp.stack([jax.scipy.linalg.expm(matrix * t) @ y0 for t in ts])
        np.testing.assert_allclose(ys, exact, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize(
    "generate",
    [
        lambda: nda.spiral(2, 3, t1=0.5, key=K).ys,
        lambda: nda.ornstein_uhlenbeck(2, 3, key=K).ys,
        lambda: nda.concentric_annuli(2, 2, key=K).x_train,
        lambda: nda.two_moons(2, key=K),
    ],
    ids=["spiral", "ornstein_uhlenbeck", "concentric_annuli", "two_moons"],
)
def test_data_default_dtype_under_x64(generate):
    # Traced abstractly (`eval_shape`): the dtype without compiling the generators.
    with jax.enable_x64(True):
        assert jax.eval_shape(generate).dtype == jnp.float64
    assert jax.eval_shape(generate).dtype == jnp.float32


def _callbacks(jaxpr: Any, in_loop: bool = False) -> tuple[int, int]:
    """Number of callbacks (`eqx.error_if` lowers to one) outside and inside `while` loops."""
    outside = inside = 0
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "pure_callback":
            inside, outside = (inside + 1, outside) if in_loop else (inside, outside + 1)
        loop = in_loop or eqn.primitive.name == "while"
        for value in eqn.params.values():
            for sub in value if isinstance(value, tuple | list) else (value,):
                sub = getattr(sub, "jaxpr", sub)
                if hasattr(sub, "eqns"):
                    o, i = _callbacks(sub, loop)
                    outside, inside = outside + o, inside + i
    return outside, inside


def test_run_time_checks_run_once_per_solve(monkeypatch):
    # The checks of traced tolerances sit before the solver's loop: one `error_if` each per
    # solve, nothing per step. Compare the solve's jaxpr with the checks and without them.
    import neurde._solve

    model = neurde.NeuralODE(field(), t1=1.0)

    def callbacks() -> tuple[int, int]:
        return _callbacks(eqx.filter_make_jaxpr(lambda m, y0: m(y0))(model, jnp.ones(2))[0].jaxpr)

    one_check = _callbacks(jax.make_jaxpr(lambda x: eqx.error_if(x, x < 0, "m"))(1.0).jaxpr)[0]
    with_checks = callbacks()
    monkeypatch.setattr(neurde._solve, "guard_tolerances", lambda owner, c: c)
    without = callbacks()
    assert with_checks[0] == without[0] + 2 * one_check  # rtol and atol, outside the loop
    assert with_checks[1] == without[1]  # nothing inside it
