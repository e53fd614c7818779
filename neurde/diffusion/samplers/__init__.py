"""Samplers of score-based diffusion models, one file each, behind `sample`/`sample_from`."""

from .ancestral import Ancestral as Ancestral
from .base import AbstractSampler as AbstractSampler, TimeGrid as TimeGrid, time_grid as time_grid
from .ddim import DDIM as DDIM
from .dpm_solver import DPMSolver as DPMSolver
from .dpm_solver_multistep import DPMSolverMultistep as DPMSolverMultistep
from .edm import EDMHeun as EDMHeun
from .euler_maruyama import EulerMaruyama as EulerMaruyama
from .predictor_corrector import PredictorCorrector as PredictorCorrector
from .probability_flow import ProbabilityFlow as ProbabilityFlow
from .sample import sample as sample, sample_from as sample_from
