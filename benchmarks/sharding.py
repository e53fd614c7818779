"""Data-parallel training on a device mesh: compile time and step time against one device.

An adaptive neural ODE (MLP 2->32->32->2, Tsit5 with a PID controller, batch 256, loss on 10
save times, Adam) trains with `neurde.make_step` on one device and with
`neurde.make_step(..., mesh=neurde.Sharding(mesh, data="data"))` on 8 host CPU devices
(`XLA_FLAGS=--xla_force_host_platform_device_count=8`, set here before JAX starts), the batch
split 8 ways. The updated parameters are checked to agree before timing. The host devices
share the machine's cores, so this measures the correctness and the overhead of sharding
(partitioning at compile time; the collectives and the sharded while-loop at run time), not
a speed-up. On a machine with several GPUs the script also prints throughput against the
number of devices.

Run: `python benchmarks/sharding.py [--quick]` (with neurde importable).
"""

import os

if "--xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    flags = os.environ.get("XLA_FLAGS", "")
    os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count=8".strip()

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
    mesh = neurde.Sharding(jax.make_mesh((len(devices),), ("data",)), data="data")

    # Compile time: fresh steps compiled in alternation, median of `compiles` each.
    compile_times: dict[str, list[float]] = {"unsharded": [], f"sharded ({len(devices)})": []}
    for _ in range(compiles):
        compile_times["unsharded"].append(
            first_call(neurde.make_step(make_loss(), optim), model, batch)
        )
        sharded_step = neurde.make_step(make_loss(), optim, mesh=mesh)
        compile_times[f"sharded ({len(devices)})"].append(first_call(sharded_step, model, batch))

    # Step time: the same global batch, so the same work per step.
    plain = neurde.make_step(make_loss(), optim)
    sharded = neurde.make_step(make_loss(), optim, mesh=mesh)
    opt_state = neurde.init_optimizer(optim, model)
    a = plain(model, opt_state, batch, jr.key(0))
    b = sharded(model, opt_state, batch, jr.key(0))
    diff = max_rel_diff(b[0], a[0])
    assert diff < 1e-5, f"sharded and unsharded steps differ: {diff:.2e}"
    placed = mesh.replicate((model, opt_state))
    placed_batch = mesh.shard_batch(batch)
    device_batch = jax.tree.map(jnp.asarray, batch)
    times = interleaved_times(
        {
            "unsharded": lambda: plain(model, opt_state, device_batch, jr.key(0)),
            f"sharded ({len(devices)})": lambda: sharded(
                placed[0], placed[1], placed_batch, jr.key(0)
            ),
        },
        repeats,
    )
    print(f"\nupdated parameters agree to {diff:.1e} (relative)")
    print_table(
        "first call (trace + partition + compile + run), s as ms", compile_times, "unsharded"
    )
    print_table(f"training step, batch {BATCH} (same work)", times, "unsharded")
    gpu_scaling(model, batch, repeats)
    name = f"sharded ({len(devices)})"
    print()
    print(
        ratio_line(
            "sharded/unsharded compile time",
            median_ratio(compile_times, name, "unsharded"),
            "<= 1.5",
        )
    )
    print(
        ratio_line(
            "sharded/unsharded step time per example",
            median_ratio(times, name, "unsharded"),
            "<= 1.2",
        )
    )


if __name__ == "__main__":
    main()
