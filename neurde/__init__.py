"""neurde: neural ordinary and stochastic differential equations in JAX.

The public API is what this module re-exports: vector fields, continuous models, solver
configuration, training, checkpoints and ensembles. Families live in subpackages:
`neurde.data` (toy data sets).
"""

from . import data as data
from ._version import __version__ as __version__
from .brownian import GridBrownianPath as GridBrownianPath
from .fields import (
    AbstractField as AbstractField,
)
from .fields import (
    FunctionField as FunctionField,
)
from .fields import (
    LinearField as LinearField,
)
from .fields import (
    MLPField as MLPField,
)
from .fields import (
    as_field as as_field,
)
from .ode import NeuralODE as NeuralODE
from .sde import NeuralSDE as NeuralSDE
from .solvers import RK4 as RK4
from .solvers import evaluations_per_step as evaluations_per_step
from .stats import solver_stats as solver_stats
from .tolerances import Tolerances as Tolerances
from .tolerances import trainable as trainable
from .train import (
    FitResult as FitResult,
)
from .train import (
    History as History,
)
from .train import (
    NonFiniteLossError as NonFiniteLossError,
)
from .train import (
    TrainingError as TrainingError,
)
from .train import (
    ensemble_init_optimizer as ensemble_init_optimizer,
)
from .train import (
    ensemble_member as ensemble_member,
)
from .train import (
    ensemble_predict as ensemble_predict,
)
from .train import (
    ensemble_size as ensemble_size,
)
from .train import (
    fit as fit,
)
from .train import (
    init_optimizer as init_optimizer,
)
from .train import (
    load as load,
)
from .train import (
    load_header as load_header,
)
from .train import (
    make_ensemble as make_ensemble,
)
from .train import (
    make_ensemble_step as make_ensemble_step,
)
from .train import (
    make_step as make_step,
)
from .train import (
    save as save,
)
