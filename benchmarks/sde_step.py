"""Cost of a neural SDE training step in neurde over the same step written as a `lax.scan`.

Euler–Maruyama, 100 steps of dt = 0.01, batch 128 (one key per example), state 4, MLP drift
and diagonal diffusion of width 64 (two hidden layers, softplus; the diffusion squashed by
`0.2 * sigmoid`), loss: mean squared final state, Adam. Candidates, timed side by side:

- the floor: a hand-written `lax.scan` whose body is wrapped in `jax.checkpoint`, over
  increments pre-drawn at the start of the step (the same numbers neurde draws, so the losses
  agree before timing);
- `NeuralSDE(..., brownian="grid")` through `neurde.make_step`: the fast fixed-step path
  (one checkpointed scan, increments drawn in the loop);
- context: `NeuralSDE` with its default virtual Brownian tree, and `diffrax.diffeqsolve` on a
  pre-sampled `neurde.GridBrownianPath` (what `brownian="grid"` ran before the scan path).

Run: `python benchmarks/sde_step.py [--quick]` (with neurde importable).
"""

from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import lineax as lx  # diffrax's dependency: a diagonal diffusion operator
import optax
from _common import interleaved_times, median_ratio, parse_args, print_table, ratio_line
from jaxtyping import Array

import neurde

STEPS, DT, SIZE, WIDTH, BATCH = 100, 0.01, 4, 64, 128
optim = optax.adam(1e-3)


class Diffusion(eqx.Module):
    """Diagonal diffusion `0.2 * sigmoid(mlp(y))`."""

    mlp: eqx.nn.MLP

    def __call__(self, t: Any, y: Array, args: Any) -> Array:
        return 0.2 * jax.nn.sigmoid(self.mlp(y))


class Nets(eqx.Module):
    """The drift and diffusion networks, as the hand-written step trains them."""

    drift: eqx.nn.MLP
    diffusion: eqx.nn.MLP


def neurde_loss(model: neurde.NeuralSDE, batch: Array, key: Any) -> Array:
    keys = jr.split(key, batch.shape[0])
    return jnp.mean(jax.vmap(lambda y0, k: model(y0, key=k))(batch, keys) ** 2)


def increments(key: Any) -> Array:
    """The increments neurde's grid path draws from `key` (step k from `fold_in(key, k)`)."""
    draw = jax.vmap(lambda k: jr.normal(jr.fold_in(key, k), (SIZE,)))
    return draw(jnp.arange(STEPS)) * jnp.sqrt(DT)


def scan_loss(nets: Nets, batch: Array, key: Any) -> Array:
    dws = jax.vmap(increments)(jr.split(key, batch.shape[0]))

    def solve(y0: Array, dw: Array) -> Array:
        def body(carry: tuple[Array, Array], dw_k: Array) -> Any:
            y, t = carry
            f = nets.drift(y)
            g = 0.2 * jax.nn.sigmoid(nets.diffusion(y))
            return (y + f * DT + g * dw_k, t + DT), None

        (y, _), _ = jax.lax.scan(jax.checkpoint(body), (y0, jnp.zeros(())), dw)
        return y

    return jnp.mean(jax.vmap(solve)(batch, dws) ** 2)


def diffrax_loss(nets: Nets, batch: Array, key: Any) -> Array:
    def solve(y0: Array, k: Any) -> Array:
        path = neurde.GridBrownianPath(0.0, STEPS * DT, DT, (SIZE,), key=k)
        terms = diffrax.MultiTerm(
            diffrax.ODETerm(lambda t, y, a: nets.drift(y)),
            diffrax.ControlTerm(
                lambda t, y, a: lx.DiagonalLinearOperator(0.2 * jax.nn.sigmoid(nets.diffusion(y))),
                path,
            ),
        )
        sol = diffrax.diffeqsolve(
            terms,
            diffrax.Euler(),
            0.0,
            STEPS * DT,
            DT,
            y0,
            adjoint=diffrax.RecursiveCheckpointAdjoint(checkpoints=STEPS + 1),
        )
        return sol.ys[0]  # pyright: ignore[reportOptionalSubscript]

    return jnp.mean(jax.vmap(solve)(batch, jr.split(key, batch.shape[0])) ** 2)


def make_direct_step(loss: Any) -> Any:
    @eqx.filter_jit
    def step(nets: Nets, opt_state: Any, batch: Array, key: Any) -> Any:
        value, grads = eqx.filter_value_and_grad(loss)(nets, batch, key)
        updates, opt_state = optim.update(grads, opt_state, eqx.filter(nets, eqx.is_array))
        return eqx.apply_updates(nets, updates), opt_state, value

    return step


def check_same(name: str, a: Any, b: Any, tol: float = 1e-5) -> None:
    diff = abs(float(a) - float(b)) / max(abs(float(b)), 1e-12)
    print(f"  {name}: loss {float(a):.6g} vs {float(b):.6g} (rel diff {diff:.1e})")
    if diff > tol:
        raise SystemExit(f"{name}: the two steps disagree; the timing would be meaningless.")


def main() -> None:
    args = parse_args(__doc__ or "")
    repeats = 15 if args.quick else 40
    print(f"jax {jax.__version__}, diffrax {diffrax.__version__}, {jax.devices()[0].platform}")
    k1, k2, k3, k4 = jr.split(jr.key(0), 4)
    drift = neurde.MLPField(SIZE, WIDTH, 2, key=k1)
    diffusion_mlp = eqx.nn.MLP(SIZE, SIZE, WIDTH, 2, activation=jax.nn.softplus, key=k2)
    nets = Nets(drift.mlp, diffusion_mlp)
    t1 = STEPS * DT
    grid = neurde.NeuralSDE(drift, Diffusion(diffusion_mlp), brownian="grid", dt0=DT, t1=t1)
    tree = neurde.NeuralSDE(drift, Diffusion(diffusion_mlp), brownian="tree", dt0=DT, t1=t1)
    batch = jr.normal(k3, (BATCH, SIZE))
    key = k4

    step = neurde.make_step(neurde_loss, optim)
    opt_state = neurde.init_optimizer(optim, grid)
    tree_state = neurde.init_optimizer(optim, tree)
    scan_step = make_direct_step(scan_loss)
    diffrax_step = make_direct_step(diffrax_loss)
    nets_state = optim.init(eqx.filter(nets, eqx.is_array))

    print(f"Euler–Maruyama, {STEPS} steps of {DT}, batch {BATCH}, state {SIZE}, width {WIDTH}")
    loss = step(grid, opt_state, batch, key)[2]
    check_same("hand-written scan", loss, scan_step(nets, nets_state, batch, key)[2])
    check_same("diffeqsolve + grid path", loss, diffrax_step(nets, nets_state, batch, key)[2])

    floor = "lax.scan + jax.checkpoint (by hand)"
    ours = 'neurde NeuralSDE(brownian="grid")'
    fns = {
        floor: lambda: scan_step(nets, nets_state, batch, key),
        ours: lambda: step(grid, opt_state, batch, key),
        "diffeqsolve + GridBrownianPath (by hand)": lambda: diffrax_step(
            nets, nets_state, batch, key
        ),
        "neurde NeuralSDE (virtual Brownian tree)": lambda: step(tree, tree_state, batch, key),
    }
    times = interleaved_times(fns, repeats)
    print_table("neural SDE training step", times, floor)
    print(
        ratio_line(
            "neurde grid/scan floor (Euler-Maruyama 100 steps)",
            median_ratio(times, ours, floor),
            "<= 1.2",
        )
    )


if __name__ == "__main__":
    main()
