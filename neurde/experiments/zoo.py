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
import importlib
import time
from typing import Any

from .report import Report, markdown_table

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
    parser.add_argument(
        "--only", nargs="+", choices=list(SECTIONS), help="sections to run (default: all)"
    )


def run(args: argparse.Namespace) -> Report:
    """Run the chosen sections and write the report."""
    size = "full" if args.full else "quick"
    names = list(args.only or SECTIONS)
    report = Report("The continuous-model family", args.out)
    summary: list[list[Any]] = []
    sections = []
    for name in names:
        sections.append((name, importlib.import_module(f".{SECTIONS[name]}", __package__)))
    for name, module in sections:
        print(f"zoo: section {name} ({size})", flush=True)
        start = time.perf_counter()
        numbers = module.section(report, size=size, seed=args.seed)
        seconds = time.perf_counter() - start
        summary += [[name, key, value] for key, value in numbers.items()]
        summary.append([name, "wall time (s)", round(seconds, 1)])
    report.add(
        "Summary",
        f"Size `{size}`, seed {args.seed}. The headline number of each section:\n\n"
        + markdown_table(["section", "quantity", "value"], summary),
    )
    report.sections.insert(0, report.sections.pop())  # the summary first
    return report
