"""neurde: neural ordinary and stochastic differential equations in JAX.

The public API is what this module re-exports: vector fields, the model interface
(`AbstractModel` and `ModelSolution`, see `neurde.model`), continuous models, solver
configuration, training, checkpoints and ensembles. Families live in subpackages:
`neurde.data` (toy data sets), `neurde.continuous` (family (b) beyond the plain ODE:
augmented, second-order, Hamiltonian, latent, controlled and flow models),
`neurde.discrete` (family (a): architectures as schemes), `neurde.noise` (family (c):
regularizers as SDE transforms), `neurde.diffusion` (family (d): score-based diffusion).
"""

from . import (
    continuous as continuous,
    data as data,
    diffusion as diffusion,
    discrete as discrete,
    noise as noise,
    stochastic as stochastic,
)
from ._reversible import Reversible as Reversible
from ._version import __version__ as __version__
from .batch_mode import Batched as Batched, batched as batched
from .brownian import GridBrownianPath as GridBrownianPath
from .composed import Composed as Composed
from .evaluations import count_evaluations as count_evaluations
from .fields import (
    AbstractField as AbstractField,
    FunctionField as FunctionField,
    LinearField as LinearField,
    MLPField as MLPField,
    as_field as as_field,
)
from .model import (
    AbstractContinuousModel as AbstractContinuousModel,
    AbstractContinuousWrapper as AbstractContinuousWrapper,
    AbstractModel as AbstractModel,
    AbstractWrapper as AbstractWrapper,
)
from .ode import NeuralODE as NeuralODE
from .problem import Problem as Problem
from .sde import NeuralSDE as NeuralSDE
from .solution import ModelSolution as ModelSolution
from .solvers import (
    RK4 as RK4,
    Leapfrog as Leapfrog,
    SymplecticEuler as SymplecticEuler,
    evaluations_per_step as evaluations_per_step,
)
from .stats import solver_stats as solver_stats
from .tolerances import Tolerances as Tolerances, trainable as trainable
from .train import (
    FitResult as FitResult,
    History as History,
    NonFiniteGradientError as NonFiniteGradientError,
    NonFiniteLossError as NonFiniteLossError,
    Sharding as Sharding,
    TrainingError as TrainingError,
    ensemble_init_optimizer as ensemble_init_optimizer,
    ensemble_member as ensemble_member,
    ensemble_predict as ensemble_predict,
    ensemble_size as ensemble_size,
    fit as fit,
    init_optimizer as init_optimizer,
    load as load,
    load_header as load_header,
    make_ensemble as make_ensemble,
    make_ensemble_step as make_ensemble_step,
    make_step as make_step,
    save as save,
)
