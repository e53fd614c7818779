"""Samplers of `neurde.diffusion`: sample quality against NFE, and throughput over a `lax.scan`.

(1) Quality vs NFE with the exact score of 2-D Gaussian data N(m, S) under the VP SDE: the
    error of the samples' mean and covariance, max |mean - m| + max |cov - S|, for every
    sampler at about 10, 20, 30, 50, 100 and 1000 score evaluations, all from the same prior
    draws. The line after the table gives, per sampler, the fewest NFE on the grid whose
    error is within 1.5x that of 1000-step Euler–Maruyama (the reference accuracy; with
    200k samples it sits near the sampling noise floor, printed too).
(2) Throughput: samples per second for a batch of 1024 at 20 NFE with a score network
    (`ScoreMLP(2, 128, 3)`, noise parameterization), `neurde.diffusion.sample_from` vs the
    same sampler written directly as a jitted `lax.scan`, for DDIM, DPM-Solver-2 and
    Euler–Maruyama. Outputs are checked equal before timing.
(3) Exact measures on Gaussian mixtures (`neurde.diffusion.GaussianMixtureScore`, VP SDE,
    float64): every sampler that `neurde run samplers` knows (all of `neurde.diffusion`'s),
    at NFE 5, 10, 20, 50, on a 2-D and a 16-D mixture, from the same prior draws: the RMS
    error against the exact probability-flow map of the same draws (deterministic samplers)
    and the sliced Wasserstein-2 distance to data draws (all). Then each gridded
    deterministic sampler on each fixed grid (uniform in t, log-SNR, Karras, uniform in
    t^(1/4)) at NFE 5 and at NFE 10, and the best of them with a grid fitted by
    `fit_time_grid`. The acceptance lines of issue 16 compare, on the 16-D mixture, the best
    fixed grid and the best fitted grid at NFE 10 with DPM-Solver-2M at NFE 20 on its default
    (Karras) grid, and the fitted grid at NFE 5 with the best fixed one. A work-precision plot
    goes to runs/benchmarks/diffusion_samplers_mixtures.png. `--quick`: the 16-D mixture
    only, NFE 5, 10, 20, 1000 draws, 100 fitting steps.

Run: `python benchmarks/diffusion_samplers.py [--quick]` (with neurde importable).
"""

import pathlib
import statistics
from collections.abc import Callable
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from _common import interleaved_times, median_ratio, parse_args, print_table, ratio_line
from jaxtyping import Array

import neurde.diffusion as nd
from neurde.experiments import samplers_mixture as mixture_study
from neurde.experiments.report import pyplot
from neurde.experiments.samplers import GRIDDED, SAMPLERS, make_sampler

MEAN = np.array([0.5, -0.3])
COV = np.array([[1.0, 0.6], [0.6, 0.8]])
NFE_GRID = [10, 20, 30, 50, 100, 1000]


def samplers_at(nfe: int) -> dict[str, nd.AbstractSampler]:
    """Each sampler with the step count that spends about `nfe` score evaluations."""
    return {
        "Euler–Maruyama": nd.EulerMaruyama(nfe),
        "Ancestral (DDPM)": nd.Ancestral(nfe),
        "Predictor–corrector": nd.PredictorCorrector(max(nfe // 2, 1)),
        "DDIM": nd.DDIM(nfe),
        "DPM-Solver-2": nd.DPMSolver(max(nfe // 2, 1), order=2),
        "DPM-Solver-3": nd.DPMSolver(max(nfe // 3, 1), order=3),
        "DPM-Solver-2M (multistep)": nd.DPMSolverMultistep(nfe, order=2),
        "DPM-Solver-3M (multistep)": nd.DPMSolverMultistep(nfe, order=3),
        "EDM Heun": nd.EDMHeun(max((nfe + 1) // 2, 1)),
    }


def moment_error(xs: Any) -> float:
    x = np.asarray(xs, np.float64)
    return float(np.max(np.abs(x.mean(0) - MEAN)) + np.max(np.abs(np.cov(x.T) - COV)))


def quality(num_samples: int, grid: list[int]) -> None:
    sde = nd.VPSDE()
    score = nd.GaussianScore(sde, jnp.asarray(MEAN, jnp.float32), jnp.asarray(COV, jnp.float32))
    x_T = sde.sample_prior(jr.key(0), (num_samples, 2))
    reference_samples = (
        MEAN + np.asarray(jr.normal(jr.key(9), (num_samples, 2))) @ np.linalg.cholesky(COV).T
    )
    floor = moment_error(reference_samples)
    table: dict[str, list[tuple[int, float]]] = {}
    for nfe in grid:
        for name, sampler in samplers_at(nfe).items():
            xs, used = nd.sample_from(sampler, score, sde, x_T, key=jr.key(1))
            table.setdefault(name, []).append((int(used), moment_error(xs)))
    flow = []
    for tol in (1e-2, 1e-3, 1e-4, 1e-5):
        xs, used = nd.sample_from(nd.ProbabilityFlow(rtol=tol, atol=tol), score, sde, x_T)
        flow.append((int(used), moment_error(xs)))
    table["Probability flow (Tsit5, rtol=atol=1e-2..1e-5)"] = flow

    print(f"\n(1) moment error vs NFE, exact score, VP SDE, {num_samples} samples")
    print(f"    sampling-noise floor (exact samples of N(m, S)): {floor:.4f}")
    for name, row in table.items():
        cells = "  ".join(f"{nfe:>4d}:{err:.4f}" for nfe, err in row)
        print(f"  {name:<48} {cells}")
    target = dict(table["Euler–Maruyama"])[1000] if 1000 in grid else floor
    print(f"\n  reference: Euler–Maruyama at 1000 steps, error {target:.4f}; within 1.5x:")
    for name, row in table.items():
        hits = [nfe for nfe, err in row if err <= 1.5 * target]
        print(f"    {name:<48} {min(hits) if hits else 'not on this grid'}")


# ---------------------------------------------------------------------------------------
# (2) throughput: hand-written lax.scan samplers for the VP SDE and a noise-predicting net.


def vp_coefficients(sde: nd.VPSDE, ts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    integral = sde.beta_min * ts + 0.5 * (sde.beta_max - sde.beta_min) * ts**2
    return np.exp(-0.5 * integral), np.sqrt(-np.expm1(-integral))


def scan_ddim(net: Any, sde: nd.VPSDE, x_T: Array, steps: int, eps: float) -> Array:
    ts = np.linspace(1.0, eps, steps + 1)
    alpha, sigma = vp_coefficients(sde, ts)
    coeffs = jnp.asarray(np.stack([ts[:-1], alpha[:-1], sigma[:-1], alpha[1:], sigma[1:]], 1))

    def step(x: Array, c: Array) -> tuple[Array, None]:
        t, a_t, s_t, a_s, s_s = c
        noise = jax.vmap(net, in_axes=(None, 0))(t, x)
        return a_s * (x - s_t * noise) / a_t + s_s * noise, None

    return jax.lax.scan(step, x_T, coeffs.astype(x_T.dtype))[0]


def scan_dpm2(net: Any, sde: nd.VPSDE, x_T: Array, steps: int, eps: float) -> Array:
    lam = lambda t: np.log(vp_coefficients(sde, t)[0] / vp_coefficients(sde, t)[1])  # noqa: E731
    lams = np.linspace(lam(np.array(1.0)), lam(np.array(eps)), steps + 1)
    lam_mid = 0.5 * (lams[:-1] + lams[1:])

    def t_of(lmb: np.ndarray) -> np.ndarray:
        integral = np.log1p(np.exp(-2 * lmb))
        root = np.sqrt(sde.beta_min**2 + 2 * (sde.beta_max - sde.beta_min) * integral)
        return 2 * integral / (sde.beta_min + root)

    ts, mids = t_of(lams), t_of(lam_mid)
    ts[0], ts[-1] = 1.0, eps
    a, s = vp_coefficients(sde, ts)
    am, sm = vp_coefficients(sde, mids)
    h = np.diff(lams)
    rows = [ts[:-1], mids, a[:-1], am, sm, a[1:], s[1:], h]
    coeffs = jnp.asarray(np.stack(rows, 1))

    def step(x: Array, c: Array) -> tuple[Array, None]:
        t, tm, a_t, a_m, s_m, a_n, s_n, hh = c
        e0 = jax.vmap(net, in_axes=(None, 0))(t, x)
        u = a_m / a_t * x - s_m * jnp.expm1(0.5 * hh) * e0
        e1 = jax.vmap(net, in_axes=(None, 0))(tm, u)
        # Lu et al. 2022, Algorithm 1 with r1 = 1/2: sigma_t / (2 r1) = sigma_t.
        return a_n / a_t * x - s_n * jnp.expm1(hh) * (e0 + (e1 - e0)), None

    return jax.lax.scan(step, x_T, coeffs.astype(x_T.dtype))[0]


def scan_euler_maruyama(
    net: Any, sde: nd.VPSDE, x_T: Array, steps: int, eps: float, key: Any
) -> Array:
    ts = np.linspace(1.0, eps, steps + 1)
    dt = ts[:-1] - ts[1:]
    beta = sde.beta_min + ts[:-1] * (sde.beta_max - sde.beta_min)
    _, sigma = vp_coefficients(sde, ts[:-1])
    on = (np.arange(steps) < steps - 1).astype(np.float64)
    coeffs = jnp.asarray(np.stack([ts[:-1], dt, beta, sigma, on], 1)).astype(x_T.dtype)

    def step(x: Array, inputs: Any) -> tuple[Array, None]:
        (t, d, b, s, o), k = inputs
        score = -jax.vmap(net, in_axes=(None, 0))(t, x) / s
        drift = -0.5 * b * x - b * score
        z = jr.normal(k, x.shape, x.dtype)
        return x - drift * d + o * jnp.sqrt(b) * jnp.sqrt(d) * z, None

    return jax.lax.scan(step, x_T, (coeffs, jr.split(key, steps)))[0]


def throughput(batch: int, nfe: int, repeats: int) -> dict[str, float]:
    sde = nd.VPSDE()
    net = nd.ScoreMLP(2, 128, 3, key=jr.key(0))
    score = nd.Score(net, sde, "noise")
    x_T = sde.sample_prior(jr.key(1), (batch, 2))
    key = jr.key(2)
    eps = 1e-3

    cases: dict[str, tuple[nd.AbstractSampler, Callable[..., Array]]] = {
        "DDIM": (
            nd.DDIM(nfe, time_grid="uniform"),
            eqx.filter_jit(lambda n, x: scan_ddim(n, sde, x, nfe, eps)),
        ),
        "DPM-Solver-2": (
            nd.DPMSolver(nfe // 2, order=2),
            eqx.filter_jit(lambda n, x: scan_dpm2(n, sde, x, nfe // 2, eps)),
        ),
        "Euler–Maruyama": (
            nd.EulerMaruyama(nfe),
            eqx.filter_jit(lambda n, x: scan_euler_maruyama(n, sde, x, nfe, eps, key)),
        ),
    }
    ratios = {}
    print(f"\n(2) throughput: batch {batch}, {nfe} NFE, ScoreMLP(2, 128, 3)")
    for name, (sampler, by_hand) in cases.items():
        ours = lambda sampler=sampler: nd.sample_from(sampler, score, sde, x_T, key=key)[0]  # noqa: E731
        hand = lambda by_hand=by_hand: by_hand(net, x_T)  # noqa: E731
        a, b = np.asarray(ours()), np.asarray(hand())
        diff = float(np.max(np.abs(a - b)) / np.max(np.abs(b)))
        print(f"  {name}: max relative difference of the samples {diff:.1e}")
        if diff > 1e-4:
            raise SystemExit(f"{name}: neurde and the lax.scan loop disagree; timing is moot.")
        scan_name, our_name = f"{name}: lax.scan by hand", f"{name}: neurde.diffusion.sample_from"
        times = interleaved_times({scan_name: hand, our_name: ours}, repeats)
        print_table(f"{name}, samples/s = {batch} / time", times, scan_name)
        for label in (scan_name, our_name):
            rate = batch / statistics.median(times[label])
            print(f"    {label:<46} {rate:>12,.0f} samples/s")
        ratios[name] = median_ratio(times, our_name, scan_name)
    return ratios


def mixtures(quick: bool) -> dict[str, tuple[float, str]]:
    """Section (3); returns issue 16's acceptance ratios on the 16-D mixture, with targets."""
    targets = ("16d",) if quick else mixture_study.MIXTURES
    nfes = (5, 10, 20) if quick else (5, 10, 20, 50)
    samples, iterations = (1000, 100) if quick else (4000, 300)
    stepped = {n: (lambda nfe, i, n=n: make_sampler(n, nfe, i)) for n in SAMPLERS}
    results, ratios = {}, {}
    with jax.enable_x64(True):
        for target in targets:
            mixture = mixture_study.make_mixture(target, nd.VPSDE())
            print(f"\n(3) {target} Gaussian mixture, exact score, VP SDE, {samples} draws")
            res = mixture_study.evaluate(mixture, stepped, nfes, samples, log=print)
            # NFE 5: a fitted grid for every gridded sampler (the best on a fixed grid is not
            # the one that gains most), on 1024 fitting draws (4 batches of 256), the one
            # kept chosen on the fitting draws.
            res["grids"] = mixture_study.grid_study(
                mixture, GRIDDED, nfes[0], res, iterations=iterations, batch_size=256,
                fit_top=None, decouple=True,
            )  # fmt: skip
            at10_fitted = mixture_study.grid_study(
                mixture, GRIDDED, 10, res, iterations=iterations, fit_top=1
            )
            results[target] = res
            print(f"  sliced-W2 floor (two data draws): {res['floor']:.4f}")
            grids = res["grids"]
            print(f"  NFE {nfes[0]}, flow error by sampler and fixed grid:")
            for (name, grid), error in grids["fixed"].items():
                print(f"    {name:22s} {grid:8s} {error:.4e}")
            name, grid, best = grids["best"]
            fitted_name, fitted_from = grids["optimized_sampler"]
            print(f"    best fixed: {name} on {grid!r} {best:.4e}; fitted grids "
                  f"{grids['all_fitted']} (RMS on the fitting draws {grids['fitting_rms']}); "
                  f"kept (lowest on the fitting draws) {fitted_name} (from {fitted_from!r}) "
                  f"{grids['optimized']:.4e}; times {np.round(grids['times'], 4)}")  # fmt: skip
            det = [r for r in res["rows"] if not np.isnan(r["error"])]
            # The adaptive probability-flow solve's budget is a tolerance, not an NFE.
            within10 = [r for r in det if r["budget"] == 10 and r["nfe"] <= 10]
            at10 = min(within10, key=lambda r: r["error"])
            ref = next(r for r in det if r["sampler"] == "dpm-solver-2m" and r["budget"] == 20)
            name10, grid10, _ = at10_fitted["best"]
            fitted10 = at10_fitted["optimized"]
            fixed10 = at10_fitted["best"][2]
            fitted_name10, fitted_from10 = at10_fitted["optimized_sampler"]
            print("  NFE 10, flow error by sampler and fixed grid:")
            for (sampler10, label), error in at10_fitted["fixed"].items():
                print(f"    {sampler10:22s} {label:8s} {error:.4e}")
            print(f"  NFE 10: best sampler on its default grid {at10['sampler']} "
                  f"{at10['error']:.4e}; best on a fixed grid {name10} on {grid10!r} "
                  f"{fixed10:.4e}; best fitted {fitted_name10} (from {fitted_from10!r}) "
                  f"{fitted10:.4e}; DPM-Solver-2M (Karras grid) at NFE 20: "
                  f"{ref['error']:.4e}")  # fmt: skip
            if target == "16d":
                two_m = "DPM-Solver-2M at NFE 20 (Karras)"
                ratios[f"fitted grid ({fitted_name}) / best fixed grid (16-D, NFE 5)"] = (
                    grids["optimized"] / best,
                    "<= 0.5",
                )
                ratios[f"best fixed grid at NFE 10 ({name10}, {grid10}) / {two_m}"] = (
                    fixed10 / ref["error"],
                    "<= 1",
                )
                ratios[f"best fitted grid at NFE 10 ({fitted_name10}) / {two_m}"] = (
                    fitted10 / ref["error"],
                    "<= 1",
                )
    path = pathlib.Path("runs/benchmarks/diffusion_samplers_mixtures.png")
    path.parent.mkdir(parents=True, exist_ok=True)
    plt = pyplot()
    mixture_study.figure(results, plt).savefig(path, dpi=120, bbox_inches="tight")
    print(f"  work-precision plot: {path}")
    return ratios


def main() -> None:
    args = parse_args(__doc__ or "")
    print(f"jax {jax.__version__}, diffrax {diffrax.__version__}, {jax.devices()[0].platform}")
    if args.quick:
        quality(20_000, [10, 20, 50, 1000])
    else:
        quality(200_000, NFE_GRID)
    exact = mixtures(args.quick)
    ratios = throughput(1024, 20, 15 if args.quick else 50)
    print()
    for name, value in ratios.items():
        print(ratio_line(f"neurde/lax.scan ({name}, batch 1024, 20 NFE)", value, "<= 1.2"))
    for name, (value, target) in exact.items():
        print(ratio_line(name, value, target))


if __name__ == "__main__":
    main()
