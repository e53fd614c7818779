"""The `cde` section of `neurde run zoo`: a neural CDE tells the turning direction of spirals.

Kidger et al.'s toy problem (torchcde's example), made harder as in their irregular-data
experiments: every series has its own irregular times and 30% of its observations dropped
at random. The CDE reads the series through its Hermite (default) or linear interpolation,
with time as a channel, and classifies from its final hidden state.
"""

import dataclasses
import time
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax

from ..continuous import ControlPath, NeuralCDE, control_path
from ..continuous.cde import Interpolation
from ..data import Classification, spiral_directions
from ..solvers import RK4
from ..train import fit
from .report import Report, markdown_table, pyplot


@dataclasses.dataclass(frozen=True)
class CDEConfig:
    """Settings of one run at a given size."""

    n_train: int
    n_test: int
    length: int
    drop: float
    hidden: int
    width: int
    steps: int
    batch_size: int
    learning_rate: float
    dt0: float


SIZES = {
    "quick": CDEConfig(256, 256, 50, 0.3, 8, 32, 150, 32, 1e-2, 1 / 16),
    "default": CDEConfig(1024, 512, 100, 0.3, 16, 64, 600, 64, 5e-3, 1 / 32),
    "full": CDEConfig(4096, 2048, 100, 0.3, 32, 128, 3000, 128, 3e-3, 1 / 64),
}


@dataclasses.dataclass
class CDERun:
    """The trained model, its test data and the headline numbers of one run."""

    model: NeuralCDE
    data: Classification
    paths: ControlPath
    numbers: dict[str, float]
    losses: list[float]


def _paths(x: jax.Array, interpolation: Interpolation) -> ControlPath:
    """The control paths of a batch of series `(n, length, 1 + channels)` (time first)."""
    build = lambda s: control_path(s[:, 0], s[:, 1:], interpolation=interpolation)  # noqa: E731
    return jax.jit(jax.vmap(build))(x)


def _loss(model: NeuralCDE, batch: Any, key: Any) -> jax.Array:
    paths, labels = batch
    logits = jax.vmap(model)(paths)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


@eqx.filter_jit
def _accuracy_nfe(model: NeuralCDE, paths: ControlPath, labels: jax.Array) -> tuple:
    solutions = jax.vmap(model.solve)(paths)
    correct = jnp.argmax(solutions.ys, axis=-1) == labels
    return jnp.mean(correct), jnp.mean(solutions.stats["nfe"])


def _evaluate(model: NeuralCDE, paths: ControlPath, labels: jax.Array) -> tuple[float, float]:
    """Test accuracy and the mean number of field evaluations per series."""
    accuracy, nfe = _accuracy_nfe(model, paths, labels)
    return float(accuracy), float(nfe)


def run_cde(
    size: str = "quick",
    seed: int = 0,
    *,
    interpolation: Interpolation = "hermite",
    log: Any = print,
) -> CDERun:
    """Train a neural CDE on `spiral_directions` at `size` and measure its test accuracy."""
    config = SIZES[size]
    key = jr.key(seed)
    data = spiral_directions(
        config.n_train, config.n_test, length=config.length, drop=config.drop, key=key
    )
    train, test = _paths(data.x_train, interpolation), _paths(data.x_test, interpolation)
    model = NeuralCDE(
        2, config.hidden, 2, width_size=config.width, depth=1, interpolation=interpolation,
        solver=RK4(), dt0=config.dt0, key=jr.fold_in(key, 1),
    )  # fmt: skip
    start = time.perf_counter()
    result = fit(
        model, _loss, (train, data.y_train), steps=config.steps, batch_size=config.batch_size,
        optim=optax.adam(optax.cosine_decay_schedule(config.learning_rate, config.steps)),
        key=jr.fold_in(key, 2), progress=False,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    model = result.model
    accuracy, nfe = _evaluate(model, test, data.y_test)
    numbers = {
        f"{interpolation}_accuracy": accuracy,
        f"{interpolation}_nfe": nfe,
        f"{interpolation}_train_seconds": seconds,
    }
    log(f"cde ({interpolation}, {size}): test accuracy {accuracy:.4f}, {seconds:.1f} s")
    losses = [float(x) for x in result.history.loss]
    return CDERun(model, data, test, numbers, losses)


def train_cde(
    size: str = "quick", seed: int = 0, *, interpolation: Interpolation = "hermite"
) -> dict[str, float]:
    """The headline numbers of `run_cde` (what the acceptance test checks)."""
    return run_cde(size, seed, interpolation=interpolation, log=lambda _: None).numbers


def _figure(run: CDERun) -> Any:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    x, y = np.asarray(run.data.x_test), np.asarray(run.data.y_test)
    for label, color, name in ((0, "tab:blue", "anticlockwise"), (1, "tab:red", "clockwise")):
        i = int(np.flatnonzero(y == label)[0])
        path = jax.tree.map(lambda a, i=i: a[i], run.paths)
        dense = jax.vmap(path.evaluate)(jnp.linspace(0, 1, 400))
        axes[0].plot(dense[:, 1], dense[:, 2], color=color, lw=1, label=name)
        axes[0].plot(x[i, :, 1], x[i, :, 2], ".", color=color, ms=4)
    axes[0].set_title("Test series: kept points, Hermite path")
    axes[0].legend()
    axes[0].set_aspect("equal")
    axes[1].plot(run.losses)
    axes[1].set_yscale("log")
    axes[1].set_xlabel("step")
    axes[1].set_title("Training loss (cross-entropy)")
    return fig


def section(report: Report, *, size: str, seed: int, log: Any = print) -> dict[str, float]:
    """Train the CDE (Hermite and linear paths) and add the `cde` section to `report`."""
    hermite = run_cde(size, seed, interpolation="hermite", log=log)
    linear = run_cde(size, seed, interpolation="linear", log=log)
    config = SIZES[size]
    rows = [
        [name, run.numbers[f"{name}_accuracy"], run.numbers[f"{name}_nfe"],
         round(run.numbers[f"{name}_train_seconds"], 1)]
        for name, run in (("hermite", hermite), ("linear", linear))
    ]  # fmt: skip
    report.add(
        "Neural CDE: spiral direction",
        f"{config.n_train} training / {config.n_test} test spirals, {config.length} irregular "
        f"times each, {config.drop:.0%} of the observations dropped; hidden size "
        f"{config.hidden}, RK4 with dt0 = {config.dt0:.4g} on the normalized time, "
        f"{config.steps} Adam steps.\n\n"
        + markdown_table(["path", "test accuracy", "NFE", "train time (s)"], rows),
    )
    report.add_figure(_figure(hermite), "cde_spirals", "Neural CDE on irregular spirals")
    return {**hermite.numbers, **linear.numbers}
