"""`Composed`: a model between an encoder and a decoder, such as a classifier around an ODE."""

from collections.abc import Callable
from typing import Any

from ._types import Args, Input, MaybeKey, SaveTimes
from ._validation import check_callable
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

    def __init__(
        self,
        encoder: Callable[[Any], Any] | None,
        model: AbstractModel,
        decoder: Callable[[Any], Any] | None,
    ):
        self.encoder = encoder
        self.model = model
        self.decoder = decoder

    def __check_init__(self):
        if not isinstance(self.model, AbstractModel):
            raise TypeError(
                f"Composed: `model` must be a neurde model (NeuralODE, NeuralSDE, "
                f"discrete.ResidualStack, ...), got {type(self.model).__name__}."
            )
        for name in ("encoder", "decoder"):
            what = "a function of one example"
            check_callable("Composed", name, getattr(self, name), what, optional=True)

    def solve(
        self, y0: Input, ts: SaveTimes = None, *, args: Args = None, key: MaybeKey = None
    ) -> ModelSolution:
        """Encode one example, solve, decode; see `neurde.AbstractModel.solve`."""
        state = y0 if self.encoder is None else self.encoder(y0)
        solution = self.model.solve(state, ts, args=args, key=key)
        return solution if self.decoder is None else solution.map(self.decoder)
