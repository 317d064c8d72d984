"""The machine's load, recorded with every figure the benchmarks print.

A benchmark on a machine that other work shares measures the other work too: on 2 cores, a
second busy process halves what processes (curl) can use and leaves threads looking better
than they are. So every harness here records the load average (1, 5 and 15 minutes) at its
start, before and after each measured case, and at its end; prints it with every table; and
warns loudly when the machine is not idle. ``--require-idle`` refuses to measure instead.

"Idle" is a 1-minute load average at most ``IDLE_FRACTION`` of the cores (1.0 on 2 cores): a
load the benchmark's own last run can leave behind for a minute, but not a build or a test
suite running beside it. The 1-minute figure lags (it is an exponential average), which is
why it is taken before and after every case rather than once. With ``--require-idle`` a busy
reading is given ``SETTLE_SECONDS`` to fall before the harness refuses: the load its own
last case left (four curl processes and the servers) decays below the line in under a
minute once nothing runs, while other work's does not.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass

IDLE_FRACTION = 0.5
SETTLE_SECONDS = 120.0


@dataclass(frozen=True)
class Load:
    """``/proc/loadavg``'s three averages, and the cores they are shared between."""

    one: float
    five: float
    fifteen: float
    cores: int

    @classmethod
    def now(cls) -> Load:
        one, five, fifteen = os.getloadavg()
        return cls(one, five, fifteen, os.cpu_count() or 1)

    @property
    def idle(self) -> bool:
        return self.one <= IDLE_FRACTION * self.cores

    def __str__(self) -> str:
        return f"{self.one:.2f} {self.five:.2f} {self.fifteen:.2f}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--require-idle",
        action="store_true",
        help=f"refuse to run unless the 1-minute load average is at most {IDLE_FRACTION:g} x "
        "the cores (figures for the README)",
    )


def check(require_idle: bool, what: str = "the benchmark") -> Load:
    """The load now; a loud warning on stderr when the machine is busy, or an exit with
    ``require_idle``."""
    load = Load.now()
    if require_idle and not load.idle:
        print(f"{what}: waiting for the load ({load}) to settle...", file=sys.stderr, flush=True)
        give_up = time.monotonic() + SETTLE_SECONDS
        while not load.idle and time.monotonic() < give_up:
            time.sleep(5)
            load = Load.now()
    if load.idle:
        return load
    message = (
        f"the machine is NOT idle: load average {load} on {load.cores} cores (idle means a "
        f"1-minute load of at most {IDLE_FRACTION * load.cores:g}). Other work shares the "
        "CPUs, so the figures are not an idle machine's; ratios between contenders run in "
        "alternation are steadier than absolute rates, but processes suffer more than threads."
    )
    if require_idle:
        raise SystemExit(f"{what}: refusing to run (--require-idle): {message}")
    bar = "!" * 78
    print(f"{bar}\nWARNING: {message}\n{bar}", file=sys.stderr, flush=True)
    return load


def span(before: Load, after: Load) -> str:
    """``1.20 -> 2.31``: the 1-minute load before and after a measurement."""
    return f"{before.one:.2f} -> {after.one:.2f}"
