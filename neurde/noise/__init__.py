"""Family (c): regularizers as composable transforms, each with a precise SDE meaning.

A transform takes a model and returns a model; transforms compose, and
`eqx.nn.inference_mode` switches every one of them off for evaluation:

- noise injection on continuous models and ResNets: `additive`, `multiplicative`,
  `dropout_diffusion` (Liu et al. 2019), or `inject` with any `AbstractNoise`;
- random residual branches on ResNets, each in its discrete form and as its SDE:
  `residual_dropout`, `stochastic_depth`, `shake_shake` (blocks of `Branches`),
  `shake_drop`;
- regularizers that change the solve of a `NeuralODE`: `steer` (random end time) and
  `rnode` (kinetic and Jacobian penalties integrated along the solve);
- `MonteCarlo`: average predictions over noise draws.
"""

from .additive import Additive as Additive, additive as additive
from .base import (
    AbstractBranchRegularizer as AbstractBranchRegularizer,
    AbstractNoise as AbstractNoise,
)
from .continuous import NoisyODE as NoisyODE
from .dropout import (
    DropoutDiffusion as DropoutDiffusion,
    ResidualDropout as ResidualDropout,
    dropout_diffusion as dropout_diffusion,
    residual_dropout as residual_dropout,
)
from .monte_carlo import MonteCarlo as MonteCarlo
from .multiplicative import Multiplicative as Multiplicative, multiplicative as multiplicative
from .residual import NoisyStack as NoisyStack
from .rnode import RNODE as RNODE, rnode as rnode
from .shake_drop import ShakeDrop as ShakeDrop, shake_drop as shake_drop
from .shake_shake import Branches as Branches, ShakeShake as ShakeShake, shake_shake as shake_shake
from .steer import STEER as STEER, steer as steer
from .stochastic_depth import (
    StochasticDepth as StochasticDepth,
    stochastic_depth as stochastic_depth,
)
from .transform import inject as inject, regularize as regularize, replace_model as replace_model
