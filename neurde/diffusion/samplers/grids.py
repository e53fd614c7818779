r"""Time grids as objects: the fixed spacings, and a grid whose positions are learned.

A grid maps `(sde, steps, eps, dtype)` to the decreasing times $T = t_0 > \dots > t_N =
\epsilon$ a fixed-step sampler visits. The fixed spacings are configuration only (static
fields); `OptimizedGrid` holds its positions as an array, so it is a leaf of the sampler
that holds it: differentiated, saved and loaded with the sampler (`eqx.tree_serialise_leaves`,
`neurde.save`/`neurde.load`). `fit_time_grid` (in `grid_fit.py`) fits one.
"""

import abc
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from .._checks import TIME_GRIDS, check_choice, check_eps, check_positive, check_steps
from ..forward import AbstractForwardSDE

_GRID_FIX = (
    "Or pass a grid object: UniformGrid(), LogSNRGrid(), KarrasGrid(rho) or an OptimizedGrid "
    "(`neurde.diffusion.fit_time_grid`)."
)


def _fractions(steps: int, dtype: Any) -> Array:
    return jnp.arange(steps + 1, dtype=dtype) / steps


def _ends(sde: AbstractForwardSDE, eps: float, dtype: Any) -> tuple[Array, Array]:
    T = jnp.asarray(sde.T, dtype)
    return sde.log_snr(T), sde.log_snr(jnp.asarray(eps, dtype))


def _times(sde: AbstractForwardSDE, lams: Array, eps: float, dtype: Any) -> Array:
    ts = sde.time_from_log_snr(lams).astype(dtype)
    # Pin the ends: the inverse is exact in exact arithmetic only.
    return ts.at[0].set(sde.T).at[-1].set(eps)


class AbstractTimeGrid(eqx.Module):
    """The times of a fixed-step sampler: `grid(sde, steps, eps, dtype)`, decreasing."""

    @abc.abstractmethod
    def __call__(
        self, sde: AbstractForwardSDE, steps: int, eps: float, dtype: Any
    ) -> Float[Array, " steps_plus_1"]:
        r"""The `steps + 1` times $T = t_0 > t_1 > \dots > t_N = \epsilon$."""


class UniformGrid(AbstractTimeGrid):
    r"""Uniform in $t^{1/\kappa}$: uniform in $t$ for $\kappa = 1$, `"uniform"`.

    $t_i = \big(T^{1/\kappa} + \tfrac iN(\epsilon^{1/\kappa} - T^{1/\kappa})\big)^\kappa$.
    $\kappa = 1$ is Song et al. 2021's grid (DDIM's "linear" skip); $\kappa = 2$ is DPM-Solver's
    `"time_quadratic"` (Lu et al. 2022, Appendix D.1; DDIM's "quadratic" skip), denser near
    the data but with shorter log-SNR steps at the end than `LogSNRGrid`'s.

    **Arguments:**

    - `power`: $\kappa \ge 1$ (default 1).
    """

    power: float = eqx.field(static=True, default=1.0)

    def __check_init__(self):
        if (
            not isinstance(self.power, (int, float))
            or isinstance(self.power, bool)
            or self.power < 1
        ):
            raise ValueError(
                f"UniformGrid: `power` must be a number >= 1, got {self.power!r}. Use 1 for "
                "uniform steps in t, 2 for DPM-Solver's time-quadratic grid."
            )

    def __call__(self, sde: AbstractForwardSDE, steps: int, eps: float, dtype: Any) -> Array:
        k = self.power
        T, end = sde.T ** (1 / k), eps ** (1 / k)
        return ((T + (end - T) * _fractions(steps, dtype)) ** k).at[0].set(sde.T).at[-1].set(eps)


class LogSNRGrid(AbstractTimeGrid):
    r"""Uniform in $\lambda_t = \log(\alpha_t/\sigma_t)$: `"logsnr"`.

    DPM-Solver's default for low-resolution data (Lu et al. 2022, Sec. 3.3, Appendix D.1).
    """

    def __call__(self, sde: AbstractForwardSDE, steps: int, eps: float, dtype: Any) -> Array:
        lam_T, lam_eps = _ends(sde, eps, dtype)
        return _times(sde, lam_T + (lam_eps - lam_T) * _fractions(steps, dtype), eps, dtype)


class KarrasGrid(AbstractTimeGrid):
    r"""Uniform in $\tilde\sigma^{1/\rho}$, $\tilde\sigma_t = \sigma_t/\alpha_t = e^{-\lambda_t}$.

    Karras et al. 2022, eq. 5: dense near the data. `"edm"` is `KarrasGrid(rho=7.0)`.

    **Arguments:**

    - `rho`: $\rho > 0$ (default 7, Karras et al.'s).
    """

    rho: float = eqx.field(static=True, default=7.0)

    def __check_init__(self):
        check_positive("KarrasGrid", "rho", self.rho, "Karras et al. use rho=7.")

    def __call__(self, sde: AbstractForwardSDE, steps: int, eps: float, dtype: Any) -> Array:
        lam_T, lam_eps = _ends(sde, eps, dtype)
        sig_T, sig_eps = jnp.exp(-lam_T / self.rho), jnp.exp(-lam_eps / self.rho)
        lams = -self.rho * jnp.log(sig_T + (sig_eps - sig_T) * _fractions(steps, dtype))
        return _times(sde, lams, eps, dtype)


class OptimizedGrid(AbstractTimeGrid):
    r"""A grid with learned positions, strictly decreasing by construction.

    The $N$ = `steps` unconstrained `logits` $\ell$ set the log-SNR increments:
    $\lambda_i = \lambda_T + (\lambda_\epsilon - \lambda_T)\sum_{j < i}
    \operatorname{softmax}(\ell)_j$, and $t_i = t(\lambda_i)$ (`sde.time_from_log_snr`).
    Every increment is a positive fraction of the log-SNR range, so any $\ell$ gives a valid
    grid from $T$ to $\epsilon$, and gradient descent on $\ell$ needs no constraint. The
    steps are in $\lambda$ rather than $t$ because the exponential integrators' local errors
    are functions of the $\lambda$-step. $\ell = 0$ is `LogSNRGrid`. Fit one with
    `neurde.diffusion.fit_time_grid`; build one from another grid with
    `OptimizedGrid.from_grid`.

    With `shifts` $\delta$ the grid also says where the model is queried (LD3's decoupled
    times): a sampler steps over the times $t_i$ as before, but its score is evaluated at
    $s_i = t_i e^{\delta_i}$ and rescaled, $\nabla\log p_{t_i}(x) \leftarrow
    \frac{\sigma(s_i)}{\sigma(t_i)}\nabla\log p_{s_i}(x)$, so the noise prediction
    $\hat\epsilon = -\sigma\nabla\log p$ the solver uses at $t_i$ is the model's at $s_i$.
    A sampler's evaluation at a time between grid nodes (a singlestep solver's intermediate
    time) takes $\delta$ interpolated linearly in $\log t$. $\delta = 0$ (or `shifts=None`)
    is the plain grid, bit for bit. The shifts let a few evaluations absorb part of the
    solver's truncation error; fit them with `fit_time_grid(..., decouple=True)`. The
    rescaled score is not the score of $p_{t_i}$: use shifts only for the sampler they
    were fitted with. $s_i$ is not clipped: a positive $\delta_0$ queries the model beyond
    the SDE's $T$ (where a trained model extrapolates).

    **Arguments:**

    - `logits`: $\ell$, shape `(steps,)`.
    - `shifts`: $\delta$, shape `(steps + 1,)`, one per grid time from $T$ to $\epsilon$;
      None (default) for none.

    References: Tong, Yang, Zhang, Ming, Liu, "Learning to Discretize Denoising Diffusion
    ODEs" (LD3), ICLR 2025; Sabour, Fidler, Kreis, "Align Your Steps: Optimizing Sampling
    Schedules in Diffusion Models", ICML 2024.
    """

    logits: Float[Array, " steps"]
    shifts: Float[Array, " times"] | None

    def __init__(
        self,
        logits: Float[ArrayLike, " steps"],
        shifts: Float[ArrayLike, " times"] | None = None,
    ):
        logits = jnp.asarray(logits)
        if logits.ndim != 1 or logits.shape[0] < 1:
            raise ValueError(
                f"OptimizedGrid: `logits` must have shape (steps,), got {logits.shape}. Build "
                "one with `OptimizedGrid.from_grid(grid, sde, steps)` or `jnp.zeros(steps)`."
            )
        self.logits = logits
        if shifts is not None:
            shifts = jnp.asarray(shifts)
            if shifts.shape != (logits.shape[0] + 1,):
                raise ValueError(
                    f"OptimizedGrid: `shifts` must have shape (steps + 1,) = "
                    f"({logits.shape[0] + 1},), one per grid time, got {shifts.shape}. Pass "
                    f"`jnp.zeros({logits.shape[0] + 1})` or None for no shifts."
                )
        self.shifts = shifts

    @property
    def steps(self) -> int:
        """The number of steps the grid was built for."""
        return self.logits.shape[0]

    @staticmethod
    def from_grid(
        grid: "AbstractTimeGrid | str", sde: AbstractForwardSDE, steps: int, *, eps: float = 1e-3
    ) -> "OptimizedGrid":
        """The `OptimizedGrid` equal (to rounding) to `grid` for this SDE, `steps` and `eps`."""
        grid = as_time_grid("OptimizedGrid.from_grid", grid)
        owner = "OptimizedGrid.from_grid"
        steps, eps = check_steps(owner, steps), check_eps(owner, eps)
        lams = sde.log_snr(grid(sde, steps, eps, jnp.result_type(float)))
        return OptimizedGrid(jnp.log(jnp.diff(lams) / (lams[-1] - lams[0])))

    def __call__(self, sde: AbstractForwardSDE, steps: int, eps: float, dtype: Any) -> Array:
        check_grid_steps("OptimizedGrid", self, steps)
        lam_T, lam_eps = _ends(sde, eps, dtype)
        fractions = jax.nn.softmax(self.logits.astype(dtype))
        cumulative = jnp.concatenate([jnp.zeros(1, dtype), jnp.cumsum(fractions)])
        lams = lam_T + (lam_eps - lam_T) * cumulative.at[-1].set(1)
        return _times(sde, lams, eps, dtype)

    def shifted_score(self, score_fn: Callable, sde: AbstractForwardSDE, times: Array) -> Callable:
        r"""`score_fn` queried at the shifted times $s = t e^{\delta(t)}$ and rescaled.

        `times` are this grid's times (`self(sde, steps, eps, dtype)`); $\delta(t)$ is
        `shifts` interpolated linearly in $\log t$ over them. Returns `score_fn` itself if
        `shifts` is None.
        """
        if self.shifts is None:
            return score_fn
        return _ShiftedScore(score_fn, sde, times, self.shifts)


class _ShiftedScore(eqx.Module):
    score_fn: Callable
    sde: AbstractForwardSDE
    times: Array
    shifts: Array

    def __call__(self, t: Array, x: Array, args: Any) -> Array:
        log_ts = jnp.log(self.times[::-1])
        delta = jnp.interp(jnp.log(t), log_ts, self.shifts[::-1].astype(log_ts.dtype))
        s = t * jnp.exp(delta)
        ratio = self.sde.std(s) / self.sde.std(t)
        # Exactly 1 at delta = 0 (compiled, std(s) and std(t) may round differently), with
        # the gradient of the ratio kept: 1 - ratio is exact there (Sterbenz), so the sum is.
        ratio = ratio + jax.lax.stop_gradient(jnp.where(delta == 0, 1 - ratio, 0))
        return ratio * self.score_fn(s, x, args)


def check_grid_steps(owner: str, grid: AbstractTimeGrid, steps: int) -> None:
    """Raise `ValueError` if `grid` holds positions for another number of steps."""
    if isinstance(grid, OptimizedGrid) and grid.steps != steps:
        raise ValueError(
            f"{owner}: `time_grid` is an OptimizedGrid of {grid.steps} steps, but `steps` is "
            f"{steps}. A fitted grid holds one position per step: fit one for {steps} steps, "
            f"or use steps={grid.steps}."
        )


_BY_NAME = {"uniform": UniformGrid, "logsnr": LogSNRGrid, "edm": KarrasGrid}


def to_time_grid(value: Any) -> Any:
    """A converter: a known name becomes its grid object; anything else passes unchanged.

    Unknown values pass so that `check_schedule` can reject them naming the sampler.
    """
    if isinstance(value, str) and value in _BY_NAME:
        return _BY_NAME[value]()
    return value


def as_time_grid(owner: str, value: Any, name: str = "time_grid") -> AbstractTimeGrid:
    """`value` as a grid object, or a `ValueError` that lists the names and the grid classes."""
    value = to_time_grid(value)
    if not isinstance(value, AbstractTimeGrid):
        check_choice(owner, name, value, TIME_GRIDS, _GRID_FIX)
    return value


__all__ = [
    "AbstractTimeGrid",
    "KarrasGrid",
    "LogSNRGrid",
    "OptimizedGrid",
    "UniformGrid",
    "as_time_grid",
    "check_grid_steps",
    "to_time_grid",
]
