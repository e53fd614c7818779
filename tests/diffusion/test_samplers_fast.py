"""DPM-Solver++, UniPC, DEIS, Restart and EDM churn on the exact score of Gaussian data.

Data N(MEAN, COV) in 2-D (tests/diffusion/test_samplers.py): the exact score is
`GaussianScore` and the probability-flow map from T is closed-form (`exact_flow`). Orders are
measured twice: the local error of one step given exact history (the formula's own order,
p + 1), and the global error of a whole run (what the warm-up leaves of it).
"""

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from conftest import central_differences, fitted_order
from test_samplers import COV, MEAN, counting, exact_flow, gaussian

import neurde.diffusion as nd
from neurde.diffusion.samplers._exponential import dpmpp_coefficients
from neurde.diffusion.samplers.deis import _deis_coefficients
from neurde.diffusion.samplers.unipc import _unipc_tables

VP, VE = nd.VPSDE(), nd.VESDE()
SLOW = pytest.mark.slow


@functools.cache
def _noise64():
    with jax.enable_x64(True):
        return jr.normal(jr.key(3), (16, 2), jnp.float64)


# --- local order: one step from exact states -------------------------------------------------


def _exact_states(sde, ts):
    return [jnp.asarray(exact_flow(sde, _noise64(), float(t))) for t in ts]


def _x0(score, sde, t, x):
    return (x + sde.std(t) ** 2 * jax.vmap(score, (None, 0))(t, x)) / sde.mean_coeff(t)


def _eps(score, sde, t, x):
    return -sde.std(t) * jax.vmap(score, (None, 0))(t, x)


def _local_error(kind, order, h):
    # Times t_{i-2}, t_{i-1}, t_i, t_{i+1} at lambda = -2h, -h, 0, h (VP); the step from t_i
    # starts from the exact state with exact history, so its error is the local error.
    sde = VP
    score = gaussian(sde, jnp.float64)
    ts = sde.time_from_log_snr(jnp.asarray([-2 * h, -h, 0.0, h]))
    xs = _exact_states(sde, ts)
    exact = xs[3]
    if kind == "deis":
        a, c = _deis_coefficients(sde, ts, order)
        ms = [_eps(score, sde, ts[k], xs[k]) for k in (2, 1, 0)]
        return np.max(np.abs(a[2] * xs[2] + sum(c[2, k] * ms[k] for k in range(3)) - exact))
    ms = [_x0(score, sde, ts[k], xs[k]) for k in (2, 1, 0)]
    if kind == "dpmpp":
        a, c, _ = dpmpp_coefficients(sde, ts, order, False)
        return np.max(np.abs(a[2] * xs[2] + sum(c[2, k] * ms[k] for k in range(3)) - exact))
    a, pred, corr = _unipc_tables(sde, ts, order, kind)
    x_pred = a[2] * xs[2] + sum(pred[2, k] * ms[k] for k in range(3))
    m_new = _x0(score, sde, ts[3], x_pred)
    corrected = a[2] * xs[2] + sum(corr[2, k] * m for k, m in enumerate([m_new, *ms]))
    return np.max(np.abs(corrected - exact)), np.max(np.abs(x_pred - exact))


LOCAL_CASES = [
    # (name, kind, order, local order of the returned error(s))
    ("DPM-Solver++ 2M", "dpmpp", 2, 3),
    ("DPM-Solver++ 3M", "dpmpp", 3, 4),
    ("DEIS-2", "deis", 2, 3),
    ("DEIS-3", "deis", 3, 4),
    ("UniPC-1 bh1", "bh1", 1, (3, 2)),  # (corrected: UniC raises the order by one, UniP)
    ("UniPC-2 bh1", "bh1", 2, (4, 3)),
    ("UniPC-2 bh2", "bh2", 2, (4, 3)),
    ("UniPC-3 bh1", "bh1", 3, (5, 4)),
    ("UniPC-3 bh2", "bh2", 3, (5, 4)),
]


@pytest.mark.parametrize(
    ("name", "kind", "order", "expected"), LOCAL_CASES, ids=[c[0] for c in LOCAL_CASES]
)
def test_local_error_of_one_step_has_the_formula_order(name, kind, order, expected):
    # h = 0.2, 0.1, 0.05 in log-SNR around lambda = 0 (t ~ 0.26 on VP). Observed slopes: 2M
    # 3.0, 3M 4.0, DEIS 3.0 / 4.0, UniPC corrected 3.0, 4.0, 5.0 and predicted 2.0, 3.0, 4.0.
    hs = [0.2, 0.1, 0.05]
    with jax.enable_x64(True):
        errors = [_local_error(kind, order, h) for h in hs]
    expected = expected if isinstance(expected, tuple) else (expected,)
    for k, p in enumerate(expected):
        errs = [e[k] if isinstance(e, tuple) else e for e in errors]
        assert abs(fitted_order(hs, errs) - p) < 0.3, (name, k, fitted_order(hs, errs), errs)


# --- global order and NFE --------------------------------------------------------------------

LOG = "logsnr"
ONE, TWO = (lambda n: n), (lambda n: 2 * n)  # NFE of n steps
GLOBAL_CASES = [
    # Observed slopes at 40, 80, 160 steps on a log-SNR grid (VP, max error over 16 paths):
    # 2S 1.98, 2M 1.99, UniPC-1 2.08/1.99, UniPC-2 3.05/2.98, DEIS-2 1.94, DEIS-3 2.94,
    # Restart(K=0) 2.17. The third-order multistep methods (DPM-Solver++ 3M, DEIS-3, UniPC-3)
    # are limited by their lower-order first step, which on this SDE shows only past hundreds
    # of steps; their orders with each start are measured in test_sampler_warmup.py.
    ("DPM-Solver++ 2M", lambda n: nd.DPMSolverPP(n, solver="2M", time_grid=LOG), 2, ONE),
    pytest.param(
        "DPM-Solver++ 2S",
        lambda n: nd.DPMSolverPP(n, solver="2S", time_grid=LOG),
        2,
        TWO,
        marks=SLOW,
    ),
    # UniPC-p: order p + 1 for p <= 2 (UniPC-1's warm-up step is already O(h^3) locally).
    ("UniPC-2 bh2", lambda n: nd.UniPC(n, order=2), 3, ONE),
    pytest.param("UniPC-2 bh1", lambda n: nd.UniPC(n, order=2, variant="bh1"), 3, ONE, marks=SLOW),
    pytest.param("UniPC-1 bh2", lambda n: nd.UniPC(n, order=1), 2, ONE, marks=SLOW),
    pytest.param("DEIS-2", lambda n: nd.DEIS(n, order=2), 2, ONE, marks=SLOW),
    pytest.param(
        "Restart K=0", lambda n: nd.Restart(n, restarts=0), 2, lambda n: 2 * n - 1, marks=SLOW
    ),
]


@pytest.mark.parametrize(
    ("name", "make", "order", "expected_nfe"),
    GLOBAL_CASES,
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_global_order_and_counted_nfe(name, make, order, expected_nfe):
    steps = [40, 80, 160]
    with jax.enable_x64(True):
        sde = VP
        errors = []
        for n in steps:
            sampler, calls = make(n), []
            score = counting(gaussian(sde, jnp.float64), calls)
            xs, nfe = nd.sample_from(sampler, score, sde, _noise64())
            jax.effects_barrier()
            # The reported NFE is the number of batched evaluations the score saw.
            assert int(nfe) == len(calls) == expected_nfe(n)
            t_end = 0.0 if isinstance(sampler, nd.Restart) else sampler.eps
            errors.append(np.max(np.abs(np.asarray(xs) - exact_flow(sde, _noise64(), t_end))))
    observed = -fitted_order(steps, errors)
    assert abs(observed - order) < 0.3, (name, observed, errors)


# --- stochastic samplers: moments, NFE, the Brownian path --------------------------------------

N_SAMPLES = 4000
SDE_CASES = [
    # (sde, sampler, bias allowance at this NFE)
    (VP, nd.DPMSolverPPSDE(30, order=2), 0.03),
    pytest.param(VP, nd.DPMSolverPPSDE(30, order=3), 0.03, marks=SLOW),
    pytest.param(VE, nd.DPMSolverPPSDE(30, order=3), 0.04, marks=SLOW),
    (VP, nd.Restart(18), 0.05),
    pytest.param(VP, nd.EDMHeun(40, churn=10.0, s_tmin=0.05, s_tmax=50.0), 0.05, marks=SLOW),
]


@pytest.mark.parametrize(("sde", "sampler", "bias"), SDE_CASES, ids=lambda v: type(v).__name__)
def test_stochastic_samplers_match_the_data_moments_and_count_nfe(sde, sampler, bias):
    calls = []
    score = counting(gaussian(sde), calls)
    xs, nfe = nd.sample(sampler, score, sde, N_SAMPLES, (2,), key=jr.key(0))
    jax.effects_barrier()
    assert int(nfe) == len(calls) == sampler.nfe()
    xs = np.asarray(xs, np.float64)
    # 4 standard errors of the sample mean and covariance plus `bias` (discretization, and
    # for VE the N(0, 50^2) prior).
    se_mean = np.sqrt(np.diag(COV) / N_SAMPLES)
    se_cov = np.sqrt((np.outer(np.diag(COV), np.diag(COV)) + COV**2) / N_SAMPLES)
    np.testing.assert_array_less(np.abs(xs.mean(0) - MEAN), 4 * se_mean + bias)
    np.testing.assert_array_less(np.abs(np.cov(xs.T) - COV), 4 * se_cov + bias)


def test_restart_counts_its_evaluations():
    sampler = nd.Restart(10, restart_steps=4, restarts=3)
    assert sampler.nfe() == 2 * 10 - 1 + 2 * 3 * 4


def test_brownian_increments_agree_across_step_counts():
    # The same key, grids of 8 and 32 log-SNR-uniform steps (the coarse times are among the
    # fine ones): the increment W(u_b) - W(u_a) over every coarse step is the sum of the fine
    # ones; a different key gives an independent path.
    with jax.enable_x64(True):
        sde, key, shape = VP, jr.key(7), (64, 2)
        noise = eqx.filter_jit(nd.brownian_noise)

        def increments(n, key):
            ts = nd.time_grid(sde, n, "logsnr", eps=1e-3, dtype=jnp.float64)
            lams = np.asarray(sde.log_snr(ts))
            du = np.diff((lams - lams[0]) / (lams[-1] - lams[0]))
            z = np.asarray(noise(sde, ts, shape, key, eps=1e-3, dtype=jnp.float64))
            return z * np.sqrt(du)[:, None, None], z

        coarse, z = increments(8, key)
        fine, _ = increments(32, key)
        other, _ = increments(8, jr.key(8))
    np.testing.assert_allclose(fine.reshape(8, 4, *shape).sum(1), coarse, atol=1e-12)
    # The sampler seeds the path with the first of `jr.split(key, steps)`: the same key for
    # every step count.
    first = [np.asarray(jr.key_data(jr.split(key, n)[0])) for n in (8, 32)]
    np.testing.assert_array_equal(first[0], first[1])
    # The draws are standard normal: 8 * 128 values, mean and variance within 4 SE.
    assert abs(z.mean()) < 4 / np.sqrt(z.size) and abs(z.var() - 1) < 4 * np.sqrt(2 / z.size)
    assert np.max(np.abs(other - coarse)) > 0.1


@SLOW
def test_sde_samples_converge_pathwise_with_the_same_key():
    # One Brownian path for every step count: the samples of 20 and 40 steps approach those
    # of 160 (observed max distances 0.20 and 0.09: strong order about 1), where fresh noise
    # per run would keep them O(1) apart (the distance to a run with another key: 2.8).
    sde = VP
    with jax.enable_x64(True):
        score = gaussian(sde, jnp.float64)
        x_T = _noise64()
        runs = {
            n: np.asarray(nd.sample_from(nd.DPMSolverPPSDE(n, time_grid=LOG), score, sde,
                                         x_T, key=jr.key(1))[0])
            for n in (20, 40, 160)
        }  # fmt: skip
        other = nd.sample_from(nd.DPMSolverPPSDE(160, time_grid=LOG), score, sde, x_T,
                               key=jr.key(2))[0]  # fmt: skip
    d20, d40 = (np.max(np.abs(runs[n] - runs[160])) for n in (20, 40))
    d_other = np.max(np.abs(np.asarray(other) - runs[160]))
    assert d40 < 0.7 * d20 and d20 < 0.2 * d_other, (d20, d40, d_other)


# --- exact identities, gradients, errors ------------------------------------------------------


def test_deis_1_is_ddim_and_restart_without_restarts_is_edm_heun():
    with jax.enable_x64(True):
        sde, x_T = VP, _noise64()
        score = gaussian(sde, jnp.float64)
        a, _ = nd.sample_from(nd.DEIS(12, order=1), score, sde, x_T)
        b, _ = nd.sample_from(nd.DDIM(12, time_grid=LOG), score, sde, x_T)
        c, nfe_c = nd.sample_from(nd.Restart(12, restarts=0), score, sde, x_T)
        d, nfe_d = nd.sample_from(nd.EDMHeun(12), score, sde, x_T)
    np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(c, d, rtol=1e-12, atol=1e-12)
    assert int(nfe_c) == int(nfe_d) == 23


def test_edm_churn_applies_only_inside_its_noise_range():
    # VP levels run from 152 down to 0.01: a churn range above them adds exactly no noise
    # (Algorithm 2's gamma_i = 0 outside [S_tmin, S_tmax]); one over the middle levels does.
    # Exactly: the noise std was once a difference of squares, which XLA's FMA contraction
    # left at sqrt(ulp(sigma^2)), 0.04 at sigma = 152 in float32 (samples off by 8e-4).
    sde, x_T = VP, jr.normal(jr.key(0), (64, 2))
    score, key = gaussian(sde), jr.key(1)
    plain, _ = nd.sample_from(nd.EDMHeun(8), score, sde, x_T)
    above = nd.EDMHeun(8, churn=5.0, s_tmin=1e3, s_tmax=1e4)
    inside = nd.EDMHeun(8, churn=5.0, s_tmin=0.1, s_tmax=10.0)
    a, _ = nd.sample_from(above, score, sde, x_T, key=key)
    b, _ = nd.sample_from(inside, score, sde, x_T, key=key)
    np.testing.assert_array_equal(a, plain)
    assert np.max(np.abs(np.asarray(b) - np.asarray(plain))) > 0.05


def test_gradient_through_unipc_matches_finite_differences():
    with jax.enable_x64(True):
        sde = VP
        score = gaussian(sde, jnp.float64)
        sampler = nd.UniPC(6, order=3)
        x_T = _noise64()[:2]

        def loss(x):
            xs, _ = nd.sample_from(sampler, score, sde, x.reshape(2, 2))
            return jnp.sum(xs**2)

        grad = np.asarray(jax.grad(loss)(x_T.reshape(-1)))
        fd = central_differences(loss, x_T.reshape(-1))
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: nd.DPMSolverPP(10, solver="1M"), "DPMSolverPP: `solver` must be '2S'"),  # pyright: ignore[reportArgumentType]
        (lambda: nd.DPMSolverPPSDE(10, order=1), "DPMSolverPPSDE: `order` must be 2 or 3, got 1"),  # pyright: ignore[reportArgumentType]
        (lambda: nd.DPMSolverPPSDE(10, s_noise=0.0), "DPMSolverPPSDE: `s_noise` must be > 0"),
        (lambda: nd.UniPC(10, order=4), "UniPC: `order` must be 1, 2 or 3, got 4"),  # pyright: ignore[reportArgumentType]
        (lambda: nd.UniPC(10, variant="bh3"), "UniPC: `variant` must be 'bh1'"),  # pyright: ignore[reportArgumentType]
        (lambda: nd.DEIS(10, order=0), "DEIS: `order` must be 1, 2 or 3, got 0"),  # pyright: ignore[reportArgumentType]
        (lambda: nd.Restart(10, t_min=0.5, t_max=0.3), "Restart: `t_min` must be < `t_max`"),
        (lambda: nd.Restart(1), "Restart: `steps` must be an integer >= 2, got 1"),
        (lambda: nd.Restart(10, restarts=-1), "Restart: `restarts` must be an integer >= 0"),
        (lambda: nd.EDMHeun(10, churn=5.0, s_tmin=2.0, s_tmax=1.0), "`s_tmin` must be <= `s_tmax`"),
        (lambda: nd.EDMHeun(10, s_tmin=-1.0), "EDMHeun: `s_tmin` must be >= 0"),
    ],
)
def test_bad_arguments_are_rejected_with_the_fix(make, match):
    with pytest.raises(ValueError, match=match):
        make()
