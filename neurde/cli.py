"""The `neurde` command: `neurde run NAME [--quick] [--full] [--seed N] [--out DIR]`.

Compilation is cached on disk between runs (JAX's persistent compilation cache). JAX does not
cache programs that contain host callbacks, and Equinox's run-time checks (`eqx.error_if`)
are host callbacks unless `EQX_ON_ERROR=nan` is set before Equinox is imported. So, by
default, `neurde run` re-launches itself once with `EQX_ON_ERROR=nan`: a failed solve then
shows up as a NaN loss, which `fit` reports with the step it happened at. `--checks` keeps
Equinox's run-time error messages instead, at the cost of recompiling every run.
"""

import argparse
import os
import pathlib
import sys
import time

CACHE_ENV = "NEURDE_CACHE_DIR"


def _default_cache_dir() -> pathlib.Path:
    base = os.environ.get("XDG_CACHE_HOME", str(pathlib.Path.home() / ".cache"))
    return pathlib.Path(os.environ.get(CACHE_ENV, pathlib.Path(base) / "neurde" / "jax"))


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; `neurde run --help` lists every experiment."""
    from .experiments import EXPERIMENTS

    parser = argparse.ArgumentParser(
        prog="neurde",
        description="neurde: neural ordinary and stochastic differential equations in JAX.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("list", help="list the experiments")
    run = commands.add_parser(
        "run",
        help="run an experiment and write a Markdown report with PNG figures",
        description="Experiments:\n"
        + "\n".join(f"  {name:14s} {m.DESCRIPTION}" for name, m in EXPERIMENTS.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    names = run.add_subparsers(dest="name", required=True, metavar="NAME")
    for name, module in EXPERIMENTS.items():
        sub = names.add_parser(name, help=module.DESCRIPTION, description=module.DESCRIPTION)
        size = sub.add_mutually_exclusive_group()
        size.add_argument("--quick", action="store_true", help="the quick setting (default)")
        size.add_argument("--full", action="store_true", help="the documented large setting")
        sub.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
        sub.add_argument(
            "--out", type=pathlib.Path, default=None, help="output folder (default runs/NAME)"
        )
        sub.add_argument(
            "--checks",
            action="store_true",
            help="keep Equinox run-time error checks (disables the compilation cache)",
        )
        sub.add_argument("--no-cache", action="store_true", help="no persistent compile cache")
        sub.add_argument("--no-progress", action="store_true", help="no progress bar")
        module.add_arguments(sub)
    return parser


def _relaunch_with_cacheable_checks(argv: list[str]) -> None:
    """Re-run this command with EQX_ON_ERROR=nan so its compiled programs can be cached."""
    if "run" not in argv or "--checks" in argv or "--no-cache" in argv:
        return
    if "-h" in argv or "--help" in argv or "EQX_ON_ERROR" in os.environ:
        return
    env = dict(os.environ, EQX_ON_ERROR="nan")
    os.execve(sys.executable, [sys.executable, "-m", "neurde", *argv], env)


def _enable_compilation_cache() -> pathlib.Path:
    import jax

    path = _default_cache_dir()
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
    return path


def _host_devices(devices: int | None) -> None:
    """`--devices N` on a CPU: N host devices, set before JAX's backend starts. (GPUs and
    TPUs are real devices; this setting only concerns the CPU backend.)"""
    if devices is None or devices <= 1:
        return
    import jax

    try:
        jax.config.update("jax_num_cpu_devices", devices)
    except RuntimeError:  # the backend already started (e.g. `main` called in a program)
        pass


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `neurde` command. Returns the exit status."""
    if argv is None:
        argv = sys.argv[1:]
        _relaunch_with_cacheable_checks(argv)
    args = build_parser().parse_args(argv)
    from .experiments import EXPERIMENTS

    if args.command == "list":
        for name, module in EXPERIMENTS.items():
            print(f"{name:14s} {module.DESCRIPTION}")
        return 0
    if args.out is None:
        args.out = pathlib.Path("runs") / args.name
    _host_devices(getattr(args, "devices", None))
    if not args.no_cache:
        cache = _enable_compilation_cache()
        print(f"neurde: compilation cache at {cache}", file=sys.stderr)
    checks = os.environ.get("EQX_ON_ERROR", "raise")
    print(f"neurde: run-time checks EQX_ON_ERROR={checks}", file=sys.stderr)
    start = time.perf_counter()
    report = EXPERIMENTS[args.name].run(args)
    report.add(
        "Run",
        f"Command: `neurde {' '.join(argv)}`; wall time {time.perf_counter() - start:.1f} s; "
        f"EQX_ON_ERROR={checks}; compilation cache "
        f"{'off' if args.no_cache else 'on'}.",
    )
    path = report.write()
    print(f"neurde: wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
