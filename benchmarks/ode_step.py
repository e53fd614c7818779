"""Cost of neurde's `NeuralODE` + `make_step` over the same training step written by hand.

(a) Adaptive Tsit5 on the spiral: `neurde.make_step` vs `diffrax.diffeqsolve` +
    `eqx.filter_value_and_grad` + Optax in `eqx.filter_jit`, same weights and data.
(b) Fixed-step RK4, 100 steps, loss on the final state: neurde vs a hand-written `lax.scan`
    RK4 loop, with and without `jax.checkpoint` around the body; the faster is the floor.
    The full run adds `diffeqsolve` with Diffrax's default adjoint (`checkpoints=None`), to
    show what neurde's one-checkpoint-per-step adjoint changes.

Run: `python benchmarks/ode_step.py [--quick]` (with neurde importable).
"""

from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import optax
from _common import interleaved_times, median_ratio, parse_args, print_table, ratio_line
from jaxtyping import Array

import neurde

RTOL, ATOL = 1e-3, 1e-6
RK4_STEPS, RK4_DT = 100, 0.01
optim = optax.adam(1e-3)


def mse(pred: Array, target: Array) -> Array:
    return jnp.mean((pred - target) ** 2)


def neurde_loss(model: neurde.NeuralODE, batch: Any, key: Any) -> Array:
    ts, ys = batch
    return mse(jax.vmap(lambda y0: model(y0, ts))(ys[:, 0]), ys)


def neurde_final_loss(model: neurde.NeuralODE, batch: Any, key: Any) -> Array:
    y0, target = batch
    return mse(jax.vmap(model)(y0), target)


def direct_loss(mlp: eqx.nn.MLP, batch: Any) -> Array:
    ts, ys = batch

    def solve(y0: Array) -> Any:
        return diffrax.diffeqsolve(
            diffrax.ODETerm(lambda t, y, args: mlp(y)),
            diffrax.Tsit5(),
            t0=0.0,
            t1=ts[-1],
            dt0=None,
            y0=y0,
            saveat=diffrax.SaveAt(ts=ts),
            stepsize_controller=diffrax.PIDController(rtol=RTOL, atol=ATOL),
            max_steps=4096,
        ).ys

    return mse(jax.vmap(solve)(ys[:, 0]), ys)


def rk4_final(mlp: eqx.nn.MLP, y0: Array, remat: bool) -> Array:
    h = RK4_DT

    def body(y: Array, _: None) -> tuple[Array, None]:
        k1 = mlp(y)
        k2 = mlp(y + 0.5 * h * k1)
        k3 = mlp(y + 0.5 * h * k2)
        k4 = mlp(y + h * k3)
        return y + (h / 6) * (k1 + 2 * k2 + 2 * k3 + k4), None

    y, _ = jax.lax.scan(jax.checkpoint(body) if remat else body, y0, None, length=RK4_STEPS)
    return y


def diffrax_final_loss(mlp: eqx.nn.MLP, batch: Any) -> Array:
    """RK4 through `diffeqsolve` with Diffrax's default `RecursiveCheckpointAdjoint()`."""
    y0, target = batch

    def solve(y: Array) -> Any:
        return diffrax.diffeqsolve(
            diffrax.ODETerm(lambda t, y, args: mlp(y)),
            neurde.RK4(),
            t0=0.0,
            t1=RK4_STEPS * RK4_DT,
            dt0=RK4_DT,
            y0=y,
            stepsize_controller=diffrax.ConstantStepSize(),
        ).ys

    return mse(jax.vmap(solve)(y0)[:, 0], target)


def scan_loss(mlp: eqx.nn.MLP, batch: Any, remat: bool) -> Array:
    y0, target = batch
    return mse(jax.vmap(lambda y: rk4_final(mlp, y, remat))(y0), target)


def make_direct_step(loss: Any) -> Any:
    @eqx.filter_jit
    def step(mlp: eqx.nn.MLP, opt_state: Any, batch: Any) -> Any:
        value, grads = eqx.filter_value_and_grad(loss)(mlp, batch)
        updates, opt_state = optim.update(grads, opt_state, eqx.filter(mlp, eqx.is_array))
        return eqx.apply_updates(mlp, updates), opt_state, value

    return step


def check_same(name: str, a: Any, b: Any, tol: float = 1e-5) -> None:
    diff = abs(float(a) - float(b)) / max(abs(float(b)), 1e-12)
    print(f"  {name}: loss {float(a):.6g} vs {float(b):.6g} (rel diff {diff:.1e})")
    if diff > tol:
        raise SystemExit(f"{name}: the two steps disagree; the timing would be meaningless.")


def adaptive(batch_size: int, n_times: int, repeats: int) -> float:
    data = neurde.data.spiral(batch_size, n_times, key=jr.key(0))
    batch = (data.ts, data.ys)
    field = neurde.MLPField(2, 64, 2, key=jr.key(1))
    model = neurde.NeuralODE(field, rtol=RTOL, atol=ATOL)
    key = jr.key(2)
    step = neurde.make_step(neurde_loss, optim)
    opt_state = neurde.init_optimizer(optim, model)
    direct = make_direct_step(direct_loss)
    direct_state = optim.init(eqx.filter(field.mlp, eqx.is_array))

    stats = model.solve(data.y0[0], data.ts).stats
    print(f"(a) Tsit5 rtol={RTOL} atol={ATOL}: batch {batch_size}, {n_times} save times on")
    print(f"    [0, {float(data.ts[-1]):g}], {int(stats['num_steps'])} steps for example 0")
    new_model, _, loss_a, _ = step(model, opt_state, batch, key)
    new_mlp, _, loss_b = direct(field.mlp, direct_state, batch)
    check_same("step 1", loss_a, loss_b)
    check_same("step 2", step(new_model, opt_state, batch, key)[2], direct_loss(new_mlp, batch))

    by_hand, ours = "diffrax + eqx.filter_jit (by hand)", "neurde.make_step(NeuralODE)"
    times = interleaved_times(
        {
            by_hand: lambda: direct(field.mlp, direct_state, batch),
            ours: lambda: step(model, opt_state, batch, key),
        },
        repeats,
    )
    print_table("(a) adaptive training step", times, by_hand)
    return median_ratio(times, ours, by_hand)


def fixed_step(batch_size: int, repeats: int, quick: bool) -> tuple[float, float]:
    data = neurde.data.spiral(batch_size, 2, t1=RK4_STEPS * RK4_DT, key=jr.key(0))
    batch = (data.y0, data.ys[:, -1])
    field = neurde.MLPField(2, 64, 2, key=jr.key(1))
    model = neurde.NeuralODE(field, solver=neurde.RK4(), dt0=RK4_DT, t1=RK4_STEPS * RK4_DT)
    key = jr.key(2)
    step = neurde.make_step(neurde_final_loss, optim)
    opt_state = neurde.init_optimizer(optim, model)
    remat = make_direct_step(lambda m, b: scan_loss(m, b, remat=True))
    plain = make_direct_step(lambda m, b: scan_loss(m, b, remat=False))
    by_hand = make_direct_step(diffrax_final_loss)
    scan_state = optim.init(eqx.filter(field.mlp, eqx.is_array))

    stats = model.solve(data.y0[0]).stats
    print(f"\n(b) RK4 dt0={RK4_DT} on [0, {RK4_STEPS * RK4_DT:g}]: batch {batch_size},")
    print(f"    {int(stats['num_steps'])} diffrax steps, loss on the final state")
    loss = step(model, opt_state, batch, key)[2]
    check_same("remat scan", loss, remat(field.mlp, scan_state, batch)[2])
    check_same("plain scan", loss, plain(field.mlp, scan_state, batch)[2])
    if not quick:
        check_same("diffeqsolve", loss, by_hand(field.mlp, scan_state, batch)[2])

    remat_name, plain_name = "lax.scan, jax.checkpoint body", "lax.scan, stores every stage"
    ours = "neurde.make_step(NeuralODE, RK4)"
    fns = {
        remat_name: lambda: remat(field.mlp, scan_state, batch),
        plain_name: lambda: plain(field.mlp, scan_state, batch),
        "diffeqsolve by hand, checkpoints=None": lambda: by_hand(field.mlp, scan_state, batch),
        ours: lambda: step(model, opt_state, batch, key),
    }
    if quick:  # one compilation fewer
        del fns["diffeqsolve by hand, checkpoints=None"]
    times = interleaved_times(fns, repeats)
    plain_over_remat = median_ratio(times, plain_name, remat_name)
    floor = remat_name if plain_over_remat >= 1 else plain_name
    print_table(f"(b) fixed-step training step (floor: {floor})", times, floor)
    return median_ratio(times, ours, floor), plain_over_remat


def main() -> None:
    args = parse_args(__doc__ or "")
    # (a) is ~30 ms a call, so many repeats are cheap; (b) is ~10x that.
    print(f"jax {jax.__version__}, diffrax {diffrax.__version__}, {jax.devices()[0].platform}")
    ratio_a = adaptive(256, 40, 25 if args.quick else 60)
    ratio_b, plain_over_remat = fixed_step(256, 7 if args.quick else 30, args.quick)
    print(f"\nplain scan / remat scan = {plain_over_remat:.2f}")
    print(ratio_line("neurde/diffrax (Tsit5 adaptive step)", ratio_a, "<= 1.05"))
    print(ratio_line("neurde/scan floor (RK4 100 steps)", ratio_b, "<= 1.3"))


if __name__ == "__main__":
    main()
