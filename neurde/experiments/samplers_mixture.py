"""Samplers measured exactly: Gaussian-mixture targets with the closed-form score.

Part of `neurde run samplers` and of benchmarks/diffusion_samplers.py. Each target is a
`GaussianMixtureScore` under the VP SDE; every sampler pushes the same prior draws; a
deterministic sampler's error is the root-mean-square distance to the exact probability-flow
map of the same draws (`GaussianMixtureScore.flow`, a Dopri8 solve at rtol = atol = 1e-10),
and every sampler's samples are compared with data draws by the sliced Wasserstein-2
distance. `grid_study` fits an `OptimizedGrid` at a small NFE and compares it with the fixed
grids. Everything runs in float64 (inside `jax.enable_x64`).
"""

import math
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from .. import diffusion as dfn

MIXTURES = ("2d", "16d")
# The fixed grids of the grid study, by label. Uniform in t^(1/4): the best of a sweep of
# fixed grids for UniPC-3 at NFE 10 on the 16-D target (Karras rho 1.5-20, log-SNR, uniform
# in t^(1/k) for k = 1-12 and in log t; benchmarks/README.md).
FIXED_GRIDS: dict[str, Any] = {
    "uniform": "uniform",
    "logsnr": "logsnr",
    "edm": "edm",
    "t^(1/4)": dfn.UniformGrid(power=4.0),
}
# Samplers whose output ends at t = 0 (the denoiser's last step), not at eps.
_ENDS_AT_ZERO = ("EDMHeun", "Restart")


def sliced_wasserstein(
    x: jax.Array, y: jax.Array, *, key: Any, projections: int = 256
) -> jax.Array:
    """Sliced 2-Wasserstein distance between two equal-size point clouds (random directions)."""
    directions = jr.normal(key, (projections, x.shape[-1]), x.dtype)
    directions = directions / jnp.linalg.norm(directions, axis=-1, keepdims=True)
    px = jnp.sort(x @ directions.T, axis=0)
    py = jnp.sort(y @ directions.T, axis=0)
    return jnp.sqrt(jnp.mean((px - py) ** 2))


def make_mixture(name: str, sde: dfn.AbstractForwardSDE, seed: int = 0) -> Any:
    """The 2-D target (6 elongated components on a ring) or the 16-D one (8 components).

    The 16-D components overlap (means 0.5 N(0, I), so about 2.8 apart, covariances with
    eigenvalues from 0.02 to about 1.2): with well-separated modes (means 1.5 N(0, I)) the
    error of every sampler at 5-10 NFE is dominated by draws sent to the wrong mode, which
    no grid placement fixes (a fitted grid gained 7% there at 5 NFE, benchmarks/README.md).
    """
    rng = np.random.default_rng(seed)
    if name == "2d":
        angles = np.arange(6) * np.pi / 3
        means = 2.0 * np.stack([np.cos(angles), np.sin(angles)], 1)
        tangent = np.stack([-np.sin(angles), np.cos(angles)], 1)
        radial = means / 2.0
        covs = 0.12 * np.einsum("ki,kj->kij", tangent, tangent) + 0.01 * np.einsum(
            "ki,kj->kij", radial, radial
        )
        weights = np.array([0.25, 0.1, 0.2, 0.15, 0.2, 0.1])
    elif name == "16d":
        d, k = 16, 8
        means = 0.5 * rng.normal(size=(k, d))
        factors = rng.normal(size=(k, d, d)) / math.sqrt(d)
        covs = 0.3 * factors @ np.swapaxes(factors, 1, 2) + 0.02 * np.eye(d)
        weights = np.exp(0.5 * rng.normal(size=k))
        weights = weights / weights.sum()
    else:
        raise ValueError(f"samplers: unknown mixture {name!r}; choose from {', '.join(MIXTURES)}.")
    dtype = jnp.result_type(float)
    return dfn.GaussianMixtureScore(
        sde, jnp.asarray(weights, dtype), jnp.asarray(means, dtype), jnp.asarray(covs, dtype)
    )


def at_budget(make: Callable[[int], Any], nfe: int) -> Any:
    """`make(steps)` with the most steps whose NFE is at most `nfe`, or None if none fits."""
    for steps in range(nfe, 0, -1):
        try:
            sampler = make(steps)
        except ValueError:  # e.g. a sampler that needs more steps than this
            continue
        if sampler.nfe() <= nfe:
            return sampler
    return None


@eqx.filter_jit
def _flow(mixture: Any, x_T: jax.Array, t_end: jax.Array) -> jax.Array:
    return jax.vmap(lambda x: mixture.flow(x, 1.0, t_end))(x_T)


def _rms(a: Any, b: Any) -> float:
    return float(np.sqrt(np.mean(np.sum((np.asarray(a) - np.asarray(b)) ** 2, axis=1))))


class _Exact:
    """The exact flow of the evaluation draws, at eps and (when asked) at t = 0."""

    def __init__(self, mixture: Any, x_T: jax.Array, eps: float):
        self.mixture, self.x_T, self.eps, self.cache = mixture, x_T, eps, {}

    def at(self, sampler: Any) -> jax.Array:
        t_end = 0.0 if type(sampler).__name__ in _ENDS_AT_ZERO else self.eps
        if t_end not in self.cache:
            self.cache[t_end] = _flow(self.mixture, self.x_T, jnp.asarray(t_end))
        return self.cache[t_end]


def evaluate(
    mixture: Any,
    samplers: dict[str, Callable[[int, int], Any]],
    nfes: tuple[int, ...],
    num_samples: int,
    seed: int = 0,
    log: Callable[[str], Any] = print,
) -> dict[str, Any]:
    """Every sampler at every NFE budget: flow error (deterministic ones) and sliced W2.

    `samplers` maps a name to `make(nfe, index)` (None when the budget is too small).
    Returns the rows and the sliced-W2 floor (two independent data draws).
    """
    sde, d = mixture.sde, mixture.means.shape[1]
    x_T = sde.sample_prior(jr.key(seed), (num_samples, d), mixture.means.dtype)
    data = mixture.sample(jr.key(seed + 1), num_samples)
    sw_key = jr.key(seed + 2)
    floor = float(sliced_wasserstein(mixture.sample(jr.key(seed + 3), num_samples), data,
                                     key=sw_key))  # fmt: skip
    exact = _Exact(mixture, x_T, 1e-3)
    rows = []
    for index, nfe in enumerate(nfes):
        for name, make in samplers.items():
            sampler = make(nfe, index)
            if sampler is None:
                continue
            xs, used = dfn.sample_from(sampler, mixture, sde, x_T, key=jr.key(seed + 4))
            deterministic = _deterministic(sampler)
            error = _rms(xs, exact.at(sampler)) if deterministic else float("nan")
            sw = float(sliced_wasserstein(xs, data, key=sw_key))
            rows.append({"sampler": name, "budget": nfe, "nfe": int(used), "error": error,
                         "sw": sw})  # fmt: skip
            log(f"  {d:2d}-D {name:22s} NFE {int(used):4d} flow error {error:.2e} SW {sw:.4f}")
    return {"rows": rows, "floor": floor, "x_T": x_T, "exact": exact}


def _deterministic(sampler: Any) -> bool:
    if isinstance(sampler, dfn.ProbabilityFlow):
        return True
    return sampler.randomness() is None


def grid_study(
    mixture: Any,
    samplers: dict[str, Callable[[int, Any], Any]],
    nfe: int,
    evaluation: dict[str, Any],
    *,
    seed: int = 0,
    iterations: int = 200,
    batches: int = 4,
    batch_size: int = 64,
    fit_top: int | None = 3,
    decouple: bool = False,
) -> dict[str, Any]:
    """Each gridded sampler on each fixed grid at `nfe`; then fitted grids for the best ones.

    `samplers` maps a name to `make(steps, grid)`. For each of the `fit_top` samplers with
    the lowest errors (all of them for `fit_top=None`), `fit_time_grid` starts from its best
    fixed grid and fits on `batches * batch_size` other prior draws than the evaluation.
    The fitted grid kept, `optimized`, is the one with the lowest loss on those fitting
    draws (a selection that never sees the evaluation draws); every error reported is
    measured on the evaluation draws, against the exact flow. With `decouple` the fits
    also learn where the model is queried (`OptimizedGrid.shifts`, LD3's decoupled
    times; `fit_time_grid(..., decouple=True)`).
    """
    sde, d = mixture.sde, mixture.means.shape[1]
    x_T, exact = evaluation["x_T"], evaluation["exact"]
    fixed = {}
    for name, make in samplers.items():
        for label, grid in FIXED_GRIDS.items():
            sampler = at_budget(lambda n, make=make, grid=grid: make(n, grid), nfe)
            if sampler is None:
                continue
            xs, _ = dfn.sample_from(sampler, mixture, sde, x_T)
            fixed[(name, label)] = (_rms(xs, exact.at(sampler)), sampler)
    ranked = sorted(fixed.items(), key=lambda item: item[1][0])
    (best_name, best_grid), (best_error, _) = ranked[0]
    fits = {}
    # The best grid of each of the `fit_top` best samplers is fitted: which sampler gains most
    # from a fitted grid is not always the one that is best on a fixed grid.
    for (name, grid), (_, sampler) in ranked:
        if name in fits or (fit_top is not None and len(fits) == fit_top):
            continue
        fit = dfn.fit_time_grid(
            sampler, mixture, sde, (d,), key=jr.key(seed + 10), iterations=iterations,
            batches=batches, batch_size=batch_size, decouple=decouple,
            reference=dfn.ProbabilityFlow(rtol=1e-8, atol=1e-8, eps=sampler.eps),
        )  # fmt: skip
        xs, _ = dfn.sample_from(fit.sampler, mixture, sde, x_T)
        fits[name] = (_rms(xs, exact.at(fit.sampler)), grid, fit)
    # Chosen on the fitting draws: choosing on the evaluation draws would bias `optimized`.
    fitted_name = min(fits, key=lambda n: float(fits[n][2].final_loss))
    fitted_error, fitted_from, fit = fits[fitted_name]
    grid = fit.sampler.time_grid  # pyright: ignore[reportAttributeAccessIssue]
    return {
        "fixed": {key: error for key, (error, _) in fixed.items()},
        "best": (best_name, best_grid, best_error),
        "optimized": fitted_error,
        "optimized_sampler": (fitted_name, fitted_from),
        "all_fitted": {n: e for n, (e, _, _) in fits.items()},
        "fitting_rms": {n: float(jnp.sqrt(f.final_loss)) for n, (_, _, f) in fits.items()},
        "fit": fit,
        "times": np.asarray(dfn.time_grid(sde, fit.sampler.steps, grid, eps=fit.sampler.eps)),  # pyright: ignore[reportAttributeAccessIssue]
    }


def figure(results: dict[str, dict[str, Any]], plt: Any) -> Any:
    """Work-precision: flow error (deterministic samplers) and sliced W2 against NFE."""
    fig, axes = plt.subplots(len(results), 2, figsize=(12, 4.2 * len(results)), squeeze=False)
    for row, (target, result) in zip(axes, results.items(), strict=True):
        names = list(dict.fromkeys(r["sampler"] for r in result["rows"]))
        # One colour per sampler in both panels: the default cycle repeats after ten.
        colors = plt.get_cmap("tab20")(np.linspace(0, 1, max(len(names), 2)))
        for color, name in zip(colors, names, strict=False):
            sel = [r for r in result["rows"] if r["sampler"] == name]
            style = "o-" if not math.isnan(sel[0]["error"]) else "x--"
            if not math.isnan(sel[0]["error"]):
                errors = [r["error"] for r in sel]
                row[0].plot([r["nfe"] for r in sel], errors, style, color=color, label=name)
            row[1].plot([r["nfe"] for r in sel], [r["sw"] for r in sel], style, color=color,
                        label=name)  # fmt: skip
        row[1].axhline(result["floor"], color="k", ls=":", label="data vs data")
        for ax, label in zip(row, ("RMS error vs exact flow map", "sliced W2 to data"),
                             strict=True):  # fmt: skip
            ax.set(xscale="log", yscale="log", xlabel="NFE", ylabel=label, title=target)
            ax.xaxis.set_minor_formatter(plt.NullFormatter())
        row[0].legend(fontsize=6, ncol=2)
        row[1].legend(fontsize=6, ncol=2)
    fig.tight_layout()
    return fig


__all__ = ["MIXTURES", "at_budget", "evaluate", "figure", "grid_study", "make_mixture"]
