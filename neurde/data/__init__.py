"""Datasets for neural differential equations.

Generators of trajectories from known dynamics (the neural ODE spiral, oscillators,
Lotka-Volterra, the Ornstein-Uhlenbeck process), their vector fields and closed forms, the
[`neurde.data.Trajectories`][] container they return, irregular sampling and a masked loss,
and a minibatch iterator. Every random function takes an explicit `key=`.
"""

from .batching import minibatches as minibatches
from .irregular import irregular as irregular
from .irregular import masked_mse as masked_mse
from .irregular import random_mask as random_mask
from .lotka_volterra import lotka_volterra as lotka_volterra
from .lotka_volterra import lotka_volterra_field as lotka_volterra_field
from .lotka_volterra import lotka_volterra_invariant as lotka_volterra_invariant
from .ornstein_uhlenbeck import ornstein_uhlenbeck as ornstein_uhlenbeck
from .ornstein_uhlenbeck import ou_mean as ou_mean
from .ornstein_uhlenbeck import ou_variance as ou_variance
from .oscillators import oscillator as oscillator
from .oscillators import oscillator_field as oscillator_field
from .spirals import spiral as spiral
from .spirals import spiral_field as spiral_field
from .trajectories import Trajectories as Trajectories
