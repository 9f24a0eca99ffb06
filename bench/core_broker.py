"""Throughput and memory of the sans-IO cores (no sockets, one process, one core).

* **Broker**: round trips/s through ``mdp_core.Broker``. One round trip = a
  client REQUEST in + the worker's FINAL in, with ``outgoing()`` and
  ``events()`` drained after each message, as a driver would. The clock
  advances 10 us per message and ``tick`` runs whenever ``next_deadline()``
  passes, so heartbeats to idle workers are included. Workers are spread
  round-robin over the services; requests go to the services in turn, so
  with LRU dispatch every worker is used (no cache-friendly shortcut).
* **Worker** core: requests/s through ``mdp_core.Worker`` (REQUEST in,
  ``RequestReceived`` out, ``reply``, FINAL out).
* **Client** core: requests/s through ``mdp_core.Client`` (``request``,
  REQUEST out, FINAL in, ``FinalReply`` out).
* **Memory** (tracemalloc): bytes the broker core holds per idle worker and
  per queued request (the received frames themselves are not counted).

Every configuration is measured once per round, all configurations in
turn (ABAB), and the median over rounds is reported.

Run: ``python bench/core_broker.py`` (all), or with worker counts,
e.g. ``python bench/core_broker.py 2 1000 10000``. See ``--help``.
"""

from __future__ import annotations

import argparse
import gc
import time
import tracemalloc
from collections.abc import Callable

from _common import fmt_num, md_table, med, pyplot, save_json

from mdp_core import Broker, BrokerConfig, Client, Worker

REQ_BODY = b"hello"
CHUNK = 2_000  # rounds between clock reads


def broker_round_trips(workers: int, services: int, seconds: float) -> float:
    """Round trips/s through a Broker core with ``workers`` over ``services``."""
    b = Broker(BrokerConfig())
    now = 0.0
    names = [b"svc-%d" % i for i in range(services)]
    for i in range(workers):
        b.receive(b"w%d" % i, [b"MDPW02", b"\x01", names[i % services]], now)
    b.outgoing()
    b.events()
    used = names[: min(services, workers)]
    requests = [[b"MDPC02", b"\x01", name, REQ_BODY] for name in used]
    nreq = len(requests)
    client = b"client"
    deadline = b.next_deadline()
    receive, outgoing, events = b.receive, b.outgoing, b.events
    done = 0
    k = 0
    gc.collect()
    start = time.perf_counter()
    stop = start + seconds
    while True:
        for _ in range(CHUNK):
            receive(client, requests[k], now)
            k += 1
            if k == nreq:
                k = 0
            out = outgoing()
            events()
            worker = out[-1][0]
            now += 1e-5
            receive(worker, [b"MDPW02", b"\x04", client, b"", REQ_BODY], now)
            outgoing()
            events()
            now += 1e-5
            if deadline is not None and now >= deadline:
                b.tick(now)
                outgoing()
                events()
                deadline = b.next_deadline()
        done += CHUNK
        t = time.perf_counter()
        if t >= stop:
            return done / (t - start)


def worker_requests(seconds: float) -> float:
    """Requests/s through a Worker core (REQUEST in, FINAL out)."""
    w = Worker(b"echo")
    now = 0.0
    w.connect(now)
    w.outgoing()
    request = [b"MDPW02", b"\x02", b"client", b"", REQ_BODY]
    deadline = w.next_deadline()
    done = 0
    gc.collect()
    start = time.perf_counter()
    stop = start + seconds
    while True:
        for _ in range(CHUNK):
            w.receive(request, now)
            ev = w.events()[-1]
            now += 1e-5
            w.reply(ev, ev.body, now)  # type: ignore[attr-defined]
            w.outgoing()
            now += 1e-5
            if deadline is not None and now >= deadline:
                w.tick(now)
                w.outgoing()
                w.events()
                deadline = w.next_deadline()
        done += CHUNK
        t = time.perf_counter()
        if t >= stop:
            return done / (t - start)


def client_requests(seconds: float) -> float:
    """Requests/s through a Client core (request out, FINAL in, FinalReply out)."""
    c = Client()
    now = 0.0
    reply = [b"MDPC02", b"\x03", b"echo", REQ_BODY]
    done = 0
    gc.collect()
    start = time.perf_counter()
    stop = start + seconds
    while True:
        for _ in range(CHUNK):
            c.request(b"echo", REQ_BODY, now)
            c.outgoing()
            now += 1e-5
            c.receive(reply, now)
            c.events()
            now += 1e-5
        done += CHUNK
        t = time.perf_counter()
        if t >= stop:
            return done / (t - start)


def _traced(setup: Callable[[], object], build: Callable[[object], None]) -> int:
    """Bytes still allocated after ``build(state)`` beyond what ``setup()`` left."""
    gc.collect()
    tracemalloc.start()
    try:
        state = setup()
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        build(state)
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    return after - before


def memory(n: int) -> dict[str, float]:
    """Bytes per idle worker and per queued request in a Broker core."""
    ready = [[b"MDPW02", b"\x01", b"echo"] for _ in range(n)]
    wids = [b"worker-%08d" % i for i in range(n)]
    request = [b"MDPC02", b"\x01", b"echo", REQ_BODY]
    cids = [b"client-%08d" % i for i in range(n)]

    def make() -> object:
        b = Broker(BrokerConfig(max_queue=n + 1))
        # A service record exists in both cases; measure only what grows.
        b.receive(b"first", [b"MDPC02", b"\x01", b"echo", REQ_BODY], 0.0)
        b.outgoing()
        b.events()
        return b

    def add_workers(b: object) -> None:
        assert isinstance(b, Broker)
        b.connection_lost(b"first", 0.0)  # leave the service, drop the request
        b.receive(b"w-keep", ready[0], 0.0)  # keep the service alive
        b.outgoing()
        b.events()
        for wid, frames in zip(wids, ready, strict=False):
            b.receive(wid, frames, 0.0)
            b.outgoing()
            b.events()

    def add_requests(b: object) -> None:
        assert isinstance(b, Broker)
        for cid in cids:
            b.receive(cid, request, 0.0)
            b.outgoing()
            b.events()

    per_worker = _traced(make, add_workers) / n
    per_request = _traced(make, add_requests) / n
    return {"bytes_per_idle_worker": per_worker, "bytes_per_queued_request": per_request, "n": n}


def chart(path: str, counts: list[int], table: dict[str, float], services: list[int]) -> None:
    """Core round trips/s vs number of workers, one line per service count."""
    plt = pyplot()
    if plt is None:
        return
    fig, ax = plt.subplots(figsize=(7, 4))
    for s in services:
        xs = [w for w in counts if w >= s]
        ys = [table[f"{w}w/{s}s"] for w in xs]
        ax.plot(xs, ys, marker="o", label=f"{s} service{'s' if s > 1 else ''}")
    ax.axhline(100_000, color="grey", ls="--", lw=1, label="target 100k/s")
    ax.set_xscale("log")
    ax.set_ylim(bottom=0)
    ax.set_xlabel("registered workers")
    ax.set_ylabel("broker round trips/s (median)")
    ax.set_title("mdp_core.Broker: round trips/s vs workers (no sockets, one core)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"chart written to {path}")


def main(argv: list[str] | None = None) -> dict[str, object]:
    """Measure and print; return the results."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("workers", nargs="*", type=int, default=[2, 1000, 10_000],
                   help="worker counts [2 1000 10000]")
    p.add_argument("--services", type=int, nargs="+", default=[1, 1000],
                   help="service counts [1 1000] (only with at least as many workers)")
    p.add_argument("--seconds", type=float, default=1.0, help="per measurement [1.0]")
    p.add_argument("--rounds", type=int, default=5, help="ABAB rounds [5]")
    p.add_argument("--mem-n", type=int, default=10_000,
                   help="workers / requests for the memory figures [10000]")
    p.add_argument("--json", help="write the results as JSON here")
    p.add_argument("--chart", help="write the throughput-vs-workers PNG here")
    a = p.parse_args(argv)

    configs = [(w, s) for s in a.services for w in a.workers if w >= s]
    contenders: dict[str, Callable[[], float]] = {
        f"{w}w/{s}s": (lambda w=w, s=s: broker_round_trips(w, s, a.seconds)) for w, s in configs
    }
    contenders["worker core"] = lambda: worker_requests(a.seconds)
    contenders["client core"] = lambda: client_requests(a.seconds)
    samples: dict[str, list[float]] = {k: [] for k in contenders}
    for r in range(a.rounds):
        for name, fn in contenders.items():
            samples[name].append(fn())
        print(f"round {r + 1}/{a.rounds} done", flush=True)
    medians = {k: med(v) for k, v in samples.items()}

    rows = []
    for w, s in configs:
        k = f"{w}w/{s}s"
        rows.append([f"Broker, {w:,} workers, {s:,} service(s)", fmt_num(medians[k]),
                     f"{fmt_num(min(samples[k]))} - {fmt_num(max(samples[k]))}"])
    for k, what in (("worker core", "Worker core (requests/s)"),
                    ("client core", "Client core (requests/s)")):
        rows.append([what, fmt_num(medians[k]),
                     f"{fmt_num(min(samples[k]))} - {fmt_num(max(samples[k]))}"])
    print()
    print(md_table(["core", "median /s", "range over rounds"], rows))

    # Flatness: slowest / fastest worker count for one service count, taken
    # within each round (rounds see different machine load), median over rounds.
    flatness: dict[str, float] = {}
    for s in a.services:
        keys = [f"{w}w/{s}s" for w, s2 in configs if s2 == s]
        if len(keys) > 1:
            per_round = [min(samples[k][r] for k in keys) / max(samples[k][r] for k in keys)
                         for r in range(a.rounds)]
            flatness[f"{s} service(s)"] = med(per_round)
    broker_keys = [f"{w}w/{s}s" for w, s in configs]
    lo = min(medians[k] for k in broker_keys)
    flat = min(flatness.values()) if flatness else 1.0
    print()
    for what, f in flatness.items():
        print(f"flatness, {what}: slowest/fastest worker count = {f:.2f} (median of per-round "
              "ratios; flat within 20% if >= 0.80)")
    print(f"slowest configuration: {fmt_num(lo)} round trips/s (target >= 100,000)")
    mem = memory(a.mem_n)
    print(f"memory: {mem['bytes_per_idle_worker']:.0f} bytes per idle worker, "
          f"{mem['bytes_per_queued_request']:.0f} bytes per queued request "
          f"(n={a.mem_n:,}, tracemalloc)")
    result: dict[str, object] = {
        "params": vars(a), "samples": samples, "medians": medians,
        "broker_slowest": lo, "flatness": flatness, "memory": mem,
        "target_met": bool(lo >= 100_000 and flat >= 0.8),
    }
    save_json(a.json, {"core": result})
    if a.chart:
        chart(a.chart, sorted(set(a.workers)), medians, a.services)
    return result


if __name__ == "__main__":
    main()
