"""Family (d) beyond the plain neural SDE: stochastic latent and generative models.

- `latent_sde.py`: `LatentSDE` (Li, Wong, Chen, Duvenaud 2020), a posterior and a prior SDE
  sharing a diagonal diffusion, with the KL between their path measures integrated along
  the solve; `latent_sde_elbo`, `sample_prior`;
- `latent_iwae.py`: the importance-weighted bound `latent_sde_iwae` over $K$ posterior paths
  (Burda et al. 2016) and its weights `latent_sde_log_weights` (Girsanov's path weight);
- `latent_fields.py`: its parts `LatentContext` (the encoded observations the posterior
  drift reads), `LatentDrift` (posterior or prior drift) and `DiagonalDiffusion`;
- `sde_net.py`: `SDENet` (Kong, Sun, Zhang 2020), a classifier whose hidden state follows an
  SDE with a diffusion read from the initial state; `sde_net_loss` (with its parts
  `sde_net_task_loss` and `sde_net_diffusion_loss`), `sde_net_uncertainty`, and
  `SDENetArgs`, `SDENetDrift`, `SDENetDiffusion`;
- `sde_gan.py`: the SDE-GAN (Kidger, Foster, Li, Lyons 2021): `SDEGenerator` (a neural SDE,
  reversible Heun), `CDEDiscriminator` (a neural CDE), `wasserstein_loss`,
  `clip_discriminator` (the Lipschitz treatment, LipSwish `lipswish`) and `make_gan_step`.

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
from .latent_iwae import (
    latent_sde_iwae as latent_sde_iwae,
    latent_sde_log_weights as latent_sde_log_weights,
)
from .latent_sde import (
    LatentSDE as LatentSDE,
    latent_sde_elbo as latent_sde_elbo,
    sample_prior as sample_prior,
)
from .sde_gan import (
    CDEDiscriminator as CDEDiscriminator,
    SDEGenerator as SDEGenerator,
    clip_discriminator as clip_discriminator,
    lipswish as lipswish,
    make_gan_step as make_gan_step,
    wasserstein_loss as wasserstein_loss,
)
from .sde_net import (
    SDENet as SDENet,
    SDENetArgs as SDENetArgs,
    SDENetDiffusion as SDENetDiffusion,
    SDENetDrift as SDENetDrift,
    SDENetUncertainty as SDENetUncertainty,
    sde_net_diffusion_loss as sde_net_diffusion_loss,
    sde_net_loss as sde_net_loss,
    sde_net_task_loss as sde_net_task_loss,
    sde_net_uncertainty as sde_net_uncertainty,
)
