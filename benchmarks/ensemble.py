"""Speed-up of one vmapped ensemble step over a Python loop of single-model steps.

A 16-member ensemble of spiral NeuralODEs (MLP 2->32->32->2, Tsit5 adaptive) trains either
in one `neurde.make_ensemble_step` call or in 16 calls of the jitted `neurde.make_step`, one
per member. Both give the same numbers (checked before timing). On a CPU the vmapped step
pays off when each member's batch is small: with batch 256 the loop is already vectorised.

Run: `python benchmarks/ensemble.py [--quick]` (with neurde importable).
"""

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
from _common import interleaved_times, median_ratio, parse_args, print_table, ratio_line
from jaxtyping import Array

import neurde

MEMBERS, WIDTH, N_TIMES = 16, 32, 40
optim = optax.adam(1e-3)


def loss_fn(model: neurde.NeuralODE, batch: Any, key: Any) -> Array:
    ts, ys = batch
    pred = jax.vmap(lambda y0: model(y0, ts))(ys[:, 0])
    return jnp.mean((pred - ys) ** 2)


def make_model(key: Any) -> neurde.NeuralODE:
    return neurde.NeuralODE(neurde.MLPField(2, WIDTH, 2, key=key))


def max_abs_diff(a: Any, b: Any) -> float:
    pairs = zip(
        jax.tree.leaves(eqx.filter(a, eqx.is_array)),
        jax.tree.leaves(eqx.filter(b, eqx.is_array)),
        strict=True,
    )
    return max((float(jnp.max(jnp.abs(x - y))) for x, y in pairs), default=0.0)


def compare(batch_size: int, repeats: int) -> float:
    """Print one table for a per-member batch size; return loop time / vmapped time."""
    data = neurde.data.spiral(batch_size, N_TIMES, key=jr.key(0))
    batch = (data.ts, data.ys)
    key = jr.key(1)
    ensemble = neurde.make_ensemble(make_model, MEMBERS, key=jr.key(2))
    ens_states = neurde.ensemble_init_optimizer(optim, ensemble)
    ens_step = neurde.make_ensemble_step(loss_fn, optim)

    # Members are extracted once, outside the timing: a loop-based user keeps a list.
    members = [neurde.ensemble_member(ensemble, i) for i in range(MEMBERS)]
    states = [neurde.init_optimizer(optim, m) for m in members]
    keys = jr.split(key, MEMBERS)
    step = neurde.make_step(loss_fn, optim)

    def loop() -> list[Any]:
        return [step(m, s, batch, k) for m, s, k in zip(members, states, keys, strict=True)]

    def vmapped() -> Any:
        return ens_step(ensemble, ens_states, batch, key)

    new_ensemble, _, losses, _ = vmapped()
    outs = loop()
    loss_diff = float(np.max(np.abs(np.asarray(losses) - np.array([o[2] for o in outs]))))
    param_diff = max(
        max_abs_diff(neurde.ensemble_member(new_ensemble, i), outs[i][0]) for i in range(MEMBERS)
    )
    print(f"\nper-member batch {batch_size}: {MEMBERS} members, {N_TIMES} save times")
    print(f"  vmapped vs loop: max |loss diff| {loss_diff:.1e}, max |param diff| {param_diff:.1e}")
    if loss_diff > 1e-5 * max(1.0, float(jnp.max(jnp.abs(losses)))) or param_diff > 1e-5:
        raise SystemExit("The vmapped ensemble step and the loop disagree; not timing them.")

    loop_name = f"loop of {MEMBERS} make_step calls"
    vmapped_name = "one make_ensemble_step call"
    times = interleaved_times({loop_name: loop, vmapped_name: vmapped}, repeats)
    print_table(f"ensemble step, per-member batch {batch_size}", times, loop_name)
    return median_ratio(times, loop_name, vmapped_name)


def main() -> None:
    args = parse_args(__doc__ or "")
    # (per-member batch, repeats, target): 16 is the headline; 4 and 256 bracket it.
    rows = [(16, 25, ">= 4"), (256, 3, "none: for honesty")]
    if not args.quick:
        rows = [(4, 40, "none: context"), (16, 40, ">= 4"), (256, 9, "none: for honesty")]
    speedups = [(size, compare(size, repeats), target) for size, repeats, target in rows]
    print()
    for size, speedup, target in speedups:
        name = f"loop/vmapped speed-up (batch {size} per member)"
        print(ratio_line(name, speedup, target))


if __name__ == "__main__":
    main()
