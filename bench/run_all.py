"""Run every benchmark in one go (``tox -e bench``); see docs/performance.md.

Writes the JSON results to ``bench/results/`` and the PNG charts to
``docs/`` (unless ``--no-charts``), and prints each script's tables and
its met/missed verdicts. ``--quick`` shortens every script (for a look,
not for the report).

Run: ``python bench/run_all.py [--quick] [--only core e2e recovery brokers]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import brokers
import core_broker
import e2e
import recovery
from _common import ROOT, machine

RESULTS = ROOT / "bench" / "results"
DOCS = ROOT / "docs"


def main(argv: list[str] | None = None) -> int:
    """Run the selected benchmarks; return 0."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="short runs (not for the report)")
    p.add_argument("--only", nargs="+", choices=["core", "e2e", "recovery", "brokers"],
                   default=["core", "e2e", "recovery", "brokers"])
    p.add_argument("--kills", type=int, default=50, help="recovery: kills of our workers [50]")
    p.add_argument("--no-charts", action="store_true", help="do not write docs/*.png")
    p.add_argument("--results", default=str(RESULTS), help="directory for the JSON results")
    a = p.parse_args(argv)
    out = Path(a.results)
    m = machine()
    print("machine: " + ", ".join(f"{k}={v}" for k, v in m.items()), flush=True)
    started = time.monotonic()

    def chart(name: str) -> list[str]:
        return [] if a.no_charts else ["--chart", str(DOCS / name)]

    if "core" in a.only:
        print("\n=== core (sans-IO, no sockets) ===", flush=True)
        quick = ["--seconds", "0.3", "--rounds", "2", "--mem-n", "2000"] if a.quick else []
        core_broker.main([*quick, "--json", str(out / "core.json"), *chart("perf_core.png")])
    if "e2e" in a.only:
        print("\n=== end to end, loopback tcp ===", flush=True)
        quick = ["--seconds", "0.5", "--rounds", "2"] if a.quick else []
        e2e.main([*quick, "--json", str(out / "e2e.json"), *chart("perf_e2e.png")])
        print("\n=== end to end, broker-bound (8 workers, 200 in flight) ===", flush=True)
        e2e.main([*quick, "--scenario", "broker-bound", "--contenders", "floor-lru",
                  "floor-lru-mdp", "mdp_zmq", "majortomo-quiet", "--json",
                  str(out / "e2e_broker_bound.json")])
        print("\n=== round trips/s against the number of workers ===", flush=True)
        counts = ["1", "8", "32"] if a.quick else ["1", "2", "8", "32", "128"]
        sweep_chart = [] if a.no_charts else ["--sweep-chart", str(DOCS / "perf_workers.png")]
        e2e.main([*quick[:2], "--rounds", "1" if a.quick else "3", "--sweep", *counts,
                  "--loaders", "4", "--json", str(out / "e2e_sweep.json"), *sweep_chart])
    if "recovery" in a.only:
        print("\n=== recovery after SIGKILL of a busy worker ===", flush=True)
        kills = ["--kills", "5", "--majortomo-kills", "2"] if a.quick else [
            "--kills", str(a.kills)]
        recovery.main([*kills, "--json", str(out / "recovery.json"),
                       *chart("perf_recovery.png")])
    if "brokers" in a.only:
        print("\n=== one broker or two, same workers and load ===", flush=True)
        quick = ["--seconds", "0.5", "--rounds", "2"] if a.quick else []
        brokers.main([*quick, "--json", str(out / "brokers.json")])
    print(f"\nall done in {time.monotonic() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
