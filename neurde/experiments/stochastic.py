"""`neurde run stochastic`: the stochastic-model family on the tasks their papers made them for.

One section per model, each on a generated or bundled task whose answer is known:

- `latent_sde`: a latent SDE (Li et al. 2020): the path KL integrated along the solve
  against the analytic KL of two Ornstein–Uhlenbeck path measures, and a fit to noisy OU
  paths whose prior's marginal mean and std are compared with the exact OU marginals;
- `sde_net`: SDE-Net (Kong et al. 2020) vs the same net without diffusion on digits:
  accuracy and out-of-distribution AUROC against uniform noise and permuted digits;
- `sde_gan`: an SDE-GAN (Kidger et al. 2021) on Ornstein–Uhlenbeck paths: the 1-D
  Wasserstein distance of the generated marginals to the data's at three times, trained
  against untrained.

`--quick` (the default) runs the three sections in a few minutes on a 2-core CPU (it is the
protocol of the slow acceptance tests); `--full` is sized for a GPU (not measured).
`--only` picks sections.
"""

import argparse

from .report import Report
from .sections import add_only_argument, run_sections

NAME = "stochastic"
DESCRIPTION = (
    "The stochastic family (latent SDE on OU paths, SDE-Net OOD detection on digits, SDE-GAN "
    "on OU marginals)."
)

# Section name -> the module (in this package) whose `section(report, size=, seed=)` runs it.
SECTIONS = {
    "latent_sde": "stochastic_latent_sde",
    "sde_net": "stochastic_sde_net",
    "sde_gan": "stochastic_sde_gan",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `neurde run stochastic`."""
    add_only_argument(parser, SECTIONS)


def run(args: argparse.Namespace) -> Report:
    """Run the chosen sections and write the report."""
    return run_sections(args, name=NAME, title="The stochastic-model family", sections=SECTIONS)
