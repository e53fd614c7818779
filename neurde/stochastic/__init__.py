"""Family (d) beyond the plain neural SDE: stochastic latent and generative models.

- `latent_sde.py`: `LatentSDE` (Li, Wong, Chen, Duvenaud 2020), a posterior and a prior SDE
  sharing a diagonal diffusion, with the KL between their path measures integrated along
  the solve; `latent_sde_elbo`, `sample_prior`;
- `latent_fields.py`: its parts `LatentContext` (the encoded observations the posterior
  drift reads), `LatentDrift` (posterior or prior drift) and `DiagonalDiffusion`.

Every model is a `neurde.AbstractModel` that takes one example (batch it with `jax.vmap`)
and keeps its differential equation in a `neurde.NeuralSDE` it holds as `model`, so the
regularizer transforms of `neurde.noise`, `neurde.fit`, the ensembles and the checkpoints
work on it unchanged.
"""

from .latent_fields import (
    DiagonalDiffusion as DiagonalDiffusion,
    LatentContext as LatentContext,
    LatentDrift as LatentDrift,
)
from .latent_sde import (
    LatentSDE as LatentSDE,
    latent_sde_elbo as latent_sde_elbo,
    sample_prior as sample_prior,
)
