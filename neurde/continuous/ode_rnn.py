r"""Irregularly sampled series, the ODE-RNN and its discrete baseline, the RNN with time gaps.

An `IrregularSeries` is one example: observation times $t_1 < \dots < t_N$, values
$x_i \in \mathbb{R}^d$ and a mask $m_i \in \{0, 1\}^d$ (1 where the entry was observed).
A batch of series observed at different times is put on the union of their time grids,
each with its own mask (`union_grid`), as Rubanova et al. do; batch it with `jax.vmap`.

Both recurrent models read a series on a grid that merges the observation times with the
requested prediction times: at a prediction time they report the output of the hidden state
given every observation strictly before it, so `ts=series.times` gives one-step-ahead
predictions and times after the last observation give a forecast.

References: Rubanova, Chen, Duvenaud, "Latent ODEs for Irregularly-Sampled Time Series",
NeurIPS 2019.
"""

from collections.abc import Callable, Sequence
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from .._types import Args, MaybeKey, SaveTimes
from .._validation import is_concrete
from ..fields import AbstractField, MLPField, as_field
from ..model import AbstractModel, AbstractWrapper
from ..ode import NeuralODE
from ..solution import ModelSolution


class IrregularSeries(eqx.Module):
    r"""One irregularly sampled series: times $(N,)$, values $(N, d)$, mask $(N, d)$.

    The input `y0` of `ODERNN`, `TimeGapRNN` and `neurde.continuous.LatentODE`. Values where
    the mask is 0 carry no information (they may be anything finite, e.g. 0). A batch is an
    `IrregularSeries` whose leaves have a leading batch axis (see `union_grid`); vmap over it.

    **Arguments:**

    - `times`: strictly increasing observation times, shape `(N,)`.
    - `values`: the observations, shape `(N, d)`.
    - `mask`: 1 (or `True`) where an entry was observed, shape `(N, d)`; stored as floats.
    """

    times: Float[Array, " N"]
    values: Float[Array, "N d"]
    mask: Float[Array, "N d"]

    def __init__(
        self,
        times: Float[ArrayLike, " N"],
        values: Float[ArrayLike, "N d"],
        mask: ArrayLike | None = None,
    ):
        if mask is None:
            raise TypeError(
                "IrregularSeries: `mask` is missing. Pass the observation mask of shape "
                "(N, d), e.g. `mask=jnp.ones_like(values)` when every entry is observed."
            )
        values = jnp.asarray(values)
        if not jnp.issubdtype(values.dtype, jnp.floating):
            values = values.astype(jnp.result_type(float))
        times = jnp.asarray(times, values.dtype)
        mask = jnp.asarray(mask)
        if values.ndim != 2 or times.shape != values.shape[:1]:
            raise ValueError(
                f"IrregularSeries: `times` must have shape (N,) and `values` shape (N, d), got "
                f"times {times.shape} and values {values.shape}. Add a feature axis to scalar "
                "series, e.g. `values[:, None]`."
            )
        if mask.shape != values.shape:
            raise ValueError(
                f"IrregularSeries: `mask` must have the shape of `values` {values.shape}, got "
                f"{mask.shape}. Broadcast a per-time mask with "
                "`jnp.broadcast_to(mask[:, None], values.shape)`."
            )
        self.times = _increasing("IrregularSeries", "times", times)
        self.values = values
        self.mask = mask.astype(values.dtype)

    @property
    def size(self) -> int:
        """The data dimension $d$."""
        return self.values.shape[-1]


def _increasing(owner: str, name: str, times: Array) -> Array:
    """`times` checked strictly increasing: now if concrete, else with `eqx.error_if`."""
    msg = f"{owner}: `{name}` must be strictly increasing. Sort the times and merge duplicates."
    if times.shape[0] < 2:
        return times
    if is_concrete(times):
        if not np.all(np.diff(np.asarray(times)) > 0):
            raise ValueError(f"{msg} Got {name}={np.asarray(times)!r}.")
        return times
    return eqx.error_if(times, jnp.any(jnp.diff(times) <= 0), msg)


def union_grid(series: Sequence[tuple[ArrayLike, ArrayLike]]) -> IrregularSeries:
    """Put series observed at different times (and of different lengths) on one grid.

    The grid is the sorted union of all observation times; each series gets its values at
    its own times and a mask that is 1 there and 0 elsewhere, as Rubanova et al. batch
    irregular data. Runs eagerly (NumPy), once, when the data set is built.

    **Arguments:**

    - `series`: a list of `(times, values)` pairs, times `(N_k,)`, values `(N_k, d)`.

    **Returns:**

    A batched `IrregularSeries` with leaves of shapes `(n, N)`, `(n, N, d)`, `(n, N, d)`.
    """
    if not isinstance(series, Sequence) or len(series) == 0:
        raise ValueError(
            "union_grid: `series` must be a non-empty list of (times, values) pairs, got "
            f"{type(series).__name__}."
        )
    pairs = [(np.asarray(t, float), np.asarray(v, float)) for t, v in series]
    for k, (t, v) in enumerate(pairs):
        if (
            t.ndim != 1
            or v.ndim != 2
            or v.shape[0] != t.shape[0]
            or v.shape[1] != pairs[0][1].shape[1]
        ):
            raise ValueError(
                f"union_grid: series {k} must be times (N,) and values (N, d) with the same d "
                f"as series 0, got times {t.shape} and values {v.shape}."
            )
    grid = np.unique(np.concatenate([t for t, _ in pairs]))
    values = np.zeros((len(pairs), grid.size, pairs[0][1].shape[1]))
    mask = np.zeros_like(values)
    for k, (t, v) in enumerate(pairs):
        idx = np.searchsorted(grid, t)
        values[k, idx] = v
        mask[k, idx] = 1.0
    times = np.broadcast_to(grid, (len(pairs), grid.size))
    return jax.vmap(IrregularSeries)(jnp.asarray(times), jnp.asarray(values), jnp.asarray(mask))


class _Grid(eqx.Module):
    """Observation and prediction times merged into one sorted grid (fixed shapes)."""

    times: Array  # (N + K,)
    inputs: Array  # (N + K, 2d): [value * mask, mask]; zeros at prediction points
    observed: Array  # (N + K,): any entry observed
    where: Array  # (K,): the grid index of each prediction time


def _merge(owner: str, series: IrregularSeries, ts: SaveTimes) -> tuple[_Grid, Array]:
    """The grid of `series` with `ts` (default: the observation times) merged in."""
    if not isinstance(series, IrregularSeries):
        raise TypeError(
            f"{owner}: `y0` must be a `neurde.continuous.IrregularSeries` (times, values, "
            f"mask), got {type(series).__name__}. Build one with "
            "`IrregularSeries(times, values, mask)`."
        )
    ts = series.times if ts is None else jnp.asarray(ts, series.values.dtype)
    if ts.ndim != 1 or ts.shape[0] == 0:
        raise ValueError(
            f"{owner}: `ts` must be a non-empty 1-D array of prediction times, got shape "
            f"{ts.shape}. Pass e.g. `ts=series.times` or times after the last observation."
        )
    ts = _increasing(owner, "ts", ts)
    k = ts.shape[0]
    # Prediction times first, and a stable sort: at a tie the prediction comes before the
    # observation, so it never sees the value it predicts.
    times = jnp.concatenate([ts, series.times])
    order = jnp.argsort(times, stable=True)
    inputs = jnp.concatenate([series.values * series.mask, series.mask], axis=-1)
    inputs = jnp.concatenate([jnp.zeros((k, inputs.shape[-1]), inputs.dtype), inputs])
    observed = jnp.concatenate([jnp.zeros(k, bool), jnp.any(series.mask > 0, axis=-1)])
    where = jnp.argsort(order)[:k]
    return _Grid(times[order], inputs[order], observed[order], where), ts


class _ScaledField(AbstractField):
    r"""The field on $s \in [0, 1]$ of one interval: $dt\, f(t_a + s\,dt, h, \text{args})$.

    `args` is `(t_a, dt, user_args)`; a negative `dt` runs the interval backwards in time.
    """

    field: AbstractField

    def __call__(self, t: Any, y: Any, args: Any) -> Any:
        start, dt, user_args = args
        return jax.tree.map(lambda v: dt * v, self.field(start + t * dt, y, user_args))


def _combine_stats(stats: dict[str, Array]) -> dict[str, Array]:
    """Per-interval stats summed over the scan (-1, unknown, if any interval says so)."""
    return {k: jnp.where(jnp.any(v < 0), -1, jnp.sum(v)) for k, v in stats.items()}


def _first_failure(results: Any) -> Any:
    """The result of the first failed interval, or success."""
    first = jnp.argmax(results._value != diffrax.RESULTS.successful._value)
    return jax.tree.map(lambda x: x[first], results)


class ODERNN(AbstractWrapper):
    r"""The ODE-RNN: a GRU whose hidden state follows a neural ODE between observations.

    Between observations the hidden state solves $\dot h = f_\theta(t, h)$; at an observation
    $x_i$ with mask $m_i$ a GRU cell updates it,

    $$h_i' = \operatorname{ODESolve}(f_\theta, h_{i-1}, (t_{i-1}, t_i)), \qquad
      h_i = \operatorname{GRUCell}([x_i \odot m_i, m_i], h_i'),$$

    and a time step with no observed entry leaves $h_i = h_i'$ (Rubanova et al., Alg. 1,
    with the masked update of their code). The output at a time $t$ is
    $\text{readout}(h(t))$, the hidden state evolved from the last observation before $t$.

    `model(series, ts)` returns the outputs at the prediction times `ts` (default: the
    observation times, i.e. one-step-ahead predictions), each from the observations strictly
    before it; times after the last observation give a forecast. `hidden(series, ...)` runs
    the recurrence alone; `neurde.continuous.LatentODE` uses it backwards as its encoder.

    **How the ODE spans varying intervals.** The inner model `model` is a `neurde.NeuralODE`
    on $s \in [0, 1]$ with the field $dt\, f_\theta(t_{i-1} + s\,dt, h)$, where
    $dt = t_i - t_{i-1}$ and $t_{i-1}$ reach the field through `args`; one solve per grid
    interval inside a `lax.scan`. Hence one compiled solve serves every interval, and the
    `neurde.noise` transforms apply to it as to any ODE; they act in the time $s$ of each
    interval (an additive noise $\sigma\,dW_s$ is $\sigma / \sqrt{|dt|}\, dW_t$ in real time,
    and `dt0` is a fraction of an interval). `stats` and `extras` are summed over the
    intervals.

    **Arguments:**

    - `data_size`: the dimension $d$ of the observations.
    - `hidden_size`: the dimension of $h$.
    - `out_size`: the dimension of the readout (default `data_size`).
    - `field`: the hidden dynamics $f_\theta(t, h, \text{args})$ (an `AbstractField` or a
      callable); default an `MLPField(hidden_size, width_size, depth)`.
    - `width_size`, `depth`: the default field's MLP.
    - `key`: initialization key.
    - `ode_kwargs`: the inner `neurde.NeuralODE`'s settings (`solver`, `rtol`, `atol`,
      `stepsize_controller`, `adjoint`, `dt0`, `max_steps`, `throw`); its interval is
      fixed to $[0, 1]$.

    References: Rubanova, Chen, Duvenaud, "Latent ODEs for Irregularly-Sampled Time Series",
    NeurIPS 2019, Section 3.2 and Algorithm 1.
    """

    model: NeuralODE
    cell: eqx.nn.GRUCell
    readout: eqx.nn.Linear
    hidden_size: int = eqx.field(static=True)

    def __init__(
        self,
        data_size: int,
        hidden_size: int,
        out_size: int | None = None,
        *,
        field: AbstractField | Callable[..., Any] | None = None,
        width_size: int = 32,
        depth: int = 1,
        key: PRNGKeyArray,
        **ode_kwargs: Any,
    ):
        _sizes("ODERNN", data_size=data_size, hidden_size=hidden_size, out_size=out_size)
        for name in ("t0", "t1"):
            if name in ode_kwargs:
                raise ValueError(
                    f"ODERNN: `{name}` cannot be set: the inner ODE runs on s in [0, 1] per "
                    "interval between grid times. Drop it; the series' times set the intervals."
                )
        fkey, ckey, rkey = jr.split(key, 3)
        if field is None:
            field = MLPField(hidden_size, width_size, depth, key=fkey)
        inner = _ScaledField(as_field(field))
        self.model = NeuralODE(inner, t0=0.0, t1=1.0, **ode_kwargs)
        self.cell = eqx.nn.GRUCell(2 * data_size, hidden_size, key=ckey)
        self.readout = eqx.nn.Linear(hidden_size, out_size or data_size, key=rkey)
        self.hidden_size = hidden_size

    def hidden(
        self,
        series: IrregularSeries,
        ts: SaveTimes = None,
        *,
        reverse: bool = False,
        args: Args = None,
        key: MaybeKey = None,
    ) -> tuple[Array, Array, ModelSolution]:
        """Run the recurrence: the hidden states at `ts` and the final hidden state.

        Forward, the state at each time of `ts` is the one given the observations strictly
        before it. With `reverse=True` the grid is read from its last time back to its first
        (the latent ODE's encoder) and the state at each time of `ts` (still passed in
        increasing order) is the one given the observations at or after it.

        **Returns:**

        `(hs, h_last, solution)`: `hs` of shape `(K, hidden_size)` at the `K` times `ts`
        (default: the observation times), the hidden state after the whole grid, and a
        `ModelSolution` (`ys=hs`) carrying the summed `stats`, `extras` and `result`.
        """
        grid, ts = _merge("ODERNN", series, ts)
        if reverse:
            grid = _Grid(grid.times[::-1], grid.inputs[::-1], grid.observed[::-1], grid.where)
            where = grid.times.shape[0] - 1 - grid.where
        else:
            where = grid.where
        h0 = jnp.zeros(self.hidden_size, series.values.dtype)
        index = jnp.arange(grid.times.shape[0])

        def step(carry, inputs):
            h, t_prev = carry
            t, x, observed, i = inputs
            k = None if key is None else jr.fold_in(key, i)
            sol = self.model.solve(h, None, args=(t_prev, t - t_prev, args), key=k)
            h_ode = sol.ys
            h_new = jnp.where(observed, self.cell(x, h_ode), h_ode)
            return (h_new, t), (h_ode, sol.stats, sol.extras, sol.result)

        carry = (h0, grid.times[0])
        xs = (grid.times, grid.inputs, grid.observed, index)
        (h_last, _), (hs, stats, extras, results) = jax.lax.scan(step, carry, xs)
        extras = {k: jnp.sum(v) for k, v in extras.items()}
        solution = ModelSolution(
            hs[where], ts, _combine_stats(stats), extras, _first_failure(results)
        )
        return hs[where], h_last, solution

    def solve(
        self, y0: IrregularSeries, ts: SaveTimes = None, *, args: Args = None, key: MaybeKey = None
    ) -> ModelSolution:
        """The readout at the prediction times `ts` (default: the observation times).

        See `neurde.AbstractModel.solve`; `y0` is an `IrregularSeries`.
        """
        _, _, solution = self.hidden(y0, ts, args=args, key=key)
        return solution.map(self.readout)


def _sizes(owner: str, **sizes: int | None) -> None:
    for name, value in sizes.items():
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ValueError(
                f"{owner}: `{name}` must be a positive int, got {value!r}. Pass e.g. {name}=16."
            )


class TimeGapRNN(AbstractModel):
    r"""The "RNN with time gaps" baseline (RNN-$\Delta_t$): a GRU fed $[x \odot m, m, \Delta t]$.

    A discrete recurrent network that sees the time since its last update as an input,
    $h_i = \operatorname{GRUCell}([x_i \odot m_i, m_i, t_i - t_{\text{last}}], h_{\text{last}})$,
    where $t_{\text{last}}$ is the time of the last step with an observed entry (steps with
    none leave $h$ unchanged, as in `ODERNN`). The output at a time $t$ is
    $\text{readout}(\operatorname{GRUCell}([0, 0, t - t_{\text{last}}], h_{\text{last}}))$: the
    state jumps over the gap in one learned step instead of following an ODE. The baseline
    of Rubanova et al. (their Table 2, "RNN $\Delta_t$"); called like `ODERNN`.

    It has no differential equation, so `stats` count GRU steps (`nfe` = grid length) and
    `extras` are empty; regularizer transforms do not apply to it.

    **Arguments:**

    - `data_size`, `hidden_size`, `out_size`: as for `ODERNN`.
    - `key`: initialization key.

    References: Rubanova, Chen, Duvenaud, "Latent ODEs for Irregularly-Sampled Time Series",
    NeurIPS 2019, Section 4 (baselines).
    """

    cell: eqx.nn.GRUCell
    readout: eqx.nn.Linear
    hidden_size: int = eqx.field(static=True)

    def __init__(
        self, data_size: int, hidden_size: int, out_size: int | None = None, *, key: PRNGKeyArray
    ):
        _sizes("TimeGapRNN", data_size=data_size, hidden_size=hidden_size, out_size=out_size)
        ckey, rkey = jr.split(key)
        self.cell = eqx.nn.GRUCell(2 * data_size + 1, hidden_size, key=ckey)
        self.readout = eqx.nn.Linear(hidden_size, out_size or data_size, key=rkey)
        self.hidden_size = hidden_size

    def solve(
        self, y0: IrregularSeries, ts: SaveTimes = None, *, args: Args = None, key: MaybeKey = None
    ) -> ModelSolution:
        """The readout at the prediction times `ts` (default: the observation times).

        `args` and `key` are unused (the model is deterministic).
        """
        del args, key
        grid, ts = _merge("TimeGapRNN", y0, ts)
        h0 = jnp.zeros(self.hidden_size, y0.values.dtype)

        def step(carry, inputs):
            h, t_last = carry
            t, x, observed = inputs
            h_new = self.cell(jnp.concatenate([x, (t - t_last)[None]]), h)
            carry = (jnp.where(observed, h_new, h), jnp.where(observed, t, t_last))
            return carry, h_new

        xs = (grid.times, grid.inputs, grid.observed)
        _, hs = jax.lax.scan(step, (h0, grid.times[0]), xs)
        steps = jnp.asarray(grid.times.shape[0])
        zero = jnp.zeros_like(steps)
        stats = {
            "nfe": steps,
            "num_steps": steps,
            "num_accepted_steps": steps,
            "num_rejected_steps": zero,
        }
        solution = ModelSolution(hs[grid.where], ts, stats, {}, diffrax.RESULTS.successful)
        return solution.map(self.readout)
