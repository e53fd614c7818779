"""`neurde run regularizers`: noise and solve regularizers on a neural ODE and a ResNet.

On digits and MNIST-1D (flattened), a neural ODE classifier (linear embedding, NeuralODE
with an MLP field on [0, 1], linear head) and a ResNet classifier of the same width are
trained with no regularizer and with each of `neurde.noise`'s: additive, multiplicative and
dropout-style noise (Liu et al. 2019) on both; STEER and RNODE on the neural ODE;
dropout in the branch, stochastic depth, Shake-Shake and ShakeDrop on the ResNet. Seeds are
trained together as one vmapped ensemble. Every model is evaluated in inference mode (noise
off): clean test accuracy, accuracy under Gaussian input noise of increasing size and under
FGSM perturbations (Goodfellow et al. 2015) of increasing size, and the number of function
evaluations of the test-time solve.
"""

import argparse
import dataclasses
import time
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax

from .. import noise
from ..composed import Composed
from ..data import Classification, digits, mnist1d
from ..discrete import Classifier, Euler, ResidualStack
from ..fields import MLPField
from ..ode import NeuralODE
from ..train import ensemble_member, fit, make_ensemble
from .report import Report, config_from_args, markdown_table, pyplot

NAME = "regularizers"
DESCRIPTION = "Noise injection, dropout/stochastic depth/Shake-Shake, STEER and RNODE compared."

ODE_REGULARIZERS = ("none", "additive", "multiplicative", "dropout-diffusion", "steer", "rnode")
RESNET_REGULARIZERS = (
    "none", "additive", "multiplicative", "dropout-diffusion", "residual-dropout",
    "stochastic-depth", "shake-shake", "shakedrop",
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class RegularizersConfig:
    """Settings; the default is the quick one, `full()` the documented large one."""

    datasets: tuple[str, ...] = ("digits", "mnist1d")
    models: tuple[str, ...] = ("neural-ode", "resnet")
    regularizers: tuple[str, ...] = tuple(dict.fromkeys(ODE_REGULARIZERS + RESNET_REGULARIZERS))
    width: int = 32
    depth: int = 4
    seeds: int = 2
    steps: int = 300
    batch_size: int = 64
    learning_rate: float = 5e-3
    sigma: float = 0.3
    p: float = 0.2
    survival_last: float = 0.8
    steer_b: float = 0.5
    rnode_weight: float = 0.01
    sde_dt0: float = 0.1
    gaussian: tuple[float, ...] = (0.0, 0.2, 0.4, 0.8)
    fgsm: tuple[float, ...] = (0.01, 0.03, 0.1)
    eval_examples: int = 500
    seed: int = 0

    @classmethod
    def full(cls, **overrides: Any) -> "RegularizersConfig":
        """Width 64, 3 seeds, 1000 steps, the whole test sets (run time: see README)."""
        base = {"width": 64, "seeds": 3, "steps": 1000, "eval_examples": 100_000}
        return cls(**{**base, **overrides})


def build(model: str, reg: str, data: Classification, config: RegularizersConfig, key: Any) -> Any:
    """One classifier with regularizer `reg` applied as a transform."""
    size, w = int(np.prod(data.input_shape)), config.width
    if model == "neural-ode":
        k1, k2, k3 = jr.split(key, 3)
        field = MLPField(w, w, 1, activation=jnp.tanh, key=k2)
        ode = NeuralODE(field, t1=1.0, rtol=1e-3, atol=1e-4, dt0=config.sde_dt0)
        embed = eqx.nn.Sequential([eqx.nn.Lambda(jnp.ravel), eqx.nn.Linear(size, w, key=k1)])
        net = Composed(embed, ode, eqx.nn.Linear(w, data.num_classes, key=k3))
        if reg == "steer":
            return noise.steer(net, config.steer_b)
        if reg == "rnode":
            return noise.rnode(net)
    else:
        k1, k2 = jr.split(key)
        net = Classifier(
            (size,), data.num_classes, architecture="resnet", width=w, depth=config.depth,
            hidden=w, key=k1,
        )  # fmt: skip
        if reg == "shake-shake":
            # Two branches of half the hidden width: the same number of parameters.
            def block(k):
                ka, kb = jr.split(k)
                return noise.Branches(
                    MLPField(w, w // 2, 1, activation=jnp.tanh, key=ka),
                    MLPField(w, w // 2, 1, activation=jnp.tanh, key=kb),
                )

            stack = ResidualStack(block, Euler(), config.depth, key=k2)
            return noise.shake_shake(eqx.tree_at(lambda m: m.stack, net, stack))
    transforms = {
        "none": lambda m: m,
        "additive": lambda m: noise.additive(m, config.sigma),
        "multiplicative": lambda m: noise.multiplicative(m, config.sigma),
        "dropout-diffusion": lambda m: noise.dropout_diffusion(m, config.p),
        "residual-dropout": lambda m: noise.residual_dropout(m, config.p),
        "stochastic-depth": lambda m: noise.stochastic_depth(m, config.survival_last),
        "shakedrop": lambda m: noise.shake_drop(m, config.survival_last),
    }
    return transforms[reg](net)


def make_loss(config: RegularizersConfig) -> Any:
    """Cross-entropy, plus the model's extra outputs (RNODE's kinetic and Jacobian penalties;
    none for the other regularizers) weighted by `rnode_weight`."""

    def loss(model: Any, batch: Any, key: Any) -> Any:
        x, y = batch
        sol = jax.vmap(lambda xi, k: model.solve(xi, key=k))(x, jr.split(key, x.shape[0]))
        ce = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(sol.ys, y))
        extra = sum((jnp.mean(v) for v in sol.extras.values()), start=jnp.zeros(()))
        return ce + config.rnode_weight * extra, {"ce": ce}

    return loss


def _ce(model: Any, x: jax.Array, y: jax.Array) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(model(x), y)


@eqx.filter_jit
def evaluate(model: Any, x: jax.Array, y: jax.Array, key: Any, sizes: Any) -> dict[str, Any]:
    """Accuracies (clean, Gaussian noise of each size, FGSM of each size) in inference mode."""
    model = eqx.nn.inference_mode(model)

    def accuracy(inputs):
        return jnp.mean(jnp.argmax(jax.vmap(model)(inputs), -1) == y)

    gaussian = [accuracy(x + s * jr.normal(jr.fold_in(key, i), x.shape)) for i, s in
                enumerate(sizes["gaussian"])]  # fmt: skip
    grad = jax.vmap(jax.grad(lambda xi, yi: _ce(model, xi, yi)))(x, y)
    fgsm = [accuracy(x + eps * jnp.sign(grad)) for eps in sizes["fgsm"]]
    return {"gaussian": jnp.stack(gaussian), "fgsm": jnp.stack(fgsm)}


def test_nfe(model: Any, x: jax.Array) -> float:
    """Mean function evaluations of the test-time (inference mode) solve."""
    model = eqx.nn.inference_mode(model)
    stats = eqx.filter_jit(lambda m, xs: jax.vmap(m.solve)(xs).stats)(model, x)
    return float(jnp.mean(stats["nfe"]))


def load(name: str, seed: int) -> Classification:
    if name == "digits":
        return digits(seed=seed)
    if name == "mnist1d":
        return mnist1d(seed=seed)
    raise ValueError(f"regularizers: unknown data set {name!r}; choose 'digits' or 'mnist1d'.")


def run_one(model: str, reg: str, data: Classification, config: RegularizersConfig) -> dict:
    key = jr.key(config.seed)
    ensemble = make_ensemble(lambda k: build(model, reg, data, config, k), config.seeds, key=key)
    start = time.perf_counter()
    ensemble, _, _ = fit(
        ensemble, make_loss(config), (data.x_train, data.y_train), steps=config.steps,
        batch_size=config.batch_size,
        optim=optax.adam(optax.cosine_decay_schedule(config.learning_rate, config.steps)),
        ensemble=True, key=jr.fold_in(key, 1), progress=False,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    n = min(config.eval_examples, len(data.y_test))
    x, y = jnp.asarray(data.x_test[:n]), jnp.asarray(data.y_test[:n])
    sizes = {"gaussian": config.gaussian, "fgsm": config.fgsm}
    results = [
        evaluate(ensemble_member(ensemble, i), x, y, jr.key(100 + i), sizes)
        for i in range(config.seeds)
    ]
    return {
        "gaussian": np.stack([np.asarray(r["gaussian"]) for r in results]),
        "fgsm": np.stack([np.asarray(r["fgsm"]) for r in results]),
        # A ResNet's cost is fixed: one evaluation per block, no solve needed to count it.
        "nfe": test_nfe(ensemble_member(ensemble, 0), x) if model == "neural-ode" else config.depth,
        "seconds": seconds,
    }


def run_all(config: RegularizersConfig, *, log: Any = print) -> list[dict[str, Any]]:
    rows = []
    for dataset in config.datasets:
        data = load(dataset, config.seed)
        for model in config.models:
            regs = ODE_REGULARIZERS if model == "neural-ode" else RESNET_REGULARIZERS
            for reg in (r for r in regs if r in config.regularizers):
                r = run_one(model, reg, data, config)
                row = {"dataset": dataset, "model": model, "regularizer": reg, **r}
                clean = r["gaussian"][:, 0]
                log(
                    f"{dataset:8s} {model:10s} {reg:18s} clean {clean.mean():.3f}±{clean.std():.3f}"
                    f" noisy {r['gaussian'][:, -1].mean():.3f} fgsm {r['fgsm'][:, -1].mean():.3f}"
                    f" nfe {r['nfe']:.1f} {r['seconds']:.1f}s"
                )
                rows.append(row)
    return rows


def _figure(rows: list[dict[str, Any]], config: RegularizersConfig, report: Report) -> None:
    plt = pyplot()

    panels = [(d, m) for d in config.datasets for m in config.models]
    fig, axes = plt.subplots(2, len(panels), figsize=(4.5 * len(panels), 8), squeeze=False)
    for j, (dataset, model) in enumerate(panels):
        for r in rows:
            if r["dataset"] != dataset or r["model"] != model:
                continue
            style = "o-" if r["regularizer"] != "none" else "ks--"
            g, f = r["gaussian"], r["fgsm"]
            axes[0, j].errorbar(config.gaussian, g.mean(0), g.std(0), fmt=style,
                                label=r["regularizer"], capsize=2)  # fmt: skip
            eps = (0.0, *config.fgsm)
            acc = np.concatenate([g[:, :1], f], 1)
            axes[1, j].errorbar(eps, acc.mean(0), acc.std(0), fmt=style, capsize=2)
        axes[0, j].set_title(f"{dataset}, {model}: Gaussian input noise")
        axes[0, j].set_xlabel("noise standard deviation")
        axes[1, j].set_title(f"{dataset}, {model}: FGSM")
        axes[1, j].set_xlabel("perturbation size (max norm)")
        axes[0, j].set_ylabel("test accuracy")
        axes[1, j].set_ylabel("test accuracy")
        axes[0, j].legend(fontsize=7)
    report.add_figure(
        fig, "regularizers", "Test accuracy (mean ± std over seeds) vs perturbation size."
    )
    plt.close(fig)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `neurde run regularizers`."""
    parser.add_argument("--steps", type=int, help="optimization steps per model (quick: 300)")
    parser.add_argument("--seeds", type=int, help="initializations per model (quick: 2)")
    parser.add_argument("--datasets", nargs="+", choices=["digits", "mnist1d"], help="data sets")
    parser.add_argument("--models", nargs="+", choices=["neural-ode", "resnet"], help="models")
    parser.add_argument(
        "--regularizers", nargs="+", choices=sorted(set(ODE_REGULARIZERS + RESNET_REGULARIZERS)),
        help="subset of regularizers (those that apply to each model)",
    )  # fmt: skip


def run(args: argparse.Namespace) -> Report:
    """Train every (data set, model, regularizer) and write the report."""
    config = config_from_args(
        RegularizersConfig, args, ("steps", "seeds"), ("datasets", "models", "regularizers")
    )
    rows = run_all(config)
    report = Report("Regularizers read as SDEs", args.out)
    header = [
        "data set", "model", "regularizer", "clean accuracy",
        *(f"Gaussian {s}" for s in config.gaussian[1:]), *(f"FGSM {e}" for e in config.fgsm),
        "test NFE", "train s",
    ]  # fmt: skip

    def pct(a: np.ndarray) -> str:
        return f"{100 * a.mean():.1f} ± {100 * a.std():.1f}"

    table = [
        [
            r["dataset"], r["model"], r["regularizer"], pct(r["gaussian"][:, 0]),
            *(pct(r["gaussian"][:, i]) for i in range(1, len(config.gaussian))),
            *(pct(r["fgsm"][:, i]) for i in range(len(config.fgsm))),
            f"{r['nfe']:.0f}", f"{r['seconds']:.1f}",
        ]
        for r in rows
    ]  # fmt: skip
    report.add("Results (test accuracy %, mean ± std over seeds; inference mode)",
               markdown_table(header, table))  # fmt: skip
    report.add(
        "Reading the table",
        "Noise is off at evaluation (`eqx.nn.inference_mode`): the accuracies are those of "
        "the drift (expected branch). Gaussian columns add N(0, s^2) to every input feature "
        "(features are standardized); FGSM columns move each feature by eps in the sign of the "
        "loss gradient. Test NFE is the neural ODE's adaptive Tsit5 solve (rtol 1e-3, atol "
        "1e-4) per example, or the ResNet's depth. Noise-trained ODEs are trained as SDEs with "
        f"Euler–Maruyama, dt = {config.sde_dt0}; STEER draws the end time from U(1 - b, 1 + b), "
        f"b = {config.steer_b}; RNODE adds {config.rnode_weight} x (kinetic + Jacobian) "
        "penalties (Finlay et al. 2020).",
    )
    report.add_settings(config)
    _figure(rows, config, report)
    return report
