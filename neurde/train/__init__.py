"""Training: compiled steps, the `fit` loop, checkpoints, vmapped ensembles and their
sharding over a device mesh."""

from .checkpoint import load as load, load_header as load_header, save as save
from .ensemble import (
    ensemble_init_optimizer as ensemble_init_optimizer,
    ensemble_member as ensemble_member,
    ensemble_predict as ensemble_predict,
    ensemble_size as ensemble_size,
    make_ensemble as make_ensemble,
    make_ensemble_step as make_ensemble_step,
)
from .fit import (
    FitResult as FitResult,
    History as History,
    NonFiniteGradientError as NonFiniteGradientError,
    NonFiniteLossError as NonFiniteLossError,
    TrainingError as TrainingError,
    fit as fit,
)
from .sharding import Sharding as Sharding
from .step import init_optimizer as init_optimizer, make_step as make_step
