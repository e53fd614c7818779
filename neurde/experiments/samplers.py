"""`neurde run samplers`: every diffusion sampler at equal numbers of score evaluations.

Score networks are trained by denoising score matching (VP SDE, noise prediction, an EMA
of the weights) on three 2-D densities (two moons, checkerboard, 8 Gaussians) and on
scikit-learn's 8x8 digits. Each sampler then draws samples at each budget of function
evaluations (NFE): reverse-SDE Euler–Maruyama, ancestral (DDPM) sampling, predictor–corrector
with Langevin corrector, DDIM, DPM-Solver 1/2/3 (singlestep) and 3M (multistep), EDM's
Heun sampler, and the adaptive probability-flow ODE (whose NFE the solver decides from its
tolerance), and the newer DPM-Solver++ (2S, 2M, 3M, 2M SDE), UniPC, DEIS and Restart.
Quality is the sliced Wasserstein distance to held-out data (2-D) or the Fréchet
distance in the feature space of a small classifier trained by the experiment (digits); wall
time is measured after compilation.

A second part needs no training: Gaussian-mixture targets (2-D and 16-D) with the exact
score (`GaussianMixtureScore`), where each deterministic sampler's error against the exact
probability-flow map of the same noise is measured, every sampler's sliced Wasserstein
distance to the target, and a time grid fitted by `fit_time_grid` is compared with the fixed
grids at the smallest budget (`samplers_mixture.py`).
"""

import argparse
import dataclasses
import time
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax

from .. import diffusion as dfn
from ..data import DENSITIES, digits
from ..train import fit, init_optimizer, make_step
from . import samplers_mixture as mixture_study
from .report import Report, config_from_args, markdown_table, pyplot
from .samplers_mixture import sliced_wasserstein

NAME = "samplers"
DESCRIPTION = "Diffusion samplers (EM, PC, PF-ODE, DDIM, DPM-Solver 1-3, EDM) at equal NFE."

SAMPLERS = (
    "euler-maruyama", "ancestral", "predictor-corrector", "ddim", "dpm-solver-1",
    "dpm-solver-2", "dpm-solver-3", "dpm-solver-2m", "dpm-solver-3m", "dpm-solver++-2s",
    "dpm-solver++-2m", "dpm-solver++-3m", "dpm-solver++-2m-sde", "unipc-3", "deis-3",
    "edm-heun", "restart", "pf-ode",
)  # fmt: skip
# Each sampler by its step count (`make_sampler` picks the most steps within a budget).
STEPPED: dict[str, Callable[[int], dfn.AbstractSampler]] = {
    "euler-maruyama": lambda n: dfn.EulerMaruyama(steps=n),
    "ancestral": lambda n: dfn.Ancestral(steps=n),
    "predictor-corrector": lambda n: dfn.PredictorCorrector(steps=n, corrector_steps=1),
    "ddim": lambda n: dfn.DDIM(steps=n),
    "dpm-solver-1": lambda n: dfn.DPMSolver(steps=n, order=1),
    "dpm-solver-2": lambda n: dfn.DPMSolver(steps=n, order=2),
    "dpm-solver-3": lambda n: dfn.DPMSolver(steps=n, order=3),
    "dpm-solver-2m": lambda n: dfn.DPMSolverMultistep(steps=n, order=2),
    "dpm-solver-3m": lambda n: dfn.DPMSolverMultistep(steps=n, order=3),
    "dpm-solver++-2s": lambda n: dfn.DPMSolverPP(steps=n, solver="2S"),
    "dpm-solver++-2m": lambda n: dfn.DPMSolverPP(steps=n, solver="2M"),
    "dpm-solver++-3m": lambda n: dfn.DPMSolverPP(steps=n, solver="3M"),
    "dpm-solver++-2m-sde": lambda n: dfn.DPMSolverPPSDE(steps=n, order=2),
    "unipc-3": lambda n: dfn.UniPC(steps=n, order=3),
    "deis-3": lambda n: dfn.DEIS(steps=n, order=3),
    "edm-heun": lambda n: dfn.EDMHeun(steps=n),
    "restart": lambda n: dfn.Restart(steps=n),
}
# The deterministic samplers with a time grid, by step count and grid (the grid study).
GRIDDED: dict[str, Callable[[int, Any], dfn.AbstractSampler]] = {
    "ddim": lambda n, g: dfn.DDIM(steps=n, time_grid=g),
    "dpm-solver-3": lambda n, g: dfn.DPMSolver(steps=n, order=3, time_grid=g),
    "dpm-solver-2m": lambda n, g: dfn.DPMSolverMultistep(steps=n, order=2, time_grid=g),
    "dpm-solver-3m": lambda n, g: dfn.DPMSolverMultistep(steps=n, order=3, time_grid=g),
    "dpm-solver++-3m": lambda n, g: dfn.DPMSolverPP(steps=n, solver="3M", time_grid=g),
    "unipc-3": lambda n, g: dfn.UniPC(steps=n, order=3, time_grid=g),
    "deis-3": lambda n, g: dfn.DEIS(steps=n, order=3, time_grid=g),
}
# Tolerances of the adaptive probability-flow ODE, one per NFE budget (by position).
PF_TOLERANCES = (3e-2, 1e-2, 1e-3, 1e-4, 1e-5)


@dataclasses.dataclass(frozen=True)
class SamplersConfig:
    """Settings; the default is the quick one, `full()` the documented large one."""

    datasets: tuple[str, ...] = ("two-moons", "checkerboard", "8-gaussians", "digits")
    samplers: tuple[str, ...] = SAMPLERS
    nfes: tuple[int, ...] = (10, 20, 50)
    reference_nfe: int = 200
    train_steps: int = 1500
    batch_size: int = 512
    learning_rate: float = 5e-3
    ema_decay: float = 0.995
    width: int = 128
    channels: int = 16
    digits_net: str = "mlp"
    train_points: int = 20_000
    num_samples: int = 1000
    mixtures: tuple[str, ...] = ("16d",)
    mixture_nfes: tuple[int, ...] = (5, 10, 20)
    mixture_samples: int = 1000
    grid_iterations: int = 100
    grid_fits: int = 1
    seed: int = 0

    @classmethod
    def full(cls, **overrides: Any) -> "SamplersConfig":
        """NFE 10-1000, a 1000-step EM reference, 10 000 training steps, 4000 samples per 2-D
        evaluation, the convolutional score net for digits (the quick run uses an MLP on the
        flattened images: on a CPU the convolutional one trains far slower); both mixtures at
        NFE 5-50 with 4000 samples, and grids fitted for the 3 best samplers at NFE 5 (300
        iterations; the quick run fits the best one, 100 iterations)."""
        base = {"nfes": (10, 20, 50, 100, 1000), "reference_nfe": 1000, "train_steps": 10_000,
                "num_samples": 4000, "channels": 32, "digits_net": "conv",
                "mixtures": mixture_study.MIXTURES, "mixture_nfes": (5, 10, 20, 50),
                "mixture_samples": 4000, "grid_iterations": 300, "grid_fits": 3}  # fmt: skip
        return cls(**{**base, **overrides})


def make_sampler(name: str, nfe: int, index: int) -> dfn.AbstractSampler | None:
    """The sampler `name` with the most steps within `nfe` score evaluations (None if even one
    step costs more); `index` picks the probability-flow ODE's tolerance."""
    if name == "pf-ode":
        tol = PF_TOLERANCES[min(index, len(PF_TOLERANCES) - 1)]
        return dfn.ProbabilityFlow(rtol=tol, atol=tol)
    if name not in STEPPED:
        raise ValueError(f"samplers: unknown sampler {name!r}; choose from {', '.join(SAMPLERS)}.")
    return mixture_study.at_budget(STEPPED[name], nfe)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    r"""Fréchet distance of two feature sets (as in FID, Heusel et al. 2017).

    $\|\mu_a - \mu_b\|^2 + \operatorname{tr}(S_a + S_b - 2 (S_a S_b)^{1/2})$.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a.T), np.cov(b.T)
    # tr (S_a S_b)^{1/2} = sum of sqrt eigenvalues of S_a^{1/2} S_b S_a^{1/2} (symmetric PSD).
    w, v = np.linalg.eigh(s_a)
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    cross = np.linalg.eigvalsh(root_a @ s_b @ root_a)
    trace_root = np.sum(np.sqrt(np.clip(cross, 0, None)))
    return float(np.sum((mu_a - mu_b) ** 2) + np.trace(s_a) + np.trace(s_b) - 2 * trace_root)


class FeatureNet(eqx.Module):
    """A small MLP classifier of flattened digits; `features` is its last hidden layer."""

    hidden: eqx.nn.MLP
    head: eqx.nn.Linear

    def __init__(self, key: Any):
        k1, k2 = jr.split(key)
        self.hidden = eqx.nn.MLP(64, 64, 64, 1, activation=jax.nn.relu,
                                 final_activation=jax.nn.relu, key=k1)  # fmt: skip
        self.head = eqx.nn.Linear(64, 10, key=k2)

    def features(self, x: jax.Array) -> jax.Array:
        return self.hidden(x.reshape(-1))

    def __call__(self, x: jax.Array, *, key: Any = None) -> jax.Array:
        return self.head(self.features(x))


def train_feature_net(x: np.ndarray, y: np.ndarray, seed: int) -> FeatureNet:
    def loss(model, batch, key):
        xb, yb = batch
        logits = jax.vmap(model)(xb)
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, yb))

    result = fit(FeatureNet(jr.key(seed)), loss, (x, y), steps=600, batch_size=128,
                 optim=optax.adam(3e-3), key=jr.key(seed + 1), progress=False)  # fmt: skip
    return result.model


def load(name: str, config: SamplersConfig) -> tuple[np.ndarray, np.ndarray, Any]:
    """(train, held-out) data, and for digits the data set itself (for the feature net)."""
    key = jr.fold_in(jr.key(config.seed), abs(hash(name)) % 10_000)
    if name in DENSITIES:
        make = DENSITIES[name]
        train = np.asarray(make(config.train_points, key=key))
        test = np.asarray(make(config.num_samples, key=jr.fold_in(key, 1)))
        return train, test, None
    if name == "digits":
        data = digits(image=config.digits_net == "conv", seed=config.seed)
        return np.asarray(data.x_train), np.asarray(data.x_test), data
    raise ValueError(
        f"samplers: unknown data set {name!r}; choose from {', '.join([*DENSITIES, 'digits'])}."
    )


def train_score(train: np.ndarray, config: SamplersConfig, sde: Any) -> tuple[Any, float]:
    """A noise-predicting score network trained by DSM; returns its EMA and the train time."""
    key = jr.key(config.seed)
    if train.ndim == 2:
        # Random Fourier time features fit the 2-D densities' fine structure better than
        # sinusoidal ones in short runs (notebook 04).
        width = config.width if train.shape[1] <= 2 else 2 * config.width
        model: Any = dfn.ScoreMLP(train.shape[1], width, 3, embedding="fourier", key=key)
    else:
        model = dfn.ScoreConvNet(config.channels, train.shape[1], key=key)

    def loss(m, batch, k):
        return dfn.dsm_loss(m, sde, batch, time_sampling="low_discrepancy", key=k)

    schedule = optax.cosine_decay_schedule(config.learning_rate, config.train_steps)
    optim = optax.adam(schedule)
    step = make_step(loss, optim)
    ema_step = eqx.filter_jit(dfn.ema_update)
    opt_state, ema = init_optimizer(optim, model), model
    rng = np.random.default_rng(config.seed)
    data = jnp.asarray(train)
    start = time.perf_counter()
    for i in range(config.train_steps):
        idx = rng.integers(0, len(train), config.batch_size)
        model, opt_state, _, _ = step(model, opt_state, data[idx], jr.fold_in(key, i))
        ema = ema_step(ema, model, config.ema_decay)
    jax.block_until_ready(ema)
    return ema, time.perf_counter() - start


@eqx.filter_jit
def _draw(sampler: Any, score: Any, sde: Any, num: int, shape: tuple, key: Any) -> Any:
    return dfn.sample(sampler, score, sde, num, shape, key=key)


def run_dataset(name: str, config: SamplersConfig, log: Any) -> dict[str, Any]:
    train, test, data = load(name, config)
    sde = dfn.VPSDE()
    model, train_seconds = train_score(train, config, sde)
    score = dfn.Score(model, sde, "noise")
    shape = tuple(train.shape[1:])
    num = config.num_samples if name in DENSITIES else len(test)
    if name in DENSITIES:

        def quality(samples):
            return float(sliced_wasserstein(samples, jnp.asarray(test[:num]), key=jr.key(1)))

    else:
        feature_net = train_feature_net(data.x_train, data.y_train, config.seed)
        features = eqx.filter_jit(lambda m, x: jax.vmap(m.features)(x))
        reference = np.asarray(features(feature_net, jnp.asarray(test)))

        def quality(samples):
            return frechet_distance(np.asarray(features(feature_net, samples)), reference)

    rows, grids = [], {}
    budgets = [(s, n, i) for s in config.samplers for i, n in enumerate(config.nfes)]
    budgets.append(("euler-maruyama", config.reference_nfe, len(config.nfes)))
    for sampler_name, nfe, index in budgets:
        sampler = make_sampler(sampler_name, nfe, index)
        if sampler is None:  # one step costs more than this budget
            continue
        key = jr.key(config.seed + 7)
        samples, used = _draw(sampler, score, sde, num, shape, key)  # compiles
        start = time.perf_counter()
        samples, used = jax.block_until_ready(_draw(sampler, score, sde, num, shape, key))
        seconds = time.perf_counter() - start
        finite = bool(jnp.all(jnp.isfinite(samples)))
        q = quality(samples) if finite else float("nan")
        rows.append({"dataset": name, "sampler": sampler_name, "budget": nfe,
                     "nfe": int(used), "quality": q, "seconds": seconds})  # fmt: skip
        if nfe == config.nfes[min(1, len(config.nfes) - 1)] or (
            sampler_name == "euler-maruyama" and nfe == config.reference_nfe
        ):
            grids[(sampler_name, nfe)] = np.asarray(samples)
        log(f"{name:12s} {sampler_name:20s} NFE {int(used):5d} quality {q:.4f} {seconds:.3f}s")
    return {"rows": rows, "grids": grids, "test": test, "train_seconds": train_seconds}


def _figures(results: dict[str, Any], config: SamplersConfig, report: Report) -> None:
    plt = pyplot()

    names = list(results)
    fig, axes = plt.subplots(1, len(names), figsize=(4.5 * len(names), 4), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        rows = [r for r in results[name]["rows"] if r["budget"] != config.reference_nfe
                or r["sampler"] != "euler-maruyama"]  # fmt: skip
        for sampler in config.samplers:
            sel = [r for r in rows if r["sampler"] == sampler]
            ax.plot([r["nfe"] for r in sel], [r["quality"] for r in sel], "o-", label=sampler)
        ref = [r for r in results[name]["rows"] if r["budget"] == config.reference_nfe]
        if ref:
            ax.axhline(ref[0]["quality"], color="k", ls="--", label=f"EM, {ref[0]['nfe']} NFE")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("NFE")
        ax.set_title(name)
        ax.set_ylabel("sliced W2" if name in DENSITIES else "feature Fréchet distance")
    axes[0, -1].legend(fontsize=7)
    report.add_figure(
        fig, "quality_vs_nfe", "Sample quality vs score evaluations (lower is better)."
    )
    plt.close(fig)

    mid = config.nfes[min(1, len(config.nfes) - 1)]
    for name in names:
        grids = results[name]["grids"]
        keys = [k for k in grids]
        fig, axes = plt.subplots(1, len(keys) + 1, figsize=(2.6 * (len(keys) + 1), 2.8),
                                 squeeze=False)  # fmt: skip
        panels = [("held-out data", results[name]["test"])]
        panels += [(f"{s}\nNFE {n}", grids[(s, n)]) for s, n in keys]
        for ax, (title, x) in zip(axes[0], panels, strict=True):
            if name in DENSITIES:
                ax.scatter(x[:, 0], x[:, 1], s=1, alpha=0.5)
                ax.set_xlim(-4.5, 4.5)
                ax.set_ylim(-4.5, 4.5)
            else:
                tiles = x[:16].reshape(4, 4, 8, 8).transpose(0, 2, 1, 3).reshape(32, 32)
                ax.imshow(tiles, cmap="gray_r")
            ax.set_title(title, fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
        report.add_figure(
            fig, f"samples_{name}", f"{name}: samples at NFE {mid} and the reference."
        )
        plt.close(fig)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `neurde run samplers`."""
    parser.add_argument("--train-steps", type=int, help="DSM training steps (quick: 1500)")
    parser.add_argument("--datasets", nargs="+", choices=[*DENSITIES, "digits"], help="data")
    parser.add_argument("--samplers", nargs="+", choices=list(SAMPLERS), help="samplers")
    parser.add_argument("--nfes", nargs="+", type=int, help="NFE budgets (quick: 10 20 50)")
    parser.add_argument("--reference-nfe", type=int, help="Euler–Maruyama reference (200)")
    parser.add_argument("--num-samples", type=int, help="samples per 2-D evaluation (1000)")
    parser.add_argument(
        "--mixtures",
        nargs="+",
        choices=[*mixture_study.MIXTURES, "none"],
        help="Gaussian-mixture targets with the exact score (quick: 16d)",
    )
    parser.add_argument("--mixture-nfes", nargs="+", type=int, help="their NFE (quick: 5 10 20)")
    parser.add_argument("--grid-iterations", type=int, help="grid-fitting iterations (100)")
    parser.add_argument("--mixture-samples", type=int, help="draws per mixture (1000)")


def run(args: argparse.Namespace) -> Report:
    """Train, sample with every sampler at every budget, and write the report."""
    config = config_from_args(
        SamplersConfig,
        args,
        ("train_steps", "reference_nfe", "num_samples", "grid_iterations", "mixture_samples"),
        ("datasets", "samplers", "nfes", "mixtures", "mixture_nfes"),
    )
    results = {name: run_dataset(name, config, print) for name in config.datasets}
    mixtures = run_mixtures(config, print)
    report = Report("Diffusion samplers at equal NFE", args.out)
    header = ["data set", "sampler", "NFE", "quality", "wall s"]
    table = [
        [r["dataset"], r["sampler"], r["nfe"], f"{r['quality']:.4f}", f"{r['seconds']:.3f}"]
        for res in results.values() for r in res["rows"]
    ]  # fmt: skip
    report.add(
        "Results",
        "Quality: sliced 2-Wasserstein distance to held-out points (2-D densities) or Fréchet "
        "distance between classifier features of samples and of the test digits (digits); "
        "lower is better. NFE is the number of score evaluations the sampler reported (the "
        "probability-flow ODE's is its adaptive solver's, at tolerances "
        f"{PF_TOLERANCES[: len(config.nfes)]}). Wall time is one compiled call for the batch.\n\n"
        + markdown_table(header, table),
    )
    best = []
    for name, res in results.items():
        ref = next(r for r in res["rows"] if r["budget"] == config.reference_nfe)
        for sampler in config.samplers:
            hits = [
                r["nfe"] for r in res["rows"] if r["sampler"] == sampler
                and r["budget"] != config.reference_nfe and r["quality"] <= ref["quality"]
            ]  # fmt: skip
            best.append([name, sampler, min(hits) if hits else f"> {max(config.nfes)}"])
    report.add(
        f"NFE to reach {config.reference_nfe}-step Euler–Maruyama quality",
        markdown_table(["data set", "sampler", "smallest NFE tried that matches"], best),
    )
    train_rows = [[n, f"{r['train_seconds']:.1f}"] for n, r in results.items()]
    report.add(
        "Training",
        markdown_table(["data set", "train s"], train_rows)
        + "\n\nVP SDE (beta 0.1 to 20), noise prediction, denoising score matching with "
        "low-discrepancy times and the score weighting, Adam with cosine decay, EMA of weights.",
    )
    if mixtures:
        _mixture_sections(mixtures, config, report)
    report.add_settings(config)
    _figures(results, config, report)
    return report


def run_mixtures(config: SamplersConfig, log: Any) -> dict[str, dict[str, Any]]:
    """The Gaussian-mixture study (float64): every sampler, and the grid study."""
    targets = [m for m in config.mixtures if m != "none"]
    stepped = {n: (lambda nfe, i, n=n: make_sampler(n, nfe, i)) for n in config.samplers}
    gridded = {n: make for n, make in GRIDDED.items() if n in config.samplers}
    out = {}
    with jax.enable_x64(True):
        for target in targets:
            mixture = mixture_study.make_mixture(target, dfn.VPSDE(), config.seed)
            log(f"mixture {target}: {len(mixture.log_weights)} components")
            evaluation = mixture_study.evaluate(
                mixture, stepped, config.mixture_nfes, config.mixture_samples, config.seed, log
            )
            grids = None
            if gridded:
                grids = mixture_study.grid_study(
                    mixture, gridded, min(config.mixture_nfes), evaluation, seed=config.seed,
                    iterations=config.grid_iterations, fit_top=config.grid_fits,
                )  # fmt: skip
            out[target] = {**evaluation, "grids": grids}
    return out


def _mixture_sections(mixtures: dict[str, Any], config: SamplersConfig, report: Report) -> None:
    rows = [
        [target, r["sampler"], r["nfe"], r["error"], f"{r['sw']:.4f}"]
        for target, res in mixtures.items() for r in res["rows"]
    ]  # fmt: skip
    floors = ", ".join(f"{t}: {res['floor']:.4f}" for t, res in mixtures.items())
    report.add(
        "Gaussian mixtures with the exact score",
        "VP SDE, float64, the same prior draws for every sampler. Flow error: RMS distance to "
        "the exact probability-flow map of the same draws (deterministic samplers; nan for "
        "stochastic ones). SW: sliced W2 to data draws; the floor (two data draws) is "
        f"{floors}.\n\n" + markdown_table(["target", "sampler", "NFE", "flow error", "SW"], rows),
    )
    for target, res in mixtures.items():
        grids = res["grids"]
        if grids is None:
            continue
        nfe = min(config.mixture_nfes)
        name, grid, error = grids["best"]
        table = [[s, g, e] for (s, g), e in grids["fixed"].items()]
        table += [[s, "fitted (fit_time_grid)", e] for s, e in grids["all_fitted"].items()]
        times = ", ".join(f"{t:.4f}" for t in grids["times"])
        fitted_name, fitted_from = grids["optimized_sampler"]
        report.add(
            f"Optimized time grid, {target}, NFE {nfe}",
            f"Best fixed grid: {name} on {grid!r}, error {error:.4g}. Best fitted grid "
            f"(`fit_time_grid`, {config.grid_iterations} Adam steps on other draws, from "
            f"each of the best samplers' best fixed grid; the kept one has the lowest loss on "
            f"the fitting draws): {fitted_name} from {fitted_from!r}, "
            f"error {grids['optimized']:.4g}, ratio {grids['optimized'] / error:.2f} (target "
            f"<= 0.5). Fitted times: {times}.\n\n"
            + markdown_table(["sampler", "grid", "flow error"], table),
        )
    plt = pyplot()
    fig = mixture_study.figure(mixtures, plt)
    report.add_figure(
        fig, "mixture_work_precision", "Gaussian mixtures: error and sliced W2 against NFE."
    )
    plt.close(fig)
