"""Training errors, and the diagnosis of a step whose loss or gradient is not finite.

Every step of `fit` also returns, for each trainable leaf, whether its gradient is finite
(one reduction per leaf, inside the compiled step). A step with a non-finite loss or any
non-finite gradient is refused before the optimizer update is kept, and the error says:
the step; whether the loss itself was non-finite (the forward pass failed) or only the
gradients (the backward pass failed); which parameter leaves had non-finite gradients
(their paths, the first few, and for an ensemble which members); the solver's outcome when
the loss's aux dict reports it as `"result"` (e.g. `solution.result` of `model.solve`);
and the last good checkpoint when `fit` writes checkpoints.
"""

import pathlib
from typing import Any

import diffrax
import numpy as np

from .history import History

_SHOWN = 5


class TrainingError(RuntimeError):
    """Training stopped at `step`; `model` and `opt_state` are the last good ones.

    `checkpoint` is the path of the last checkpoint written (`None` without
    `checkpoint_dir`); for the non-finite errors below, `leaves` lists the paths of the
    parameters whose gradients were non-finite and `result` holds the solver outcome codes
    the loss's aux reported (or `None`).
    """

    def __init__(
        self,
        message: str,
        *,
        step: int,
        model: Any,
        opt_state: Any,
        history: History,
        checkpoint: pathlib.Path | None = None,
        leaves: list[str] | None = None,
        result: np.ndarray | None = None,
    ):
        super().__init__(message)
        self.step = step
        self.model = model
        self.opt_state = opt_state
        self.history = history
        self.checkpoint = checkpoint
        self.leaves = [] if leaves is None else leaves
        self.result = result


class NonFiniteLossError(TrainingError):
    """The loss became NaN or inf (the forward pass failed); the parameters that last gave
    a finite loss are kept. `leaves` lists the parameters whose gradients were non-finite
    too."""


class NonFiniteGradientError(TrainingError):
    """The loss was finite but a gradient was NaN or inf (the backward pass failed); the
    update was not applied."""


def result_codes(aux: dict[str, Any]) -> np.ndarray | None:
    """The solver outcome codes in `aux["result"]` (a `diffrax.RESULTS` item or ints)."""
    if "result" not in aux:
        return None
    value = aux["result"]
    return np.asarray(getattr(value, "_value", value))


def _describe_result(codes: np.ndarray | None) -> str:
    if codes is None:
        return (
            "No solver outcome was reported: return `(loss, {'result': solution.result})` "
            "from the loss to see it here."
        )
    failed = sorted({int(c) for c in np.ravel(codes) if c != 0})
    if not failed:
        return "The solver reported success for every solve."
    messages = diffrax.RESULTS._index_to_message  # pyright: ignore[reportAttributeAccessIssue]
    named = "; ".join(
        f"code {c}: {messages[c].splitlines()[0] if c < len(messages) else '?'}" for c in failed
    )
    count = int(np.sum(np.ravel(codes) != 0))
    return f"The solver failed in {count} of {np.size(codes)} solve(s) ({named})."


def _describe_leaves(finite: np.ndarray, paths: list[str]) -> tuple[list[str], str]:
    # `finite`: (leaves,) or, for an ensemble, (members, leaves).
    bad_leaves = ~np.all(finite.reshape(-1, len(paths)), axis=0) if paths else np.array([])
    bad = [p for p, b in zip(paths, bad_leaves, strict=True) if b]
    if not bad:
        return bad, "Every gradient was finite."
    shown = ", ".join(bad[:_SHOWN]) + (
        f", ... ({len(bad) - _SHOWN} more)" if len(bad) > _SHOWN else ""
    )
    text = f"Non-finite gradients in {len(bad)} of {len(paths)} parameter leaves: {shown}."
    if finite.ndim == 2:
        members = [int(i) for i in np.flatnonzero(~np.all(finite, axis=1))]
        text += f" Ensemble members affected: {members}."
    return bad, text


def check_step(
    *,
    step: int,
    loss: np.ndarray,
    finite: np.ndarray,
    paths: list[str],
    aux: dict[str, Any],
    checkpoint: pathlib.Path | None,
    model: Any,
    opt_state: Any,
    history: History,
) -> None:
    """Raise `NonFiniteLossError` or `NonFiniteGradientError` for a failed step."""
    loss_ok = bool(np.all(np.isfinite(loss)))
    if loss_ok and bool(np.all(finite)):
        return
    codes = result_codes(aux)
    bad, leaves_text = _describe_leaves(finite, paths)
    if loss_ok:
        cls: type[NonFiniteLossError] | type[NonFiniteGradientError] = NonFiniteGradientError
        what = (
            f"the gradients became non-finite at step {step} while the loss was finite "
            f"({loss}): the backward pass failed (e.g. a gradient through sqrt(0) or log(0), "
            "or an adjoint solve that diverged)"
        )
    else:
        cls = NonFiniteLossError
        what = f"the loss became non-finite ({loss}) at step {step}: the forward pass failed"
    where = (
        f"The last good checkpoint is {str(checkpoint)!r}."
        if checkpoint is not None
        else "Checkpointing is off (pass `checkpoint_dir` to keep the last good state on disk)."
    )
    error = cls(
        f"fit: {what}.\n{leaves_text}\n{_describe_result(codes)}\n{where}\nThe error's "
        "`.model` holds the parameters before this step. Try a smaller learning rate, "
        "gradient clipping (`optax.clip_by_global_norm`), or tighter solver tolerances. (If "
        "EQX_ON_ERROR=nan is set, as `neurde run` does for cached compilation, a failed solve "
        "also shows up as NaN: rerun with --checks.)",
        step=step,
        model=model,
        opt_state=opt_state,
        history=history,
        checkpoint=checkpoint,
        leaves=bad,
        result=codes,
    )
    raise error


__all__ = [
    "NonFiniteGradientError",
    "NonFiniteLossError",
    "TrainingError",
    "check_step",
    "result_codes",
]
