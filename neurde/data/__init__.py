"""Datasets for neural differential equations.

Generators of trajectories from known dynamics (the neural ODE spiral, oscillators,
Lotka-Volterra, the Ornstein-Uhlenbeck process), their vector fields and closed forms, the
[`neurde.data.Trajectories`][] container they return, irregular sampling and a masked loss,
a minibatch iterator, 2-D toy densities (two moons, checkerboard, 8 Gaussians) with their
exact log densities, the data of the continuous family (concentric annuli, mass-spring and
pendulum trajectories with their energies, irregularly sampled periodic series, spirals
labelled by turning direction), and two small classification sets (scikit-learn's 8x8
digits and MNIST-1D, in a `Classification` container). Trajectory generators take an
explicit `key=`; the classification sets take an integer `seed=` because they are fixed
data sets built with NumPy, like their references.
"""

from .annuli import concentric_annuli as concentric_annuli
from .batching import minibatches as minibatches
from .classification import Classification as Classification
from .densities import (
    DENSITIES as DENSITIES,
    checkerboard as checkerboard,
    eight_gaussians as eight_gaussians,
    two_moons as two_moons,
)
from .density_log_prob import (
    DENSITY_LOG_PROBS as DENSITY_LOG_PROBS,
    checkerboard_log_prob as checkerboard_log_prob,
    data_cross_entropy as data_cross_entropy,
    eight_gaussians_log_prob as eight_gaussians_log_prob,
    two_moons_log_prob as two_moons_log_prob,
)
from .digits import digits as digits
from .hamiltonian import (
    mass_spring as mass_spring,
    mass_spring_energy as mass_spring_energy,
    pendulum as pendulum,
    pendulum_energy as pendulum_energy,
)
from .irregular import irregular as irregular, masked_mse as masked_mse, random_mask as random_mask
from .lotka_volterra import (
    lotka_volterra as lotka_volterra,
    lotka_volterra_field as lotka_volterra_field,
    lotka_volterra_invariant as lotka_volterra_invariant,
)
from .mnist1d import mnist1d as mnist1d
from .ornstein_uhlenbeck import (
    ornstein_uhlenbeck as ornstein_uhlenbeck,
    ou_mean as ou_mean,
    ou_variance as ou_variance,
)
from .oscillators import oscillator as oscillator, oscillator_field as oscillator_field
from .periodic import irregular_series as irregular_series, periodic as periodic
from .spiral_directions import spiral_directions as spiral_directions
from .spirals import spiral as spiral, spiral_field as spiral_field
from .trajectories import Trajectories as Trajectories
