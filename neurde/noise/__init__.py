"""Family (c): regularizers as composable transforms, each with a precise SDE meaning.

A transform takes a model and returns a model; transforms compose in any order, and
`eqx.nn.inference_mode` switches every one of them off for evaluation:

- noise injection on continuous models and ResNets: `additive`, `multiplicative`,
  `dropout_diffusion` (Liu et al. 2019), or `inject` with any `AbstractNoise`;
- random residual branches on ResNets, each in its discrete form and as its SDE:
  `residual_dropout`, `stochastic_depth`, `shake_shake` (blocks of `Branches`),
  `shake_drop`;
- regularizers that change a continuous solve: `steer` (random end time) and `rnode`
  (kinetic and Jacobian penalties integrated along the solve, as `solve(...).extras`);
- `MonteCarlo`: average predictions over noise draws.

How a transform finds the model it acts on (the model itself, the model inside a wrapper,
or the model `where=` selects) and what it does to each kind of model is described in
`neurde.noise.apply`.
"""

from .additive import Additive as Additive, additive as additive
from .base import (
    AbstractBranchRegularizer as AbstractBranchRegularizer,
    AbstractNoise as AbstractNoise,
)
from .branches import Branches as Branches
from .dropout import (
    DropoutDiffusion as DropoutDiffusion,
    ResidualDropout as ResidualDropout,
    dropout_diffusion as dropout_diffusion,
    residual_dropout as residual_dropout,
)
from .monte_carlo import MonteCarlo as MonteCarlo
from .multiplicative import Multiplicative as Multiplicative, multiplicative as multiplicative
from .noisy import NoisyModel as NoisyModel
from .rnode import RNODE as RNODE, rnode as rnode
from .shake_drop import ShakeDrop as ShakeDrop, shake_drop as shake_drop
from .shake_shake import ShakeShake as ShakeShake, shake_shake as shake_shake
from .steer import STEER as STEER, steer as steer
from .stochastic_depth import (
    StochasticDepth as StochasticDepth,
    stochastic_depth as stochastic_depth,
)
from .stochastic_euler import StochasticEuler as StochasticEuler
from .transform import apply as apply, inject as inject, regularize as regularize
