"""`neurde run zoo`: every model of the continuous family on the task its paper made it for.

One section per model group, each training the new model beside the baseline its paper
compares against, on a generated task whose answer is known:

- `augmented`: augmented vs plain neural ODE on concentric annuli and on `g(x) = -x`; a
  second-order (SONODE) and heavy-ball (HBNODE) model vs a first-order one on a damped
  oscillator observed in position only (extrapolation);
- `hamiltonian`: a Hamiltonian neural network vs a plain neural ODE on a mass-spring and a
  pendulum (energy drift over 100 periods), with a symplectic integrator;
- `latent`: latent ODE vs ODE-RNN vs an RNN fed time gaps on irregularly sampled periodic
  series (extrapolation);
- `cde`: a neural CDE classifying the turning direction of spirals with 30% of the
  observations dropped;
- `cnf`: FFJORD (exact trace and Hutchinson), with and without RNODE, and flow matching on
  8 Gaussians and two moons, against the true data density's cross-entropy.

`--quick` (the default) runs every section in a few minutes on a 2-core CPU; `--full` is
sized for a GPU. `--only` picks sections.
"""

import argparse

from .report import Report
from .sections import add_only_argument, run_sections

NAME = "zoo"
DESCRIPTION = "The continuous family (augmented, second-order, HNN, latent ODE, CDE, CNF)."

# Section name -> the module (in this package) whose `section(report, size=, seed=)` runs it.
SECTIONS = {
    "augmented": "zoo_augmented",
    "hamiltonian": "zoo_hamiltonian",
    "latent": "zoo_latent",
    "cde": "zoo_cde",
    "cnf": "zoo_cnf",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `neurde run zoo`."""
    add_only_argument(parser, SECTIONS)


def run(args: argparse.Namespace) -> Report:
    """Run the chosen sections and write the report."""
    return run_sections(args, name=NAME, title="The continuous-model family", sections=SECTIONS)
