"""Family (d), generative half: score-based diffusion models.

Forward SDEs (`VESDE`, `VPSDE`, `SubVPSDE`) and DDPM's discrete schedule; denoising
score-matching losses with three weightings and three ways to sample times; score networks
(`ScoreMLP`, `ScoreConvNet`) and the `Score` wrapper that reads a noise-predicting network as
a score; samplers (`EulerMaruyama`, `Ancestral`, `PredictorCorrector`, `ProbabilityFlow`,
`DDIM`, `DPMSolver`, `DPMSolverMultistep`, `DPMSolverPP`, `DPMSolverPPSDE`, `UniPC`,
`DEIS`, `EDMHeun`, `Restart`) behind one `sample` function that also returns the number of
score evaluations; time grids as objects (`UniformGrid`, `LogSNRGrid`, `KarrasGrid`, and an
`OptimizedGrid` fitted by `fit_time_grid`); exact log-likelihoods through the
probability-flow ODE; an EMA of the weights; and the exact score of Gaussian-mixture data
(`GaussianMixtureScore`), the yardstick of samplers. Score functions (`ScoreFn`) have
neurde's field signature `score(t, x, args)` and take one example. The type aliases of the
options (`TimeGrid`, `Weighting`, `TimeSampling`, `Parameterization`, `Embedding`) are
exported for annotations.
"""

from .ddpm import (
    DDPMSchedule as DDPMSchedule,
    ddpm_schedule as ddpm_schedule,
    respaced_betas as respaced_betas,
)
from .ema import ema_update as ema_update
from .forward import (
    VESDE as VESDE,
    VPSDE as VPSDE,
    AbstractForwardSDE as AbstractForwardSDE,
    SubVPSDE as SubVPSDE,
)
from .gaussian_mixture import GaussianMixtureScore as GaussianMixtureScore
from .likelihood import (
    Likelihood as Likelihood,
    bits_per_dim as bits_per_dim,
    log_likelihood as log_likelihood,
)
from .losses import (
    DSMLoss as DSMLoss,
    Weighting as Weighting,
    denoising_score_matching as denoising_score_matching,
    dsm_loss as dsm_loss,
)
from .samplers import (
    DDIM as DDIM,
    DEIS as DEIS,
    AbstractSampler as AbstractSampler,
    AbstractTimeGrid as AbstractTimeGrid,
    Ancestral as Ancestral,
    DPMSolver as DPMSolver,
    DPMSolverMultistep as DPMSolverMultistep,
    DPMSolverPP as DPMSolverPP,
    DPMSolverPPSDE as DPMSolverPPSDE,
    EDMHeun as EDMHeun,
    EulerMaruyama as EulerMaruyama,
    GridFit as GridFit,
    KarrasGrid as KarrasGrid,
    LogSNRGrid as LogSNRGrid,
    OptimizedGrid as OptimizedGrid,
    PredictorCorrector as PredictorCorrector,
    ProbabilityFlow as ProbabilityFlow,
    Restart as Restart,
    TimeGrid as TimeGrid,
    UniformGrid as UniformGrid,
    UniPC as UniPC,
    brownian_noise as brownian_noise,
    fit_time_grid as fit_time_grid,
    sample as sample,
    sample_from as sample_from,
    time_grid as time_grid,
)
from .score import (
    GaussianScore as GaussianScore,
    Parameterization as Parameterization,
    Score as Score,
    ScoreFn as ScoreFn,
    probability_flow_drift as probability_flow_drift,
    reverse_drift as reverse_drift,
)
from .score_nets import (
    Embedding as Embedding,
    ScoreConvNet as ScoreConvNet,
    ScoreMLP as ScoreMLP,
    TimeEmbedding as TimeEmbedding,
)
from .time_sampling import TimeSampling as TimeSampling, sample_times as sample_times
