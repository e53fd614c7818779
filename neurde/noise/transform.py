"""Apply a regularizer to a model: the dispatch behind every `neurde.noise` transform.

A transform accepts the model it acts on (a `NeuralODE`, `NeuralSDE` or a
`discrete.ResidualStack`, or a model already transformed), or any Equinox module that
contains exactly one of them (a classifier, say), in which case that one is replaced and the
rest of the module is kept.
"""

from typing import Any, Literal

import diffrax
import equinox as eqx
import jax

from ..discrete import ResidualStack
from ..ode import NeuralODE
from ..sde import NeuralSDE
from .base import AbstractBranchRegularizer, AbstractNoise
from .continuous import NoisyODE
from .residual import NoisyStack

_CONTINUOUS = (NeuralODE, NeuralSDE, NoisyODE)
_DISCRETE = (ResidualStack, NoisyStack)
_TARGETS = _CONTINUOUS + _DISCRETE


def _is_target(x: Any) -> bool:
    return isinstance(x, _TARGETS)


def replace_model(
    owner: str,
    model: Any,
    apply: Any,
    kinds: tuple[type, ...] = _TARGETS,
    description: str = "a NeuralODE, a NeuralSDE or a discrete.ResidualStack",
) -> Any:
    """`apply(model)` if `model` is one of `kinds`; otherwise apply it to the one such model
    inside the Equinox module `model` and return the module with it replaced."""

    def is_kind(x: Any) -> bool:
        return isinstance(x, kinds)

    if is_kind(model):
        return apply(model)
    found = []
    if isinstance(model, eqx.Module):
        found = [x for x in jax.tree.leaves(model, is_leaf=is_kind) if is_kind(x)]
    if len(found) == 1:
        return eqx.tree_at(
            lambda m: [x for x in jax.tree.leaves(m, is_leaf=is_kind) if is_kind(x)],
            model,
            [apply(found[0])],
        )
    if found:
        raise TypeError(
            f"{owner}: {type(model).__name__} contains {len(found)} models ({description}); "
            "apply the transform to the one you mean, e.g. with `eqx.tree_at`."
        )
    raise TypeError(
        f"{owner}: expected a model ({description}, or an Equinox module containing exactly "
        f"one), got {type(model).__name__}."
    )


def inject(
    model: Any,
    *noises: AbstractNoise,
    solver: diffrax.AbstractSolver | None = None,
    dt0: float | None = None,
    brownian: Literal["tree", "grid"] | None = None,
) -> Any:
    r"""Add Gaussian noises to `model`'s dynamics; the transform behind `additive` & co.

    - On a `NeuralODE` or `NeuralSDE`: a `NoisyODE`, solved as an SDE (`solver`, `dt0`,
      `brownian` as there). Applied again, the noises accumulate in one diffusion.
    - On an Euler `ResidualStack`: a `NoisyStack`, adding $\sqrt{h}\,g \odot \xi$ per block.
    - On a module containing one of these: that one is transformed.
    """
    owner = "neurde.noise.inject"
    for noise in noises:
        if not isinstance(noise, AbstractNoise):
            raise TypeError(
                f"{owner}: noises must be neurde.noise.AbstractNoise objects (Additive, "
                f"Multiplicative, DropoutDiffusion), got {type(noise).__name__}."
            )
    options = {"solver": solver, "dt0": dt0, "brownian": brownian}
    given = {k: v for k, v in options.items() if v is not None}

    def apply(target: Any) -> Any:
        if isinstance(target, NoisyODE):
            merged = {
                "solver": target.solver, "dt0": target.dt0, "brownian": target.brownian,
                **given,
            }  # fmt: skip
            return NoisyODE(
                target.model, target.noises + noises, inference=target.inference, **merged
            )
        if isinstance(target, NeuralODE | NeuralSDE):
            return NoisyODE(target, noises, **given)
        if given:
            raise ValueError(
                f"{owner}: {sorted(given)} apply to continuous models only; a discrete stack "
                "takes one Euler–Maruyama step per block of size h."
            )
        if isinstance(target, NoisyStack):
            return eqx.tree_at(lambda s: s.noises, target, target.noises + noises)
        return NoisyStack(target, noises)

    return replace_model(owner, model, apply)


def regularize(
    model: Any, branch: AbstractBranchRegularizer, *, form: Literal["discrete", "sde"] | str
) -> Any:
    """Randomise every residual branch of an Euler stack with `branch` (discrete or SDE form)."""
    name = type(branch).__name__
    owner = f"neurde.noise ({name})"
    if form not in ("discrete", "sde"):
        raise ValueError(f"{owner}: `form` must be 'discrete' or 'sde', got {form!r}.")

    def apply(target: Any) -> Any:
        if isinstance(target, _CONTINUOUS):
            raise TypeError(
                f"{owner}: {name} randomises the residual branches of a discrete net (a "
                f"ResidualStack with scheme Euler), got a {type(target).__name__}. For "
                "continuous models inject noise instead: `neurde.noise.dropout_diffusion`, "
                "`additive` or `multiplicative`."
            )
        if isinstance(target, NoisyStack):
            if target.branch is not None:
                raise ValueError(
                    f"{owner}: the stack already has {type(target.branch).__name__}; one "
                    "branch regularizer per stack (noises can be added freely)."
                )
            return NoisyStack(target.stack, target.noises, branch, form, target.inference)
        return NoisyStack(target, (), branch, form)  # pyright: ignore[reportArgumentType]

    return replace_model(owner, model, apply)


__all__ = ["inject", "regularize"]
