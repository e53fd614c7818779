"""Family (b) beyond the plain neural ODE: continuous-time models, one file each.

- `augmented.py`: `AugmentedODE` (Dupont et al. 2019), the state lifted by extra channels;
- `second_order.py`: `SecondOrderODE` (SONODE, Norcliffe et al. 2020) and `HeavyBallODE`
  (HBNODE, Xia et al. 2021), with their fields;
- `hamiltonian.py`: `HamiltonianNN` (Greydanus et al. 2019) on a general, separable or
  dissipative Hamiltonian field (the symplectic solvers are `neurde.Leapfrog` and
  `neurde.SymplecticEuler`);
- `ode_rnn.py`: `IrregularSeries`, `union_grid`, `ODERNN` and the `TimeGapRNN` baseline
  (Rubanova et al. 2019); `latent_ode.py`: `LatentODE`, `elbo`, `gaussian_kl`;
- `cde.py`: `NeuralCDE` on a `control_path` (Kidger et al. 2020);
- `cnf.py`: `CNF` (FFJORD, Grathwohl et al. 2019) with `log_prob`, `sample`, `inverse`;
  `flow_matching.py`: `flow_matching_loss` (Lipman et al. 2023; Liu et al. 2023).

Every model is a `neurde.AbstractModel` that takes one example (batch it with `jax.vmap`)
and keeps its differential equation in a `neurde.NeuralODE` (or any continuous model) it
holds as `model`, so the regularizer transforms of `neurde.noise`, `neurde.fit`, the
ensembles and the checkpoints work on it unchanged.
"""

from .augmented import AugmentedODE as AugmentedODE
from .cde import ControlPath as ControlPath, NeuralCDE as NeuralCDE, control_path as control_path
from .cnf import (
    CNF as CNF,
    inverse as inverse,
    log_prob as log_prob,
    sample as sample,
    standard_normal_log_prob as standard_normal_log_prob,
)
from .flow_matching import flow_matching_loss as flow_matching_loss
from .hamiltonian import (
    AbstractHamiltonianField as AbstractHamiltonianField,
    HamiltonianField as HamiltonianField,
    HamiltonianNN as HamiltonianNN,
    SeparableHamiltonianField as SeparableHamiltonianField,
)
from .latent_ode import LatentODE as LatentODE, elbo as elbo, gaussian_kl as gaussian_kl
from .ode_rnn import (
    ODERNN as ODERNN,
    IrregularSeries as IrregularSeries,
    TimeGapRNN as TimeGapRNN,
    union_grid as union_grid,
)
from .second_order import (
    HeavyBallField as HeavyBallField,
    HeavyBallODE as HeavyBallODE,
    SecondOrderField as SecondOrderField,
    SecondOrderODE as SecondOrderODE,
)
