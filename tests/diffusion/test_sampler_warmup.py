"""The start of the multistep samplers: the lower-order warm-up and `warmup="singlestep"`.

A multistep method of order p has no history at its first step, so the reference codes take
it at a lower order. One step of local error O(h^2) costs a whole order globally: DPM-Solver++
3M, DPM-Solver-3M and DEIS-3 are then second order, UniPC-3 third. On the standard VP SDE
(beta_max = 20) that step sits at alpha_T = 0.007, where the predictions barely move, and its
error shows only past thousands of steps (3M: slope 4 at 40-160 steps, 2.3 at 320-640). On a
VP SDE with beta_max = 2 (alpha_T = 0.59) it shows at once, so the orders are measured there,
at 40, 80, 160 steps, float64, max error over 16 paths against the exact flow of Gaussian
data. Observed slopes (singlestep / lower-order warm-up): DPM-Solver++ 3M 2.95 / 2.03,
DPM-Solver-3M 2.97 / 1.98, DEIS-3 2.93 / 2.03, UniPC-3 3.91 / 3.07.
"""

import functools

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from conftest import fitted_order
from test_samplers import counting, exact_flow, gaussian

import neurde.diffusion as nd
from neurde.diffusion.samplers._exponential import singlestep
from neurde.diffusion.samplers._fixed_grid import BatchedScore

SHORT_VP = nd.VPSDE(beta_max=2.0)
SS, LOW = "singlestep", "lower_order"
EXPENSIVE = pytest.mark.expensive


@functools.cache
def _noise64():
    with jax.enable_x64(True):
        return jr.normal(jr.key(3), (16, 2), jnp.float64)


def _global_slope(make, steps=(40, 80, 160)):
    with jax.enable_x64(True):
        sde, x_T = SHORT_VP, _noise64()
        errors = []
        for n in steps:
            sampler, calls = make(n), []
            score = counting(gaussian(sde, jnp.float64), calls)
            xs, nfe = nd.sample_from(sampler, score, sde, x_T)
            jax.effects_barrier()
            # The reported NFE is what the score saw, and the documented count.
            assert int(nfe) == len(calls) == sampler.nfe(), (int(nfe), len(calls))
            errors.append(np.max(np.abs(np.asarray(xs) - exact_flow(sde, x_T, sampler.eps))))
    return -fitted_order(steps, errors), errors


LOG = "logsnr"
CASES = [
    # (name, make(steps, warmup), order with the singlestep start, with the lower-order one,
    #  extra NFE of the singlestep start)
    ("DPM-Solver++ 3M", lambda n, w: nd.DPMSolverPP(n, solver="3M", time_grid=LOG, warmup=w),
     3, 2, 1),
    ("DPM-Solver-3M", lambda n, w: nd.DPMSolverMultistep(n, order=3, time_grid=LOG, warmup=w),
     3, 2, 1),
    ("DEIS-3", lambda n, w: nd.DEIS(n, order=3, warmup=w), 3, 2, 1),
    # UniPC-3's own order is 4 (p + 1); its UniPC-1 first step (local O(h^3)) bounds it by 3,
    # its third-order singlestep start (two extra evaluations) does not.
    ("UniPC-3", lambda n, w: nd.UniPC(n, order=3, warmup=w), 4, 3, 2),
]  # fmt: skip
DEFAULT = {("DPM-Solver++ 3M", SS), ("DPM-Solver++ 3M", LOW), ("DPM-Solver-3M", SS)}
# DEIS-3's singlestep start is DPM-Solver-3M's (noise prediction converted to data
# prediction); test_singlestep_start_is_the_singlestep_step checks it exactly.
SLOW = {("UniPC-3", SS)}


def _marks(name, warmup):
    if (name, warmup) in DEFAULT:
        return ()
    return pytest.mark.slow if (name, warmup) in SLOW else EXPENSIVE


@pytest.mark.parametrize(
    ("name", "make", "order", "warmup"),
    [
        pytest.param(name, make, high if w == SS else low, w,
                     marks=_marks(name, w), id=f"{name}-{w}")
        for name, make, high, low, _ in CASES
        for w in (SS, LOW)
    ],
)  # fmt: skip
def test_global_order_with_each_warmup(name, make, order, warmup):
    observed, errors = _global_slope(lambda n: make(n, warmup))
    assert abs(observed - order) < 0.3, (name, warmup, observed, errors)


def test_singlestep_warmup_costs_its_stages_in_nfe():
    for _, make, _, _, extra in CASES:
        assert make(12, SS).nfe() == 12 + extra
        assert make(12, LOW).nfe() == 12


@pytest.mark.parametrize(("order", "expected"), [(2, 3), (3, 4)])
def test_singlestep_step_has_local_order_plus_one(order, expected):
    # One step from the exact state at lambda = 0 to lambda = h (VP), h = 0.2, 0.1, 0.05.
    # Observed local slopes 3.0 (order 2) and 4.0 (order 3).
    hs = [0.2, 0.1, 0.05]
    errors = []
    with jax.enable_x64(True):
        sde, x_T = nd.VPSDE(), _noise64()
        score = BatchedScore(lambda t, x, args: gaussian(sde, jnp.float64)(t, x), sde, None)
        for h in hs:
            s, t = sde.time_from_log_snr(jnp.asarray([0.0, h]))
            x_s = jnp.asarray(exact_flow(sde, x_T, float(s)))
            x0_s = (x_s + sde.std(s) ** 2 * score(s, x_s)) / sde.mean_coeff(s)
            x_t = singlestep(score, x_s, s, t, x0_s, order)
            errors.append(np.max(np.abs(np.asarray(x_t) - exact_flow(sde, x_T, float(t)))))
    assert abs(fitted_order(hs, errors) - expected) < 0.3, (order, errors)


def test_singlestep_start_is_the_singlestep_step():
    # With one step, each sampler's run is exactly its singlestep start: DPM-Solver++ 2S
    # (r = 1/2) for the order-3 multistep solvers, the 3S step for UniPC-3.
    with jax.enable_x64(True):
        sde, x_T = SHORT_VP, _noise64()
        score = BatchedScore(lambda t, x, args: gaussian(sde, jnp.float64)(t, x), sde, None)
        T, eps = jnp.asarray(sde.T, jnp.float64), jnp.asarray(1e-3, jnp.float64)
        x0_T = (x_T + sde.std(T) ** 2 * score(T, x_T)) / sde.mean_coeff(T)
        for _, make, _, _, extra in CASES:
            xs, _ = nd.sample_from(make(1, SS), score.score_fn, sde, x_T)
            expected = singlestep(score, x_T, T, eps, x0_T, extra + 1)
            np.testing.assert_allclose(xs, expected, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: nd.UniPC(8, order=3, warmup="fast"),  # pyright: ignore[reportArgumentType]
         r"UniPC: `warmup` must be 'lower_order' \(.*\) or 'singlestep' \(.*\), got 'fast'"),
        (lambda: nd.DPMSolverPP(8, solver="2M", warmup=SS),
         r"DPMSolverPP: `warmup='singlestep'` applies only where .* Leave `warmup`"),
        (lambda: nd.DEIS(8, order=2, warmup=SS), r"DEIS: `warmup='singlestep'` applies only"),
        (lambda: nd.DPMSolverMultistep(8, order=2, warmup=SS),
         r"DPMSolverMultistep: `warmup='singlestep'` applies only"),
    ],
)  # fmt: skip
def test_bad_warmup_is_rejected_with_the_fix(make, match):
    with pytest.raises(ValueError, match=match):
        make()
