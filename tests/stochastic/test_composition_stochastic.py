"""The stochastic family joins the composition matrix.

`LatentSDE`, `SDENet` and the SDE-GAN's `SDEGenerator` are wrappers (`neurde.AbstractWrapper`)
around the `neurde.NeuralSDE` they hold as `model`, so the documented meaning of a
regularizer transform applied to one of them is the transform applied to that inner SDE:
`T(M)` equals `M` with `M.model` replaced by `T(M.model)`, for every continuous transform on
each model, the ordered pairs on SDE-Net (see `CASES` for the few left out for time) and
triples; `MonteCarlo` and `eqx.nn.inference_mode` act on the outside as on any model.
Noise added to the SDE joins its diffusion (summed in variance for the diagonal noise of
the latent SDE and SDE-Net, extra columns for the general noise of the generator).
Two refusals, each with a message that names the fix:

- the residual-branch regularizers need a discrete stack (`TypeError`, as on any continuous
  model);
- STEER draws a random end time and returns the state there alone, but a latent SDE and a
  generator report a path at save times `ts`: the first call raises STEER's `ValueError`.
  SDE-Net reads the end state only, so STEER applies to it.

Beyond the matrix, the tests check what the wrappers mean numerically: `MonteCarlo` is the
mean of single draws, inference mode switches added noise off, and `MonteCarlo` switches it
back on. The models run eagerly (`jax.disable_jit`), as in the main matrix.
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

from neurde import continuous, noise
from neurde.stochastic import LatentSDE, SDEGenerator, SDENet

T, DT, B, MC = 0.3, 0.1, 0.1, 2
CONTINUOUS = CONTINUOUS_TRANSFORMS
NOISE = ("additive", "multiplicative", "dropout_diffusion")
BRANCH = ("residual_dropout", "stochastic_depth", "shake_shake", "shake_drop")
TRANSFORMS = (*CONTINUOUS, *BRANCH, "monte_carlo", "inference_mode")
TS = jnp.array([0.0, 0.1, 0.3])
KEY = jr.key(4)
SERIES = continuous.IrregularSeries(
    TS, jnp.array([[0.5], [-0.2], [0.1]]), jnp.array([[1], [0], [1]])
)
MODELS = ("latent_sde", "sde_net", "generator")
# The models that report a path at save times, where a random end time has no meaning.
PATH_MODELS = ("latent_sde", "generator")


def build(name: str) -> tuple[Any, Any, Any]:
    """A tiny model of the family, its input and its save times."""
    key = jr.key(0)
    if name == "latent_sde":
        return LatentSDE(1, 1, 2, 4, width_size=4, key=key, dt0=DT, t1=T), SERIES, TS
    if name == "sde_net":
        # An input whose hidden state keeps ReLU units of the head active on every path, so
        # that the logits see the noise.
        model = SDENet(2, 3, 4, width_size=4, t1=T, steps=3, key=key)
        return model, jnp.array([-1.0, 0.8]), None
    return SDEGenerator(1, 2, 2, 3, t1=T, dt0=DT, width_size=4, key=key), None, TS


def _solve(model: Any, x: Any, ts: Any, key: Any = KEY) -> Any:
    with jax.disable_jit():
        return model.solve(x, ts, key=key)


def _close(got: Any, want: Any) -> None:
    assert set(got.extras) == set(want.extras)
    for k in want.extras:
        np.testing.assert_allclose(got.extras[k], want.extras[k], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.ys, want.ys, rtol=1e-5, atol=1e-6)


PAIRS = [p for p in itertools.product((*CONTINUOUS, "inference_mode"), repeat=2)]
PAIRS = [p for p in PAIRS if p.count("steer") < 2 and p.count("rnode") < 2]
# STEER over an SDE samples a virtual Brownian tree and the generator's reversible Heun
# solve is long, seconds per eager solve each: to keep the file within its budget, STEER
# meets noise on SDE-Net in one pair (STEER and noise in both orders, and STEER with RNODE,
# are checked on the continuous family) and the generator's added noise accumulates in its
# general diffusion in one pair. `MonteCarlo` alone is checked against single draws below.
CASES: list[Any] = [(m, (t,)) for m in MODELS for t in TRANSFORMS if t != "monte_carlo"]
CASES += [("sde_net", p) for p in PAIRS if "steer" not in p or "inference_mode" in p]
CASES += [("sde_net", ("additive", "steer"))]
CASES += [("generator", ("multiplicative", "additive"))]
CASES += [(m, ("rnode", "additive", "monte_carlo")) for m in ("latent_sde", "sde_net")]
CASES += [(m, ("multiplicative", "rnode", "inference_mode")) for m in PATH_MODELS]
CASES += [(m, ("additive", "steer")) for m in PATH_MODELS]


def _id(value: Any) -> str:
    return value if isinstance(value, str) else "-".join(value)


@pytest.mark.parametrize(("name", "names"), CASES, ids=_id)
def test_stochastic_composition(name, names):
    base, x, ts = build(name)
    model = base
    for transform_name in names:
        if transform_name in BRANCH:
            with pytest.raises(TypeError, match="randomizes the residual branches"):
                transform(transform_name, model)
            return
        model = transform(transform_name, model)
    if name in PATH_MODELS and "steer" in names:
        with pytest.raises(ValueError, match=r"`ts` must be None.*cannot hold a STEER"):
            _solve(model, x, ts)
        return
    got, want = _solve(model, x, ts), _solve(reference(base, names), x, ts)
    _close(got, want)
    if any(n in NOISE for n in names) and ("inference_mode" not in names or "monte_carlo" in names):
        # The noise is really on: the noisy model differs from the plain one.
        assert not np.allclose(got.ys, _solve(base, x, ts).ys)


@pytest.mark.parametrize("name", MODELS)
def test_monte_carlo_is_the_mean_of_single_draws(name):
    # MonteCarlo(M, n) with key k averages M over the keys jr.split(k, n), extras included,
    # whatever transform M carries.
    base, x, ts = build(name)
    model = noise.additive(base, 0.2)
    key, n = jr.key(5), MC
    got = _solve(noise.MonteCarlo(model, n), x, ts, key)
    draws = [_solve(model, x, ts, k) for k in jr.split(key, n)]
    np.testing.assert_allclose(got.ys, np.mean([d.ys for d in draws], 0), rtol=1e-5, atol=1e-6)
    for k in got.extras:
        want = np.mean([d.extras[k] for d in draws], 0)
        np.testing.assert_allclose(got.extras[k], want, rtol=1e-5, atol=1e-6)
    assert not np.allclose(draws[0].ys, draws[1].ys)


@pytest.mark.parametrize("name", MODELS)
def test_inference_mode_switches_added_noise_off_and_monte_carlo_on(name):
    base, x, ts = build(name)
    plain = _solve(eqx.nn.inference_mode(base), x, ts, None).ys
    # The generator's solves are long: one noise, and MonteCarlo on the other two models.
    for noise_name in NOISE if name != "generator" else ("additive",):
        model = eqx.nn.inference_mode(transform(noise_name, base))
        # No noise left: no key needed, the same output as the plain model without noise.
        np.testing.assert_allclose(_solve(model, x, ts, None).ys, plain, rtol=1e-6, atol=1e-7)
    if name == "generator":
        return
    # MonteCarlo runs its model with the noise on, whatever inference mode says outside.
    noisy = transform("multiplicative", base)
    on = _solve(noise.MonteCarlo(eqx.nn.inference_mode(noisy), MC), x, ts)
    _close(on, _solve(noise.MonteCarlo(noisy, MC), x, ts))
    assert not np.allclose(on.ys, plain)


def test_steer_without_an_end_time_is_refused_at_construction():
    model = LatentSDE(1, 1, 2, 4, width_size=4, key=jr.key(0), dt0=DT)
    with pytest.raises(ValueError, match=r"STEER: the wrapped model has no end time"):
        noise.steer(model, B)
