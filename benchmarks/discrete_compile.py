"""Compile time of a `ResidualStack` training step against depth.

`ResidualStack` stacks the blocks' parameters on a depth axis and applies the scheme with
one `lax.scan`, so the compiled program should not grow with depth. For three schemes --
ResNet (`Euler()`, MLP field 32->64->32), RK-Net (`RungeKutta.rk4()`, same field) and RevNet
(`AdditiveCoupling()`, `CouplingBlock` of two MLP fields 16->64->16, memory-saving backprop
on by default) -- the gradient of the sum of squares of the output (batch of 16 via `vmap`,
`eqx.filter_grad`) is staged with `eqx.filter_jit(step).lower(...)` (trace + lower) and
`.compile()`, each timed, with a fresh function at every depth so no cache is hit. Depths are
interleaved across repeats and the median of each phase is reported.

Run: `python benchmarks/discrete_compile.py [--quick]` (with neurde importable).
"""

import statistics
import time
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from _common import parse_args, ratio_line
from jaxtyping import Array

import neurde
from neurde.discrete import AdditiveCoupling, CouplingBlock, Euler, ResidualStack, RungeKutta

WIDTH, HIDDEN, BATCH = 32, 64, 16


def coupling_block(key: Any) -> CouplingBlock:
    k1, k2 = jr.split(key)
    half = WIDTH // 2
    return CouplingBlock(
        neurde.MLPField(half, HIDDEN, 1, key=k1), neurde.MLPField(half, HIDDEN, 1, key=k2)
    )


def mlp_block(key: Any) -> neurde.MLPField:
    return neurde.MLPField(WIDTH, HIDDEN, 1, key=key)


SCHEMES: dict[str, Callable[[int], ResidualStack]] = {
    "resnet (Euler)": lambda d: ResidualStack(mlp_block, Euler(), d, key=jr.key(0)),
    "rk-net (RungeKutta.rk4)": lambda d: ResidualStack(
        mlp_block, RungeKutta.rk4(), d, key=jr.key(0)
    ),
    "revnet (AdditiveCoupling)": lambda d: ResidualStack(
        coupling_block, AdditiveCoupling(), d, memory_saving=True, key=jr.key(0)
    ),
}


def make_step() -> Callable[[ResidualStack, Array], Any]:
    """A new training step function each call, so nothing is served from a cache."""

    def loss(stack: ResidualStack, x: Array) -> Array:
        return jnp.sum(jax.vmap(stack)(x) ** 2)

    def step(stack: ResidualStack, x: Array) -> Any:
        return eqx.filter_grad(loss)(stack, x)

    return step


def stage(stack: ResidualStack, x: Array) -> tuple[float, float]:
    """Seconds to trace + lower, and to compile, one fresh training step."""
    start = time.perf_counter()
    jitted: Any = eqx.filter_jit(make_step())  # typed as a plain callable; it has `.lower`
    lowered = jitted.lower(stack, x)
    lowered_at = time.perf_counter()
    lowered.compile()
    return lowered_at - start, time.perf_counter() - lowered_at


def measure(name: str, depths: list[int], repeats: int, x: Array) -> float:
    build = SCHEMES[name]
    stage(build(2), x)  # warm-up: first-use costs of this scheme's code paths
    stacks = {d: build(d) for d in depths}
    runs: dict[int, list[tuple[float, float]]] = {d: [] for d in depths}
    for _ in range(repeats):
        for d in depths:
            runs[d].append(stage(stacks[d], x))
    total = {d: statistics.median(a + b for a, b in runs[d]) for d in depths}
    print(f"\n{name}")
    header = ("depth", "lower s", "compile s", "total s", "min s", "/first")
    print("  {:>6} {:>9} {:>10} {:>9} {:>7} {:>7}".format(*header))
    for d in depths:
        low = statistics.median(a for a, _ in runs[d])
        com = statistics.median(b for _, b in runs[d])
        fastest = min(a + b for a, b in runs[d])
        ratio = total[d] / total[depths[0]]
        print(f"  {d:>6} {low:>9.3f} {com:>10.3f} {total[d]:>9.3f} {fastest:>7.3f} {ratio:>7.2f}")
    return total[depths[-1]] / total[depths[0]]


def main() -> None:
    args = parse_args(__doc__ or "")
    depths = [10, 100, 300] if args.quick else [10, 100, 1000]
    repeats = 2 if args.quick else 3
    print(f"jax {jax.__version__}, equinox {eqx.__version__}, {jax.devices()[0].platform}")
    print(f"width {WIDTH}, hidden {HIDDEN}, batch {BATCH}, depths {depths}, {repeats} repeats")
    x = jr.normal(jr.key(1), (BATCH, WIDTH))
    ratios = {name: measure(name, depths, repeats, x) for name in SCHEMES}
    print()
    for name, ratio in ratios.items():
        label = f"compile_time(depth {depths[-1]})/compile_time(depth {depths[0]}) {name}"
        print(ratio_line(label, ratio, "roughly flat, <= 2"))


if __name__ == "__main__":
    main()
