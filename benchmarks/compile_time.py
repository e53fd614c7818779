"""First-call time of the spiral training step, and what JAX's persistent cache saves.

The step of `ode_step.py` (a) (NeuralODE, MLP 2->64->64->2, Tsit5, batch 256, 40 save
times, Adam) is jitted with `jax.jit` around `neurde.train.step.step_once` (what
`neurde.make_step` compiles) and staged by hand, `.trace()` -> `.lower()` -> `.compile()` ->
first run, so each phase is timed. Each measurement runs in a fresh child process with the
persistent compilation cache on, twice per cache directory: the first process fills the
cache, the second reads it. Programs with host callbacks are never written to the cache, and
Equinox's runtime checks (`eqx.error_if`) are host callbacks under `EQX_ON_ERROR=raise` (the
default) but not under `EQX_ON_ERROR=nan`; hence one pair of processes for each.

Run: `python benchmarks/compile_time.py [--quick]` (with neurde importable).
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time
from typing import Any

PHASES = ("trace", "lower", "compile", "run")


def setup() -> tuple[Any, ...]:
    """The training step's ingredients, as in `ode_step.py` (a)."""
    import jax
    import jax.numpy as jnp
    import jax.random as jr
    import optax

    import neurde

    def loss_fn(model: Any, batch: Any, key: Any) -> Any:
        ts, ys = batch
        return jnp.mean((jax.vmap(lambda y0: model(y0, ts))(ys[:, 0]) - ys) ** 2)

    optim = optax.adam(1e-3)
    data = neurde.data.spiral(256, 40, key=jr.key(0))
    model = neurde.NeuralODE(neurde.MLPField(2, 64, 2, key=jr.key(1)))
    opt_state = neurde.init_optimizer(optim, model)
    return loss_fn, optim, model, opt_state, (data.ts, data.ys), jr.key(2)


def child(cache_dir: str) -> dict[str, float]:
    """Time each phase of the first call in this (fresh) process."""
    import equinox as eqx
    import jax

    from neurde.train.step import step_once

    if cache_dir:
        jax.config.update("jax_compilation_cache_dir", cache_dir)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    loss_fn, optim, model, opt_state, batch, key = setup()
    dynamic, static = eqx.partition((model, opt_state), eqx.is_array)

    def step(dynamic: Any, batch: Any, key: Any) -> Any:
        model, opt_state = eqx.combine(dynamic, static)
        return eqx.filter(step_once(loss_fn, optim, model, opt_state, batch, key), eqx.is_array)

    times = {}
    start = time.perf_counter()
    traced = jax.jit(step).trace(dynamic, batch, key)
    times["trace"] = time.perf_counter() - start
    lowered = traced.lower()
    times["lower"] = time.perf_counter() - start - sum(times.values())
    compiled = lowered.compile()
    times["compile"] = time.perf_counter() - start - sum(times.values())
    jax.block_until_ready(compiled(dynamic, batch, key))
    times["run"] = time.perf_counter() - start - sum(times.values())
    return times


def child_make_step() -> dict[str, float]:
    """The first call of `neurde.make_step`'s step itself, no persistent cache."""
    import jax

    import neurde

    loss_fn, optim, model, opt_state, batch, key = setup()
    step = neurde.make_step(loss_fn, optim)
    start = time.perf_counter()
    jax.block_until_ready(step(model, opt_state, batch, key))
    return {"first call": time.perf_counter() - start}


def run_child(cache_dir: str, on_error: str) -> dict[str, float]:
    """Run this script as `--child CACHE_DIR` ("" for `make_step`, no cache) and parse it."""
    env = {**os.environ, "EQX_ON_ERROR": on_error}
    cmd = [sys.executable, __file__, "--child", cache_dir]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    lines = [line for line in out.stdout.splitlines() if line.startswith("CHILD ")]
    if out.returncode != 0 or not lines:
        raise SystemExit(f"child process failed:\n{out.stdout}\n{out.stderr}")
    return json.loads(lines[-1].removeprefix("CHILD "))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="skip the make_step cross-check")
    parser.add_argument("--child", metavar="CACHE_DIR", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        times = child(args.child) if args.child else child_make_step()
        print("CHILD " + json.dumps(times))
        return

    print("first call of the spiral training step, each row a fresh process (seconds)")
    header = "".join(f"{p:>9}" for p in (*PHASES, "total"))
    print(f"  {'EQX_ON_ERROR':<13}{'process':<9}{header}  step in cache after")
    totals: dict[tuple[str, int], float] = {}
    with tempfile.TemporaryDirectory() as root:
        for on_error in ("raise", "nan"):
            cache_dir = pathlib.Path(root) / on_error
            for process in (1, 2):
                times = run_child(str(cache_dir), on_error)
                totals[on_error, process] = sum(times.values())
                cached = "yes" if any(cache_dir.glob("jit_step-*")) else "no"
                row = "".join(f"{times[p]:>9.2f}" for p in PHASES)
                total = totals[on_error, process]
                print(f"  {on_error:<13}{process:<9}{row}{total:>9.2f}  {cached}")
    if not args.quick:
        first = run_child("", "raise")["first call"]
        print(f"  neurde.make_step's own first call, no cache (EQX_ON_ERROR=raise): {first:.2f}")
    print()
    for on_error, target in (("raise", "none: not cached, ~1"), ("nan", "<= 0.7")):
        ratio = totals[on_error, 2] / totals[on_error, 1]
        name = f"cached_second_run/first_run (EQX_ON_ERROR={on_error})"
        print(f"RATIO {name} = {ratio:.2f} (target {target})")


if __name__ == "__main__":
    main()
