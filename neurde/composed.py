"""`Composed`: a model between an encoder and a decoder, such as a classifier around an ODE."""

from collections.abc import Callable
from typing import Any

from jaxtyping import ArrayLike, Float, PRNGKeyArray, PyTree

from ._types import Args
from .model import AbstractModel, AbstractWrapper
from .solution import ModelSolution


class Composed(AbstractWrapper):
    r"""`decoder(model(encoder(x)))`: a model with an input map and an output map.

    The common shape of a network around a differential equation: an embedding, a neural
    ODE (or SDE, or stack), a head; later, the encoder and decoder of a latent model. It is a
    `neurde.AbstractModel`, so it is called like any model, `Composed(...)(x, ts, *, args,
    key)`, and `solve` passes the inner model's `stats` and `extras` (e.g. RNODE's
    penalties) through. Regularizer transforms applied to it act on `model`.

    With save times `ts` the decoder is applied to the state at each of them (a latent
    trajectory decoded into observations).

    **Arguments:**

    - `encoder`: `x -> y0` for one example (e.g. an `eqx.nn.Linear`), or `None` (identity).
    - `model`: the neurde model.
    - `decoder`: `y -> output` for one state, or `None` (identity).
    """

    encoder: Callable[[Any], Any] | None
    model: AbstractModel
    decoder: Callable[[Any], Any] | None

    def __check_init__(self):
        if not isinstance(self.model, AbstractModel):
            raise TypeError(
                f"Composed: `model` must be a neurde model (NeuralODE, NeuralSDE, "
                f"discrete.ResidualStack, ...), got {type(self.model).__name__}."
            )
        for name in ("encoder", "decoder"):
            part = getattr(self, name)
            if part is not None and not callable(part):
                raise TypeError(
                    f"Composed: `{name}` must be a function of one example (or None), got "
                    f"{type(part).__name__}."
                )

    def solve(
        self,
        y0: PyTree[ArrayLike],
        ts: Float[ArrayLike, " times"] | None = None,
        *,
        args: Args = None,
        key: PRNGKeyArray | None = None,
    ) -> ModelSolution:
        """Encode one example, solve, decode; see `neurde.AbstractModel.solve`."""
        state = y0 if self.encoder is None else self.encoder(y0)
        solution = self.model.solve(state, ts, args=args, key=key)
        return solution if self.decoder is None else solution.map(self.decoder)
