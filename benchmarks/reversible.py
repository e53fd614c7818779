"""Reversible solvers against checkpointed backprop and the continuous adjoint.

A neural ODE (MLP field, state 16, hidden 64, float32) with `neurde.RK4()` at a constant step,
T = 1, at 100 and 1000 steps, batch of 64 by `jax.vmap`. The training step is the gradient of
the mean squared final state with respect to the model. Variants by `adjoint=`:

- `"backprop"`: neurde's default, checkpointed backprop through the RK4 solve with one
  checkpoint per step (every state stored; each step recomputed once under its VJP);
- `"diffrax default"`: Diffrax's own default `RecursiveCheckpointAdjoint()`, whose online
  recursive checkpointing keeps about sqrt(2 max_steps) checkpoints and recomputes more
  (passed with that checkpoint count, since neurde otherwise gives one per step);
- `"adjoint"`: `diffrax.BacksolveAdjoint` (constant memory, approximate gradient);
- `"reversible"`: `neurde.Reversible()` around RK4 (constant memory, exact gradient of its
  own discrete map, two base steps per step).

Reported: XLA temp bytes of the compiled step (`compiled.compiled.memory_analysis()`, as in
benchmarks/revnet_memory.py), also for one example without `vmap`; the field evaluations of
the forward and the backward pass, counted with a `jax.debug.callback` on one example; and
the step time, the variants timed side by side in alternation (medians). Targets (issue 15):
reversible temp bytes flat within 1.1x from 100 to 1000 steps; reversible step time <= 1.5x
checkpointed backprop's (both baselines reported).

Run: `python benchmarks/reversible.py [--quick]` (with neurde importable).
"""

import math
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from _common import interleaved_times, median_ratio, parse_args, print_table, ratio_line

import neurde

SIZE, HIDDEN, BATCH = 16, 64, 64
ADJOINTS = ("backprop", "diffrax default", "adjoint", "reversible")


def _adjoint(steps: int, adjoint: str) -> Any:
    if adjoint != "diffrax default":
        return adjoint
    # What `RecursiveCheckpointAdjoint(checkpoints=None)` picks for `max_steps=steps`
    # (equinox's checkpointed while loop); neurde would otherwise give one per step.
    return diffrax.RecursiveCheckpointAdjoint(
        checkpoints=math.floor(-1.5 + math.sqrt(2 * steps + 0.25)) + 1
    )


class _Counted(eqx.Module):
    """A field that counts its evaluations (a host callback per evaluation)."""

    field: Any
    calls: list = eqx.field(static=True)

    def __call__(self, t: Any, y: Any, args: Any) -> Any:
        jax.debug.callback(lambda: self.calls.append(1))
        return self.field(t, y, args)


def model(steps: int, adjoint: str, calls: list | None = None) -> neurde.NeuralODE:
    field: Any = neurde.MLPField(SIZE, HIDDEN, 1, activation=jnp.tanh, key=jr.key(0))
    if calls is not None:
        field = _Counted(field, calls)
    return neurde.NeuralODE(
        field,
        solver=neurde.RK4(),
        stepsize_controller=diffrax.ConstantStepSize(),
        dt0=1.0 / steps,
        t1=1.0,
        adjoint=_adjoint(steps, adjoint),
        max_steps=steps,
    )


def evaluations(steps: int, adjoint: str, y: Any) -> tuple[int, int]:
    """Field evaluations per step in the forward pass and in the backward pass."""
    calls: list = []
    m = model(steps, adjoint, calls)
    jax.block_until_ready(eqx.filter_jit(lambda m, y: m(y))(m, y))
    jax.effects_barrier()
    forward = len(calls)
    calls.clear()
    jax.block_until_ready(eqx.filter_jit(step)(m, y))
    jax.effects_barrier()
    return forward // steps, (len(calls) - forward) // steps


def step(m: neurde.NeuralODE, y: Any) -> Any:
    def loss(m: neurde.NeuralODE) -> Any:
        out = jax.vmap(m)(y) if y.ndim == 2 else m(y)
        return jnp.mean(out**2)

    return eqx.filter_grad(loss)(m)


def temp_mib(m: neurde.NeuralODE, y: Any) -> float:
    jitted: Any = eqx.filter_jit(step)
    compiled = jitted.lower(m, y).compile()
    return compiled.compiled.memory_analysis().temp_size_in_bytes / 2**20


def main() -> None:
    args = parse_args(__doc__ or "")
    repeats = 3 if args.quick else 7
    steps_list = (100, 1000)
    print(f"jax {jax.__version__}, {jax.devices()[0].platform}, RK4, state {SIZE}, ")
    print(f"hidden {HIDDEN}, batch {BATCH}, float32, steps {steps_list}\n")
    y = jr.normal(jr.key(1), (BATCH, SIZE))
    temp: dict[tuple[str, int, bool], float] = {}
    print(f"  {'adjoint':<16} {'steps':>6} {'temp MiB (vmap)':>16} {'temp MiB (one)':>15}")
    for adjoint in ADJOINTS:
        for n in steps_list:
            temp[adjoint, n, True] = temp_mib(model(n, adjoint), y)
            temp[adjoint, n, False] = temp_mib(model(n, adjoint), y[0])
            one, batched = temp[adjoint, n, False], temp[adjoint, n, True]
            print(f"  {adjoint:<16} {n:>6} {batched:>16.3f} {one:>15.3f}")

    print("\n  field evaluations per step, one example (VJPs: backward evaluations under jax.vjp)")
    print(f"  {'adjoint':<16} {'steps':>6} {'forward':>8} {'backward':>9} {'VJPs':>5}")
    vjps = {"backprop": 4, "diffrax default": 4, "adjoint": 4, "reversible": 8}
    for adjoint in ADJOINTS:
        for n in steps_list:
            fwd, bwd = evaluations(n, adjoint, y[0])
            print(f"  {adjoint:<16} {n:>6} {fwd:>8} {bwd:>9} {vjps[adjoint]:>5}")

    ratios = {}
    for n in steps_list:
        fns = {}
        for adjoint in ADJOINTS:
            m = model(n, adjoint)
            jitted = eqx.filter_jit(step)
            jax.block_until_ready(jitted(m, y))  # compile before timing
            fns[adjoint] = lambda jitted=jitted, m=m: jitted(m, y)
        times = interleaved_times(fns, repeats)
        print_table(f"training step, {n} steps, batch {BATCH}", times, "backprop")
        ratios[n] = median_ratio(times, "reversible", "backprop")
        ratios["default", n] = median_ratio(times, "reversible", "diffrax default")

    print()
    for batched in (True, False):
        tag = "vmap" if batched else "one"
        flat = temp["reversible", 1000, batched] / temp["reversible", 100, batched]
        grows = temp["backprop", 1000, batched] / temp["backprop", 100, batched]
        print(ratio_line(f"reversible_temp_{tag}(1000)/(100)", flat, "<= 1.1"))
        print(ratio_line(f"backprop_temp_{tag}(1000)/(100)", grows, "grows, ~10"))
    for n in steps_list:
        print(ratio_line(f"reversible_time/backprop_time({n} steps)", ratios[n], "<= 1.5"))
        default = ratios["default", n]
        print(ratio_line(f"reversible_time/diffrax_default_time({n} steps)", default, "<= 1.5"))


if __name__ == "__main__":
    main()
