"""The report every experiment writes: one Markdown file plus PNG figures in one folder."""

import argparse
import dataclasses
import datetime
import pathlib
import platform
from collections.abc import Callable, Sequence
from typing import Any

import jax

from .._version import __version__


def config_from_args(
    config: Any,
    args: argparse.Namespace,
    values: Sequence[str] = (),
    lists: Sequence[str] = (),
    derived: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> Any:
    """An experiment's configuration for its command-line arguments.

    `--seed`, then every flag in `values` (a number or name) and `lists` (`nargs="+"`, stored
    as a tuple) that was given, override the quick defaults, or with `--full` the full ones
    (`config.full(**overrides)`). `derived` adds settings that follow from the overrides.
    """
    overrides: dict[str, Any] = {"seed": args.seed}
    overrides |= {n: getattr(args, n) for n in values if getattr(args, n, None) is not None}
    overrides |= {n: tuple(getattr(args, n)) for n in lists if getattr(args, n, None)}
    if derived is not None:
        overrides |= derived(overrides)
    return config.full(**overrides) if args.full else config(**overrides)


def pyplot() -> Any:
    """`matplotlib.pyplot` with the file-only Agg backend, imported when a figure is drawn (so
    importing an experiment does not import matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    """A GitHub-flavoured Markdown table; floats get 4 significant digits."""

    def cell(x: Any) -> str:
        return f"{x:.4g}" if isinstance(x, float) else str(x)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(x) for x in row) + " |" for row in rows]
    return "\n".join(lines)


@dataclasses.dataclass
class Report:
    """Collects sections and figures, then writes `report.md` and the PNGs to `out`."""

    title: str
    out: pathlib.Path
    sections: list[str] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        self.out = pathlib.Path(self.out)
        self.out.mkdir(parents=True, exist_ok=True)

    def add(self, heading: str, body: str) -> None:
        """Append a `## heading` section."""
        self.sections.append(f"## {heading}\n\n{body.strip()}\n")

    def add_settings(self, config: Any, note: str = "") -> None:
        """Append the `## Settings` section: every field of the configuration, then `note`."""
        rows = [[k, v] for k, v in vars(config).items()]
        self.add("Settings", markdown_table(["setting", "value"], rows) + note)

    def add_figure(self, fig: Any, name: str, caption: str) -> pathlib.Path:
        """Save a matplotlib figure as `name.png` and reference it from the report."""
        path = self.out / f"{name}.png"
        fig.savefig(path, dpi=120, bbox_inches="tight")
        self.sections.append(f"![{caption}]({path.name})\n\n*{caption}*\n")
        return path

    def write(self) -> pathlib.Path:
        """Write `report.md` with a footer naming the versions and the machine."""
        footer = (
            f"neurde {__version__}, jax {jax.__version__} on {jax.default_backend()} "
            f"({platform.machine()}, {platform.python_version()}), "
            f"{datetime.datetime.now().isoformat(timespec='seconds')}"
        )
        text = f"# {self.title}\n\n" + "\n".join(self.sections) + f"\n---\n{footer}\n"
        path = self.out / "report.md"
        path.write_text(text)
        return path
