"""The continuous family joins the composition matrix.

Every model of `neurde.continuous` holds its differential equation as a continuous model
(`model`), and the documented meaning of a regularizer transform applied to it is the same
transform applied to that inner model: `T(M)` equals `M` with `M.model` replaced by
`T(M.model)`, for every transform and for ordered pairs and a triple; `MonteCarlo` and
`eqx.nn.inference_mode` act on the outside as on any model. The semantics of the transforms
on a `NeuralODE` itself are checked against hand-written references in
tests/test_composition.py; the residual-branch regularizers, which need a discrete stack, are
refused with the same `TypeError` as on any continuous model.

The models run eagerly (`jax.disable_jit`), as in the main matrix: each composition is a new
program, and running a tiny one op by op is cheaper than compiling it.
"""

import itertools
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from conftest import CONTINUOUS_TRANSFORMS, reference, transform

import neurde
from neurde import continuous

T, DT = 0.3, 0.1
CONTINUOUS = CONTINUOUS_TRANSFORMS
BRANCH = ("residual_dropout", "stochastic_depth", "shake_shake", "shake_drop")
TRANSFORMS = (*CONTINUOUS, *BRANCH, "monte_carlo", "inference_mode")
SOLVE = {"solver": neurde.RK4(), "dt0": DT}
SERIES = continuous.IrregularSeries(
    jnp.array([0.0, 0.1, 0.3]), jnp.array([[0.5], [-0.2], [0.1]]), jnp.array([[1], [0], [1]])
)


def _field(size: int, key: Any) -> neurde.MLPField:
    return neurde.MLPField(size, 8, 1, activation=jnp.tanh, time_dependent=True, key=key)


def build(name: str) -> tuple[Any, Any, Any]:
    """A tiny model of the family, its input and its save times."""
    key = jr.key(0)
    x = jnp.array([0.5, -0.4])
    if name == "augmented":
        model = continuous.AugmentedODE(2, 2, width_size=8, depth=1, key=key, t1=T, **SOLVE)
        return model, x, None
    if name == "second_order":
        model = continuous.SecondOrderODE(2, width_size=8, depth=1, key=key, t1=T, **SOLVE)
        return model, x, None
    if name == "heavy_ball":
        model = continuous.HeavyBallODE(2, width_size=8, depth=1, key=key, t1=T, **SOLVE)
        return model, x, None
    if name == "hamiltonian":
        model = continuous.HamiltonianNN(1, width_size=8, depth=1, key=key, t1=T, **SOLVE)
        return model, x, None
    if name == "cnf":
        model = continuous.CNF(_field(2, key), t1=T, **SOLVE)
        return model, x, None
    if name == "ode_rnn":
        model = continuous.ODERNN(1, 2, 1, width_size=8, key=key, **SOLVE)
        return model, SERIES, None
    if name == "latent_ode":
        model = continuous.LatentODE(1, 2, 3, width_size=8, key=key, **SOLVE)
        return model, SERIES, jnp.array([0.2, 0.5])
    model = continuous.NeuralCDE(1, 2, 2, width_size=8, depth=1, key=key, dt0=0.25)
    model = eqx.tree_at(lambda m: m.model.solver, model, neurde.RK4())
    return model, (SERIES.times, SERIES.values[:, 0:1]), None


MODELS = (
    "augmented",
    "second_order",
    "heavy_ball",
    "hamiltonian",
    "cnf",
    "ode_rnn",
    "latent_ode",
    "cde",
)


PAIRS = [p for p in itertools.product((*CONTINUOUS, "inference_mode"), repeat=2)]
PAIRS = [p for p in PAIRS if p.count("steer") < 2 and p.count("rnode") < 2]
# The series models scan a solve per observation interval, which is slow to run op by op.
SERIES_MODELS = ("ode_rnn", "latent_ode")
CASES = [(m, (t,)) for m in MODELS for t in TRANSFORMS]
# Every ordered pair on a wrapper of a NeuralODE and on the CNF (which changes the problem
# of the model it holds); triples on the others.
CASES += [(m, p) for m in MODELS for p in PAIRS if m in ("augmented", "cnf")]
CASES += [(m, ("rnode", "additive", "monte_carlo")) for m in MODELS if m != "ode_rnn"]
CASES += [(m, ("additive", "steer", "rnode")) for m in MODELS if m not in SERIES_MODELS]
CASES += [("ode_rnn", ("steer", "multiplicative", "inference_mode"))]


def _id(value: Any) -> str:
    return value if isinstance(value, str) else "-".join(value)


@pytest.mark.parametrize(("name", "names"), CASES, ids=_id)
def test_family_composition(name, names):
    base, x, ts = build(name)
    model = base
    for transform_name in names:
        if name == "latent_ode" and transform_name == "steer":
            # Its latent ODE ends at the last prediction time: no end time to perturb.
            with pytest.raises(ValueError, match=r"no end time .*LatentODE"):
                transform(transform_name, model)
            return
        if transform_name in BRANCH:
            with pytest.raises(TypeError, match="randomizes the residual branches"):
                transform(transform_name, model)
            return
        model = transform(transform_name, model)
    want_model = reference(base, names)
    key = jr.key(3)
    with jax.disable_jit():
        got = model.solve(x, ts, key=key)
        want = want_model.solve(x, ts, key=key)
    assert set(got.extras) == set(want.extras)
    for k in want.extras:
        np.testing.assert_allclose(got.extras[k], want.extras[k], rtol=1e-5, atol=1e-6)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), got.ys, want.ys
    )
    if any(n in names for n in ("additive", "multiplicative", "dropout_diffusion")) and (
        "inference_mode" not in names or "monte_carlo" in names
    ):
        # The noise is really on: the noisy model differs from the plain one.
        with jax.disable_jit():
            plain = base.solve(x, ts, key=key)
        assert not all(
            np.allclose(a, b)
            for a, b in zip(jax.tree.leaves(got.ys), jax.tree.leaves(plain.ys), strict=True)
        )
