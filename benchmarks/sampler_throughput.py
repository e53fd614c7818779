"""Throughput of the new samplers (DPM-Solver++, UniPC, DEIS, Restart) over a hand-written scan.

Each sampler runs through `neurde.diffusion.sample_from` (jitted once) and as a hand-written
jitted `lax.scan` of the same update on the same batch: a noise-predicting
`ScoreMLP(2, 128, 3)` on the VP SDE, batch 1024, about 20 NFE. The hand-written loops take
their per-step coefficients as constants computed once outside the timed call (from the same
coefficient functions, so the samples agree to rounding; the tests check those functions
against the exact flow); the ratio is what neurde's loop costs on top: its `init` inside the
compiled call, the batched-score wrapper, the checks. For `DPMSolverPPSDE` the hand loop
queries the same Brownian tree (16-level queries at the 21 grid times) in both; a context row
times the hand loop on pre-drawn draws, which shows what the tree costs.
"""

import statistics
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from _common import interleaved_times, median_ratio, parse_args, print_table, ratio_line
from jaxtyping import Array

import neurde.diffusion as nd
from neurde.diffusion.samplers._exponential import dpmpp_coefficients
from neurde.diffusion.samplers.deis import _deis_coefficients
from neurde.diffusion.samplers.unipc import _unipc_tables

SDE = nd.VPSDE()
EPS = 1e-3


def _net_noise(net: Any, t: Array, x: Array) -> Array:
    return jax.vmap(net, in_axes=(None, 0))(t, x)


def _x0(net: Any, t: Array, x: Array) -> Array:
    return (x - SDE.std(t) * _net_noise(net, t, x)) / SDE.mean_coeff(t)


def multistep_by_hand(x0_pred: bool, n: int, grid: nd.TimeGrid, tables: Callable) -> Callable:
    """A scan over x and three past model outputs, weights from `tables(ts)` (constants)."""
    ts = nd.time_grid(SDE, n, grid, eps=EPS)
    a, c = tables(ts)

    def run(net: Any, x_T: Array, z: Array | None = None) -> Array:
        def step(carry: Any, row: Any) -> tuple[Any, None]:
            x, m1, m2, _ = carry
            t, a_i, c_i, z_i = row
            m = _x0(net, t, x) if x0_pred else _net_noise(net, t, x)
            x = a_i * x + c_i[0] * m + c_i[1] * m1 + c_i[2] * m2
            return (x + z_i if z is not None else x, m, m1, m2), None

        zeros = jnp.zeros_like(x_T)
        zs = z if z is not None else jnp.zeros((n,))
        carry = (x_T, zeros, zeros, zeros)
        return jax.lax.scan(step, carry, (ts[:-1], a, c, zs))[0][0]

    return run


def unipc_by_hand(n: int) -> Callable:
    ts = nd.time_grid(SDE, n, "logsnr", eps=EPS)
    a, pred, corr = _unipc_tables(SDE, ts, 2, "bh2")

    def run(net: Any, x_T: Array) -> Array:
        def step(carry: Any, i: Array) -> tuple[Any, None]:
            x_pred, x_last, m1, m2, m3 = carry
            m = _x0(net, ts[i], x_pred)
            c = corr[i - 1]
            corrected = a[i - 1] * x_last + c[0] * m + c[1] * m1 + c[2] * m2 + c[3] * m3
            x = jnp.where(i == 0, x_pred, corrected)
            p = pred[i]
            return (a[i] * x + p[0] * m + p[1] * m1 + p[2] * m2, x, m, m1, m2), None

        zeros = jnp.zeros_like(x_T)
        carry = (x_T, zeros, zeros, zeros, zeros)
        return jax.lax.scan(step, carry, jnp.arange(n))[0][0]

    return run


def restart_by_hand(sampler: nd.Restart, x_T: Array) -> Callable:
    _, (sig, noise, sig_next, _) = sampler.init(SDE, x_T, jr.split(jr.key(2), sampler.steps))
    last = sampler._main(SDE, x_T.dtype)[-1]

    def direction(net: Any, y: Array, s: Array) -> Array:
        t = SDE.time_from_log_snr(-jnp.log(s))
        return _net_noise(net, t, SDE.mean_coeff(t) * y)

    def run(net: Any, x_T: Array, keys: Any) -> Array:
        def step(y: Array, row: Any) -> tuple[Array, None]:
            s, nz, s_next, k = row
            y = y + nz * jr.normal(k, y.shape, y.dtype)
            d = direction(net, y, s)
            d2 = direction(net, y + (s_next - s) * d, s_next)
            return y + (s_next - s) * 0.5 * (d + d2), None

        y = jax.lax.scan(step, x_T / SDE.mean_coeff(1.0), (sig, noise, sig_next, keys))[0]
        return y - last * direction(net, y, last)

    return run


def main() -> None:
    args = parse_args(__doc__ or "")
    batch, nfe, repeats = 1024, 20, 10 if args.quick else 30
    net = nd.ScoreMLP(2, 128, 3, key=jr.key(0))
    score = nd.Score(net, SDE, "noise")
    x_T = SDE.sample_prior(jr.key(1), (batch, 2))
    key = jr.key(2)
    restart = nd.Restart(7, restart_steps=2, restarts=1)  # 2*7 - 1 + 4 = 17 NFE
    _, (_, _, _, restart_keys) = restart.init(SDE, x_T, jr.split(key, restart.steps))
    sde_sampler = nd.DPMSolverPPSDE(nfe, order=2)
    ts = nd.time_grid(SDE, nfe, "edm", eps=EPS)
    _, _, noise_std = dpmpp_coefficients(SDE, ts, 2, True)
    z = nd.brownian_noise(SDE, ts, x_T.shape, jr.split(key, nfe)[0], eps=EPS)
    z = noise_std[:, None, None] * z

    def dpmpp(order: int, stochastic: bool, grid: nd.TimeGrid = "edm") -> Callable:
        def tables(ts: Array) -> tuple[Array, Array]:
            return dpmpp_coefficients(SDE, ts, order, stochastic)[:2]

        return multistep_by_hand(True, nfe, grid, tables)

    sde_hand = dpmpp(2, True)

    def sde_with_tree(net: Any, x_T: Array) -> Array:
        draws = nd.brownian_noise(SDE, ts, x_T.shape, jr.split(key, nfe)[0], eps=EPS)
        return sde_hand(net, x_T, noise_std[:, None, None] * draws)

    cases: dict[str, tuple[nd.AbstractSampler, Callable[..., Array]]] = {
        "DPM-Solver++ 2M": (nd.DPMSolverPP(nfe), eqx.filter_jit(dpmpp(2, False))),
        "DPM-Solver++ 3M": (nd.DPMSolverPP(nfe, solver="3M"), eqx.filter_jit(dpmpp(3, False))),
        "DPM-Solver++ 2M SDE": (sde_sampler, eqx.filter_jit(sde_with_tree)),
        "UniPC-2 bh2": (nd.UniPC(nfe), eqx.filter_jit(unipc_by_hand(nfe))),
        "DEIS-3": (
            nd.DEIS(nfe, order=3),
            eqx.filter_jit(
                multistep_by_hand(False, nfe, "logsnr", lambda ts: _deis_coefficients(SDE, ts, 3))
            ),
        ),
        "Restart": (
            restart,
            eqx.filter_jit(lambda n, x: restart_by_hand(restart, x_T)(n, x, restart_keys)),
        ),
    }
    ratios = {}
    print(f"throughput: batch {batch}, ~{nfe} NFE, ScoreMLP(2, 128, 3), VP SDE")
    for name, (sampler, by_hand) in cases.items():
        ours = lambda sampler=sampler: nd.sample_from(sampler, score, SDE, x_T, key=key)[0]  # noqa: E731
        hand = lambda by_hand=by_hand: by_hand(net, x_T)  # noqa: E731
        a, b = np.asarray(ours()), np.asarray(hand())
        diff = float(np.max(np.abs(a - b)) / np.max(np.abs(b)))
        print(f"  {name}: NFE {sampler.nfe()}, max relative difference {diff:.1e}")  # type: ignore[attr-defined]
        if diff > 1e-4:
            raise SystemExit(f"{name}: neurde and the lax.scan loop disagree; timing is moot.")
        scan_name, our_name = f"{name}: lax.scan by hand", f"{name}: sample_from"
        fns = {scan_name: hand, our_name: ours}
        if name == "DPM-Solver++ 2M SDE":
            # The same loop on pre-drawn noise: the difference is the Brownian tree's cost.
            predrawn = eqx.filter_jit(lambda n, x: sde_hand(n, x, z))
            fns["  context: by hand, noise pre-drawn"] = lambda f=predrawn: f(net, x_T)
        times = interleaved_times(fns, repeats)
        print_table(f"{name}, samples/s = {batch} / time", times, scan_name)
        print(f"    {our_name}: {batch / statistics.median(times[our_name]):,.0f} samples/s")
        ratios[name] = median_ratio(times, our_name, scan_name)
    print()
    for name, value in ratios.items():
        print(ratio_line(f"neurde/lax.scan ({name}, batch {batch})", value, "<= 1.2"))


if __name__ == "__main__":
    main()
