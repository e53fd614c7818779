"""`neurde run spiral`: fit a neural ODE to noisy spiral trajectories (Chen et al. 2018's demo).

The data are trajectories of dy/dt = (y^3) A from random initial states, observed with
noise. A NeuralODE with an MLP field is trained on whole trajectories from their initial
states, first on the first quarter of each trajectory, then on all of it (the curriculum of
Diffrax's neural ODE example, which avoids poor local minima of long-horizon fits). The
report gives the test error against the clean trajectories, NFE, train time and settings.
"""

import argparse
import dataclasses
import time
from typing import Any

import diffrax
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax

from .._config import has_error_estimate
from ..data import Trajectories, spiral
from ..fields import MLPField
from ..ode import NeuralODE
from ..solvers import RK4
from ..train import fit
from ..train.sharding import data_parallel
from .report import Report, config_from_args, markdown_table, pyplot

NAME = "spiral"
DESCRIPTION = "Neural ODE on noisy 2-D spiral trajectories (the neural ODE demo)."

SOLVERS: dict[str, Any] = {
    "tsit5": diffrax.Tsit5,
    "dopri5": diffrax.Dopri5,
    "bosh3": diffrax.Bosh3,
    "heun": diffrax.Heun,
    "rk4": RK4,
    "euler": diffrax.Euler,
}


@dataclasses.dataclass(frozen=True)
class SpiralConfig:
    """Settings of one spiral run; `quick` is the default, `full` the documented large one."""

    trajectories: int = 320
    times: int = 40
    t1: float = 3.0
    min_radius: float = 1.0
    max_radius: float = 1.5
    noise: float = 0.02
    width: int = 64
    depth: int = 2
    steps: int = 600
    batch_size: int = 32
    learning_rate: float = 1e-2
    curriculum: float = 0.3
    solver: str = "tsit5"
    dt0: float = 0.05
    adjoint: str = "backprop"
    seed: int = 0
    devices: int = 1

    @classmethod
    def full(cls, **overrides: Any) -> "SpiralConfig":
        """About 10 minutes on a 2-core CPU: more data, a wider field, 4x the steps."""
        return cls(**{"trajectories": 1280, "width": 128, "steps": 2400, **overrides})


@dataclasses.dataclass
class SpiralResult:
    """What a spiral run produced."""

    model: NeuralODE
    config: SpiralConfig
    train: Trajectories
    test: Trajectories
    test_rmse: float
    baseline_rmse: float
    test_nfe: float
    train_seconds: float
    compile_seconds: float
    losses: np.ndarray
    nfes: np.ndarray


def build_model(config: SpiralConfig, *, key: Any) -> NeuralODE:
    """The NeuralODE of the experiment, from its configuration."""
    if config.solver not in SOLVERS:
        raise ValueError(
            f"spiral: unknown solver {config.solver!r}; choose one of {sorted(SOLVERS)}."
        )
    solver = SOLVERS[config.solver]()
    # Solvers without an error estimate run with constant steps of `dt0` (NeuralODE's default
    # controller for them); adaptive ones let Diffrax pick the first step.
    fixed = not has_error_estimate(solver)
    return NeuralODE(
        MLPField(2, config.width, config.depth, key=key),
        solver=solver,
        dt0=config.dt0 if fixed else None,
        adjoint=config.adjoint,
    )


def _loss(n_times: int, ts: jax.Array):
    ts = ts[:n_times]

    def loss(model: NeuralODE, batch: Any, key: Any) -> Any:
        del key
        y0, ys = batch
        sol = jax.vmap(lambda y: model.solve(y, ts))(y0)
        nfe = jnp.mean(sol.stats["nfe"].astype(float))
        return jnp.mean((sol.ys - ys[:, :n_times]) ** 2), {"nfe": nfe}

    return loss


def train(config: SpiralConfig, *, progress: bool = True) -> SpiralResult:
    """Generate the data, train with the two-phase curriculum, evaluate on held-out data."""
    data_key, model_key, fit_key = jr.split(jr.key(config.seed), 3)
    traj = spiral(
        config.trajectories,
        config.times,
        t1=config.t1,
        noise=config.noise,
        min_radius=config.min_radius,
        max_radius=config.max_radius,
        key=data_key,
    )
    train_set, test_set = traj.split(0.8)
    model = build_model(config, key=model_key)
    # The loss is a mean of per-example squared errors: each device solves its own rows in
    # its own loop, one gradient reduction per step (benchmarks/sharding.py: at parity with
    # one device, where the default path pays a collective per solver iteration).
    mesh = data_parallel("spiral", config.devices, per_example_loss=True)
    optim = optax.adam(optax.cosine_decay_schedule(config.learning_rate, config.steps))
    phases = [
        (max(2, config.times // 4), max(1, int(config.steps * config.curriculum))),
        (config.times, config.steps - max(1, int(config.steps * config.curriculum))),
    ]
    opt_state, losses, nfes, compile_seconds = None, [], [], 0.0
    start = time.perf_counter()
    for phase, (n_times, steps) in enumerate(phases):
        if steps < 1:
            continue
        model, opt_state, history = fit(
            model,
            _loss(n_times, train_set.ts),
            (train_set.y0, train_set.ys),
            steps=steps,
            batch_size=min(config.batch_size, train_set.n),
            optim=optim,
            opt_state=opt_state,
            key=jr.fold_in(fit_key, phase),
            progress=progress,
            mesh=mesh,
        )
        losses += [float(x) for x in history.loss]
        nfes += [float(x) for x in history.metrics["nfe"]]
        compile_seconds += history.compile_time
    train_seconds = time.perf_counter() - start

    predict = jax.jit(jax.vmap(lambda y: model.solve(y, test_set.ts)))
    sol = predict(test_set.y0)
    assert test_set.clean is not None
    rmse = float(jnp.sqrt(jnp.mean((sol.ys - test_set.clean) ** 2)))
    baseline = float(jnp.sqrt(jnp.mean((test_set.clean - test_set.y0[:, None]) ** 2)))
    return SpiralResult(
        model=model,
        config=config,
        train=train_set,
        test=test_set,
        test_rmse=rmse,
        baseline_rmse=baseline,
        test_nfe=float(jnp.mean(sol.stats["nfe"])),
        train_seconds=train_seconds,
        compile_seconds=compile_seconds,
        losses=np.asarray(losses),
        nfes=np.asarray(nfes),
    )


def _figures(result: SpiralResult, report: Report) -> None:
    plt = pyplot()

    test = result.test
    pred = jax.vmap(lambda y: result.model(y, test.ts))(test.y0)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    for i in range(min(6, test.n)):
        (line,) = axes[0].plot(pred[i, :, 0], pred[i, :, 1], lw=1.5)
        axes[0].scatter(test.ys[i, :, 0], test.ys[i, :, 1], s=8, color=line.get_color())
    axes[0].set_title("test data (dots) vs neural ODE (lines)")
    axes[0].set_aspect("equal")
    axes[1].semilogy(result.losses)
    axes[1].set_title("training loss (MSE)")
    axes[1].set_xlabel("step")
    axes[2].plot(result.nfes)
    axes[2].set_title("function evaluations per solve")
    axes[2].set_xlabel("step")
    report.add_figure(fig, "spiral", "Held-out trajectories, loss and NFE during training.")
    plt.close(fig)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `neurde run spiral` beyond the shared ones."""
    parser.add_argument("--steps", type=int, help="optimization steps (quick: 600)")
    parser.add_argument("--trajectories", type=int, help="number of trajectories (quick: 320)")
    parser.add_argument("--width", type=int, help="hidden width of the MLP field (quick: 64)")
    parser.add_argument("--depth", type=int, help="hidden layers of the MLP field (quick: 2)")
    parser.add_argument("--solver", choices=sorted(SOLVERS), help="ODE solver (tsit5)")
    parser.add_argument("--adjoint", choices=["backprop", "direct", "adjoint"], help="gradients")
    parser.add_argument("--lr", type=float, dest="learning_rate", help="peak learning rate")
    parser.add_argument(
        "--devices",
        type=int,
        help="train data parallel, each batch split over N devices (GPUs; on a CPU, N host "
        "devices); the batch size (32) must be divisible by N",
    )


def run(args: argparse.Namespace) -> Report:
    """Train, evaluate, and write the report."""
    names = ("steps", "trajectories", "width", "depth", "solver", "adjoint", "learning_rate")
    names += ("devices",)
    config = config_from_args(SpiralConfig, args, names)
    result = train(config, progress=not args.no_progress)
    report = Report("Neural ODE on noisy spirals", args.out)
    report.add(
        "Result",
        markdown_table(
            ["metric", "value"],
            [
                ["test RMSE vs clean trajectories", result.test_rmse],
                ["baseline RMSE (constant y0)", result.baseline_rmse],
                ["observation noise (std)", config.noise],
                ["NFE per test solve", result.test_nfe],
                ["train time incl. compilation (s)", result.train_seconds],
                ["of which compilation, approx. (s)", result.compile_seconds],
                ["final training loss", float(result.losses[-1])],
            ],
        ),
    )
    report.add_settings(config)
    _figures(result, report)
    return report
