"""Batch mode (`neurde.batched`) against raw Diffrax on a batched state, and against vmap.

One gradient of `mean(y(T)**2)` in the parameters, float32, MLP field (state 4, width 64,
two hidden layers, tanh, weight matrices scaled by 4 so that the dynamics are as stiff as a
trained field's: 6-18 adaptive steps per example, where the fresh initialization takes 4),
batch 256 (64 with `--quick`), three workloads:

- neural ODE on [0, 2], Dopri5, rtol = atol = 1e-5, backprop through the solver;
- the same with the continuous adjoint (`diffrax.BacksolveAdjoint`, neurde's
  `adjoint="adjoint"`);
- neural SDE, Euler–Maruyama, dt = 0.02 on [0, 1], a virtual Brownian tree, backprop
  (diagonal diffusion `0.2 * sigmoid(mlp(y))`).

Candidates, timed side by side (interleaved repeats, medians):

- `raw`: the computation written directly with Diffrax on the batch as one state `(B, d)`:
  the field vmapped over the batch, one PID controller (RMS norm over the batch), one
  Brownian tree of shape `(B, d)`;
- `batched`: `neurde.batched(model)` (target: <= 1.05 x raw);
- `vmap`: `jax.vmap(model)`, one example at a time (per-example steps; one Brownian tree and
  one adjoint state per example): the pattern README used to prescribe.

Run: `python benchmarks/batch_mode.py [--quick]` (with neurde importable).
"""

import statistics
import time
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from _common import interleaved_times, median_ratio, parse_args, print_table, ratio_line
from jaxtyping import Array

import neurde

SIZE, WIDTH, DEPTH, TOL, DT, T_ODE = 4, 64, 2, 1e-5, 0.02, 2.0


class Vmapped(eqx.Module):
    """A one-example field applied to a batch (a module: BacksolveAdjoint sees its weights)."""

    f: Any

    def __call__(self, t: Any, y: Array, args: Any) -> Array:
        return jax.vmap(self.f, in_axes=(None, 0, None))(t, y, args)


class Diffusion(eqx.Module):
    """Diagonal diffusion `0.2 * sigmoid(mlp(y))`."""

    mlp: eqx.nn.MLP

    def __call__(self, t: Any, y: Array, args: Any) -> Array:
        return 0.2 * jax.nn.sigmoid(self.mlp(y))


class Diagonal(diffrax.AbstractTerm):
    """`g(t, y) * dW` for diagonal noise."""

    g: Vmapped
    path: diffrax.AbstractPath

    def vf(self, t: Any, y: Any, args: Any) -> Any:
        return self.g(t, y, args)

    def contr(self, t0: Any, t1: Any, **kwargs: Any) -> Any:
        return self.path.evaluate(t0, t1, **kwargs)

    def prod(self, vf: Any, control: Any) -> Any:
        return vf * control


def raw_loss(
    fields: tuple[Any, Any | None], y0: Array, adjoint: diffrax.AbstractAdjoint, key: Any
) -> Array:
    drift, diffusion = fields
    terms: Any = diffrax.ODETerm(Vmapped(drift))
    if diffusion is None:
        solver, dt0 = diffrax.Dopri5(), None
        controller: Any = diffrax.PIDController(rtol=TOL, atol=TOL)
    else:
        solver, dt0, controller = diffrax.Euler(), DT, diffrax.ConstantStepSize()
        bm = diffrax.VirtualBrownianTree(0.0, 1.0, tol=DT / 2, shape=y0.shape, key=key)
        terms = diffrax.MultiTerm(terms, Diagonal(Vmapped(diffusion), bm))
    t1 = 1.0 if diffusion is not None else T_ODE
    solution = diffrax.diffeqsolve(
        terms, solver, 0.0, t1, dt0, y0, stepsize_controller=controller, adjoint=adjoint
    )
    return jnp.mean(solution.ys**2)  # type: ignore[operator]


def models(sde: bool, adjoint: str) -> tuple[Any, tuple[Any, Any | None]]:
    field = neurde.MLPField(SIZE, WIDTH, DEPTH, activation=jnp.tanh, key=jr.key(0))
    drift = jax.tree.map(lambda x: 4 * x if eqx.is_array(x) and x.ndim == 2 else x, field)
    if not sde:
        return neurde.NeuralODE(
            drift, solver=diffrax.Dopri5(), rtol=TOL, atol=TOL, adjoint=adjoint, t1=T_ODE
        ), (drift, None)
    mlp = eqx.nn.MLP(SIZE, SIZE, WIDTH, DEPTH, activation=jax.nn.softplus, key=jr.key(1))
    diffusion = Diffusion(mlp)
    model = neurde.NeuralSDE(drift, diffusion, brownian="tree", dt0=DT, t1=1.0)
    return model, (drift, diffusion)


def candidates(sde: bool, adjoint: str, y0: Array) -> tuple[dict[str, Any], dict[str, str]]:
    """The three compiled gradient steps of one workload, and a note on their step counts."""
    model, fields = models(sde, adjoint)
    key = jr.key(2)
    raw_adjoint = diffrax.BacksolveAdjoint() if adjoint == "adjoint" else None
    raw_adjoint = raw_adjoint or diffrax.RecursiveCheckpointAdjoint()
    batch = neurde.batched(model)
    keys = jr.split(key, y0.shape[0])

    def vmap_loss(m: Any) -> Array:
        if sde:
            return jnp.mean(jax.vmap(lambda y, k: m(y, key=k))(y0, keys) ** 2)
        return jnp.mean(jax.vmap(m)(y0) ** 2)

    grad = eqx.filter_jit(eqx.filter_grad(lambda f: raw_loss(f, y0, raw_adjoint, key)))
    batch_grad = eqx.filter_jit(eqx.filter_grad(lambda m: jnp.mean(m(y0, key=key) ** 2)))
    vmap_grad = eqx.filter_jit(eqx.filter_grad(vmap_loss))
    fns = {
        "raw": lambda: grad(fields),
        "batched": lambda: batch_grad(batch),
        "vmap": lambda: vmap_grad(model),
    }
    for fn in fns.values():  # compile
        jax.block_until_ready(fn())
    shared = int(batch.solve(y0, key=key).stats["num_steps"])
    if sde:
        alone = jax.vmap(lambda y, k: model.solve(y, key=k).stats["num_steps"])(y0, keys)
    else:
        alone = jax.vmap(lambda y: model.solve(y).stats["num_steps"])(y0)
    # Field evaluations of one gradient, forward and backward (fresh, uncompiled functions:
    # `count_evaluations` counts what it traces).
    size = y0.shape[0]
    _, shared_counts = neurde.count_evaluations(
        eqx.filter_grad(lambda m: jnp.mean(m(y0, key=key) ** 2))
    )(batch)
    _, vmap_counts = neurde.count_evaluations(eqx.filter_grad(vmap_loss))(model)
    notes = {
        "batched": f"{shared} shared steps; {shared_counts['forward']} forward + "
        f"{shared_counts['vjp']} VJP evaluations of the batched field",
        "vmap": f"{int(jnp.min(alone))}-{int(jnp.max(alone))} steps per example; per example "
        f"{vmap_counts['forward'] // size} forward + {vmap_counts['vjp'] // size} VJP "
        "evaluations (every example runs as long as the slowest)",
    }
    return fns, notes


def blocked_times(fns: dict[str, Any], repeats: int) -> dict[str, list[float]]:
    """Seconds per call, each sample a block of calls lasting ~0.2 s, blocks interleaved.

    On a shared host a single call of a few milliseconds is at the mercy of the scheduler;
    a block of calls averages that out, and the interleaving makes a slow spell hit every
    candidate alike.
    """
    counts = {}
    for name, fn in fns.items():
        start = time.perf_counter()
        jax.block_until_ready(fn())
        counts[name] = max(1, round(0.2 / (time.perf_counter() - start)))

    def block(name: str) -> Any:
        fn, n = fns[name], counts[name]
        return lambda: [fn() for _ in range(n)]

    times = interleaved_times({name: block(name) for name in fns}, repeats)
    return {name: [t / counts[name] for t in ts] for name, ts in times.items()}


def main() -> None:
    args = parse_args((__doc__ or "").splitlines()[0])
    batch = 64 if args.quick else 256
    repeats = 9 if args.quick else 15
    y0 = jr.normal(jr.key(3), (batch, SIZE))
    workloads = {
        "ode_dopri5_backprop": (False, "backprop"),
        "ode_dopri5_adjoint": (False, "adjoint"),
        "sde_euler_tree": (True, "backprop"),
    }
    ratios = {}
    print(f"batch {batch}, state {SIZE}, MLP width {WIDTH} depth {DEPTH}, float32, medians")
    for name, (sde, adjoint) in workloads.items():
        fns, notes = candidates(sde, adjoint, y0)
        # The per-example continuous adjoint is ~100x slower: fewer repeats of it.
        slow = adjoint == "adjoint"
        times = blocked_times(fns, 3 if slow else repeats)
        if slow:
            more = blocked_times({k: v for k, v in fns.items() if k != "vmap"}, repeats - 3)
            for k, ts in more.items():
                times[k] += ts
        print_table(f"{name} (gradient of mean(y(T)^2), batch {batch})", times, "raw")
        for candidate, note in notes.items():
            print(f"    {candidate}: {note}")
        ratios[name] = (
            median_ratio(times, "batched", "raw"),
            median_ratio(times, "vmap", "batched"),
            statistics.median(times["batched"]),
        )
    print()
    for name, (to_raw, vmap_over, _) in ratios.items():
        print(ratio_line(f"batch_mode_{name}_vs_raw_diffrax", to_raw, "<= 1.05"))
        print(ratio_line(f"vmap_over_batch_mode_{name}", vmap_over, "report"))


if __name__ == "__main__":
    main()
