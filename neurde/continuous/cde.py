r"""Neural controlled differential equations: $dz = f_\theta(z)\,dX(t)$ driven by the data.

A time series $(t_i, x_i)$ enters as a continuous path $X$ (its interpolation, time
included as a channel), and the hidden state follows $dz = f_\theta(z)\,dX$, written as the
ODE $\dot z = f_\theta(z)\,\dot X(s)$ that an inner `neurde.NeuralODE` solves.
"""

import dataclasses
from collections.abc import Callable
from typing import Any, Literal, TypeAlias

import diffrax
import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float, PRNGKeyArray

from .._types import Args, MaybeKey, SaveTimes
from .._validation import is_concrete
from ..fields import AbstractField, MLPField
from ..model import AbstractContinuousModel, AbstractWrapper
from ..ode import NeuralODE
from ..solution import ModelSolution

Interpolation: TypeAlias = Literal["hermite", "linear"]
Output: TypeAlias = Literal["final", "sequence"]
_INTERPOLATIONS = ("hermite", "linear")


class ControlPath(eqx.Module):
    r"""The control $X$ of a neural CDE: a time series interpolated once, as a cubic spline.

    Built by [`neurde.continuous.control_path`][] (outside the training loop, as Kidger et
    al. recommend: the coefficients are computed once per data set). The path is
    parameterized by *normalized time* $s = (t - t_0) / (t_{n-1} - t_0) \in [0, 1]$ over the
    series' first and last observation times; a CDE's solution does not depend on how its
    control is parameterized, so this fixes the inner ODE's interval to $[0, 1]$ for every
    series. Linear interpolation is stored as a cubic with zero quadratic and cubic terms.

    **Fields:**

    - `times`: the observation times $t_i$, shape `(n,)`.
    - `knots`: the normalized times $s_i$, shape `(n,)`, from 0 to 1.
    - `coeffs`: `(d, c, b, a)`, each `(n - 1, channels)`: on $[s_i, s_{i+1}]$,
      $X(s) = a_i + b_i u + c_i u^2 + d_i u^3$ with $u = s - s_i$ (`diffrax.CubicInterpolation`).
    - `interpolation`, `include_time`, `intensity`: how the path was built (static).
    """

    times: Float[Array, " times"]
    knots: Float[Array, " times"]
    coeffs: tuple[Array, Array, Array, Array]
    interpolation: Interpolation = eqx.field(static=True)
    include_time: bool = eqx.field(static=True)
    intensity: bool = eqx.field(static=True)

    @property
    def channels(self) -> int:
        """The number of channels of $X$ (time, the values, the observation counts)."""
        return self.coeffs[0].shape[-1]

    def spline(self) -> diffrax.CubicInterpolation:
        """The path as a `diffrax.CubicInterpolation` over the normalized time $s$."""
        return diffrax.CubicInterpolation(self.knots, self.coeffs)

    def evaluate(self, s: float | Float[Array, ""]) -> Float[Array, " channels"]:
        """$X(s)$ at normalized time `s` in $[0, 1]$."""
        return self.spline().evaluate(s)

    def derivative(self, s: float | Float[Array, ""]) -> Float[Array, " channels"]:
        """$dX/ds$ at normalized time `s`."""
        return self.spline().derivative(s)

    def normalize(self, ts: Float[ArrayLike, "..."]) -> Float[Array, "..."]:
        """Normalized times $s$ of times `ts` given in the series' own units."""
        return (jnp.asarray(ts) - self.times[0]) / (self.times[-1] - self.times[0])


def _fail(owner: str, bad: Any, message: str, target: Array) -> Array:
    """Raise `message` now when `bad` is concrete and true, else guard `target` at run time."""
    if is_concrete(bad):
        if bool(np.any(np.asarray(bad))):
            raise ValueError(f"{owner}: {message}")
        return target
    return eqx.error_if(target, bad, f"{owner}: {message}")


def _series(owner: str, times: Any, values: Any, mask: Any) -> tuple[Array, Array]:
    """Checked `times` `(n,)` and `values` `(n, c)`, with unobserved values set to NaN."""
    values = jnp.asarray(values)
    if not jnp.issubdtype(values.dtype, jnp.floating):
        raise TypeError(
            f"{owner}: `values` must be floating (NaN marks a missing value), got dtype "
            f"{values.dtype}. Pass `values.astype(jnp.float32)`."
        )
    times = jnp.asarray(times).astype(values.dtype)
    if values.ndim != 2 or times.ndim != 1 or times.shape[0] != values.shape[0]:
        raise ValueError(
            f"{owner}: expected `times` of shape (n,) and `values` of shape (n, channels) "
            f"for one series, got {times.shape} and {values.shape}. Pass one time per row "
            "of `values` (a single channel as `values[:, None]`; batch with `jax.vmap`)."
        )
    if times.shape[0] < 2:
        raise ValueError(
            f"{owner}: a series needs at least 2 observation times, got {times.shape[0]}."
        )
    if mask is not None:
        mask = jnp.asarray(mask)
        if mask.dtype != jnp.bool_ or mask.shape != values.shape:
            raise ValueError(
                f"{owner}: `mask` must be a boolean array of the shape of `values` "
                f"{values.shape} (True where observed), got dtype {mask.dtype} and shape "
                f"{mask.shape}. Pass e.g. `mask=~jnp.isnan(values)`, or mask=None."
            )
        values = jnp.where(mask, values, jnp.nan)
    increasing = "`times` must be strictly increasing (sort the series, drop duplicate times)."
    times = _fail(
        owner, jnp.any(jnp.diff(times) <= 0) | jnp.any(jnp.isnan(times)), increasing, times
    )
    empty = jnp.all(jnp.isnan(values), axis=0)
    message = (
        "a channel of `values` has no observation (all NaN or masked), so its path is "
        "undefined. Drop the channel or fill it (e.g. with zeros) before building the path."
    )
    if is_concrete(empty) and bool(np.any(np.asarray(empty))):
        message += f" Empty channels: {np.flatnonzero(np.asarray(empty)).tolist()}."
    return times, _fail(owner, jnp.any(empty), message, values)


def control_path(
    times: Float[ArrayLike, " times"],
    values: Float[ArrayLike, "times channels"],
    *,
    mask: Bool[ArrayLike, "times channels"] | None = None,
    interpolation: Interpolation = "hermite",
    include_time: bool = True,
    intensity: bool = False,
) -> ControlPath:
    r"""Interpolate one irregularly sampled series with missing values into a CDE control.

    The channels of $X$ are, in order: the time $t$ (with `include_time`, as Kidger et al.
    recommend, so the model sees the sampling), the values, and with `intensity` the running
    count of observations of each value channel (their "observational intensity", Section
    3.5 of the paper, for when the missingness itself is informative).

    Missing values are NaN in `values` (or `False` in `mask`). Each channel is interpolated
    through its own observations: across a gap, the Hermite spline runs from the last
    observed point (value and slope) to the next one, and linear interpolation joins the
    two; before the first observation a channel is held at its first observed value, after
    the last at its last (`diffrax.backward_hermite_coefficients` / `linear_interpolation`
    with `replace_nans_at_start` and `fill_forward_nans_at_end`).

    - `interpolation="hermite"` (default): cubic Hermite splines with backward differences
      (Morrill et al. 2021). The path on $[t_i, t_{i+1}]$ depends only on observations up to
      $t_{i+1}$, so the model is causal (usable online), and $\dot X$ is continuous, so
      adaptive solvers step smoothly.
    - `interpolation="linear"`: piecewise linear. $\dot X$ jumps at every observation, which
      an adaptive solver pays for with rejected steps; prefer a constant-step solver (e.g.
      `neurde.RK4()` with `dt0` a fraction of the smallest gap) with it.

    Call it once per data set, batched with `jax.vmap` over series that share a length (a
    batch observed at different times: put every series on the union of the times, NaN
    where a series has no observation, or give each series its own `times` of the same
    length). Structure errors raise at once; non-increasing times and a channel without any
    observation raise `ValueError` for concrete inputs and `eqx.error_if` under `jit`/`vmap`.

    **Arguments:**

    - `times`: the observation times, shape `(n,)`, strictly increasing, `n >= 2`.
    - `values`: the observations, shape `(n, channels)`, NaN where missing.
    - `mask`: optional boolean array of the shape of `values`, `True` where observed.
    - `interpolation`: `"hermite"` or `"linear"`.
    - `include_time`: add $t$ as the first channel.
    - `intensity`: add the cumulative observation count of each channel.

    **Returns:**

    A [`neurde.continuous.ControlPath`][].

    References: Kidger, Morrill, Foster, Lyons, "Neural Controlled Differential Equations for
    Irregular Time Series", NeurIPS 2020. Morrill, Kidger, Yang, Lyons, "Neural Controlled
    Differential Equations for Online Prediction Tasks", 2021 (Hermite splines with backward
    differences).
    """
    owner = "control_path"
    if interpolation not in _INTERPOLATIONS:
        raise ValueError(
            f"{owner}: unknown `interpolation={interpolation!r}`. Choose 'hermite' (cubic "
            "Hermite with backward differences, causal and smooth) or 'linear'."
        )
    times, values = _series(owner, times, values, mask)
    observed = ~jnp.isnan(values)
    channels = [values]
    if include_time:
        channels.insert(0, times[:, None])
    if intensity:
        channels.append(jnp.cumsum(observed, axis=0).astype(values.dtype))
    ys = jnp.concatenate(channels, axis=1)
    first = ys[jnp.argmax(~jnp.isnan(ys), axis=0), jnp.arange(ys.shape[1])]
    knots = (times - times[0]) / (times[-1] - times[0])
    if interpolation == "hermite":
        d, c, b, a = diffrax.backward_hermite_coefficients(
            knots, ys, fill_forward_nans_at_end=True, replace_nans_at_start=first
        )
    else:
        ys = diffrax.linear_interpolation(
            knots, ys, fill_forward_nans_at_end=True, replace_nans_at_start=first
        )
        b = jnp.diff(ys, axis=0) / jnp.diff(knots)[:, None]
        d = c = jnp.zeros_like(b)
        a = ys[:-1]
    return ControlPath(times, knots, (d, c, b, a), interpolation, include_time, intensity)


class _ControlledField(AbstractField):
    r"""$f_\theta(s, z)\,\dot X(s)$: the ODE form of $dz = f_\theta(z)\,dX$.

    The control travels in the solve's `args` as `(path, args)`, so one inner model serves
    every series and the user's `args` still reach $f_\theta$.
    """

    field: AbstractField

    def __call__(self, t: Any, y: Array, args: Any) -> Array:
        path, args = args
        matrix = self.field(t, y, args)
        want = (*jnp.shape(y), path.channels)
        if jnp.shape(matrix) != want:
            raise ValueError(
                f"NeuralCDE: the CDE field returns shape {jnp.shape(matrix)} but the state "
                f"{jnp.shape(y)} and a path of {path.channels} channels need {want}. Build "
                "the field with `out_shape=(hidden_size, channels)`."
            )
        return matrix @ path.derivative(t).astype(matrix.dtype)


class NeuralCDE(AbstractWrapper):
    r"""A neural controlled differential equation, for (irregular) time series.

    $$z(s_0) = \zeta_\theta(X(s_0)), \qquad dz = f_\theta(z)\,dX(s), \qquad
      \text{out} = \ell_\theta(z(s_1))$$

    where $X$ is the interpolation of the observed series (`control_path`), $f_\theta(z)$
    a `(hidden_size, channels)` matrix, $\zeta_\theta$ the initial map and $\ell_\theta$ the
    readout. The CDE is solved as the ODE $\dot z = f_\theta(z)\,\dot X(s)$ by the inner
    `neurde.NeuralODE` held as `model`, on the normalized time $s \in [0, 1]$ of the path
    (a CDE's solution is unchanged by reparameterizing time, so every series, whatever its
    time span, is solved on the same interval). Noise transforms (`neurde.noise`), RNODE,
    `neurde.fit`, ensembles and checkpoints act on that inner ODE unchanged.

    **Input.** `model(x, ts=None, *, args=None, key=None)` takes one series `x`, either a
    `ControlPath` (precomputed with `control_path`, the fast way for training: vmap it over
    the data set once) or a tuple `(times, values)` / `(times, values, mask)` interpolated on
    every call with the model's `interpolation`, `include_time` and `intensity`.

    **Output.** With `ts=None`: `output="final"` gives $\ell(z)$ at the last observation
    (e.g. class logits), `output="sequence"` gives it at every observation time, shape
    `(n, out_size)` (regression). With save times `ts` (in the series' own time units,
    inside its first and last observation) it is given at each of them.
    `solve(...)` returns the `neurde.ModelSolution` with the inner solve's `stats` and
    `extras`. $f_\theta$ receives the normalized time $s$ as `t` and the call's `args`.

    Gradients reach the parameters and the data (the path is passed to the inner solve in
    its `args`); `adjoint="adjoint"` gives the paper's memory-efficient continuous adjoint,
    whose cost in memory does not grow with the number of observations.

    **Arguments:**

    - `data_size`: the number of value channels of a series (time excluded).
    - `hidden_size`: the size of $z$.
    - `out_size`: the size of the readout (classes, or regression targets).
    - `width_size`, `depth`: the default $f_\theta$, an `MLPField` with a final `tanh` (as in
      the authors' code, torchcde: it keeps $f_\theta(z)$ bounded).
    - `output`: `"final"` or `"sequence"`.
    - `interpolation`, `include_time`, `intensity`: how `(times, values)` inputs become a
      path; a `ControlPath` input must have been built the same way.
    - `field`: a custom $f_\theta(s, z, \text{args})$ returning `(hidden_size, channels)`.
    - `initial`, `readout`: custom $\zeta_\theta$ (`channels -> hidden_size`) and
      $\ell_\theta$ (`hidden_size -> out`); linear layers by default.
    - `key`: initialization key.
    - `**ode_kwargs`: settings of the inner `neurde.NeuralODE` (`solver`, `rtol`, `atol`,
      `stepsize_controller`, `adjoint`, `dt0`, `max_steps`, `throw`); the interval is
      always $[0, 1]$.

    References: Kidger, Morrill, Foster, Lyons, "Neural Controlled Differential Equations for
    Irregular Time Series", NeurIPS 2020.
    """

    initial: Callable[[Array], Array]
    model: AbstractContinuousModel
    readout: Callable[[Array], Array]
    data_size: int = eqx.field(static=True)
    output: Output = eqx.field(static=True)
    interpolation: Interpolation = eqx.field(static=True)
    include_time: bool = eqx.field(static=True)
    intensity: bool = eqx.field(static=True)

    def __init__(
        self,
        data_size: int,
        hidden_size: int,
        out_size: int,
        *,
        width_size: int = 64,
        depth: int = 2,
        output: Output = "final",
        interpolation: Interpolation = "hermite",
        include_time: bool = True,
        intensity: bool = False,
        field: AbstractField | None = None,
        initial: Callable[[Array], Array] | None = None,
        readout: Callable[[Array], Array] | None = None,
        key: PRNGKeyArray,
        **ode_kwargs: Any,
    ):
        for name, value in (("data_size", data_size), ("hidden_size", hidden_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"NeuralCDE: `{name}` must be an integer >= 1, got {value!r}.")
        fixed = sorted({"t0", "t1"} & set(ode_kwargs))
        if fixed:
            raise ValueError(
                f"NeuralCDE: got {', '.join(fixed)}, but the CDE is solved on the "
                "normalized time s in [0, 1] of each series. Drop them; pass output times "
                "as `ts` (in the series' units) to a call."
            )
        self.data_size = data_size
        self.output = output
        self.interpolation = interpolation
        self.include_time = include_time
        self.intensity = intensity
        channels = self.channels
        fkey, ikey, rkey = jr.split(key, 3)
        if field is None:
            shape = (hidden_size, channels)
            field = MLPField(
                hidden_size, width_size, depth, out_shape=shape, final_activation=jnp.tanh, key=fkey
            )
        self.model = NeuralODE(_ControlledField(field), t0=0.0, t1=1.0, **ode_kwargs)
        self.initial = (
            eqx.nn.Linear(channels, hidden_size, key=ikey) if initial is None else initial
        )
        self.readout = (
            eqx.nn.Linear(hidden_size, out_size, key=rkey) if readout is None else readout
        )

    def __check_init__(self):
        if self.output not in ("final", "sequence"):
            raise ValueError(
                f"NeuralCDE: unknown `output={self.output!r}`. Choose 'final' (readout at "
                "the last observation, e.g. classification) or 'sequence' (at each one)."
            )
        if self.interpolation not in _INTERPOLATIONS:
            raise ValueError(
                f"NeuralCDE: unknown `interpolation={self.interpolation!r}`. Choose 'hermite' "
                "or 'linear'."
            )

    @property
    def channels(self) -> int:
        """The number of channels of the path $X$ the model expects."""
        return int(self.include_time) + self.data_size * (1 + int(self.intensity))

    def path(self, x: Any) -> ControlPath:
        """The control of input `x` (a `ControlPath`, or `(times, values[, mask])`), checked."""
        if not isinstance(x, ControlPath):
            if not isinstance(x, tuple | list) or len(x) not in (2, 3):
                raise TypeError(
                    "NeuralCDE: the input must be a `ControlPath` (from "
                    "`neurde.continuous.control_path`) or a tuple (times, values) or "
                    f"(times, values, mask), got {type(x).__name__}."
                )
            x = control_path(
                x[0],
                x[1],
                mask=x[2] if len(x) == 3 else None,
                interpolation=self.interpolation,
                include_time=self.include_time,
                intensity=self.intensity,
            )
        mine = {name: getattr(self, name) for name in _SETTINGS}
        theirs = {name: getattr(x, name) for name in _SETTINGS}
        if mine != theirs or x.channels != self.channels:
            raise ValueError(
                f"NeuralCDE: the path has {x.channels} channels built with {theirs}, but the "
                f"model expects {self.channels} channels ({self.data_size} value channels) "
                f"built with {mine}. Build the path with `control_path(times, values, "
                f"**{mine})` from series of {self.data_size} channels, or build the model "
                "for this data."
            )
        return x

    def solve(
        self, y0: Any, ts: SaveTimes = None, *, args: Args = None, key: MaybeKey = None
    ) -> ModelSolution:
        """Interpolate (if needed), solve the CDE, read out; see `neurde.AbstractModel.solve`."""
        path = self.path(y0)
        z0 = self.initial(path.evaluate(path.knots[0]))
        if ts is not None:
            ts = jnp.asarray(ts, path.times.dtype)
            if ts.ndim != 1 or ts.shape[0] == 0:
                raise ValueError(
                    f"NeuralCDE: `ts` must be a non-empty 1-D array of output times, got shape "
                    f"{ts.shape}. Pass e.g. `ts=times[-1:]`, or ts=None."
                )
            outside = "`ts` must lie between the first and last observation times of the series."
            ts = _fail(
                "NeuralCDE", (ts[0] < path.times[0]) | (ts[-1] > path.times[-1]), outside, ts
            )
            save = path.normalize(ts)
        else:
            save = path.knots if self.output == "sequence" else None
        solution = self.model.solve(z0, save, args=(path, args), key=key)
        solution = solution.map(self.readout)
        if save is None:
            return solution
        return dataclasses.replace(solution, ts=path.times if ts is None else ts)


_SETTINGS = ("interpolation", "include_time", "intensity")
