"""End to end on loopback: brokers in their own process, raw echo workers.

Contenders (each a broker process, its ``raw_worker.py`` echo workers and
its load processes, all started once and kept running; only one is
loaded at a time):

* ``floor``: ``floor_broker.py``, a bare ROUTER loop with no protocol, which
  round-robins requests into the workers' queues (libzmq pipelines them);
* ``floor-lru``: ``floor_broker.py --lru``, the same loop with Majordomo's
  dispatch rule only (one request per worker at a time, a FIFO queue in the
  broker, LRU idle workers): the floor for any MDP broker when many
  requests are in flight;
* ``floor-lru-mdp``: ``floor_broker.py --mdp``, the ``floor-lru`` loop on
  MDP/0.2's frames (the workers and load generator speak MDP/0.2 to it):
  what the protocol's frames cost before any protocol work;
* ``mdp_zmq``: our blocking broker, ``python -m mdp_zmq broker`` (CLI defaults);
* ``mdp_async-trio``, ``mdp_async-asyncio``: our async broker
  (``bench/async_broker_proc.py``: ``anyio.run(mdp_async.Broker(...).serve)``
  on trio or asyncio, default settings);
* ``mdp_gevent``: our gevent broker (``bench/gevent_broker_proc.py``:
  ``mdp_gevent.Broker(...).serve()`` in the main greenlet, default settings);
* ``mdp_zmq-metrics`` (with ``--metrics``): the same with ``--metrics
  127.0.0.1:0`` (the core times every request, the collector counts every
  event; /metrics is scraped once per round, outside the timed runs), so
  the cost of metrics is the paired ratio of the two;
* ``majortomo``: ``python -m majortomo.broker`` with its CLI defaults (it
  logs one INFO line per reply to stderr, sent to /dev/null here);
* ``majortomo-quiet``: the same with logging at WARNING (``-c`` config file),
  so that its numbers are not just the cost of its logging;
* with ``--curve``, each of our brokers measured also runs a second time as
  ``<name>+curve``: CURVE on every socket (keys from ``mdp_zmq.glue.keygen``,
  the workers and the load generator on the allow-list), so the same run
  gives round trips/s with CURVE on and off.

The load generator speaks each contender's raw frames (MDP/0.2;
majortomo's dialect; bare body for the floor), every request tagged with
a sequence number that the reply echoes.

* ``sequential``: one request in flight, from one DEALER in this process;
  latency-bound.
* ``concurrent``: a window of ``--window`` requests in flight (a new request
  is sent as each reply arrives), split over ``--loaders`` load processes
  (``raw_client.py --commands``, one DEALER each, started together; by
  default one per core and at least one per 50 in flight; 0: one DEALER in
  this process, as before); broker-bound.

Scenarios (``--scenario``): ``classic`` (the default: 2 echo workers, 100
in flight, the setup of the first report, where every MDP broker waits on
MDP's one-request-per-worker rule) and ``broker-bound`` (8 echo workers,
200 in flight: enough workers that the broker itself is the limit);
``--workers``/``--window`` override either. Workers run ``--worker-procs``
to a process at most (``raw_worker.py --count``), so that 128 workers
do not need 128 processes.

Each round measures every contender in turn (ABAB), sequential first, then
concurrent. Reported: medians over rounds of round trips/s, p50 and p99
latency, the CPU time per round trip of the broker process (all threads,
from /proc/<pid>/stat), of the load generator and of the workers (so a
reader sees which had headroom), and the median of the per-round ratios
to the floors.

``--baseline DIR`` adds ``mdp_zmq@before``: the same broker from another
checkout (``git worktree add DIR REV``, or ``git archive REV | tar -x -C
DIR``), so a change is measured before/after in one interleaved run.

``--sweep 1 2 8 32 128`` measures instead the concurrent round trips/s of
every contender against the number of workers (``--window`` in flight, 200
by default), each worker count with fresh processes, and charts it
(``--sweep-chart``). Keep about 50 requests in flight per load process
at most (``--window`` <= 50 x ``--loaders``; the sweep in
docs/performance.md uses 4): our broker's ROUTER queues at most 100
replies per peer (``TransportConfig.sndhwm``, whose free room libzmq
learns up to 50 messages late) and ends the rest as
``RequestUndelivered``, by design, so a load process with more can wait
for replies that never come (it gives up after 10 s, and the run stops).

Run: ``python bench/e2e.py`` (see ``--help``); ``python bench/e2e.py
--scenario broker-bound``; ``python bench/e2e.py --curve --contenders
mdp_zmq mdp_async-trio`` for CURVE on vs off.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import zmq
import zmq.auth
from _common import (
    PY,
    Procs,
    fmt_num,
    md_table,
    med,
    pct,
    read_line,
    save_json,
    wait_line,
)
from _e2e_report import (
    ASYNC,
    BEFORE,
    CURVE,
    DRIVERS,
    METERED,
    chart,
    metrics_overhead,
    sweep_chart,
    targets,
)

C02 = b"MDPC02"
CONTENDERS = ["floor", "floor-lru", "floor-lru-mdp", "mdp_zmq", "mdp_async-trio",
              "mdp_async-asyncio", "mdp_gevent", "majortomo", "majortomo-quiet"]
SCENARIOS = {"classic": (2, 100), "broker-bound": (8, 200)}  # workers, window
QUIET_YAML = "logging: {handlers: {console: {level: WARNING}}, root: {level: WARNING}}\n"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of process ``pid`` in seconds (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


@dataclass
class Keys:
    """CURVE key files for ``--curve``: the broker's, and one each for the
    workers and the load generator (both on the broker's allow-list)."""

    dir: Path

    @classmethod
    def make(cls, tmp: str) -> Keys:
        from mdp_zmq.glue import keygen

        keys = cls(Path(tmp) / "keys")
        allow = keys.dir / "allow"
        keygen("broker", keys.dir)
        for name in ("worker", "load"):
            keygen(name, keys.dir)
            allow.mkdir(exist_ok=True)
            (allow / f"{name}.key").write_bytes((keys.dir / f"{name}.key").read_bytes())
        return keys

    def broker_args(self) -> list[str]:
        return ["--curve-secret", str(self.dir / "broker.key_secret"),
                "--allow", str(self.dir / "allow")]

    def peer_args(self, name: str) -> list[str]:
        return ["--curve-secret", str(self.dir / f"{name}.key_secret"),
                "--broker-key", str(self.dir / "broker.key")]

    def secure(self, sock: zmq.Socket[bytes]) -> None:
        """Make ``sock`` the load generator's CURVE client."""
        public, secret = zmq.auth.load_certificate(self.dir / "load.key_secret")
        sock.setsockopt(zmq.CURVE_PUBLICKEY, public)
        sock.setsockopt(zmq.CURVE_SECRETKEY, secret or b"")
        sock.setsockopt(zmq.CURVE_SERVERKEY,
                        zmq.auth.load_certificate(self.dir / "broker.key")[0])


@dataclass
class Contender:
    """One broker + its 2 workers + the load generator's socket for it."""

    name: str
    dialect: str  # raw_worker.py --dialect
    make: Callable[[bytes], list[bytes]]  # tag -> request frames
    broker_pid: int = 0
    worker_pids: list[int] = field(default_factory=list)
    loaders: list[subprocess.Popen[bytes]] = field(default_factory=list)
    metrics_url: str | None = None  # mdp_zmq-metrics: its /metrics
    delivered_counted: int = 0  # what its /metrics said after the last round
    sock: zmq.Socket[bytes] | None = None
    seq: int = 0
    results: dict[str, list[dict[str, float]]] = field(default_factory=dict)

    def tag(self) -> bytes:
        """The next request tag (8 bytes)."""
        self.seq += 1
        return self.seq.to_bytes(8, "little")


def request_maker(dialect: str) -> Callable[[bytes], list[bytes]]:
    """Request frames in ``dialect`` for a tag (the reply's last frame is the tag)."""
    if dialect == "mdp02":
        return lambda tag: [C02, b"\x01", b"echo", tag]
    if dialect == "majortomo":
        return lambda tag: [b"", C02, b"\x02", b"echo", tag]
    return lambda tag: [tag]


@dataclass
class Setup:
    """How each contender is loaded: its workers and its load generators."""

    workers: int = 2
    worker_procs: int = 2  # processes the workers are spread over, at most
    loaders: int = 0  # load processes for the concurrent mode (0: this process)
    baseline: str | None = None  # the checkout mdp_zmq@before runs from


def spread(n: int, procs: int) -> list[int]:
    """``n`` workers over at most ``procs`` processes, as evenly as possible."""
    k = max(1, min(n, procs))
    return [n // k + (i < n % k) for i in range(k)]


def start(procs: Procs, name: str, tmp: str, setup: Setup | int, keys: Keys | None = None
          ) -> Contender:
    """Start contender ``name``'s broker, workers and load processes; return it
    (not yet probed). ``setup`` may be just the number of workers.

    A name ending in ``+curve`` runs that broker with CURVE (``keys``).
    """
    if isinstance(setup, int):
        setup = Setup(workers=setup, worker_procs=setup)
    port_ep = "tcp://127.0.0.1:*"
    curve = name.endswith(CURVE)
    secure = keys.broker_args() if curve and keys is not None else []
    base = name.removesuffix(CURVE)
    if name in ("floor", "floor-lru", "floor-lru-mdp"):
        flag = {"floor": [], "floor-lru": ["--lru"], "floor-lru-mdp": ["--mdp"]}[name]
        b = procs.start([PY, "bench/floor_broker.py", port_ep, *flag], stdout=True)
        assert b.stdout is not None
        ep = wait_line(b.stdout, "listening ", 10).split()[1]
        dialect = "mdp02" if name == "floor-lru-mdp" else "floor"
    elif base in ("mdp_zmq", METERED, BEFORE):
        extra = ["--metrics", "127.0.0.1:0"] if name == METERED else []
        before = setup.baseline if name == BEFORE and setup.baseline else None
        path = [before, str(Path(before) / "bindings")] if before else []
        b = procs.start([PY, "-m", "mdp_zmq", "broker", "--bind", port_ep, *extra, *secure],
                        stdout=True, pythonpath=path)
        assert b.stdout is not None
        url = wait_line(b.stdout, "mdp broker metrics on ", 10).split()[-1] if extra else None
        ep = wait_line(b.stdout, "mdp broker listening on ", 10).split()[-1]
        dialect = "mdp02"
    elif base in DRIVERS:
        argv = ([PY, "bench/gevent_broker_proc.py", port_ep, *secure] if base == "mdp_gevent" else
                [PY, "bench/async_broker_proc.py", port_ep, "--backend", ASYNC[base], *secure])
        b = procs.start(argv, stdout=True)
        assert b.stdout is not None
        ep = wait_line(b.stdout, "listening ", 10).split()[1]
        dialect = "mdp02"
    else:
        from _common import free_port

        ep = f"tcp://127.0.0.1:{free_port()}"
        argv = [PY, "-m", "majortomo.broker", "-b", ep]
        if name == "majortomo-quiet":
            cfg = Path(tmp) / "majortomo-quiet.yaml"
            cfg.write_text(QUIET_YAML)
            argv += ["-c", str(cfg)]
        b = procs.start(argv)
        dialect = "majortomo"
    c = Contender(name, dialect, request_maker(dialect), broker_pid=b.pid)
    if name == METERED:
        c.metrics_url = url
    worker_args = keys.peer_args("worker") if curve and keys is not None else []
    for count in spread(setup.workers, setup.worker_procs):
        w = procs.start([PY, "bench/raw_worker.py", ep, "--dialect", dialect,
                         "--count", str(count), *worker_args], stdout=True)
        assert w.stdout is not None
        wait_line(w.stdout, "ready", 10)
        c.worker_pids.append(w.pid)
    if not curve:  # the load processes speak plain ZMTP
        for _ in range(setup.loaders):
            ld = procs.start([PY, "bench/raw_client.py", ep, "--dialect", dialect,
                              "--commands"], stdout=True, stdin=True)
            c.loaders.append(ld)
        for ld in c.loaders:
            assert ld.stdout is not None
            wait_line(ld.stdout, "ready", 20)
    ctx = zmq.Context.instance()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.RCVTIMEO, 5000)
    if curve and keys is not None:
        keys.secure(s)
    s.connect(ep)
    c.sock = s
    return c


def probe(c: Contender, warmup: float, timeout: float = 15.0) -> None:
    """Send requests until one is answered, then warm up (discarding replies)."""
    s = c.sock
    assert s is not None
    deadline = time.monotonic() + timeout
    while True:
        s.send_multipart(c.make(c.tag()))
        if s.poll(200):
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"{c.name}: no reply within {timeout:g}s")
    time.sleep(min(0.3, warmup))  # let the second worker's READY land
    while s.poll(100):
        s.recv_multipart()
    sequential(c, warmup)


def workers_cpu(c: Contender) -> float:
    """CPU seconds of ``c``'s worker processes so far."""
    return sum(cpu_seconds(pid) for pid in c.worker_pids)


def sequential(c: Contender, seconds: float) -> dict[str, float]:
    """One request in flight for ``seconds``: round trips/s, latencies (s)."""
    s = c.sock
    assert s is not None
    send, recv, make, clock = s.send_multipart, s.recv_multipart, c.make, time.perf_counter
    lat: list[float] = []
    cpu0, wcpu0, lcpu0 = cpu_seconds(c.broker_pid), workers_cpu(c), time.process_time()
    start = clock()
    stop = start + seconds
    while True:
        tag = c.tag()
        frames = make(tag)
        t0 = clock()
        send(frames)
        while recv()[-1] != tag:
            pass
        t1 = clock()
        lat.append(t1 - t0)
        if t1 >= stop:
            break
    return result(c, lat, t1 - start, cpu0, wcpu0, time.process_time() - lcpu0)


def result(c: Contender, lat: list[float], span: float, cpu0: float, wcpu0: float,
           load_cpu: float) -> dict[str, float]:
    """One measurement's figures: round trips/s, latencies (s), CPU us per
    round trip of the broker, the workers and the load generator."""
    n = len(lat)
    cpu = cpu_seconds(c.broker_pid) - cpu0
    wcpu = workers_cpu(c) - wcpu0
    return {"rps": n / span, "n": n, "p50": pct(lat, 50), "p99": pct(lat, 99),
            "cpu_us": 1e6 * cpu / n, "workers_cpu_us": 1e6 * wcpu / n,
            "load_cpu_us": 1e6 * load_cpu / n, "lat": lat}  # type: ignore[dict-item]


def concurrent(c: Contender, seconds: float, window: int) -> dict[str, float]:
    """``window`` requests in flight for ``seconds``: round trips/s, latencies (s)."""
    if c.loaders:
        return concurrent_loaders(c, seconds, window)
    s = c.sock
    assert s is not None
    send, recv, make, clock = s.send_multipart, s.recv_multipart, c.make, time.perf_counter
    sent: dict[bytes, float] = {}
    lat: list[float] = []
    cpu0, wcpu0, lcpu0 = cpu_seconds(c.broker_pid), workers_cpu(c), time.process_time()
    start = clock()
    stop = start + seconds
    for _ in range(window):
        tag = c.tag()
        sent[tag] = clock()
        send(make(tag))
    t = start
    while sent:
        reply = recv()
        t = clock()
        t0 = sent.pop(reply[-1], None)
        if t0 is None:
            continue
        lat.append(t - t0)
        if t < stop:
            tag = c.tag()
            sent[tag] = t
            send(make(tag))
    return result(c, lat, t - start, cpu0, wcpu0, time.process_time() - lcpu0)


def concurrent_loaders(c: Contender, seconds: float, window: int) -> dict[str, float]:
    """:func:`concurrent` with the window split over ``c``'s load processes,
    started together; the span is the longest of theirs."""
    shares = spread(window, len(c.loaders))
    cpu0, wcpu0 = cpu_seconds(c.broker_pid), workers_cpu(c)
    for ld, share in zip(c.loaders, shares, strict=False):
        assert ld.stdin is not None
        ld.stdin.write(f"run {seconds} {share}\n".encode())
        ld.stdin.flush()
    lat: list[float] = []
    span = load_cpu = 0.0
    for ld in c.loaders[:len(shares)]:
        assert ld.stdout is not None
        line = read_line(ld.stdout, seconds + 30)
        if line is None:
            raise RuntimeError(f"{c.name}: a load process did not report within "
                               f"{seconds + 30:g}s")
        r = json.loads(line)
        lat += [x * 1e-6 for x in r["lat_us"]]
        span = max(span, r["seconds"])
        load_cpu += r["cpu"]
    return result(c, lat, span, cpu0, wcpu0, load_cpu)


def summarize(cs: list[Contender], mode: str) -> tuple[str, dict[str, dict[str, float]]]:
    """Markdown table and medians (with per-round ratios to the floors)."""
    by = {c.name: c for c in cs}
    out: dict[str, dict[str, float]] = {}
    rows = []
    nan = float("nan")
    for c in cs:
        runs = c.results[mode]
        m = {k: med([r[k] for r in runs]) for k in ("rps", "p50", "p99", "cpu_us")}
        for ref, suffix in (("floor", ""), ("floor-lru", "_lru")):
            if ref in by:
                fr = by[ref].results[mode]
                for k in ("rps", "p50", "p99"):
                    pairs = zip(runs, fr, strict=True)
                    m[f"{k}_ratio{suffix}"] = med([r[k] / f[k] for r, f in pairs])
        out[c.name] = m
        for k in ("workers_cpu_us", "load_cpu_us"):
            m[k] = med([r.get(k, nan) for r in runs])
        rows.append([
            c.name, fmt_num(m["rps"]), f"{m.get('rps_ratio', nan):.2f}",
            f"{m.get('rps_ratio_lru', nan):.2f}",
            f"{m['p50'] * 1e6:.0f}", f"{m.get('p50_ratio', nan):.2f}",
            f"{m['p99'] * 1e6:.0f}", f"{m.get('p99_ratio', nan):.2f}",
            f"{m['cpu_us']:.1f}", f"{m['workers_cpu_us']:.1f}", f"{m['load_cpu_us']:.1f}",
        ])
    table = md_table(["broker", "round trips/s", "x floor", "x floor-lru", "p50 us", "x floor",
                      "p99 us", "x floor", "broker CPU us/rt", "workers CPU us/rt",
                      "load CPU us/rt"], rows)
    return table, out


def main(argv: list[str] | None = None) -> dict[str, object]:
    """Measure and print; return the results."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--contenders", nargs="+", choices=CONTENDERS, default=CONTENDERS)
    p.add_argument("--metrics", action="store_true",
                   help=f"also run {METERED} (mdp_zmq with --metrics) and report the "
                   "overhead of metrics, on vs off")
    p.add_argument("--seconds", type=float, default=2.0, help="per measurement [2.0]")
    p.add_argument("--rounds", type=int, default=5, help="ABAB rounds [5]")
    p.add_argument("--scenario", choices=list(SCENARIOS), default="classic",
                   help="classic: 2 workers, 100 in flight; broker-bound: 8 workers, 200 in "
                   "flight [classic]")
    p.add_argument("--window", type=int, help="requests in flight, concurrent [scenario's]")
    p.add_argument("--workers", type=int, help="echo workers per broker [scenario's]")
    p.add_argument("--worker-procs", type=int, default=os.cpu_count() or 2,
                   help="processes the workers are spread over, at most [nproc]")
    p.add_argument("--loaders", type=int,
                   help="load processes for the concurrent mode; 0: this process [nproc, "
                   "and at least one per 50 in flight]")
    p.add_argument("--baseline", metavar="DIR",
                   help=f"also run {BEFORE}: mdp_zmq from the checkout in DIR")
    p.add_argument("--sweep", type=int, nargs="+", metavar="WORKERS",
                   help="instead: concurrent round trips/s against these worker counts")
    p.add_argument("--sweep-chart", help="write the sweep's PNG here")
    p.add_argument("--json", help="write the results as JSON here")
    p.add_argument("--chart", help="write the latency/throughput PNG here")
    p.add_argument("--curve", action="store_true",
                   help="also run each of our brokers with CURVE on (<name>+curve)")
    a = p.parse_args(argv)
    workers, window = SCENARIOS[a.scenario]
    a.workers = workers if a.workers is None else a.workers
    a.window = window if a.window is None else a.window
    if a.loaders is None:
        a.loaders = max(os.cpu_count() or 2, math.ceil(a.window / 50))
    setup = Setup(a.workers, a.worker_procs, a.loaders, a.baseline)
    names = list(a.contenders)
    if a.baseline:
        names.insert(names.index("mdp_zmq") + 1 if "mdp_zmq" in names else len(names), BEFORE)
    if a.sweep:
        return sweep(a, names, setup)
    if a.metrics:
        names = [*names, "mdp_zmq"] if "mdp_zmq" not in names else names
        names.insert(names.index("mdp_zmq") + 1, METERED)
    if a.curve:
        names += [n + CURVE for n in a.contenders if n == "mdp_zmq" or n in DRIVERS]
    with Procs() as procs, tempfile.TemporaryDirectory() as tmp:
        keys = Keys.make(tmp) if a.curve else None
        cs = [start(procs, name, tmp, setup, keys) for name in names]
        for c in cs:
            probe(c, min(0.3, a.seconds))
            c.results = {"sequential": [], "concurrent": []}
        for r in range(a.rounds):
            for c in cs:
                c.results["sequential"].append(sequential(c, a.seconds))
            for c in cs:
                c.results["concurrent"].append(concurrent(c, a.seconds, a.window))
            for c in cs:
                if c.metrics_url is not None:
                    c.delivered_counted = scrape(c.metrics_url)
            print(f"round {r + 1}/{a.rounds} done", flush=True)
        for c in cs:
            assert c.sock is not None
            c.sock.close(0)
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for mode in ("sequential", "concurrent"):
        table, summary[mode] = summarize(cs, mode)
        extra = (f", window {a.window} over {max(1, a.loaders)} load process(es)"
                 if mode == "concurrent" else "")
        print(f"\n{mode} ({a.rounds} rounds x {a.seconds:g}s, {a.workers} workers{extra}; "
              f"medians)\n{table}")
    if a.chart:
        chart(a.chart, cs, summary, a.window, a.workers)
    verdict = targets(cs)
    overhead = metrics_overhead(cs)
    for line in [*verdict["lines"], *overhead["lines"]]:  # type: ignore[misc]
        print(line)
    raw = {c.name: {m: [{k: v for k, v in r.items() if k != "lat"} for r in runs]
                    for m, runs in c.results.items()} for c in cs}
    result: dict[str, object] = {"params": vars(a), "summary": summary, "runs": raw,
                                 "targets": verdict}
    if a.metrics:
        result["metrics_overhead"] = overhead
    save_json(a.json, {"e2e": result})
    return result


def scrape(url: str) -> int:
    """GET ``url`` (a /metrics page); return the requests it counted delivered."""
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    return sum(int(float(line.rsplit(" ", 1)[1])) for line in text.splitlines()
               if line.startswith("mdp_requests_total{") and 'outcome="delivered"' in line)


def sweep(a: argparse.Namespace, names: list[str], setup: Setup) -> dict[str, object]:
    """Concurrent round trips/s of every contender against the number of
    workers: per count, fresh processes, ``a.rounds`` ABAB rounds."""
    points: dict[str, dict[int, dict[str, float]]] = {n: {} for n in names}
    window = a.window
    for workers in a.sweep:
        s = Setup(workers, setup.worker_procs, setup.loaders, setup.baseline)
        with Procs() as procs, tempfile.TemporaryDirectory() as tmp:
            cs = [start(procs, name, tmp, s) for name in names]
            for c in cs:
                probe(c, min(0.3, a.seconds))
                c.results = {"concurrent": []}
            for _ in range(a.rounds):
                for c in cs:
                    c.results["concurrent"].append(concurrent(c, a.seconds, window))
            for c in cs:
                assert c.sock is not None
                c.sock.close(0)
                runs = c.results["concurrent"]
                points[c.name][workers] = {
                    k: med([r[k] for r in runs])
                    for k in ("rps", "cpu_us", "workers_cpu_us", "load_cpu_us")}
        print(f"{workers} workers done", flush=True)
    rows = [[n, *(fmt_num(points[n][w]["rps"]) for w in a.sweep),
             *(f"{points[n][w]['cpu_us']:.1f}" for w in a.sweep)] for n in names]
    print(f"\nconcurrent round trips/s against workers ({window} in flight, {a.rounds} rounds "
          f"x {a.seconds:g}s; medians), then broker CPU us/rt\n" + md_table(
              ["broker", *(f"{w} workers" for w in a.sweep),
               *(f"CPU us/rt, {w}" for w in a.sweep)], rows))
    if a.sweep_chart:
        sweep_chart(a.sweep_chart, points, a.sweep, window)
    result: dict[str, object] = {"params": vars(a), "sweep": {
        n: {str(w): v for w, v in p.items()} for n, p in points.items()}}
    save_json(a.json, {"e2e_sweep": result})
    return result


if __name__ == "__main__":
    main()
