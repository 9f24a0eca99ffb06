"""End to end on loopback: brokers in their own process, 2 raw echo workers.

Contenders (each a broker process + 2 ``raw_worker.py`` processes, all
started once and kept running; only one is loaded at a time):

* ``floor``: ``floor_broker.py``, a bare ROUTER loop with no protocol, which
  round-robins requests into the workers' queues (libzmq pipelines them);
* ``floor-lru``: ``floor_broker.py --lru``, the same loop with Majordomo's
  dispatch rule only (one request per worker at a time, a FIFO queue in the
  broker, LRU idle workers): the floor for any MDP broker when many
  requests are in flight;
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

The load generator is this process: one DEALER speaking each contender's
raw frames (MDP/0.2; majortomo's dialect; bare body for the floor), every
request tagged with a sequence number that the reply echoes.

* ``sequential``: one request in flight; latency-bound.
* ``concurrent``: a window of ``--window`` requests in flight (pipelined on
  one DEALER; a new request is sent as each reply arrives); broker-bound.

Each round measures every contender in turn (ABAB), sequential first, then
concurrent. Reported: medians over rounds of round trips/s, p50 and p99
latency, the broker process's CPU time per round trip (from
/proc/<pid>/stat), and the median of the per-round ratios to the floor.

Run: ``python bench/e2e.py`` (see ``--help``); ``python bench/e2e.py --curve
--contenders mdp_zmq mdp_async-trio`` for CURVE on vs off.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import zmq
import zmq.auth
from _common import PY, Procs, fmt_num, md_table, med, pct, pyplot, save_json, wait_line

C02 = b"MDPC02"
CONTENDERS = ["floor", "floor-lru", "mdp_zmq", "mdp_async-trio", "mdp_async-asyncio",
              "mdp_gevent", "majortomo", "majortomo-quiet"]
ASYNC = {"mdp_async-trio": "trio", "mdp_async-asyncio": "asyncio"}
METERED = "mdp_zmq-metrics"
#: Our brokers other than the blocking one, each compared with it in the same run.
DRIVERS = [*ASYNC, "mdp_gevent"]
CURVE = "+curve"  # suffix of a contender run with CURVE on (--curve)
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


def start(procs: Procs, name: str, tmp: str, workers: int, keys: Keys | None = None
          ) -> Contender:
    """Start contender ``name``'s broker and workers; return it (not yet probed).

    A name ending in ``+curve`` runs that broker with CURVE (``keys``).
    """
    port_ep = "tcp://127.0.0.1:*"
    curve = name.endswith(CURVE)
    secure = keys.broker_args() if curve and keys is not None else []
    base = name.removesuffix(CURVE)
    if name in ("floor", "floor-lru"):
        lru = ["--lru"] if name == "floor-lru" else []
        b = procs.start([PY, "bench/floor_broker.py", port_ep, *lru], stdout=True)
        assert b.stdout is not None
        ep = wait_line(b.stdout, "listening ", 10).split()[1]
        dialect = "floor"
    elif base in ("mdp_zmq", METERED):
        extra = ["--metrics", "127.0.0.1:0"] if name == METERED else []
        b = procs.start([PY, "-m", "mdp_zmq", "broker", "--bind", port_ep, *extra, *secure],
                        stdout=True)
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
    for _ in range(workers):
        w = procs.start([PY, "bench/raw_worker.py", ep, "--dialect", dialect, *worker_args],
                        stdout=True)
        assert w.stdout is not None
        wait_line(w.stdout, "ready", 10)
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


def sequential(c: Contender, seconds: float) -> dict[str, float]:
    """One request in flight for ``seconds``: round trips/s, latencies (s)."""
    s = c.sock
    assert s is not None
    send, recv, make, clock = s.send_multipart, s.recv_multipart, c.make, time.perf_counter
    lat: list[float] = []
    cpu0 = cpu_seconds(c.broker_pid)
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
    cpu = cpu_seconds(c.broker_pid) - cpu0
    return {"rps": len(lat) / (t1 - start), "n": len(lat), "p50": pct(lat, 50),
            "p99": pct(lat, 99), "cpu_us": 1e6 * cpu / len(lat), "lat": lat}  # type: ignore[dict-item]


def concurrent(c: Contender, seconds: float, window: int) -> dict[str, float]:
    """``window`` requests in flight for ``seconds``: round trips/s, latencies (s)."""
    s = c.sock
    assert s is not None
    send, recv, make, clock = s.send_multipart, s.recv_multipart, c.make, time.perf_counter
    sent: dict[bytes, float] = {}
    lat: list[float] = []
    cpu0 = cpu_seconds(c.broker_pid)
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
    cpu = cpu_seconds(c.broker_pid) - cpu0
    return {"rps": len(lat) / (t - start), "n": len(lat), "p50": pct(lat, 50),
            "p99": pct(lat, 99), "cpu_us": 1e6 * cpu / len(lat), "lat": lat}  # type: ignore[dict-item]


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
        rows.append([
            c.name, fmt_num(m["rps"]), f"{m.get('rps_ratio', nan):.2f}",
            f"{m.get('rps_ratio_lru', nan):.2f}",
            f"{m['p50'] * 1e6:.0f}", f"{m.get('p50_ratio', nan):.2f}",
            f"{m['p99'] * 1e6:.0f}", f"{m.get('p99_ratio', nan):.2f}",
            f"{m['cpu_us']:.1f}",
        ])
    table = md_table(["broker", "round trips/s", "x floor", "x floor-lru", "p50 us", "x floor",
                      "p99 us", "x floor", "broker CPU us/rt"], rows)
    return table, out


def chart(path: str, cs: list[Contender], summary: dict[str, dict[str, dict[str, float]]],
          window: int) -> None:
    """Sequential latency CDF per contender, and round trips/s per mode."""
    plt = pyplot()
    if plt is None:
        return
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    lat_min, lat_max = float("inf"), 0.0
    for c in cs:
        lat = sorted(x * 1e6 for r in c.results["sequential"] for x in r["lat"])  # type: ignore[union-attr]
        if not lat:
            continue
        lat_min, lat_max = min(lat_min, lat[0]), max(lat_max, lat[-1])
        n = len(lat)
        step = max(1, n // 2000)
        xs = [*lat[::step], lat[-1]]
        ys = [i / n for i in range(0, n, step)] + [1.0]
        ax1.plot(xs, ys, label=c.name)
    ax1.set_xscale("log")
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    ax1.xaxis.set_major_formatter(ScalarFormatter())
    ax1.xaxis.set_minor_formatter(NullFormatter())
    ax1.set_xticks([t for t in (100, 200, 300, 500, 1000, 2000, 5000, 10000)
                    if lat_min <= t <= lat_max] or [lat_min, lat_max])
    ax1.set_xlabel("round-trip latency, us (log)")
    ax1.set_ylabel("fraction of requests")
    ax1.set_title("sequential (1 in flight): latency distribution")
    ax1.grid(True, alpha=0.3, which="both")
    ax1.legend(fontsize=8)
    names = [c.name for c in cs]
    x = range(len(names))
    seq = [summary["sequential"][n]["rps"] for n in names]
    con = [summary["concurrent"][n]["rps"] for n in names]
    ax2.bar([i - 0.2 for i in x], seq, 0.4, label="sequential")
    ax2.bar([i + 0.2 for i in x], con, 0.4, label=f"concurrent ({window} in flight)")
    ax2.set_xticks(list(x), names, fontsize=8)
    ax2.set_ylabel("round trips/s (median)")
    ax2.set_title("throughput, loopback tcp, 2 echo workers")
    ax2.grid(True, axis="y", alpha=0.3)
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"chart written to {path}")


def main(argv: list[str] | None = None) -> dict[str, object]:
    """Measure and print; return the results."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--contenders", nargs="+", choices=CONTENDERS, default=CONTENDERS)
    p.add_argument("--metrics", action="store_true",
                   help=f"also run {METERED} (mdp_zmq with --metrics) and report the "
                   "overhead of metrics, on vs off")
    p.add_argument("--seconds", type=float, default=2.0, help="per measurement [2.0]")
    p.add_argument("--rounds", type=int, default=5, help="ABAB rounds [5]")
    p.add_argument("--window", type=int, default=100, help="requests in flight, concurrent [100]")
    p.add_argument("--workers", type=int, default=2, help="echo workers per broker [2]")
    p.add_argument("--json", help="write the results as JSON here")
    p.add_argument("--chart", help="write the latency/throughput PNG here")
    p.add_argument("--curve", action="store_true",
                   help="also run each of our brokers with CURVE on (<name>+curve)")
    a = p.parse_args(argv)
    names = list(a.contenders)
    if a.metrics:
        names = [*names, "mdp_zmq"] if "mdp_zmq" not in names else names
        names.insert(names.index("mdp_zmq") + 1, METERED)
    if a.curve:
        names += [n + CURVE for n in a.contenders if n == "mdp_zmq" or n in DRIVERS]
    with Procs() as procs, tempfile.TemporaryDirectory() as tmp:
        keys = Keys.make(tmp) if a.curve else None
        cs = [start(procs, name, tmp, a.workers, keys) for name in names]
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
        extra = f", window {a.window}" if mode == "concurrent" else ""
        print(f"\n{mode} ({a.rounds} rounds x {a.seconds:g}s{extra}; medians)\n{table}")
    if a.chart:
        chart(a.chart, cs, summary, a.window)
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


def metrics_overhead(cs: list[Contender]) -> dict[str, object]:
    """Round trips/s with metrics on vs off (paired per-round ratios), and the
    deliveries the metered broker counted (it must have seen the load)."""
    lines: list[str] = []
    out: dict[str, object] = {"lines": lines}
    names = {c.name for c in cs}
    if METERED not in names or "mdp_zmq" not in names:
        return out
    for mode in ("sequential", "concurrent"):
        r = paired(cs, mode, METERED, "mdp_zmq")
        out[mode] = r
        lines.append(f"{mode}: metrics on = {r:.3f} x off, overhead {100 * (1 - r):.1f}% "
                     f"(target < 5%): {'MET' if r > 0.95 else 'MISSED'}")
    metered = next(c for c in cs if c.name == METERED)
    out["delivered_counted"] = delivered = metered.delivered_counted
    lines.append(f"{METERED} counted {delivered:,} requests delivered on its /metrics")
    return out


def paired(cs: list[Contender], mode: str, a: str, b: str) -> float:
    """Median over rounds of ``a``'s round trips/s divided by ``b``'s, same round."""
    by = {c.name: c for c in cs}
    pairs = zip(by[a].results[mode], by[b].results[mode], strict=True)
    return med([x["rps"] / y["rps"] for x, y in pairs])


def targets(cs: list[Contender]) -> dict[str, object]:
    """The e2e targets of issue 6, met or missed (paired per-round ratios)."""
    lines: list[str] = []
    out: dict[str, object] = {"lines": lines}
    names = {c.name for c in cs}
    # --curve: what CURVE costs each of our brokers, same run.
    for name in sorted(n for n in names if n.endswith(CURVE)):
        base = name.removesuffix(CURVE)
        for mode, short in (("sequential", "seq"), ("concurrent", "con")):
            r = paired(cs, mode, name, base)
            out[f"{short}_{name}_vs_{base}"] = r
            lines.append(f"{mode}: with CURVE, {base} = {r:.2f} x {base} without (for "
                         "reference)")
    if "mdp_zmq" not in names:
        return out

    def check(key: str, mode: str, ref: str, goal: float, strict: bool = False,
              who: str = "mdp_zmq") -> None:
        r = paired(cs, mode, who, ref)
        ok = r > goal if strict else r >= goal
        out[key] = r
        lines.append(f"{mode}: {who} = {r:.2f} x {ref} (target {'>' if strict else '>='} "
                     f"{goal:g}): {'MET' if ok else 'MISSED'}")

    # issues 10 and 11: the async and gevent brokers against the blocking one, same run.
    for name in DRIVERS:
        if name in names:
            for mode, short in (("sequential", "seq"), ("concurrent", "con")):
                check(f"{short}_{name}_vs_mdp_zmq", mode, "mdp_zmq", 0.8, who=name)

    if "floor" in names:
        check("seq_vs_floor", "sequential", "floor", 0.85)
        check("con_vs_floor", "concurrent", "floor", 0.60)
    if "floor-lru" in names:
        check("con_vs_floor_lru", "concurrent", "floor-lru", 0.60)
    for maj in ("majortomo", "majortomo-quiet"):
        if maj in names:
            check(f"seq_vs_{maj}", "sequential", maj, 1.0, strict=True)
            check(f"con_vs_{maj}", "concurrent", maj, 2.0)
    if "floor-lru" in names and "majortomo-quiet" in names:
        r = paired(cs, "concurrent", "floor-lru", "majortomo-quiet")
        out["con_floor_lru_vs_majortomo_quiet"] = r
        lines.append(f"concurrent: for reference, floor-lru = {r:.2f} x majortomo-quiet "
                     "(the most any broker with MDP's one-request-per-worker rule could reach)")
    return out


if __name__ == "__main__":
    main()
