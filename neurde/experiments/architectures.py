"""`neurde run architectures`: every discrete scheme (and a neural ODE) on digits and MNIST-1D.

Each architecture is a `neurde.discrete.Classifier` (input embedding, residual stack read as a
numerical scheme, pooling, linear head); the neural ODE replaces the stack by a `NeuralODE`
on [0, 1]. Widths are chosen per architecture so that parameter counts match at the
reference depth. Seeds are trained together as one vmapped ensemble (one compiled step for
all of them); they differ in initialization and share the minibatch order.
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

from ..composed import Composed
from ..data import Classification, digits, mnist1d
from ..discrete import VECTOR_ARCHITECTURES, Classifier
from ..fields import MLPField
from ..ode import NeuralODE
from ..train import ensemble_member, fit, make_ensemble
from ..train.sharding import data_parallel
from .report import Report, config_from_args, markdown_table, pyplot

NAME = "architectures"
DESCRIPTION = (
    "Discrete schemes (ResNet, LM-ResNet, RK, RevNet, ...) and a neural ODE on digits and MNIST-1D."
)

CONV = ("resnet-conv", "parabolic", "hyperbolic")
VECTOR = (*VECTOR_ARCHITECTURES, "neural-ode")


def ode_classifier(in_size: int, num_classes: int, width: int, *, key: Any) -> Composed:
    """Linear embedding of the flattened input, a neural ODE on [0, 1] (Tsit5, adaptive),
    linear head."""
    k1, k2, k3 = jr.split(key, 3)
    field = MLPField(width, width, 1, activation=jnp.tanh, key=k2)
    return Composed(
        eqx.nn.Sequential([eqx.nn.Lambda(jnp.ravel), eqx.nn.Linear(in_size, width, key=k1)]),
        NeuralODE(field, t1=1.0, rtol=1e-3, atol=1e-4),
        eqx.nn.Linear(width, num_classes, key=k3),
    )


@dataclasses.dataclass(frozen=True)
class ArchitecturesConfig:
    """Settings; the default is the quick one, `full()` the documented large one.

    Quick: every architecture at one depth, 2 seeds, 300 steps, about 4k parameters: a smoke
    run of the whole comparison (MNIST-1D accuracies stay far below the paper's anchors at this
    size). Full: depths 2, 4 and 8 (convolutional nets at depth 4 with 2000 steps), 3 seeds,
    1000 steps, about 20k parameters. The learning rate decays on a cosine schedule from
    `learning_rate` to 0.
    """

    datasets: tuple[str, ...] = ("digits", "mnist1d")
    architectures: tuple[str, ...] = VECTOR + CONV
    depths: tuple[int, ...] = (4,)
    reference_depth: int = 4
    target_params: int = 4000
    seeds: int = 2
    steps: int = 300
    batch_size: int = 64
    learning_rate: float = 5e-3
    conv_all_depths: bool = True
    conv_steps: int | None = None
    seed: int = 0
    devices: int = 1

    @classmethod
    def full(cls, **overrides: Any) -> "ArchitecturesConfig":
        """Three depths, three seeds, 1000 steps, 20k parameters; the convolutional nets (20-50x
        the cost of a vector net per step on a CPU) at the reference depth only, with 2000
        steps (at 1000 the conv ResNet stayed at 85% on MNIST-1D). Run time: see README."""
        base = {
            "depths": (2, 4, 8), "seeds": 3, "steps": 1000, "target_params": 20000,
            "learning_rate": 3e-3, "conv_all_depths": False, "conv_steps": 2000,
        }  # fmt: skip
        return cls(**{**base, **overrides})


def load(name: str, *, conv: bool, seed: int) -> Classification:
    """The data set, channel-first for convolutional architectures, flat otherwise."""
    if name == "digits":
        return digits(image=conv, seed=seed)
    if name == "mnist1d":
        return mnist1d(channels=conv, seed=seed)
    raise ValueError(f"architectures: unknown data set {name!r}; choose 'digits' or 'mnist1d'.")


def build(arch: str, data: Classification, width: int, depth: int, *, key: Any) -> eqx.Module:
    """One classifier of the comparison."""
    if arch == "neural-ode":
        size = int(np.prod(data.input_shape))
        return ode_classifier(size, data.num_classes, width, key=key)
    name = "resnet" if arch == "resnet-conv" else arch
    return Classifier(
        data.input_shape, data.num_classes, architecture=name, width=width, depth=depth,
        hidden=width, key=key,
    )  # fmt: skip


def count_params(model: Any) -> int:
    """Number of trainable scalars (of a model or of its `eqx.filter_eval_shape` skeleton)."""
    leaves = jax.tree.leaves(model)
    return int(sum(x.size for x in leaves if eqx.is_inexact_array_like(x) or _is_struct(x)))


def _is_struct(x: Any) -> bool:
    return isinstance(x, jax.ShapeDtypeStruct) and jnp.issubdtype(x.dtype, jnp.inexact)


def matched_width(arch: str, data: Classification, config: ArchitecturesConfig) -> int:
    """The even width whose parameter count at the reference depth is closest to the target."""
    best, best_gap = 2, float("inf")
    for width in range(2, 129, 2):
        # Shapes only: no weights are initialized while searching.
        skeleton = eqx.filter_eval_shape(
            build, arch, data, width, config.reference_depth, key=jr.key(0)
        )
        n = count_params(skeleton)
        if abs(n - config.target_params) < best_gap:
            best, best_gap = width, abs(n - config.target_params)
        if n > config.target_params:
            break
    return best


def _loss(model: Any, batch: Any, key: Any) -> Any:
    x, y = batch
    logits = jax.vmap(model)(x)
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))


@eqx.filter_jit
def _accuracy(model: Any, x: jax.Array, y: jax.Array) -> jax.Array:
    return jnp.mean(jnp.argmax(jax.vmap(model)(x), -1) == y)


def train_one(
    arch: str, data: Classification, width: int, depth: int, config: ArchitecturesConfig
) -> dict[str, Any]:
    """Train `config.seeds` initializations together; return accuracies and costs."""
    key = jr.fold_in(jr.key(config.seed), depth)
    ensemble = make_ensemble(
        lambda k: build(arch, data, width, depth, key=k), config.seeds, key=key
    )
    steps = config.conv_steps if arch in CONV and config.conv_steps else config.steps
    start = time.perf_counter()
    ensemble, _, history = fit(
        ensemble,
        _loss,
        (data.x_train, data.y_train),
        steps=steps,
        batch_size=config.batch_size,
        optim=optax.adam(optax.cosine_decay_schedule(config.learning_rate, steps)),
        ensemble=True,
        key=jr.fold_in(key, 1),
        progress=False,
        mesh=data_parallel("architectures", config.devices),
    )
    seconds = time.perf_counter() - start
    members = [ensemble_member(ensemble, i) for i in range(config.seeds)]
    accuracies = [float(_accuracy(m, data.x_test, data.y_test)) for m in members]
    nfe = None
    if arch == "neural-ode":
        first = members[0]
        sol = jax.vmap(first.solve)(data.x_test[:256])
        nfe = float(jnp.mean(sol.stats["nfe"]))
    return {
        "params": count_params(members[0]),
        "accuracy": accuracies,
        "seconds": seconds,
        "compile": history.compile_time,
        "nfe": nfe,
    }


def run_all(config: ArchitecturesConfig, *, log: Any = print) -> list[dict[str, Any]]:
    """Every (data set, architecture, depth) of the configuration; one row each."""
    rows = []
    for dataset in config.datasets:
        for arch in config.architectures:
            conv = arch in CONV
            data = load(dataset, conv=conv, seed=config.seed)
            width = matched_width(arch, data, config)
            one_depth = arch == "neural-ode" or (arch in CONV and not config.conv_all_depths)
            depths = (config.reference_depth,) if one_depth else config.depths
            for depth in depths:
                result = train_one(arch, data, width, depth, config)
                acc = np.asarray(result["accuracy"])
                row = {
                    "dataset": dataset, "architecture": arch, "depth": depth, "width": width,
                    "params": result["params"], "mean": float(acc.mean()),
                    "std": float(acc.std()), "seconds": result["seconds"],
                    "compile": result["compile"], "nfe": result["nfe"],
                }  # fmt: skip
                log(
                    f"{dataset:8s} {arch:14s} depth {depth:3d} width {width:3d} "
                    f"params {row['params']:6d} acc {row['mean']:.3f}±{row['std']:.3f} "
                    f"{row['seconds']:.1f}s ({row['compile']:.1f}s compile)"
                )
                rows.append(row)
    return rows


def _figure(rows: list[dict[str, Any]], config: ArchitecturesConfig, report: Report) -> None:
    plt = pyplot()

    fig, axes = plt.subplots(2, len(config.datasets), figsize=(7 * len(config.datasets), 9))
    axes = np.asarray(axes).reshape(2, -1)
    for j, dataset in enumerate(config.datasets):
        for arch in config.architectures:
            sel = [r for r in rows if r["dataset"] == dataset and r["architecture"] == arch]
            if not sel:
                continue
            depth = [r["depth"] for r in sel]
            mean = np.array([r["mean"] for r in sel])
            std = np.array([r["std"] for r in sel])
            style = "s--" if arch in CONV else "o-"
            axes[0, j].errorbar(depth, mean, yerr=std, fmt=style, label=arch, capsize=2)
            axes[1, j].errorbar([r["params"] for r in sel], mean, yerr=std, fmt=style, label=arch)
        axes[0, j].set_xscale("log", base=2)
        axes[0, j].set_title(f"{dataset}: test accuracy vs depth")
        axes[0, j].set_xlabel("depth (blocks)")
        axes[1, j].set_xscale("log")
        axes[1, j].set_title(f"{dataset}: test accuracy vs parameters")
        axes[1, j].set_xlabel("trainable parameters")
    axes[0, -1].legend(fontsize=7, ncol=2)
    report.add_figure(fig, "architectures", "Test accuracy (mean ± std over seeds).")
    plt.close(fig)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `neurde run architectures`."""
    parser.add_argument("--steps", type=int, help="optimization steps per model (quick: 300)")
    parser.add_argument("--seeds", type=int, help="initializations per model (quick: 2)")
    parser.add_argument(
        "--datasets", nargs="+", choices=["digits", "mnist1d"], help="data sets (both)"
    )
    parser.add_argument(
        "--architectures", nargs="+", choices=list(VECTOR + CONV), help="subset to train"
    )
    parser.add_argument("--depths", nargs="+", type=int, help="depths (quick: 4; full: 2 4 8)")
    parser.add_argument(
        "--devices",
        type=int,
        help="train each ensemble data parallel, each batch split over N devices (GPUs; on a "
        "CPU, N host devices); the batch size (64) must be divisible by N",
    )


def run(args: argparse.Namespace) -> Report:
    """Train the comparison and write the report."""
    config = config_from_args(
        ArchitecturesConfig,
        args,
        ("steps", "seeds", "devices"),
        ("datasets", "architectures", "depths"),
        lambda o: {"reference_depth": o["depths"][-1]} if "depths" in o else {},
    )
    rows = run_all(config)
    report = Report("Discrete architectures as numerical schemes", args.out)
    header = [
        "data set", "architecture", "depth", "width", "params", "test accuracy", "train s",
        "of which compile s",
    ]  # fmt: skip
    table = [
        [
            r["dataset"], r["architecture"], r["depth"], r["width"], r["params"],
            f"{100 * r['mean']:.1f} ± {100 * r['std']:.1f} %", f"{r['seconds']:.1f}",
            f"{r['compile']:.1f}",
        ]
        for r in rows
    ]  # fmt: skip
    report.add("Results", markdown_table(header, table))
    nfe_rows = [[r["dataset"], f"{r['nfe']:.0f}"] for r in rows if r["nfe"] is not None]
    if nfe_rows:
        report.add(
            "Neural ODE cost",
            "Function evaluations per test example of the neural ODE (Tsit5, rtol 1e-3):\n\n"
            + markdown_table(["data set", "NFE"], nfe_rows),
        )
    report.add_settings(
        config,
        "\n\nSanity anchors from the MNIST-1D paper (Greydanus 2020): logistic regression "
        "about 32%, MLP about 68%, CNN about 94% test accuracy. Seeds differ in initialization "
        "and share the minibatch order (they are trained as one vmapped ensemble).",
    )
    _figure(rows, config, report)
    return report
