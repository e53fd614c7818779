"""Shared helpers of the benchmark scripts: interleaved timing and the report lines.

The host these run on is shared and noisy, so every comparison times its candidates side by
side in one process, alternating A, B, A, B, ... and comparing medians: a slow spell hits
both candidates alike and the ratio survives it, where an absolute time would not.
"""

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax


def parse_args(description: str) -> argparse.Namespace:
    """The `--quick` flag every benchmark takes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--quick", action="store_true", help="smaller sizes and fewer repeats (< ~60 s)"
    )
    return parser.parse_args()


def interleaved_times(
    fns: dict[str, Callable[[], Any]],
    repeats: int,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, list[float]]:
    """Seconds of each call of each (already compiled) function, timed in alternation; by
    the wall clock, or e.g. `time.process_time` (the CPU time of all the process's threads)."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = clock()
            jax.block_until_ready(fn())
            times[name].append(clock() - start)
    return times


def median_ratio(times: dict[str, list[float]], name: str, baseline: str) -> float:
    """Median time of `name` over median time of `baseline`."""
    return statistics.median(times[name]) / statistics.median(times[baseline])


def print_table(title: str, times: dict[str, list[float]], baseline: str) -> None:
    """One row per candidate: median and fastest milliseconds, and the ratio of medians."""
    print(f"\n{title}")
    print(f"  {'candidate':<44} {'median ms':>10} {'min ms':>9} {'ratio':>7}")
    for name, ts in times.items():
        med, fastest = 1e3 * statistics.median(ts), 1e3 * min(ts)
        ratio = median_ratio(times, name, baseline)
        print(f"  {name:<44} {med:>10.2f} {fastest:>9.2f} {ratio:>7.2f}")


def ratio_line(name: str, value: float, target: str) -> str:
    """The machine-readable last lines: `RATIO name = 1.03 (target <= 1.05)`."""
    return f"RATIO {name} = {value:.2f} (target {target})"
