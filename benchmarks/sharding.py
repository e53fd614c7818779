"""Data-parallel training on a device mesh: compile time and step time against one device.

An adaptive neural ODE (MLP 2->32->32->2, Tsit5 with a PID controller, batch 256, loss on 10
save times, Adam) trains with `neurde.make_step` on one device and with
`neurde.make_step(..., mesh=neurde.Sharding(mesh, data="data"))` on 8 host CPU devices
(`XLA_FLAGS=--xla_force_host_platform_device_count=8`, set here before JAX starts), the batch
split 8 ways, once on the default (exact) path and once with
`Sharding(..., per_example_loss=True)` (one local solver loop per device, one gradient
reduction per step). The updated parameters are checked to agree before timing. The host
devices share the machine's cores, so this measures the correctness and the overhead of
sharding (partitioning at compile time; the collectives and the sharded while-loop at run
time), not a speed-up. On a machine with several GPUs the script also prints throughput
against the number of devices.

Run: `python benchmarks/sharding.py [--quick]` (with neurde importable).
"""

import os

if "--xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    flags = os.environ.get("XLA_FLAGS", "")
    os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count=8".strip()

import functools
import statistics
import time
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
from _common import interleaved_times, median_ratio, parse_args, print_table, ratio_line

import neurde

BATCH, WIDTH, N_TIMES = 256, 32, 10
optim = optax.adam(1e-3)


def make_loss() -> Any:
    # A fresh function each time, so that every `make_step` compiles anew.
    ts = jnp.linspace(0.1, 1.0, N_TIMES)

    def loss(model: neurde.NeuralODE, batch: Any, key: Any) -> Any:
        del key
        y0, ys = batch
        pred = jax.vmap(lambda y: model(y, ts))(y0)
        return jnp.mean((pred - ys) ** 2)

    return loss


def problem() -> tuple[Any, Any]:
    model = neurde.NeuralODE(neurde.MLPField(2, WIDTH, 2, key=jr.key(0)), rtol=1e-3, atol=1e-6)
    y0 = jr.normal(jr.key(1), (BATCH, 2))
    c, s = jnp.cos(jnp.linspace(0.1, 1.0, N_TIMES)), jnp.sin(jnp.linspace(0.1, 1.0, N_TIMES))
    x, y = y0[:, :1], y0[:, 1:]
    ys = jnp.stack([x * c + y * s, y * c - x * s], axis=-1)  # a rotation, (batch, times, 2)
    return model, (np.asarray(y0), np.asarray(ys))


def first_call(step: Any, model: Any, batch: Any) -> float:
    """Seconds of the first call: tracing, partitioning, compilation and one run."""
    opt_state = neurde.init_optimizer(optim, model)
    start = time.perf_counter()
    jax.block_until_ready(step(model, opt_state, batch, jr.key(0)))
    return time.perf_counter() - start


def max_rel_diff(a: Any, b: Any) -> float:
    pairs = zip(
        jax.tree.leaves(eqx.filter(a, eqx.is_array)),
        jax.tree.leaves(eqx.filter(b, eqx.is_array)),
        strict=True,
    )
    return max(float(jnp.max(jnp.abs(x - y)) / jnp.max(jnp.abs(y))) for x, y in pairs)


def gpu_scaling(model: Any, batch: Any, repeats: int) -> None:
    """Examples per second against the number of GPUs, batch growing with the devices."""
    gpus = [d for d in jax.devices() if d.platform == "gpu"]
    if len(gpus) < 2:
        print("\n(one or no GPU: no throughput against device count)")
        return
    print("\nthroughput against device count (batch 256 per device)")
    counts = [n for n in (1, 2, 4, 8, 16) if n <= len(gpus)]
    opt_state = neurde.init_optimizer(optim, model)
    for n in counts:
        mesh = jax.make_mesh((n,), ("data",), devices=gpus[:n])
        step = neurde.make_step(make_loss(), optim, mesh=neurde.Sharding(mesh, data="data"))
        big = [np.concatenate([x] * n) for x in batch]

        def call(step: Any = step, big: Any = big) -> Any:
            return step(model, opt_state, big, jr.key(0))

        jax.block_until_ready(call())
        times = interleaved_times({"s": call}, repeats)
        print(f"  {n:>2} devices: {n * BATCH / statistics.median(times['s']):>12.0f} examples/s")


def main() -> None:
    args = parse_args((__doc__ or "").splitlines()[0])
    repeats, compiles = (20, 1) if args.quick else (60, 3)
    devices = jax.devices()
    print(f"{len(devices)} devices: {devices[0].platform}; batch {BATCH}")
    model, batch = problem()
    axis = jax.make_mesh((len(devices),), ("data",))
    layouts = {
        "unsharded": None,
        f"sharded ({len(devices)})": neurde.Sharding(axis, data="data"),
        f"sharded ({len(devices)}), per_example_loss": neurde.Sharding(
            axis, data="data", per_example_loss=True
        ),
    }
    exact, fast = list(layouts)[1:]

    # Compile time: fresh steps compiled in alternation, median of `compiles` each.
    compile_times: dict[str, list[float]] = {name: [] for name in layouts}
    for _ in range(compiles):
        for name, layout in layouts.items():
            step = neurde.make_step(make_loss(), optim, mesh=layout)
            compile_times[name].append(first_call(step, model, batch))

    # Step time: the same global batch, so the same work per step.
    opt_state = neurde.init_optimizer(optim, model)
    steps = {name: neurde.make_step(make_loss(), optim, mesh=x) for name, x in layouts.items()}
    ref = steps["unsharded"](model, opt_state, batch, jr.key(0))[0]
    diffs = {
        n: max_rel_diff(steps[n](model, opt_state, batch, jr.key(0))[0], ref) for n in (exact, fast)
    }
    assert max(diffs.values()) < 1e-5, f"sharded and unsharded steps differ: {diffs}"
    calls = {}
    for name, layout in layouts.items():
        placed = (model, opt_state) if layout is None else layout.replicate((model, opt_state))
        rows = jax.tree.map(jnp.asarray, batch) if layout is None else layout.shard_batch(batch)
        calls[name] = functools.partial(steps[name], *placed, rows, jr.key(0))
    times = interleaved_times(calls, repeats)
    # The CPU time of all threads (the 8 device threads included): the work each layout
    # does, whatever the number of cores it could spread over.
    cpu = interleaved_times(calls, repeats, clock=time.process_time)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    for name, diff in diffs.items():
        print(f"\n{name}: updated parameters agree to {diff:.1e} (relative)", end="")
    print()
    print_table(
        "first call (trace + partition + compile + run), s as ms", compile_times, "unsharded"
    )
    print_table(f"training step, batch {BATCH} (same work), wall clock", times, "unsharded")
    print_table(f"the same steps' CPU time, all threads ({cores} cores allowed)", cpu, "unsharded")
    gpu_scaling(model, batch, repeats)
    print()
    for name, label in ((exact, "sharded"), (fast, "sharded per_example_loss")):
        ratio = median_ratio(compile_times, name, "unsharded")
        print(ratio_line(f"{label}/unsharded compile time", ratio, "<= 1.5"))
    for name, label in ((exact, "sharded"), (fast, "sharded per_example_loss")):
        ratio = median_ratio(times, name, "unsharded")
        print(ratio_line(f"{label}/unsharded step time per example", ratio, "<= 1.2"))
    for name, label in ((exact, "sharded"), (fast, "sharded per_example_loss")):
        ratio = median_ratio(cpu, name, "unsharded")
        print(ratio_line(f"{label}/unsharded step CPU time per example", ratio, "<= 1.2"))


if __name__ == "__main__":
    main()
