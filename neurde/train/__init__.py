"""Training: compiled steps, the `fit` loop, checkpoints and vmapped ensembles."""

from .checkpoint import load as load
from .checkpoint import load_header as load_header
from .checkpoint import save as save
from .ensemble import (
    ensemble_init_optimizer as ensemble_init_optimizer,
)
from .ensemble import (
    ensemble_member as ensemble_member,
)
from .ensemble import (
    ensemble_predict as ensemble_predict,
)
from .ensemble import (
    ensemble_size as ensemble_size,
)
from .ensemble import (
    make_ensemble as make_ensemble,
)
from .ensemble import (
    make_ensemble_step as make_ensemble_step,
)
from .fit import (
    FitResult as FitResult,
)
from .fit import (
    History as History,
)
from .fit import (
    NonFiniteLossError as NonFiniteLossError,
)
from .fit import (
    TrainingError as TrainingError,
)
from .fit import (
    fit as fit,
)
from .step import init_optimizer as init_optimizer
from .step import make_step as make_step
