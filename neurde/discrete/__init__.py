"""Family (a): discrete architectures read as numerical schemes (depth = time).

One vector field, dropped into different schemes, gives ResNet (`Euler`), PolyNet,
LM-ResNet (`LinearMultistep`), RK-Nets (`RungeKutta`), midpoint (`LinearMultistep.midpoint`)
and leapfrog nets, Momentum ResNets, RevNet and Hamiltonian nets (`AdditiveCoupling`);
`ResidualStack` scans any of them over depth and is a `neurde.AbstractModel`.

`Euler` and `RungeKutta.rk4()` share their names with `diffrax.Euler` and `neurde.RK4`
because they are the same methods: here a scheme applied once per block with the block's own
field, there a Diffrax solver of one vector field.
"""

from .classifier import (
    ARCHITECTURES as ARCHITECTURES,
    IMAGE_ARCHITECTURES as IMAGE_ARCHITECTURES,
    VECTOR_ARCHITECTURES as VECTOR_ARCHITECTURES,
    Classifier as Classifier,
)
from .coupling import (
    AbstractCouplingBlock as AbstractCouplingBlock,
    AdditiveCoupling as AdditiveCoupling,
    CouplingBlock as CouplingBlock,
    HamiltonianBlock as HamiltonianBlock,
)
from .euler import Euler as Euler, PolyNet as PolyNet
from .fields import (
    AntisymmetricField as AntisymmetricField,
    ConvField as ConvField,
    PDEField as PDEField,
)
from .leapfrog import Leapfrog as Leapfrog
from .momentum import Momentum as Momentum
from .multistep import LinearMultistep as LinearMultistep
from .runge_kutta import RungeKutta as RungeKutta
from .scheme import AbstractScheme as AbstractScheme
from .stack import ResidualStack as ResidualStack
