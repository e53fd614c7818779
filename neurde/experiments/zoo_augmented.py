"""The `augmented` section of `neurde run zoo`: augmented, second-order and heavy-ball ODEs.

Three tasks from the papers, each with the plain (first-order) neural ODE beside the new
model at the same width and number of steps:

- concentric annuli (Dupont et al. 2019): an `AugmentedODE` with one extra channel and a
  linear readout vs a neural ODE in the plane with the same linear head (accuracy, NFE);
- $g(x) = -x$ on $[-1, 1]$: a one-dimensional flow cannot reverse the line, an augmented one
  rotates it through the extra dimension (test MSE);
- a damped oscillator observed in position only (Norcliffe et al. 2020): `SecondOrderODE`
  and `HeavyBallODE` vs a first-order neural ODE on the position, trained on the first half
  of the trajectory and extrapolated over the second half (MSE on the second half).

`train_annuli`, `train_reflection` and `train_oscillator` return the headline numbers (and
what the figures need); the slow acceptance tests call them at `size="quick"`.
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
from neurde.continuous import AugmentedODE, HeavyBallODE, SecondOrderODE

from ..train import fit
from .report import Report, markdown_table, pyplot

SIZES: dict[str, dict[str, Any]] = {
    "quick": {
        "reflection_width": 16,
        "osc_width": 16,
        "n": 256,
        "width": 32,
        "steps": 200,
        "reflection_steps": 250,
        "osc_steps": 300,
    },
    "default": {
        "reflection_width": 32,
        "osc_width": 16,
        "n": 1024,
        "width": 32,
        "steps": 600,
        "reflection_steps": 600,
        "osc_steps": 600,
    },
    "full": {
        "reflection_width": 64,
        "osc_width": 32,
        "n": 4096,
        "width": 64,
        "steps": 2000,
        "reflection_steps": 2000,
        "osc_steps": 2000,
    },
}


def _config(size: str) -> dict[str, Any]:
    if size not in SIZES:
        raise ValueError(f"zoo augmented: `size` must be one of {list(SIZES)}, got {size!r}.")
    return SIZES[size]


def _optim(lr: float, steps: int) -> optax.GradientTransformation:
    return optax.adam(optax.cosine_decay_schedule(lr, steps, alpha=0.05))


def _classification_loss(model: Any, batch: Any, key: Any) -> Any:
    del key
    x, y = batch
    solution = jax.vmap(model.solve)(x)
    loss = optax.sigmoid_binary_cross_entropy(solution.ys[:, 0], y.astype(solution.ys.dtype))
    return jnp.mean(loss), {"nfe": jnp.mean(solution.stats["nfe"])}


def _regression_loss(model: Any, batch: Any, key: Any) -> Any:
    del key
    x, y = batch
    solution = jax.vmap(model.solve)(x)
    return jnp.mean((solution.ys - y) ** 2), {"nfe": jnp.mean(solution.stats["nfe"])}


@eqx.filter_jit
def _predict(model: Any, x: Any) -> tuple[Any, Any]:
    solution = jax.vmap(model.solve)(x)
    return solution.ys, jnp.mean(solution.stats["nfe"])


def _train(model: Any, loss: Any, data: Any, steps: int, lr: float, key: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    model = fit(model, loss, data, steps=steps, key=key, optim=_optim(lr, steps), progress=False)[0]
    return model, time.perf_counter() - start


def annuli_models(width: int, *, key: Any) -> dict[str, Any]:
    """The two annuli classifiers: the plane ODE with a linear head, and the augmented one."""
    k1, k2, k3, k4 = jr.split(key, 4)
    plain_ode = neurde.NeuralODE(neurde.MLPField(2, width, 2, key=k1), t1=1.0)
    plain = neurde.Composed(None, plain_ode, eqx.nn.Linear(2, 1, key=k2))
    field = neurde.MLPField(3, width, 2, key=k3)
    augmented = AugmentedODE(2, 1, field, readout="linear", out_size=1, key=k4, t1=1.0)
    return {"plain": plain, "augmented": augmented}


def train_annuli(size: str = "quick", seed: int = 0) -> tuple[dict[str, float], dict[str, Any]]:
    """Train both annuli classifiers; numbers: test accuracy, test NFE, wall time of each."""
    cfg = _config(size)
    data_key, model_key, train_key = jr.split(jr.key(seed), 3)
    data = neurde.data.concentric_annuli(cfg["n"], cfg["n"], key=data_key)
    numbers: dict[str, float] = {}
    models = annuli_models(cfg["width"], key=model_key)
    for name, model in models.items():
        batch = (data.x_train, data.y_train)
        model, seconds = _train(model, _classification_loss, batch, cfg["steps"], 1e-2, train_key)
        logits, nfe = _predict(model, data.x_test)
        accuracy = jnp.mean((logits[:, 0] > 0) == (data.y_test == 1))
        numbers |= {f"{name}_accuracy": float(accuracy), f"{name}_nfe": float(nfe)}
        numbers[f"{name}_seconds"] = seconds
        models[name] = model
    return numbers, {"models": models, "data": data}


def train_reflection(size: str = "quick", seed: int = 0) -> tuple[dict[str, float], dict[str, Any]]:
    """Fit $g(x) = -x$ on $[-1, 1]$ with a 1-D neural ODE and a 1+1-D augmented one."""
    cfg = _config(size)
    data_key, k1, k2, train_key = jr.split(jr.key(seed), 4)
    x = jr.uniform(data_key, (64, 1), minval=-1.0, maxval=1.0)
    x_test = jnp.linspace(-1.0, 1.0, 201)[:, None]
    models = {
        "plain": neurde.NeuralODE(neurde.MLPField(1, cfg["reflection_width"], 2, key=k1), t1=1.0),
        "augmented": AugmentedODE(1, 1, width_size=cfg["reflection_width"], key=k2, t1=1.0),
    }
    numbers: dict[str, float] = {}
    for name, model in models.items():
        steps = cfg["reflection_steps"]
        model, seconds = _train(model, _regression_loss, (x, -x), steps, 1e-2, train_key)
        prediction, nfe = _predict(model, x_test)
        numbers[f"{name}_mse"] = float(jnp.mean((prediction + x_test) ** 2))
        numbers[f"{name}_nfe"] = float(nfe)
        numbers[f"{name}_seconds"] = seconds
        models[name] = model
    return numbers, {"models": models, "x": x_test}


def oscillator_models(width: int, *, key: Any) -> dict[str, Any]:
    """The first-order ODE on the position, SONODE and HBNODE (learned initial velocity)."""
    k1, k2, k3 = jr.split(key, 3)

    # Small tanh fields: the true acceleration -x - 0.2 v is linear.
    def mlp(size: int, out: int, k: Any) -> Any:
        return neurde.MLPField(size, width, 1, out_shape=(out,), activation=jnp.tanh, key=k)

    return {
        "first_order": neurde.NeuralODE(mlp(1, 1, k1)),
        "second_order": SecondOrderODE(1, mlp(2, 1, k1), width_size=width, depth=1, key=k2),
        "heavy_ball": HeavyBallODE(
            1, mlp(1, 1, k1), width_size=width, depth=1, initial="learned", key=k3
        ),
    }


def _trajectory_loss(model: Any, batch: Any, key: Any) -> Any:
    del key
    ts, xs, weights = batch
    solution = model.solve(xs[0], ts)
    error = jnp.sum(weights[:, None] * (solution.ys - xs) ** 2) / jnp.sum(weights)
    return error, {"nfe": solution.stats["nfe"]}


def _curriculum(ts: Any, xs: Any, steps: int) -> Any:
    # Fit a quarter, a half, then all of the training window: fitting the whole window from
    # the start gets stuck in a slowly decaying non-oscillating local minimum. A mask keeps
    # the shapes fixed, so the step compiles once.
    for i in range(steps):
        horizon = ts[-1] * (1 + 3 * i // steps) / 3
        yield ts, xs, (ts <= horizon).astype(xs.dtype)


def train_oscillator(size: str = "quick", seed: int = 0) -> tuple[dict[str, float], dict[str, Any]]:
    """Fit the position of one damped oscillator on $t \\in [0, 10]$, extrapolate to 20."""
    cfg = _config(size)
    data_key, model_key, train_key = jr.split(jr.key(seed), 3)
    # One trajectory: x'' + 0.2 x' + x = 0 from a random (x0, v0); only x is observed.
    traj = neurde.data.oscillator(1, 81, t1=20.0, damping=0.1, key=data_key)
    ts, xs = traj.ts, traj.ys[0, :, :1]
    half = ts.shape[0] // 2 + 1
    models = oscillator_models(cfg["osc_width"], key=model_key)
    numbers: dict[str, float] = {}
    predictions = {}
    for name, model in models.items():
        steps = cfg["osc_steps"]
        batches = _curriculum(ts[:half], xs[:half], steps)
        model, seconds = _train(model, _trajectory_loss, batches, steps, 1e-2, train_key)
        prediction = model(xs[0], ts)
        numbers[f"{name}_fit_mse"] = float(jnp.mean((prediction[:half] - xs[:half]) ** 2))
        numbers[f"{name}_extrapolation_mse"] = float(jnp.mean((prediction[half:] - xs[half:]) ** 2))
        numbers[f"{name}_seconds"] = seconds
        models[name], predictions[name] = model, prediction
    return numbers, {"models": models, "ts": ts, "xs": xs, "predictions": predictions}


def _figures(
    report: Report, annuli: dict[str, Any], reflection: dict[str, Any], osc: dict[str, Any]
):
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    grid = jnp.stack(jnp.meshgrid(*(2 * [jnp.linspace(-1.8, 1.8, 61)])), -1).reshape(-1, 2)
    data = annuli["data"]
    for ax, name in zip(axes[:2], ("plain", "augmented"), strict=True):
        logits, _ = _predict(annuli["models"][name], grid)
        ax.contourf(
            np.asarray(grid[:, 0]).reshape(61, 61),
            np.asarray(grid[:, 1]).reshape(61, 61),
            np.asarray(jax.nn.sigmoid(logits[:, 0])).reshape(61, 61),
            levels=20,
            cmap="RdBu_r",
        )
        x, y = np.asarray(data.x_test), np.asarray(data.y_test)
        ax.scatter(x[:, 0], x[:, 1], c=y, s=4, cmap="RdBu_r", edgecolors="k", linewidths=0.2)
        ax.set_title(f"annuli: {name} neural ODE")
        ax.set_aspect("equal")
    x = np.asarray(reflection["x"])[:, 0]
    axes[2].plot(x, -x, "k--", label="g(x) = -x")
    for name, model in reflection["models"].items():
        axes[2].plot(x, np.asarray(_predict(model, reflection["x"])[0])[:, 0], label=name)
    axes[2].set_title("g(x) = -x on [-1, 1]")
    axes[2].legend()
    report.add_figure(
        fig, "augmented_annuli", "Annuli (test points over predicted probability) and g(x) = -x."
    )
    fig, ax = plt.subplots(figsize=(8, 4))
    ts, xs = np.asarray(osc["ts"]), np.asarray(osc["xs"])[:, 0]
    ax.plot(ts, xs, "k.", label="observed position")
    for name, prediction in osc["predictions"].items():
        ax.plot(ts, np.asarray(prediction)[:, 0], label=name.replace("_", "-"))
    ax.axvline(ts[ts.shape[0] // 2], color="gray", ls=":", label="end of training window")
    ax.set_xlabel("t")
    ax.legend()
    report.add_figure(
        fig, "augmented_oscillator", "Damped oscillator: fit on [0, 10], extrapolated to 20."
    )


def section(report: Report, *, size: str, seed: int, log=print) -> dict[str, float]:
    """Train and compare the models of this section at `size`; add the tables and figures.

    Returns the headline numbers: accuracies and NFE on the annuli, MSEs on g(x) = -x, and
    the extrapolation MSEs on the oscillator.
    """
    log(f"zoo augmented: annuli ({size})")
    annuli, annuli_state = train_annuli(size, seed)
    log(f"zoo augmented: g(x) = -x ({size})")
    reflection, reflection_state = train_reflection(size, seed)
    log(f"zoo augmented: damped oscillator ({size})")
    osc, osc_state = train_oscillator(size, seed)
    rows = [
        [
            "annuli",
            name,
            annuli[f"{name}_accuracy"],
            annuli[f"{name}_nfe"],
            annuli[f"{name}_seconds"],
        ]
        for name in ("plain", "augmented")
    ]
    rows += [
        ["g(x) = -x", name, reflection[f"{name}_mse"], reflection[f"{name}_nfe"],
         reflection[f"{name}_seconds"]]
        for name in ("plain", "augmented")
    ]  # fmt: skip
    cfg = _config(size)
    report.add(
        "Augmented neural ODEs (Dupont et al. 2019)",
        f"Concentric annuli ({cfg['n']} train / {cfg['n']} test points, radii 0.5 / 1 / 1.5): a "
        "neural ODE in the plane with a linear head vs an `AugmentedODE` with one extra "
        f"channel and a linear readout, fields of width {cfg['width']}, {cfg['steps']} Adam "
        "steps; $g(x) = -x$ on $[-1, 1]$ with a 1-D ODE vs a 1+1-D augmented one (readout: "
        f"the first channel), {cfg['reflection_steps']} steps. Accuracy or MSE on test points, "
        "mean NFE of a test forward solve.\n\n"
        + markdown_table(["task", "model", "accuracy / MSE", "NFE", "train time (s)"], rows),
    )
    rows = [
        [name.replace("_", "-"), osc[f"{name}_fit_mse"], osc[f"{name}_extrapolation_mse"],
         osc[f"{name}_seconds"]]
        for name in ("first_order", "second_order", "heavy_ball")
    ]  # fmt: skip
    report.add(
        "Second-order and heavy-ball neural ODEs (Norcliffe et al. 2020, Xia et al. 2021)",
        "One damped oscillator $\\ddot x + 0.2 \\dot x + x = 0$ observed in position only, "
        "81 times on $[0, 20]$; trained on $[0, 10]$ (a quarter, a half, then the whole "
        f"window; {cfg['osc_steps']} steps), extrapolated over $(10, 20]$. The first-order "
        "model is a neural ODE on the position; SONODE and HBNODE learn the initial velocity "
        "from $x_0$.\n\n"
        + markdown_table(["model", "fit MSE", "extrapolation MSE", "train time (s)"], rows),
    )
    _figures(report, annuli_state, reflection_state, osc_state)
    return {
        "augmented_accuracy": annuli["augmented_accuracy"],
        "plain_accuracy": annuli["plain_accuracy"],
        "augmented_nfe": annuli["augmented_nfe"],
        "plain_nfe": annuli["plain_nfe"],
        "augmented_reflection_mse": reflection["augmented_mse"],
        "plain_reflection_mse": reflection["plain_mse"],
        "sonode_extrapolation_mse": osc["second_order_extrapolation_mse"],
        "hbnode_extrapolation_mse": osc["heavy_ball_extrapolation_mse"],
        "first_order_extrapolation_mse": osc["first_order_extrapolation_mse"],
    }
