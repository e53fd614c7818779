"""Family (b) beyond the plain neural ODE: continuous-time models, one file each.

Augmented and second-order (heavy-ball) neural ODEs, Hamiltonian neural networks, the latent
ODE with its ODE-RNN encoder, neural CDEs, continuous normalizing flows (FFJORD) and flow
matching. Every model is a `neurde.AbstractModel` that takes one example (batch it with
`jax.vmap`) and keeps its differential equation in a `neurde.NeuralODE` (or any continuous
model) it holds as `model`, so the regularizer transforms of `neurde.noise`, `neurde.fit`,
the ensembles and the checkpoints work on it unchanged.
"""

from .augmented import AugmentedODE as AugmentedODE
from .cde import ControlPath as ControlPath, NeuralCDE as NeuralCDE, control_path as control_path
from .hamiltonian import (
    AbstractHamiltonianField as AbstractHamiltonianField,
    HamiltonianField as HamiltonianField,
    HamiltonianNN as HamiltonianNN,
    SeparableHamiltonianField as SeparableHamiltonianField,
)
from .second_order import (
    HeavyBallField as HeavyBallField,
    HeavyBallODE as HeavyBallODE,
    SecondOrderField as SecondOrderField,
    SecondOrderODE as SecondOrderODE,
)
