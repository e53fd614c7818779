"""Zoo section `cnf`: FFJORD, RNODE-regularized FFJORD and flow matching on 2-D densities.

Each model is a `neurde.continuous.CNF` with a time-dependent MLP field (flow matching's
wider, see `CNFZooConfig`), trained on samples of
`8-gaussians` and `two-moons`:

- `ffjord`: maximum likelihood, the exact trace (2-D), adaptive Tsit5;
- `rnode`: the same CNF (same initialization and batches) trained from scratch on the NLL
  plus Finlay et al.'s kinetic and Jacobian penalties (`neurde.noise.rnode`), which make the
  flow straighter and cheaper to solve;
- `flow matching`: Lipman et al.'s OT conditional flow matching, no solve during training.

Every model is scored by its test negative log-likelihood (exact trace, tight tolerances)
against the true density's cross-entropy `neurde.data.data_cross_entropy` (the floor), and
by the function evaluations of a solve at the training tolerance.
"""

import dataclasses
import functools
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax

from ..continuous import CNF, flow_matching_loss, log_prob, sample
from ..data import DENSITIES, data_cross_entropy
from ..fields import MLPField
from ..noise import rnode
from ..train import fit
from .report import Report, markdown_table, pyplot

DATASETS = ("8-gaussians", "two-moons")


@dataclasses.dataclass(frozen=True)
class CNFZooConfig:
    """Sizes of the `cnf` section.

    `default` (the field defaults) is the CPU size the acceptance tests hold at (FFJORD and
    RNODE 1500 steps each: 7 and 11 minutes on 8-gaussians on one shared core); `quick`
    (`neurde run zoo`'s size) trains FFJORD and RNODE 200 steps and flow matching half as
    long, and scores half the test points: a smoke run, whose gaps are wider than the
    acceptance bands; `full` is sized for a GPU.

    FFJORD and RNODE share the `width` x `depth` field; flow matching uses the wider
    `fm_width` x `depth` one (a regression step is cheap, so the comparison of training time
    is against FFJORD's smaller net). RNODE is trained exactly as FFJORD (the same
    initialization, batches, `ffjord_steps` and schedule) with Finlay et al.'s kinetic and
    exact Jacobian penalties added to the NLL, weights `kinetic` and `jacobian`. The defaults
    are 12x the paper's: Finlay et al.'s lambda_K = lambda_J = 0.01 multiply penalties on
    bits per dimension, with per-dimension penalties and a kinetic term 0.5 ||f||^2, which is
    0.0035 and 0.0069 on this loss (nats, summed penalties, ||f||^2). Trained from scratch
    rather than fine-tuned: fine-tuning FFJORD's model with the penalties cut the NFE about
    20% at 0.1 nats of NLL, whereas training with them from the start finds a flow that is
    both as likely and straighter. Measured (default size, seed 0, NFE at rtol 1e-3 for
    both): two-moons NFE 36.4 -> 21.8 (-40%) at a test NLL 0.069 nats better; 8-gaussians
    30.5 -> 22.5 (-26.5%) at +0.048 nats. The weights trade NLL for NFE on 8-gaussians:
    1x, 4x, 8x, 16x the paper's give -3.5%, -12.3%, -19.4%, -27.6% at +0.002, +0.015,
    +0.035, +0.064 nats.
    """

    width: int = 64
    depth: int = 3
    fm_width: int = 128
    train_points: int = 20_000
    test_points: int = 1_000
    batch_size: int = 256
    fm_batch_size: int = 1024
    ffjord_steps: int = 1_500
    fm_steps: int = 4_000
    learning_rate: float = 1e-2
    fm_learning_rate: float = 3e-3
    fm_warmup: int = 200
    rtol: float = 1e-3
    atol: float = 1e-5
    eval_rtol: float = 1e-4
    kinetic: float = 0.042
    jacobian: float = 0.0828

    @classmethod
    def of(cls, size: str) -> "CNFZooConfig":
        """The configuration of `size` in ("quick", "default", "full")."""
        if size == "quick":
            return cls(ffjord_steps=200, fm_steps=2_000, test_points=500)
        if size == "default":
            return cls()
        if size == "full":
            return cls(
                width=128,
                fm_width=256,
                ffjord_steps=10_000,
                fm_steps=30_000,
                test_points=5_000,
                eval_rtol=1e-5,
            )
        raise ValueError(f"zoo_cnf: unknown size {size!r}; choose quick, default or full.")


def make_cnf(
    config: CNFZooConfig, rtol: float, atol: float, *, key: Any, width: int | None = None
) -> CNF:
    """A CNF with a time-dependent MLP field on 2-D states (`width`, default
    `config.width`), adaptive Tsit5."""
    width = config.width if width is None else width
    field = MLPField(2, width, config.depth, time_dependent=True, key=key)
    return CNF(field, rtol=rtol, atol=atol)


def evaluation_cnf(model: Any, rtol: float, atol: float) -> CNF:
    """The trained flow with the exact trace and the given tolerances, no regularizer."""
    cnf = model
    while not isinstance(cnf, CNF):
        cnf = cnf.model
    field = cnf.model.field  # type: ignore[attr-defined]
    return CNF(field, rtol=rtol, atol=atol)


def evaluate(model: Any, test: jax.Array, config: CNFZooConfig) -> dict[str, float]:
    """Test NLL (exact trace, `eval_rtol`) and the mean NFE of a training-tolerance solve."""
    tight = evaluation_cnf(model, config.eval_rtol, config.eval_rtol * 1e-2)
    loose = evaluation_cnf(model, config.rtol, config.atol)
    nll, nfe = _nll_and_nfe(tight, loose, test)
    return {"nll": float(nll), "nfe": float(nfe)}


# The models are arguments (not closed over), so one compilation serves every method and
# data set with the same field shape.
@eqx.filter_jit
def _nll_and_nfe(tight: CNF, loose: CNF, test: jax.Array) -> tuple[jax.Array, jax.Array]:
    nll = -jax.vmap(lambda x: log_prob(tight, x))(test)
    nfe = jax.vmap(lambda x: loose.solve(x).stats["nfe"])(test)
    return jnp.mean(nll), jnp.mean(nfe)


# Losses and optimizers are cached so that `fit`'s compiled step (cached per loss and
# optimizer) is reused by the second data set instead of recompiled.
@functools.cache
def _adam(learning_rate: float, steps: int, warmup: int = 0) -> Any:
    if warmup:
        return optax.adam(
            optax.warmup_cosine_decay_schedule(
                0.0, learning_rate, warmup, steps, 0.05 * learning_rate
            )
        )
    return optax.adam(optax.cosine_decay_schedule(learning_rate, steps, 0.05))


@functools.cache
def _ffjord_loss(kinetic: float, jacobian: float) -> Any:
    def loss(model: Any, batch: jax.Array, key: Any) -> Any:
        keys = jr.split(key, batch.shape[0])
        sols = jax.vmap(lambda x, k: model.solve(x, key=k))(batch, keys)
        z = sols.ys
        logp = -0.5 * jnp.sum(z**2, -1) - jnp.log(2 * jnp.pi) + sols.extras["log_det"]
        total = nll = -jnp.mean(logp)
        if kinetic or jacobian:
            total = total + kinetic * jnp.mean(sols.extras["kinetic"])
            total = total + jacobian * jnp.mean(sols.extras["jacobian"])
        return total, {"nll": nll, "nfe": jnp.mean(sols.stats["nfe"])}

    return loss


def train_ffjord(train: jax.Array, config: CNFZooConfig, *, key: Any) -> tuple[Any, float]:
    """Maximum-likelihood training of a CNF (FFJORD, exact trace); the model and seconds."""
    return _train_likelihood(train, config, 0.0, 0.0, key=key)


def train_rnode(train: jax.Array, config: CNFZooConfig, *, key: Any) -> tuple[Any, float]:
    """RNODE (Finlay et al.): FFJORD's training, from the same initialization and batches for
    the same `key`, on the NLL plus the kinetic and exact Jacobian penalties (weights
    `config.kinetic` and `config.jacobian`); the model and seconds."""
    return _train_likelihood(train, config, config.kinetic, config.jacobian, key=key)


def _train_likelihood(
    train: jax.Array, config: CNFZooConfig, kinetic: float, jacobian: float, *, key: Any
) -> tuple[Any, float]:
    init_key, fit_key = jr.split(key)
    model = make_cnf(config, config.rtol, config.atol, key=init_key)
    if kinetic or jacobian:
        model = rnode(model, estimator="exact", kinetic=kinetic > 0, jacobian=jacobian > 0)
    result = fit(
        model,
        _ffjord_loss(kinetic, jacobian),
        train,
        steps=config.ffjord_steps,
        key=fit_key,
        optim=_adam(config.learning_rate, config.ffjord_steps),
        batch_size=config.batch_size,
        progress=False,
    )
    return result.model, _training_seconds(result.history)


def _training_seconds(history: Any) -> float:
    """Wall time of the training steps, without the compilation of the first."""
    return float(sum(history.time) - history.compile_time)


def train_flow_matching(train: jax.Array, config: CNFZooConfig, *, key: Any) -> tuple[Any, float]:
    """Flow matching (OT path) of the same CNF: a regression, no solve."""
    init_key, fit_key = jr.split(key)
    model = make_cnf(config, config.rtol, config.atol, key=init_key, width=config.fm_width)

    result = fit(
        model,
        _fm_loss,
        train,
        steps=config.fm_steps,
        key=fit_key,
        optim=_adam(config.fm_learning_rate, config.fm_steps, config.fm_warmup),
        batch_size=config.fm_batch_size,
        progress=False,
    )
    return result.model, _training_seconds(result.history)


def _fm_loss(model: Any, batch: jax.Array, key: Any) -> Any:
    return flow_matching_loss(model, batch, key=key, path="ot")


def train_cnfs(
    dataset: str,
    *,
    size: str = "default",
    seed: int = 0,
    methods: tuple[str, ...] | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Train the chosen methods (`ffjord`, `rnode`, `fm`) on `dataset`; the numbers by name.

    Returns `{"entropy": ..., "<method>_nll", "<method>_nfe", "<method>_seconds", ...,
    "models": {method: model}}`. `overrides` replace fields of the size's `CNFZooConfig`.
    `ffjord` and `rnode` start from the same initialization and see the same batches.
    """
    config = dataclasses.replace(CNFZooConfig.of(size), **overrides)
    methods = ("ffjord", "rnode", "fm") if methods is None else methods
    unknown = [m for m in methods if m not in ("ffjord", "rnode", "fm")]
    if unknown:
        raise ValueError(f"train_cnfs: unknown methods {unknown}; choose ffjord, rnode, fm.")
    key = jr.key(seed)
    data_key, test_key, ce_key, model_key = jr.split(key, 4)
    sampler = DENSITIES[dataset]
    train = sampler(config.train_points, key=data_key)
    test = sampler(config.test_points, key=test_key)
    entropy, _ = data_cross_entropy(dataset, n=100_000, key=ce_key)
    out: dict[str, Any] = {"entropy": entropy, "models": {}}
    for method in sorted(methods, key=("ffjord", "rnode", "fm").index):
        if method == "fm":
            model, seconds = train_flow_matching(train, config, key=model_key)
        elif method == "ffjord":
            model, seconds = train_ffjord(train, config, key=model_key)
        else:
            model, seconds = train_rnode(train, config, key=model_key)
        numbers = evaluate(model, test, config)
        out[f"{method}_nll"] = numbers["nll"]
        out[f"{method}_nfe"] = numbers["nfe"]
        out[f"{method}_seconds"] = seconds
        out["models"][method] = model
    return out


@eqx.filter_jit
def _samples(flow: CNF, keys: jax.Array) -> jax.Array:
    return jax.vmap(lambda k: sample(flow, k, 2)[0])(keys)


_NAMES = {"ffjord": "FFJORD", "rnode": "FFJORD + RNODE", "fm": "flow matching (OT)"}


def _figure(results: dict[str, dict[str, Any]], report: Report, seed: int) -> None:
    plt = pyplot()
    methods = list(_NAMES)
    fig, axes = plt.subplots(len(results), len(methods) + 1, figsize=(3 * (len(methods) + 1), 6))
    axes = np.atleast_2d(axes)
    for row, (dataset, res) in enumerate(results.items()):
        data = np.asarray(DENSITIES[dataset](2_000, key=jr.key(seed + 1)))
        axes[row, 0].scatter(data[:, 0], data[:, 1], s=1)
        axes[row, 0].set_title(f"{dataset} data")
        for col, method in enumerate(methods, start=1):
            ax = axes[row, col]
            model = res["models"].get(method)
            if model is not None:
                flow = evaluation_cnf(model, 1e-3, 1e-5)
                keys = jr.split(jr.key(seed + 2), 2_000)
                xs = _samples(flow, keys)
                xs = np.asarray(xs)
                ax.scatter(xs[:, 0], xs[:, 1], s=1, color="C1")
            ax.set_title(_NAMES[method])
        for ax in axes[row]:
            ax.set_xlim(-4.5, 4.5)
            ax.set_ylim(-4.5, 4.5)
            ax.set_aspect("equal")
    report.add_figure(fig, "zoo_cnf_samples", "Samples of each trained CNF (base to data).")
    plt.close(fig)


def section(report: Report, *, size: str, seed: int, log: Any = print) -> dict[str, float]:
    """Train FFJORD, FFJORD + RNODE and flow matching on 8 Gaussians and two moons, and
    report test NLL against the true cross-entropy, NFE and training wall time."""
    rows = []
    results = {}
    headline: dict[str, float] = {}
    for dataset in DATASETS:
        log(f"zoo cnf: {dataset}")
        res = train_cnfs(dataset, size=size, seed=seed)
        results[dataset] = res
        for method, name in _NAMES.items():
            gap = res[f"{method}_nll"] - res["entropy"]
            rows.append(
                [
                    dataset,
                    name,
                    res[f"{method}_nll"],
                    res["entropy"],
                    gap,
                    res[f"{method}_nfe"],
                    res[f"{method}_seconds"],
                ]
            )
            headline[f"{dataset}_{method}_nll_gap"] = round(gap, 4)
        headline[f"{dataset}_rnode_nfe_cut"] = round(1 - res["rnode_nfe"] / res["ffjord_nfe"], 3)
    header = ["data", "model", "test NLL", "true cross-entropy", "gap", "NFE", "train s"]
    config = CNFZooConfig.of(size)
    body = (
        "Test negative log-likelihood (nats, exact trace, rtol "
        f"{config.eval_rtol}) against the true data density's cross-entropy (Monte Carlo, "
        f"100k samples); NFE of one solve at the training tolerance (rtol {config.rtol}); "
        "training wall time (without compilation). FFJORD: MLP "
        f"{config.width} x {config.depth}, {config.ffjord_steps} steps. FFJORD + RNODE: the "
        f"same CNF trained the same way with lambda_k = {config.kinetic}, lambda_j = "
        f"{config.jacobian} (exact Jacobian). Flow "
        f"matching: MLP {config.fm_width} x {config.depth}, {config.fm_steps} steps; it solves "
        "no ODE while training."
        + (
            " Size quick is a smoke run (a seventh of the acceptance size's training); the "
            'acceptance numbers are those of `train_cnfs(..., size="default")`, run by '
            "`pytest -m expensive`."
            if size == "quick"
            else ""
        )
        + "\n\n"
        + markdown_table(header, rows)
    )
    report.add("Continuous normalizing flows (FFJORD, RNODE, flow matching)", body)
    _figure(results, report, seed)
    return headline
