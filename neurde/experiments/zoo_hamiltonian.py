"""The `hamiltonian` section of `neurde run zoo`: Hamiltonian neural networks vs neural ODEs.

The task of Greydanus et al. (2019): learn an ideal mass-spring and an ideal pendulum from
trajectories (states $[q, p]$), then roll the learned dynamics out for 100 periods and
measure the drift of the true energy. Both models see the same data (short windows of the
observed trajectories) and the same loss and optimizer:

- a plain neural ODE (an MLP field, `neurde.RK4` at the same step), whose small errors in
  the field add or remove energy at a steady rate, so the energy error grows over time;
- a separable `HamiltonianNN` ($T_\\theta(p) + V_\\theta(q)$) solved with the symplectic
  `neurde.solvers.Leapfrog`, which conserves its learned energy: the true energy error
  stays bounded by how well the learned level sets match the true ones.

`train_system` returns the headline numbers and the rollouts; the slow acceptance tests
call it at `size="quick"`.
"""

import time
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax

import neurde
from neurde.continuous import HamiltonianNN
from neurde.solvers import Leapfrog

from ..data import mass_spring, mass_spring_energy, pendulum, pendulum_energy
from ..train import fit
from .report import Report, markdown_table, pyplot

SIZES: dict[str, dict[str, Any]] = {
    "quick": {"n": 32, "width": 32, "steps": 200, "test": 8},
    "default": {"n": 128, "width": 64, "steps": 2000, "test": 32},
    "full": {"n": 512, "width": 128, "steps": 6000, "test": 128},
}
SYSTEMS = {
    "mass_spring": (mass_spring, mass_spring_energy),
    "pendulum": (pendulum, pendulum_energy),
}
PERIOD = 2 * np.pi  # of the mass-spring with k = m = 1; the pendulum's is a little longer
N_TIMES = 33  # observations per period
WINDOW = 4  # observations predicted from each observed state
PERIODS = 100  # length of the rollout
SAVES_PER_PERIOD = 16


def _config(size: str) -> dict[str, Any]:
    if size not in SIZES:
        raise ValueError(f"zoo hamiltonian: `size` must be one of {list(SIZES)}, got {size!r}.")
    return SIZES[size]


def _windows(ys: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Every observed state and the `WINDOW` observations after it, flattened over
    trajectories: `(y0 (m, 2), targets (m, WINDOW, 2))`."""
    n_starts = ys.shape[1] - WINDOW
    starts = ys[:, :n_starts].reshape(-1, 2)
    targets = jnp.stack([ys[:, 1 + k : 1 + k + n_starts] for k in range(WINDOW)], axis=2)
    return starts, targets.reshape(-1, WINDOW, 2)


def models(width: int, dt: float, *, key: Any) -> dict[str, Any]:
    """The plain neural ODE (RK4) and the separable HNN (leapfrog), both with step `dt`."""
    k1, k2 = jr.split(key)
    field = neurde.MLPField(2, width, 2, activation=jnp.tanh, key=k1)
    plain = neurde.NeuralODE(field, solver=neurde.RK4(), dt0=dt, max_steps=100_000)
    hnn = HamiltonianNN(
        1, width, 2, separable=True, solver=Leapfrog(), dt0=dt, max_steps=100_000, key=k2
    )
    return {"neural ODE": plain, "HNN": hnn}


def _loss(ts: jax.Array) -> Any:
    def loss(model: Any, batch: Any, key: Any) -> Any:
        del key
        y0, targets = batch
        return jnp.mean((jax.vmap(lambda y: model(y, ts))(y0) - targets) ** 2)

    return loss


@eqx.filter_jit
def _rollout(model: Any, y0: jax.Array, ts: jax.Array) -> jax.Array:
    return jax.vmap(lambda y: model(y, ts))(y0)


def energy_errors(energy: Any, rollout: jax.Array, y0: jax.Array) -> np.ndarray:
    """Relative error of the true energy along each rollout, averaged over trajectories."""
    e0 = energy(y0)[:, None]
    return np.asarray(jnp.mean(jnp.abs(energy(rollout) - e0) / e0, axis=0))


def train_system(system: str, *, size: str = "quick", seed: int = 0) -> dict[str, Any]:
    """Train both models on `system` and roll them out for 100 periods.

    **Returns:** a dict with, per model name (`"neural ODE"`, `"HNN"`): `drift` (the mean
    relative energy error over the last 10 periods), `first` and `last` (the largest
    relative energy error over the first and last 10 periods), `mse` (training-window MSE),
    `seconds` (training time); and `ts`, `errors` (per model, the error curve), `rollouts`.
    """
    config = _config(size)
    generate, energy = SYSTEMS[system]
    data_key, test_key, model_key, fit_key = jr.split(jr.key(seed), 4)
    data = generate(config["n"], N_TIMES, t1=PERIOD, key=data_key)
    dt_obs = float(data.ts[1] - data.ts[0])
    window_ts = dt_obs * jnp.arange(1, WINDOW + 1, dtype=data.ts.dtype)
    batch = _windows(data.ys)
    y0 = generate(config["test"], 2, t1=PERIOD, key=test_key).y0
    ts = jnp.linspace(0.0, PERIODS * PERIOD, PERIODS * SAVES_PER_PERIOD + 1)
    tenth = PERIODS * SAVES_PER_PERIOD // 10
    out: dict[str, Any] = {"ts": np.asarray(ts), "errors": {}, "rollouts": {}}
    optim = optax.adam(optax.cosine_decay_schedule(3e-3, config["steps"], alpha=0.02))
    loss = _loss(window_ts)
    for name, model in models(config["width"], dt_obs / 2, key=model_key).items():
        start = time.perf_counter()
        result = fit(
            model,
            loss,
            batch,
            steps=config["steps"],
            key=fit_key,
            optim=optim,
            batch_size=256,
            progress=False,
        )
        seconds = time.perf_counter() - start
        rollout = _rollout(result.model, y0, ts)
        errors = energy_errors(energy, rollout, y0)
        out[name] = {
            "drift": float(np.mean(errors[-tenth:])),
            "first": float(np.max(errors[:tenth])),
            "last": float(np.max(errors[-tenth:])),
            "mse": float(eqx.filter_jit(loss)(result.model, batch, None)),
            "seconds": seconds,
        }
        out["errors"][name] = errors
        out["rollouts"][name] = np.asarray(rollout[0])
    return out


def section(report: Report, *, size: str, seed: int, log: Any = print) -> dict[str, float]:
    """Train and evaluate both models on both systems, add the table and the figure."""
    plt = pyplot()
    rows, numbers = [], {}
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for ax, system in zip(axes, SYSTEMS, strict=True):
        out = train_system(system, size=size, seed=seed)
        for name in ("neural ODE", "HNN"):
            r = out[name]
            rows.append([system, name, r["mse"], r["first"], r["last"], r["drift"], r["seconds"]])
            ax.semilogy(out["ts"] / PERIOD, np.maximum(out["errors"][name], 1e-8), label=name)
        ratio = out["neural ODE"]["drift"] / out["HNN"]["drift"]
        numbers[f"{system}_drift_ratio"] = ratio
        numbers[f"{system}_hnn_drift"] = out["HNN"]["drift"]
        numbers[f"{system}_node_drift"] = out["neural ODE"]["drift"]
        log(f"zoo hamiltonian: {system}: drift ratio (neural ODE / HNN) {ratio:.3g}")
        ax.set(title=system, xlabel="periods", ylabel="relative energy error")
        ax.legend()
    header = [
        "system",
        "model",
        "train MSE",
        "max err, first 10 periods",
        "max err, last 10 periods",
        "drift (mean err, last 10)",
        "train s",
    ]
    note = (
        "\n\nRelative error of the true energy along rollouts of 100 periods from held-out "
        "initial states (mean over trajectories). The plain neural ODE uses RK4, the "
        "separable HNN the symplectic leapfrog, both at the same step."
    )
    report.add(
        "Hamiltonian neural networks: energy over 100 periods", markdown_table(header, rows) + note
    )
    report.add_figure(fig, "hamiltonian_energy", "Relative energy error over 100 periods.")
    plt.close(fig)
    return numbers
