r"""The `sde_net` section of `neurde run stochastic`: SDE-Net on digits, out-of-distribution.

Kong, Sun, Zhang (2020): a drift net makes the prediction, a diffusion net $\sigma(h_0)$ is
trained to be small on in-distribution inputs and large on out-of-distribution ones
(`sde_net_loss`, the paper's two objectives); uncertainty from Monte Carlo over paths.

Protocol (`train_sde_net`): scikit-learn's 8x8 digits (`neurde.data.digits(image=False)`:
1347 training, 450 test images), standardized by the training set's pixel mean and standard
deviation (one scalar each, as the paper standardizes MNIST). SDENet(64 -> hidden 64,
width 64, sigma_max 1, Euler–Maruyama T = 4 in 4 steps), `sde_net_loss` (out-of-
distribution inputs: training inputs plus Gaussian noise of std 2, as the paper), Adam
1e-3, batch 64. The baseline is the same net, same seeds and same loss in inference mode:
the drift-only net (its diffusion net is trained but never used). Predictions average the
softmax over Monte Carlo Brownian paths; the OOD score is the paper's, one minus the
confidence $\max_k \bar p_k$. OOD sets (450 images each, standardized the same way):
uniform noise images (pixels U[0, 1]), and the test digits with their 64 pixels permuted
by one fixed permutation: every image keeps its pixel values (ink, range, histogram), so
only the spatial structure of a digit tells them apart, and no noise is added (unlike the
training OOD inputs).

Size "quick" is the protocol of the slow acceptance tests (tests/stochastic/test_sde_net.py),
which call `train_sde_net("quick", 0)`: 1000 steps, 10 paths per prediction. Size "full"
(GPU): 5000 steps of batch 128, 50 paths; not measured.
"""

import functools
import time
from typing import Any

import equinox as eqx
import jax
import jax.random as jr
import numpy as np
import optax

import neurde
from neurde.stochastic.sde_net import SDENet, sde_net_loss, sde_net_uncertainty

from .report import Report, markdown_table, pyplot

SIZES: dict[str, dict[str, Any]] = {
    "quick": {"steps": 1000, "batch": 64, "paths": 10, "hidden": 64, "width": 64},
    "full": {"steps": 5000, "batch": 128, "paths": 50, "hidden": 64, "width": 64},
}
LEARNING_RATE = 1e-3
SIGMA_MAX = 1.0
NAMES = {"sde_net": "SDE-Net", "drift_only": "drift-only net (same training, no diffusion)"}


def _config(size: str) -> dict[str, Any]:
    if size not in SIZES:
        raise ValueError(f"stochastic sde_net: `size` must be one of {list(SIZES)}, got {size!r}.")
    return SIZES[size]


def auroc(score_in: Any, score_out: Any) -> float:
    """P(score_out > score_in) + P(tie) / 2 over all pairs: the Mann–Whitney rank statistic."""
    s_in, s_out = np.asarray(score_in)[:, None], np.asarray(score_out)[None, :]
    return float(np.mean(s_out > s_in) + 0.5 * np.mean(s_out == s_in))


@eqx.filter_jit
def _scores(model: Any, x: Any, key: Any, samples: int) -> Any:
    """`sde_net_uncertainty` of each input over `samples` paths (keys split from `key`)."""
    keys = None if key is None else jr.split(key, x.shape[0])
    return jax.vmap(lambda x, k: sde_net_uncertainty(model, x, key=k, samples=samples))(x, keys)


def train_sde_net(size: str = "quick", seed: int = 0) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train an SDE-Net and the drift-only net on digits; score OOD detection.

    Returns `(numbers, extra)`: `numbers[name]` for `name` in `NAMES` holds `accuracy`, the
    AUROC against `uniform` noise and `permuted` digits, and `seconds`; `extra[name]` the
    `SDENetUncertainty` of the test, uniform and permuted inputs (for the figure). Seed 0
    gives the acceptance tests' keys (init 0, fit 1, paths 2, NumPy 0, digits split 0);
    seed s shifts each by 1000 s.
    """
    cfg = _config(size)
    shift = 1000 * seed
    data = neurde.data.digits(image=False, seed=seed)
    mean, std = data.x_train.mean(), data.x_train.std()
    xtr, xte = (data.x_train - mean) / std, (data.x_test - mean) / std
    rng = np.random.default_rng(shift)
    uniform = (rng.uniform(size=xte.shape).astype(np.float32) - mean) / std
    permuted = xte[:, rng.permutation(xte.shape[1])]
    numbers: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for name, inference in (("sde_net", False), ("drift_only", True)):
        start = time.perf_counter()
        model = SDENet(
            64, 10, cfg["hidden"], width_size=cfg["width"], sigma_max=SIGMA_MAX,
            key=jr.key(shift),
        )  # fmt: skip
        model = eqx.nn.inference_mode(model, inference)
        model = neurde.fit(
            model, sde_net_loss, (xtr, data.y_train), steps=cfg["steps"], batch_size=cfg["batch"],
            key=jr.key(shift + 1), optim=optax.adam(LEARNING_RATE), progress=False,
        ).model  # fmt: skip
        key = None if inference else jr.key(shift + 2)
        score = functools.partial(_scores, model, key=key, samples=cfg["paths"])
        inside, noise, shuffled = score(xte), score(uniform), score(permuted)
        numbers[name] = {
            "accuracy": float(np.mean(np.argmax(inside.probs, -1) == data.y_test)),
            "uniform": auroc(-inside.confidence, -noise.confidence),
            "permuted": auroc(-inside.confidence, -shuffled.confidence),
            "seconds": time.perf_counter() - start,
        }
        extra[name] = {"test": inside, "uniform": noise, "permuted": shuffled}
    return numbers, extra


def section(report: Report, *, size: str, seed: int, log: Any = print) -> dict[str, float]:
    """Train both nets; a table of accuracy and AUROC, a figure of confidence and sigma(h0)."""
    numbers, extra = train_sde_net(size, seed)
    log(f"stochastic sde_net: {numbers}")
    cfg = SIZES[size]
    rows = [
        [
            label,
            f"{100 * numbers[k]['accuracy']:.1f}%",
            f"{numbers[k]['uniform']:.3f}",
            f"{numbers[k]['permuted']:.3f}",
            f"{numbers[k]['seconds']:.0f}",
        ]
        for k, label in NAMES.items()
    ]
    report.add(
        "SDE-Net on digits: out-of-distribution detection (Kong et al. 2020)",
        "scikit-learn's 8x8 digits (1347 training, 450 test images), standardized. SDE-Net "
        f"(hidden {cfg['hidden']}, width {cfg['width']}, sigma_max {SIGMA_MAX:g}, "
        "Euler–Maruyama T = 4 in 4 steps) "
        "trained on the paper's objective (OOD inputs: training inputs plus Gaussian noise of "
        f"std 2); Adam {LEARNING_RATE:g}, {cfg['steps']} steps of batch {cfg['batch']}. The "
        "baseline is the same net, seeds and loss in inference mode (drift only). Predictions "
        f"average the softmax over {cfg['paths']} Brownian paths; the OOD score is one minus "
        "the confidence. OOD sets: 450 uniform-noise images (pixels U[0, 1]) and the 450 test "
        "digits with their pixels permuted by one fixed permutation (same pixel values, no "
        "spatial structure; not seen in training).\n\n"
        + markdown_table(
            ["model", "test accuracy", "AUROC vs uniform noise", "AUROC vs permuted", "train s"],
            rows,
        )
        + "\n\nThe acceptance asks for AUROC >= 0.9 against both and an accuracy within 2 "
        "points of the drift-only net.",
    )
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    labels = {"test": "test digits (in)", "uniform": "uniform noise", "permuted": "permuted digits"}
    bins = np.linspace(0.0, 1.0, 41)
    for name, label in labels.items():
        unc = extra["sde_net"][name]
        axes[0].hist(np.asarray(unc.confidence), bins=bins, alpha=0.5, label=label)
        axes[1].hist(np.asarray(unc.diffusion), bins=bins * SIGMA_MAX, alpha=0.5, label=label)
    axes[0].set_xlabel("predictive confidence max_k p_k (SDE-Net)")
    axes[1].set_xlabel("diffusion sigma(h0)")
    axes[0].legend(fontsize=7)
    report.add_figure(
        fig,
        "sde_net_uncertainty",
        "SDE-Net: predictive confidence and diffusion sigma(h0) for in- and out-of-distribution "
        "inputs.",
    )
    plt.close(fig)
    sde, base = numbers["sde_net"], numbers["drift_only"]
    return {
        "SDE-Net accuracy": round(sde["accuracy"], 4),
        "drift-only accuracy": round(base["accuracy"], 4),
        "AUROC vs uniform": round(sde["uniform"], 4),
        "AUROC vs permuted": round(sde["permuted"], 4),
    }
