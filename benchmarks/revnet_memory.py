"""Activation memory of a RevNet training step against depth, from XLA's memory analysis.

The step is the gradient of the sum of squares of the output with respect to the stack and
the input, for a batch of 64 examples (state width 32), compiled with
`eqx.filter_jit(step).lower(...).compile()`; `memory_analysis()` of the executable gives
the bytes of its arguments (the parameters, linear in depth for every variant), outputs (the
gradients, the same) and temporaries (the activations and other work buffers), which is the
figure compared. Variants:

(a) RevNet: `ResidualStack(coupling block, AdditiveCoupling(), depth, memory_saving=True)`,
    memory-saving backprop, batch by `jax.vmap` over the stack;
(b) the same stack with `memory_saving=False` (every block's input stored);
(c) ResNet: `Euler()` with an MLP field of the full width, stored activations;
(d) (a) with the batch axis inside the blocks (each field `vmap`s over the state's second
    axis) and the stack called once on the `(width, batch)` state, no outer `vmap`.

Run: `python benchmarks/revnet_memory.py [--quick]` (with neurde importable).
"""

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from _common import parse_args, ratio_line
from jaxtyping import Array

import neurde
from neurde.discrete import AdditiveCoupling, CouplingBlock, Euler, ResidualStack

WIDTH, HIDDEN, BATCH = 32, 64, 64


class BatchInside(neurde.AbstractField):
    """A field applied to each column of a `(features, batch)` state."""

    field: neurde.MLPField

    def __call__(self, t: Any, y: Any, args: Any) -> Array:
        return jax.vmap(self.field, in_axes=(None, 1, None), out_axes=1)(t, y, args)


def make_coupling_block(key: Any, batch_inside: bool = False) -> CouplingBlock:
    k1, k2 = jr.split(key)
    f, g = (neurde.MLPField(WIDTH // 2, HIDDEN, 1, key=k) for k in (k1, k2))
    return CouplingBlock(BatchInside(f), BatchInside(g)) if batch_inside else CouplingBlock(f, g)


VARIANTS = {
    "(a) revnet, memory-saving": lambda d: ResidualStack(
        make_coupling_block, AdditiveCoupling(), d, memory_saving=True, key=jr.key(0)
    ),
    "(b) revnet, stored activations": lambda d: ResidualStack(
        make_coupling_block, AdditiveCoupling(), d, memory_saving=False, key=jr.key(0)
    ),
    "(c) resnet, stored activations": lambda d: ResidualStack(
        lambda k: neurde.MLPField(WIDTH, HIDDEN, 1, key=k), Euler(), d, key=jr.key(0)
    ),
    "(d) revnet, memory-saving, batch inside": lambda d: ResidualStack(
        lambda k: make_coupling_block(k, batch_inside=True),
        AdditiveCoupling(),
        d,
        memory_saving=True,
        key=jr.key(0),
    ),
}


def step(stack: ResidualStack, x: Array) -> Any:
    """Gradient of the loss with respect to (stack, x); `x` has shape (batch, width)."""

    def loss(stack_x: tuple[ResidualStack, Array]) -> Array:
        stack, x = stack_x
        if isinstance(getattr(stack.blocks, "f", None), BatchInside):
            return jnp.sum(stack(x.T) ** 2)
        return jnp.sum(jax.vmap(stack)(x) ** 2)

    return eqx.filter_grad(loss)((stack, x))


def max_abs_diff(a: Any, b: Any) -> float:
    """Over the gradients' leaves, in order (the variants' tree structures differ)."""
    pairs = zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    return max(float(jnp.max(jnp.abs(u - v))) for u, v in pairs)


def check_gradients(depth: int, x: Array) -> None:
    """(a), (b) and (d) compute the same function from the same weights: same gradients."""
    grads = {name: eqx.filter_jit(step)(VARIANTS[name](depth), x) for name in VARIANTS}
    (a, b, _, d) = grads.values()
    scale = max(float(jnp.max(jnp.abs(v))) for v in jax.tree.leaves(b))
    print(f"gradient check at depth {depth} (largest |gradient| {scale:.3g}):")
    print(f"  max |(a) - (b)| = {max_abs_diff(a, b):.2e}")
    print(f"  max |(d) - (a)| = {max_abs_diff(d, a):.2e}")


def memory(depth: int, name: str, x: Array) -> dict[str, float]:
    jitted: Any = eqx.filter_jit(step)  # typed as a plain callable; it has `.lower`
    compiled = jitted.lower(VARIANTS[name](depth), x).compile()
    m = compiled.compiled.memory_analysis()
    return {
        "temp": m.temp_size_in_bytes / 2**20,
        "args": m.argument_size_in_bytes / 2**20,
        "out": m.output_size_in_bytes / 2**20,
    }


def main() -> None:
    args = parse_args(__doc__ or "")
    depths = [16, 64] if args.quick else [16, 64, 256]
    print(f"jax {jax.__version__}, equinox {eqx.__version__}, {jax.devices()[0].platform}")
    print(f"width {WIDTH}, hidden {HIDDEN}, batch {BATCH}, float32, depths {depths}\n")
    x = jr.normal(jr.key(1), (BATCH, WIDTH))
    check_gradients(depths[0], x)

    temp: dict[str, list[float]] = {}
    args_hi = 0.0
    print(f"\n  {'variant':<40} {'depth':>6} {'temp MiB':>10} {'args MiB':>9} {'out MiB':>8}")
    for name in VARIANTS:
        temp[name] = []
        for d in depths:
            m = memory(d, name, x)
            temp[name].append(m["temp"])
            args_hi = m["args"]
            print(f"  {name:<40} {d:>6} {m['temp']:>10.3f} {m['args']:>9.3f} {m['out']:>8.3f}")

    hi, lo = depths[-1], depths[0]
    linear = f"~linear, ~{hi // lo}"
    print(f"\ndepth ratio {hi}/{lo} = {hi // lo}")
    per_example = temp["(a) revnet, memory-saving"][-1] / (BATCH * args_hi)
    print(f"(a) temp / (batch x parameter bytes) at depth {hi} = {per_example:.2f}")
    for label, name, target in (
        ("revnet_temp", "(a) revnet, memory-saving", "flat, ~1"),
        ("revnet_stored_temp", "(b) revnet, stored activations", linear),
        ("resnet_temp", "(c) resnet, stored activations", linear),
        ("revnet_batch_inside_temp", "(d) revnet, memory-saving, batch inside", "flat, ~1"),
    ):
        value = temp[name][-1] / temp[name][0]
        print(ratio_line(f"{label}(depth {hi})/{label}(depth {lo})", value, target))


if __name__ == "__main__":
    main()
