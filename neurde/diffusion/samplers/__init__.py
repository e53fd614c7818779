"""Samplers of score-based diffusion models, one file each, behind `sample`/`sample_from`."""

from .ancestral import Ancestral as Ancestral
from .base import AbstractSampler as AbstractSampler, TimeGrid as TimeGrid, time_grid as time_grid
from .ddim import DDIM as DDIM
from .deis import DEIS as DEIS
from .dpm_solver import DPMSolver as DPMSolver
from .dpm_solver_multistep import DPMSolverMultistep as DPMSolverMultistep
from .dpm_solver_pp import DPMSolverPP as DPMSolverPP
from .dpm_solver_pp_sde import DPMSolverPPSDE as DPMSolverPPSDE, brownian_noise as brownian_noise
from .edm import EDMHeun as EDMHeun
from .euler_maruyama import EulerMaruyama as EulerMaruyama
from .grid_fit import GridFit as GridFit, fit_time_grid as fit_time_grid
from .grids import (
    AbstractTimeGrid as AbstractTimeGrid,
    KarrasGrid as KarrasGrid,
    LogSNRGrid as LogSNRGrid,
    OptimizedGrid as OptimizedGrid,
    UniformGrid as UniformGrid,
)
from .predictor_corrector import PredictorCorrector as PredictorCorrector
from .probability_flow import ProbabilityFlow as ProbabilityFlow
from .restart import Restart as Restart
from .sample import sample as sample, sample_from as sample_from
from .unipc import UniPC as UniPC
