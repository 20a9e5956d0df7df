"""``make resilience``: every scenario of issues 12 and 21 on fresh stand-ins, then
docs/reliability.md.

``python -m resilience [--short] [--out PATH]``. The full run takes a few minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from neon_local.standin import StandInState, running

from . import scenarios, workers
from .load import Figures
from .report import write_report

Run = Callable[[StandInState, scenarios.Stack, scenarios.Sizes], Figures]


def plan(sizes: scenarios.Sizes) -> list[tuple[str, Run]]:
    return [
        ("cold start", scenarios.cold_start),
        ("suspend", scenarios.suspend),
        ("pooler restart", scenarios.pooler_restart),
        ("server restart (fast)", lambda s, k, z: scenarios.server_restart(s, k, z, mode="fast")),
        (
            "server restart (immediate)",
            lambda s, k, z: scenarios.server_restart(s, k, z, mode="immediate"),
        ),
        ("pool exhaustion", scenarios.pool_exhaustion),
        ("migrations (Alembic)", scenarios.migrations),
        ("migrations (Django)", scenarios.django_migrations),
    ]


def run_all(
    sizes: scenarios.Sizes, *, log: Callable[[str], None]
) -> tuple[list[Figures], list[workers.WorkerFigures]]:
    results: list[Figures] = []
    rows: list[workers.WorkerFigures] = []
    with running(proxy=False) as state:
        scenarios.prepare(state)
        with scenarios.serving(state), scenarios.serving(state, "gunicorn"):
            for stack in scenarios.STACKS + scenarios.SERVED:
                for name, scenario in plan(sizes):
                    started = time.monotonic()
                    result = scenario(state, stack, sizes)
                    results.append(result)
                    log(f"{stack:17} {name:28} {time.monotonic() - started:5.1f}s  {_line(result)}")
    for result in scenarios.crowd(sizes, "sqlalchemy-sync"):
        results.append(result)
        log(f"{'sqlalchemy-sync':17} {result.scenario:28}         {_line(result)}")
    with running(
        pool_size=3, max_connections=20, proxy=False
    ) as state:  # workers: a stand-in of their own
        for row in workers.run_all(state, ticks=sizes.worker_ticks):
            rows.append(row)
            log(
                f"{row.worker:28} {'by hand ' if row.by_hand else ''}{row.fault:22} ticks "
                f"{row.ticks}, errors {row.errors}, running {row.running}, tasks once "
                f"{row.tasks_once}{' PROBLEM ' + str(row.problems) if row.problems else ''}"
            )
    return results, rows


def _line(f: Figures) -> str:
    return (
        f"acked {f.acked}, connect errors {f.connect_errors}, tx errors {f.tx_errors}, "
        f"unknown {f.commit_unknown}, lost {f.lost}, doubled {f.doubled}, "
        f"recovery {f.recovery_s}s{' PROBLEM ' + str(f.problems) if f.problems else ''}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m resilience", description=__doc__)
    parser.add_argument("--short", action="store_true", help="the shortened set (as in CI)")
    parser.add_argument("--out", default="docs/reliability.md", help="where to write the report")
    args = parser.parse_args(argv)
    logging.getLogger("neon_connect").setLevel(logging.ERROR)  # retries are counted, not logged
    sizes = scenarios.SHORT if args.short else scenarios.FULL
    began = datetime.now(timezone.utc)
    started = time.monotonic()
    results, rows = run_all(sizes, log=lambda line: print(line, file=sys.stderr, flush=True))
    elapsed = time.monotonic() - started
    write_report(
        Path(args.out),
        results,
        rows,
        sizes=sizes,
        began=began,
        elapsed=elapsed,
        machine=f"{os.cpu_count()} CPU, {_memory()}, {platform.system()} {platform.release()}",
    )
    print(f"wrote {args.out} ({elapsed:.0f}s)", file=sys.stderr)
    return 0 if all(r.ok for r in results) and not any(r.problems for r in rows) else 1


def _memory() -> str:
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return "memory unknown"
    return f"{kib / 1024 / 1024:.0f} GiB RAM"


if __name__ == "__main__":
    sys.exit(main())
