"""The 8-device checks of `tests/train/test_sharding.py`, run in a subprocess of its own.

JAX fixes its device count when it starts, so the 8 host CPU devices
(`XLA_FLAGS=--xla_force_host_platform_device_count=8`) need a fresh process; one process runs
every check of a group to pay start-up and compilation once. Prints one JSON object of
measured numbers, which the tests compare with their tolerances.

    python tests/train/sharding_checks.py GROUP [GROUP ...]

Groups: `ode` (adaptive NeuralODE, data and 2-D ensemble parallel, trace counts),
`sde`, `stack` (NeuralSDE and a discrete stack), `errors` (bad-input messages), `inference`
(`ensemble_predict`, diffusion sampling and likelihood on sharded batches), `callbacks`
(Equinox's run-time errors and a failing solve under sharding).
"""

import json
import os
import sys
import time
from typing import Any

if __name__ == "__main__":  # must be set before JAX starts
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    flags = os.environ.get("XLA_FLAGS", "")
    if "device_count" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count=8".strip()

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax

import neurde
from neurde import discrete

STEPS = 20
BATCH = 16
MEMBERS = 4


def relative_difference(a, b) -> float:
    """max over leaves of max|a - b| / max|b|."""
    worst = 0.0
    arrays = (eqx.filter(a, eqx.is_array_like), eqx.filter(b, eqx.is_array_like))
    for x, y in zip(*map(jax.tree.leaves, arrays), strict=True):
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        worst = max(worst, float(np.max(np.abs(x - y)) / max(np.max(np.abs(y)), 1e-30)))
    return worst


def moved(a, b) -> float:
    """How far training moved the parameters (relative), so that equality is not vacuous."""
    return relative_difference(a, b)


def member_shards(ensemble) -> int:
    """Into how many blocks the member axis of the ensemble's first array is split."""
    shards = jax.tree.leaves(ensemble)[0].addressable_shards
    return len({s.index[0].indices(1 << 30) for s in shards})


def _data(key, n=64):
    y0 = jr.normal(key, (n, 2))
    target = jnp.stack([y0[:, 1], -y0[:, 0]], axis=-1)  # a quarter turn
    return np.asarray(y0), np.asarray(target)


def make_ode(key):
    field = neurde.MLPField(2, width_size=8, depth=1, key=key)
    return neurde.NeuralODE(field, t1=1.0, rtol=1e-4, atol=1e-6)  # Tsit5 + PID


def make_sde(key):
    k1, k2 = jr.split(key)
    drift = neurde.MLPField(2, width_size=8, depth=1, key=k1)
    diffusion = neurde.LinearField.random(2, key=k2)
    return neurde.NeuralSDE(drift, diffusion, t1=1.0, dt0=0.1, brownian="grid")


def make_stack(key):
    return discrete.ResidualStack(
        lambda k: neurde.MLPField(2, width_size=8, depth=1, key=k), discrete.Euler(), 4, key=key
    )


class Counted:
    """A loss that counts how often it is traced: once per compilation of the step."""

    def __init__(self, kind):
        self.kind, self.traces = kind, 0
        self.__qualname__ = f"loss_{kind}"

    def __call__(self, model, batch, key):
        self.traces += 1
        y0, target = batch
        if self.kind == "ode":
            # One solve per example, each with its own adaptive steps; the NFE statistics
            # are recorded by `fit` (an aux output).
            sol = jax.vmap(model.solve)(y0)
            loss = jnp.mean((sol.ys.reshape(target.shape) - target) ** 2)
            return loss, {"nfe": jnp.mean(sol.stats["nfe"].astype(float)), "result": sol.result}
        if self.kind == "sde":
            keys = jr.split(key, y0.shape[0])
            pred = jax.vmap(lambda y, k: model(y, key=k))(y0, keys)
        else:
            pred = jax.vmap(model)(y0)
        return jnp.mean((pred - target) ** 2)


MAKERS = {"ode": make_ode, "sde": make_sde, "stack": make_stack}


def fit_arguments() -> dict[str, Any]:
    return {
        "steps": STEPS,
        "key": jr.key(2),
        "optim": optax.adam(1e-2),
        "batch_size": BATCH,
        "progress": False,
    }


def data():
    return _data(jr.key(1))


def parallel_training(kind: str) -> dict:
    """20 steps of `fit` unsharded, data parallel (8 devices) and, for an ensemble, on a 2x4
    (members x data) mesh: parameter differences, traces and that training moved them."""
    make = MAKERS[kind]
    data = _data(jr.key(1))
    common = fit_arguments()
    model = make(jr.key(0))
    out = {}

    ref_loss, loss = Counted(kind), Counted(kind)
    ref = neurde.fit(model, ref_loss, data, **common)
    mesh = jax.make_mesh((8,), ("data",))
    # With the progress bar (a host-side loop reading the NFE statistics of each step).
    with_bar: dict[str, Any] = common | {"progress": True}
    sharded = neurde.fit(model, loss, data, mesh=neurde.Sharding(mesh, data="data"), **with_bar)
    leaf = jax.tree.leaves(sharded.model)[0]
    out["data"] = {
        "rel": relative_difference(sharded.model, ref.model),
        "opt_rel": relative_difference(sharded.opt_state, ref.opt_state),
        "loss_rel": relative_difference(sharded.history.loss, ref.history.loss),
        "moved": moved(ref.model, model),
        "traces": loss.traces,
        "ref_traces": ref_loss.traces,
        "devices": len(leaf.sharding.device_set),
        "replicated": bool(leaf.sharding.is_fully_replicated),
        "metrics": relative_difference(sharded.history.metrics, ref.history.metrics),
        "failure": failing_solve(model, loss, data, mesh, common) if kind == "ode" else None,
        "traces_after_failure": loss.traces,
        "first_metrics": relative_difference(
            [m[0] for m in sharded.history.metrics.values()],
            [m[0] for m in ref.history.metrics.values()],
        ),
    }

    if kind == "ode":
        start = time.process_time()
        out["per_example"] = per_example_training(model, data, common, ref, sharded)
        out["per_example"]["cpu_seconds"] = time.process_time() - start

    ensemble = neurde.make_ensemble(make, MEMBERS, key=jr.key(3))
    ref_loss, loss = Counted(kind), Counted(kind)
    ref = neurde.fit(ensemble, ref_loss, data, ensemble=True, **common)
    mesh2 = jax.make_mesh((2, 4), ("members", "data"))
    layout = neurde.Sharding(mesh2, data="data", members="members")
    sharded = neurde.fit(ensemble, loss, data, ensemble=True, mesh=layout, **common)
    out["ensemble"] = {
        "rel": relative_difference(sharded.model, ref.model),
        "opt_rel": relative_difference(sharded.opt_state, ref.opt_state),
        "loss_rel": relative_difference(sharded.history.loss, ref.history.loss),
        "moved": moved(ref.model, ensemble),
        "traces": loss.traces,
        "ref_traces": ref_loss.traces,
        "member_shards": member_shards(sharded.model),
    }
    return out


def per_example_training(model, data, common, ref, exact) -> dict:
    """`Sharding(..., per_example_loss=True)` (one local solver loop per device, the losses
    and gradients averaged once per step) for the same 20 steps: against the unsharded run
    `ref` and the default sharded run `exact`. The loss is a mean of per-example terms."""
    loss = Counted("ode")
    layout = neurde.Sharding(jax.make_mesh((8,), ("data",)), data="data", per_example_loss=True)
    fast = neurde.fit(model, loss, data, mesh=layout, **common)
    return {
        "rel": relative_difference(fast.model, ref.model),
        "rel_exact": relative_difference(fast.model, exact.model),
        "opt_rel": relative_difference(fast.opt_state, ref.opt_state),
        "loss_rel": relative_difference(fast.history.loss, ref.history.loss),
        "traces": loss.traces,
        "replicated": bool(jax.tree.leaves(fast.model)[0].sharding.is_fully_replicated),
        "first_metrics": relative_difference(
            [m[0] for m in fast.history.metrics.values()],
            [m[0] for m in ref.history.metrics.values()],
        ),
        "result_shape": list(np.shape(fast.history.metrics["result"][0])),
    }


def ode() -> dict:
    return parallel_training("ode")


def stack() -> dict:
    out = parallel_training("stack")
    # The step builders directly, 1-D member mesh (a plain Mesh): equal to unsharded.
    optim = optax.adam(1e-2)
    loss = Counted("stack")
    ensemble = neurde.make_ensemble(make_stack, 8, key=jr.key(5))
    data = _data(jr.key(6), BATCH)
    ref_step = neurde.make_ensemble_step(loss, optim)
    step = neurde.make_ensemble_step(loss, optim, mesh=jax.make_mesh((8,), ("m",)))
    a = b = ensemble
    sa = sb = neurde.ensemble_init_optimizer(optim, ensemble)
    traces = []
    for i in range(3):
        a, sa, _, _ = ref_step(a, sa, data, jr.key(i))
        before = loss.traces
        b, sb, _, _ = step(b, sb, data, jr.key(i))
        traces.append(loss.traces - before)
    out["member_step"] = {"rel": relative_difference(b, a), "traces": traces}
    return out


def sde() -> dict:
    return parallel_training("sde")


def _message(fn) -> str:
    try:
        fn()
    except (ValueError, TypeError) as e:
        return f"{type(e).__name__}: {e}"
    return "no error"


def errors() -> dict:
    mesh = jax.make_mesh((8,), ("data",))
    mesh2 = jax.make_mesh((2, 4), ("members", "data"))
    layout = neurde.Sharding(mesh2, data="data", members="members")
    model = make_stack(jr.key(0))
    data = _data(jr.key(1), 12)
    loss = Counted("stack")
    kw = {"steps": 1, "key": jr.key(0), "progress": False}
    optim = optax.sgd(1e-2)
    ensemble3 = neurde.make_ensemble(make_stack, 3, key=jr.key(0))
    step = neurde.make_step(loss, optim, mesh=mesh)
    return {
        "batch_size": _message(
            lambda: neurde.fit(model, loss, data, batch_size=12, mesh=mesh, **kw)
        ),
        "whole_data": _message(lambda: neurde.fit(model, loss, data, mesh=mesh, **kw)),
        "step_batch": _message(
            lambda: step(model, neurde.init_optimizer(optim, model), data, jr.key(0))
        ),
        "members": _message(
            lambda: neurde.fit(ensemble3, loss, data, ensemble=True, mesh=layout, **kw)
        ),
        "ensemble_step_members": _message(
            lambda: neurde.make_ensemble_step(loss, optim, mesh=layout)(
                ensemble3, neurde.ensemble_init_optimizer(optim, ensemble3), data, jr.key(0)
            )
        ),
        "axis": _message(lambda: neurde.Sharding(mesh, data="batch")),
        "members_axis": _message(lambda: neurde.Sharding(mesh, data="data", members="ens")),
        "two_d_plain": _message(lambda: neurde.make_step(loss, optim, mesh=mesh2)),
        "members_without_ensemble": _message(
            lambda: neurde.fit(model, loss, data, batch_size=8, mesh=layout, **kw)
        ),
        "not_a_mesh": _message(
            lambda: neurde.make_step(loss, optim, mesh="data")  # pyright: ignore[reportArgumentType]
        ),
    }


def inference() -> dict:
    from neurde import diffusion

    out = {}
    mesh = jax.make_mesh((8,), ("data",))
    layout = neurde.Sharding(mesh, data="data")
    ensemble = neurde.make_ensemble(make_ode, 8, key=jr.key(0))
    x = jnp.array([0.3, -0.7])
    mean, std = neurde.ensemble_predict(ensemble, x)
    sharded = neurde.Sharding(jax.make_mesh((8,), ("m",)), members="m").shard_members(ensemble)
    s_mean, s_std = neurde.ensemble_predict(sharded, x)
    out["ensemble_predict"] = {
        "rel": relative_difference((s_mean, s_std), (mean, std)),
        "member_shards": member_shards(sharded),
    }

    sde = diffusion.VPSDE()
    means = jnp.array([[-1.0, 0.0], [1.0, 0.5]])
    score = diffusion.GaussianMixtureScore(sde, jnp.array([0.5, 0.5]), means, jnp.full((2, 2), 0.1))
    x_T = sde.sample_prior(jr.key(1), (BATCH, 2), jnp.float32)
    for name, sampler in {
        "dpm_solver": diffusion.DPMSolver(8),
        "euler_maruyama": diffusion.EulerMaruyama(20),
    }.items():
        ref, nfe = diffusion.sample_from(sampler, score, sde, x_T, key=jr.key(2))
        got, s_nfe = diffusion.sample_from(
            sampler, score, sde, layout.shard_batch(x_T), key=jr.key(2)
        )
        out[name] = {
            "rel": relative_difference(got, ref),
            "nfe": [int(nfe), int(s_nfe)],
            "sharded": not got.sharding.is_fully_replicated,
        }

    def logp(x):
        return diffusion.log_likelihood(score, sde, x).logp

    xs = np.asarray(jr.normal(jr.key(3), (8, 2)))
    ref = jax.jit(jax.vmap(logp))(xs)
    got = jax.jit(jax.vmap(logp))(layout.shard_batch(xs))
    out["log_likelihood"] = {
        "rel": relative_difference(got, ref),
        "sharded": not got.sharding.is_fully_replicated,
    }
    return out


def failing_solve(model, loss, data, mesh, common) -> dict:
    """Equinox's run-time checks are host callbacks: a solve that fails inside a sharded step
    (here: tolerances no float32 step can meet, so `max_steps` is reached) must be reported,
    not crash. The tolerances are arrays, so the step compiled above is reused."""
    tiny = jnp.asarray(1e-12, model.tolerances.rtol.dtype)
    hopeless = eqx.tree_at(lambda m: (m.tolerances.rtol, m.tolerances.atol), model, (tiny, tiny))
    on_error = os.environ.get("EQX_ON_ERROR", "raise")
    layout = neurde.Sharding(mesh, data="data")
    try:
        neurde.fit(hopeless, loss, data, mesh=layout, **common | {"steps": 1})
    except neurde.TrainingError as e:
        return {"error": str(e), "on_error": on_error}
    return {"error": "no error", "on_error": on_error}


def callbacks() -> dict:
    """Equinox's run-time checks are host callbacks: a failing solve inside a sharded step
    must still raise its message (here: `max_steps` reached)."""
    mesh = jax.make_mesh((8,), ("data",))
    model = neurde.NeuralODE(
        neurde.MLPField(2, width_size=8, depth=1, key=jr.key(0)), t1=1.0, max_steps=2
    )
    loss = Counted("ode")
    try:
        neurde.fit(
            model, loss, _data(jr.key(1), 16), steps=1, key=jr.key(0), mesh=mesh, progress=False
        )
        return {"error": "no error", "on_error": os.environ.get("EQX_ON_ERROR", "raise")}
    except neurde.TrainingError as e:
        return {"error": str(e), "on_error": os.environ.get("EQX_ON_ERROR", "raise")}


GROUPS = {
    "ode": ode,
    "sde": sde,
    "stack": stack,
    "errors": errors,
    "inference": inference,
    "callbacks": callbacks,
}


def main(names: list[str]) -> None:
    assert len(jax.devices()) == 8, jax.devices()
    print(json.dumps({name: GROUPS[name]() for name in names}))


if __name__ == "__main__":
    main(sys.argv[1:])
