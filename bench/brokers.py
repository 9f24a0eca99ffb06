"""One broker or two, same workers and load: throughput and CPU per round trip.

Two topologies, all processes started once and kept running, loaded in
turn (ABAB rounds):

* ``1 broker``: one broker process; ``--workers`` raw echo workers
  (``raw_worker.py``) connected to it;
* ``2 brokers``: two broker processes sharing nothing; as many raw echo
  workers, each connected to both (one conversation per broker, as
  ``mdp_zmq.Worker([a, b], ...)`` holds).

Each measurement starts ``--clients`` load generators (``raw_client.py``,
one process each, ``--window`` requests in flight on one DEALER) that
begin together and run ``--seconds``; with two brokers, client ``i`` goes
to broker ``i % 2`` (clients spread over the brokers). Measured per
measurement: round trips/s (the clients' replies over their own time),
and CPU time per round trip (user + system, from ``/proc/<pid>/stat``) of
the brokers together, of the workers and of the clients. The brokers' CPU
per round trip is what a broker core costs per request: a core serves
about ``1e6 / (broker CPU us/rt)`` round trips/s when the brokers, not
the machine, are the limit.

Reported: medians over rounds, and the median of the per-round ratios
``2 brokers / 1 broker``. On a machine with fewer cores than processes
that ratio is capped by the machine, not the brokers; the CPU per round
trip is the figure that extrapolates.

Run: ``python bench/brokers.py`` (see ``--help``).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from _common import PY, Procs, fmt_num, md_table, med, read_line, save_json, wait_line

CLK_TCK = os.sysconf("SC_CLK_TCK")
TOPOLOGIES = ("1 broker", "2 brokers")
#: How long the clients get to start, connect and probe before they start together.
LEAD = 2.5


def cpu_seconds(pid: int) -> float:
    """utime + stime of process ``pid`` in seconds (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


@dataclass
class Topology:
    """Brokers and workers of one topology, and its measurements."""

    name: str
    endpoints: list[str]
    broker_pids: list[int]
    worker_pids: list[int] = field(default_factory=list)
    runs: list[dict[str, float]] = field(default_factory=list)


def start_broker(procs: Procs, driver: str) -> tuple[str, int]:
    """A broker process of ``driver`` on a free port: its endpoint and pid."""
    if driver == "zmq":
        argv = [PY, "-m", "mdp_zmq", "broker", "--bind", "tcp://127.0.0.1:*"]
    else:
        argv = [PY, "-m", "mdp_zmq", "broker", "--driver", driver, "--bind",
                "tcp://127.0.0.1:*"]
    b = procs.start(argv, stdout=True)
    assert b.stdout is not None
    endpoint = wait_line(b.stdout, "mdp broker listening on ", 15).split()[-1]
    return endpoint, b.pid


def start(procs: Procs, name: str, driver: str, workers: int) -> Topology:
    """Start topology ``name``'s brokers and workers (every worker on every broker)."""
    brokers = [start_broker(procs, driver) for _ in range(1 if name == "1 broker" else 2)]
    t = Topology(name, [ep for ep, _ in brokers], [pid for _, pid in brokers])
    for _ in range(workers):
        w = procs.start([PY, "bench/raw_worker.py", *t.endpoints], stdout=True)
        assert w.stdout is not None
        wait_line(w.stdout, "ready", 15)
        t.worker_pids.append(w.pid)
    return t


def measure(procs: Procs, t: Topology, clients: int, window: int, seconds: float
            ) -> dict[str, float]:
    """One measurement of ``t``: round trips/s and CPU us per round trip."""
    start_at = time.time() + LEAD
    started = []
    for i in range(clients):
        c = procs.start([PY, "bench/raw_client.py", t.endpoints[i % len(t.endpoints)],
                         "--window", str(window), "--seconds", str(seconds),
                         "--start-at", f"{start_at:.6f}"], stdout=True)
        started.append(c)
    for c in started:
        assert c.stdout is not None
        wait_line(c.stdout, "ready", LEAD + 15)
    time.sleep(max(0.0, start_at - time.time()))
    before = {pid: cpu_seconds(pid) for pid in (*t.broker_pids, *t.worker_pids)}
    reports = []
    for c in started:
        assert c.stdout is not None
        line = read_line(c.stdout, seconds + 30)
        if line is None:
            raise RuntimeError(f"{t.name}: a client gave no result")
        reports.append(json.loads(line))
        procs.kill(c)
    used = {pid: cpu_seconds(pid) - cpu for pid, cpu in before.items()}
    if any(r["late"] for r in reports):
        print(f"warning: {t.name}: a client was ready after the start (the machine is busy)")
    rps = sum(r["replies"] / r["seconds"] for r in reports)
    n = sum(r["replies"] for r in reports)
    wall = max(r["seconds"] for r in reports)
    broker_cpu = sum(used[pid] for pid in t.broker_pids)
    return {
        "rps": rps,
        "replies": n,
        "broker_cpu_us": 1e6 * broker_cpu / n,
        "worker_cpu_us": 1e6 * sum(used[pid] for pid in t.worker_pids) / n,
        "client_cpu_us": 1e6 * sum(r["cpu"] for r in reports) / n,
        "broker_busy": broker_cpu / wall / len(t.broker_pids),  # share of a core, per broker
    }


def main(argv: list[str] | None = None) -> dict[str, object]:
    """Measure and print; return the results."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--driver", choices=["zmq", "trio", "asyncio", "gevent"], default="zmq",
                   help="the brokers' driver [zmq]")
    p.add_argument("--workers", type=int, default=6, help="raw echo workers, in all [6]")
    p.add_argument("--clients", type=int, default=4, help="load generator processes [4]")
    p.add_argument("--window", type=int, default=25, help="requests in flight per client [25]")
    p.add_argument("--seconds", type=float, default=2.0, help="per measurement [2.0]")
    p.add_argument("--rounds", type=int, default=5, help="ABAB rounds [5]")
    p.add_argument("--json", help="write the results as JSON here")
    a = p.parse_args(argv)

    with Procs() as procs:
        topologies = [start(procs, name, a.driver, a.workers) for name in TOPOLOGIES]
        for r in range(a.rounds):
            for t in topologies:
                t.runs.append(measure(procs, t, a.clients, a.window, a.seconds))
            print(f"round {r + 1}/{a.rounds} done", flush=True)
    keys = ("rps", "broker_cpu_us", "worker_cpu_us", "client_cpu_us", "broker_busy")
    summary = {t.name: {k: med([run[k] for run in t.runs]) for k in keys} for t in topologies}
    one, two = topologies
    ratio = med([b["rps"] / a_["rps"] for a_, b in zip(one.runs, two.runs, strict=True)])
    rows = [[t.name, fmt_num(summary[t.name]["rps"]),
             f"{summary[t.name]['broker_cpu_us']:.1f}", f"{summary[t.name]['worker_cpu_us']:.1f}",
             f"{summary[t.name]['client_cpu_us']:.1f}",
             f"{100 * summary[t.name]['broker_busy']:.0f}%",
             fmt_num(1e6 / summary[t.name]["broker_cpu_us"])] for t in topologies]
    print(f"\n{a.driver} brokers, {a.workers} workers, {a.clients} clients x {a.window} in "
          f"flight ({a.rounds} rounds x {a.seconds:g}s; medians)")
    print(md_table(["topology", "round trips/s", "broker CPU us/rt", "worker CPU us/rt",
                    "client CPU us/rt", "busy per broker", "rt/s per broker core"], rows))
    print(f"2 brokers / 1 broker: {ratio:.2f} x round trips/s (median of per-round ratios)")
    result: dict[str, object] = {"params": vars(a), "summary": summary, "ratio": ratio,
                                 "runs": {t.name: t.runs for t in topologies}}
    save_json(a.json, {"brokers": result})
    return result


if __name__ == "__main__":
    main()
