"""Experiments made of sections (`neurde run zoo`, `neurde run stochastic`): the shared runner.

Each section is a module of this package with `section(report, *, size, seed) -> dict` of its
headline numbers; the experiment runs the chosen ones (`--only`) at one size and puts a
summary table of every section's numbers and wall time first in the report.
"""

import argparse
import importlib
import time
from typing import Any

from .report import Report, markdown_table


def add_only_argument(parser: argparse.ArgumentParser, sections: dict[str, str]) -> None:
    """The `--only` flag choosing among `sections` (name -> module)."""
    parser.add_argument(
        "--only", nargs="+", choices=list(sections), help="sections to run (default: all)"
    )


def run_sections(
    args: argparse.Namespace, *, name: str, title: str, sections: dict[str, str]
) -> Report:
    """Run the sections `args.only` (default: all) of `sections` at size `--quick` (the
    default) or `--full`, and return the report, summary first."""
    size = "full" if args.full else "quick"
    report = Report(title, args.out)
    # Import every chosen section first, so a broken one fails before any training.
    modules = [
        (section, importlib.import_module(f".{sections[section]}", __package__))
        for section in list(args.only or sections)
    ]
    summary: list[list[Any]] = []
    for section, module in modules:
        print(f"{name}: section {section} ({size})", flush=True)
        start = time.perf_counter()
        numbers = module.section(report, size=size, seed=args.seed)
        seconds = time.perf_counter() - start
        summary += [[section, key, value] for key, value in numbers.items()]
        summary.append([section, "wall time (s)", round(seconds, 1)])
    report.add(
        "Summary",
        f"Size `{size}`, seed {args.seed}. The headline numbers of each section:\n\n"
        + markdown_table(["section", "quantity", "value"], summary),
    )
    report.sections.insert(0, report.sections.pop())  # the summary first
    return report


__all__ = ["add_only_argument", "run_sections"]
