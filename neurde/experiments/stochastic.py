"""`neurde run stochastic`: the stochastic-model family on the tasks their papers made them for.

One section per model, each on a generated or bundled task whose answer is known:

- `latent_sde`: a latent SDE (Li et al. 2020): the path KL integrated along the solve
  against the analytic KL of two Ornstein–Uhlenbeck path measures, and a fit to noisy OU
  paths whose prior's marginal mean and std are compared with the exact OU marginals;
- `sde_net`: SDE-Net (Kong et al. 2020) vs the same net without diffusion on digits:
  accuracy and out-of-distribution AUROC against uniform noise and permuted digits.

`--quick` (the default) runs both sections in a few minutes on a 2-core CPU (it is the
protocol of the slow acceptance tests); `--full` is sized for a GPU (not measured).
`--only` picks sections.
"""

import argparse
import importlib
import time
from typing import Any

from .report import Report, markdown_table

NAME = "stochastic"
DESCRIPTION = "The stochastic family (latent SDE on OU paths, SDE-Net OOD detection on digits)."

# Section name -> the module (in this package) whose `section(report, size=, seed=)` runs it.
SECTIONS = {
    "latent_sde": "stochastic_latent_sde",
    "sde_net": "stochastic_sde_net",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `neurde run stochastic`."""
    parser.add_argument(
        "--only", nargs="+", choices=list(SECTIONS), help="sections to run (default: all)"
    )


def run(args: argparse.Namespace) -> Report:
    """Run the chosen sections and write the report."""
    size = "full" if args.full else "quick"
    names = list(args.only or SECTIONS)
    report = Report("The stochastic-model family", args.out)
    summary: list[list[Any]] = []
    sections = []
    for name in names:
        sections.append((name, importlib.import_module(f".{SECTIONS[name]}", __package__)))
    for name, module in sections:
        print(f"stochastic: section {name} ({size})", flush=True)
        start = time.perf_counter()
        numbers = module.section(report, size=size, seed=args.seed)
        seconds = time.perf_counter() - start
        summary += [[name, key, value] for key, value in numbers.items()]
        summary.append([name, "wall time (s)", round(seconds, 1)])
    report.add(
        "Summary",
        f"Size `{size}`, seed {args.seed}. The headline numbers of each section:\n\n"
        + markdown_table(["section", "quantity", "value"], summary),
    )
    report.sections.insert(0, report.sections.pop())  # the summary first
    return report
