"""Many connected workers: registration, expirations, MMI latency and idle CPU.

Starts our broker in its own process (``python -m mdp_zmq broker`` with its
default settings, on a free loopback port; ``--driver`` picks another
driver) and ``--workers`` raw MDP workers (10,000 by default) spread over
``--procs`` processes. Each worker process has one zmq context and one
DEALER per worker, configured as our workers' sockets are
(``glue.configure_socket`` with the default ``TransportConfig``: ZMTP
heartbeats on), sends READY once and then a HEARTBEAT every MDP heartbeat
interval (``BrokerConfig().heartbeat_interval``), as an RFC 7 worker does,
staggered over the interval. On each visit it reads what the broker sent:
HEARTBEATs are counted, a DISCONNECT is an **expiration** (the broker gave
up on a worker that kept heartbeating) and the worker sends READY again,
as a reconnecting worker would. A worker never receives a request.

Measured, in this order:

1. **registration**: from the moment the worker processes start
   connecting until ``mmi.stats`` reports all of them (polled every 0.2 s);
   fails at ``--register-timeout``;
2. **steady state** for ``--seconds``: an MMI round trip (``mmi.service``
   for the workers' service, MDP/0.2) every ``--probe-interval`` s from
   this process, each bounded by ``--probe-timeout`` (a probe that times
   out is counted and its time kept as the timeout); the broker's CPU
   (all threads, and the libzmq I/O thread(s) apart from the others,
   from ``/proc/PID/task/*/stat``) and the worker processes' CPU over the
   same span, in cores;
3. the expirations each worker process counted, and ``mmi.stats`` again
   (workers still registered at the end).

Everything is on 127.0.0.1 and bounded: at most ``MAX_WORKERS`` workers,
each wait has a deadline, and every process started is killed at the end.
The script needs about ``workers + 2 x workers/procs`` file descriptors
per process (the broker's connections; a DEALER's TCP connection and its
mailbox) and raises its soft ``RLIMIT_NOFILE`` (inherited by its
children) up to the hard limit; if that is not enough it says so in one
line and exits 2.

Run: ``python bench/scale.py`` (see ``--help``); ``--zmtp 0,0,0`` turns the
ZMTP heartbeats off on both sides, ``--io-threads N`` gives the broker's
context N libzmq I/O threads.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import zmq
from _common import PY, ROOT, Procs, env, fmt_num, free_port, md_table, pct, read_line, save_json
from mdp_zmq.glue import TransportConfig, configure_socket

import mdp_core

MAX_WORKERS = 50_000
CLK_TCK = os.sysconf("SC_CLK_TCK")
C02 = b"MDPC02"
W02 = b"MDPW02"
DIALECTS = {"mdp01": ([b"", b"MDPW01"], b"\x04", b"\x05"), "mdp02": ([W02], b"\x05", b"\x06")}


# ------------------------------------------------------------------ CPU from /proc


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds (user + system) of each thread of ``pid``, summed by thread
    name (``comm``); {} if the process is gone."""
    out: dict[str, float] = {}
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            text = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except OSError:
            continue
        name = text[text.index("(") + 1:text.rindex(")")]
        fields = text.rsplit(")", 1)[1].split()
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / CLK_TCK
    return out


def cpu_seconds(pid: int) -> float:
    """utime + stime of process ``pid`` (all threads, reaped children not counted)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


# ------------------------------------------------------------------ the worker processes


def run_workers(endpoint: str, count: int, service: bytes, dialect: str, interval: float,
                zmtp: str, until: float) -> None:
    """One worker process: ``count`` DEALERs, READY each, then a HEARTBEAT per
    worker per ``interval`` (staggered), until CLOCK_MONOTONIC ``until``;
    prints ``connecting <t>`` once, ``result <json>`` at the end."""
    prefix, heartbeat_cmd, disconnect_cmd = DIALECTS[dialect]
    c = len(prefix)
    ready = [*prefix, b"\x01", service]
    heartbeat = [*prefix, heartbeat_cmd]
    transport = zmtp_transport(zmtp) if zmtp else TransportConfig()
    ctx = zmq.Context()
    ctx.set(zmq.MAX_SOCKETS, 4 * count + 64)  # closed sockets are reaped later
    socks: list[zmq.Socket[bytes]] = []
    print(f"connecting {time.monotonic():.6f}", flush=True)

    def register() -> zmq.Socket[bytes]:
        s: zmq.Socket[bytes] = ctx.socket(zmq.DEALER)
        configure_socket(s, transport)
        s.connect(endpoint)
        s.send_multipart(ready, zmq.NOBLOCK)
        return s

    for _ in range(count):
        socks.append(register())
    print(f"connected {time.monotonic():.6f}", flush=True)
    expired = heartbeats_in = heartbeats_out = 0
    stop: list[int] = []
    signal.signal(signal.SIGUSR1, lambda *_: stop.append(1))
    start = time.monotonic()
    done = 0  # visits made so far; socket i is visited at start + (i + k n) * interval / n
    step = interval / count
    while True:
        now = time.monotonic()
        if now >= until or stop:
            break
        due = int((now - start) / step)
        while done < due:
            i = done % count
            s = socks[i]
            done += 1
            while True:
                try:
                    msg = s.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                cmd = msg[c] if len(msg) > c else b""
                if cmd == heartbeat_cmd:
                    heartbeats_in += 1
                elif cmd == disconnect_cmd:
                    # As an RFC 7 worker does: a new socket, READY again
                    # (what the old one still holds is of the old session).
                    expired += 1
                    s.close(0)
                    socks[i] = s = register()
                    break
            try:
                s.send_multipart(heartbeat, zmq.NOBLOCK)
                heartbeats_out += 1
            except zmq.Again:
                pass
        time.sleep(min(0.02, max(0.0, until - time.monotonic())))
    print("result " + json.dumps({"expired": expired, "heartbeats_in": heartbeats_in,
                                  "heartbeats_out": heartbeats_out,
                                  "seconds": time.monotonic() - start}), flush=True)
    for s in socks:
        s.close(0)
    ctx.term()


# ------------------------------------------------------------------ the MMI client


class Mmi:
    """An MDP/0.2 client on one DEALER for MMI queries (new socket after a timeout)."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.ctx = zmq.Context()
        self.sock = self._open()

    def _open(self) -> zmq.Socket[bytes]:
        s: zmq.Socket[bytes] = self.ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.connect(self.endpoint)
        return s

    def ask(self, service: bytes, body: bytes, timeout: float) -> list[bytes] | None:
        """The reply body, or None after ``timeout`` s (the socket is then replaced)."""
        self.sock.send_multipart([C02, b"\x01", service, body])
        if self.sock.poll(int(timeout * 1000)):
            msg = self.sock.recv_multipart()
            return msg[3:]
        self.sock.close(0)
        self.sock = self._open()
        return None

    def workers(self, timeout: float = 2.0) -> int | None:
        """Live workers per ``mmi.stats`` (None: no answer in time)."""
        reply = self.ask(b"mmi.stats", b"", timeout)
        if not reply:
            return None
        return mdp_core.parse_mmi_stats(reply).workers

    def close(self) -> None:
        """Close the socket and the context."""
        self.sock.close(0)
        self.ctx.term()


# ------------------------------------------------------------------ the run


def fd_limit(need: int) -> None:
    """Raise the soft RLIMIT_NOFILE to cover ``need``; exit 2 with one line if it cannot."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= need:
        return
    if hard != resource.RLIM_INFINITY and hard < need:
        sys.exit(f"scale.py: needs {need} open files per process, the hard limit "
                 f"(ulimit -Hn) is {hard}: raise it or use fewer --workers / more --procs")
    # As high as allowed: libzmq's own fds (mailboxes, pipes) come on top.
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def child_env(a: argparse.Namespace) -> dict[str, str]:
    """The children's environment: with ``--tree``, that tree's code first."""
    e = env()
    e["SCALE_IO_THREADS"] = str(a.io_threads or "")
    e["SCALE_ZMTP"] = a.zmtp or ""
    if a.tree:
        tree = Path(a.tree).resolve()
        e["PYTHONPATH"] = os.pathsep.join([str(tree), str(tree / "bindings"), e["PYTHONPATH"]])
    return e


#: What ``--io-threads`` and ``--zmtp`` run instead of ``python -m mdp_zmq``:
#: the same CLI, with the process's shared context made with that many I/O
#: threads and/or the ZMTP heartbeats of the CLI's TransportConfig replaced
#: (experiments only: the CLI has no flag for either).
WRAPPER = """\
import dataclasses, os, sys, zmq
from mdp_zmq import cli
n = int(os.environ.get("SCALE_IO_THREADS") or 0)
if n:
    zmq.Context.instance(io_threads=n)
z = os.environ.get("SCALE_ZMTP")
if z:
    ivl, timeout, ttl = (float(x) or None for x in z.split(","))
    made = cli.transport_config
    cli.transport_config = lambda args: dataclasses.replace(
        made(args), heartbeat_ivl=ivl, heartbeat_timeout=timeout, heartbeat_ttl=ttl)
sys.exit(cli.main(sys.argv[1:]))
"""


def zmtp_transport(spec: str) -> TransportConfig:
    """``IVL,TIMEOUT,TTL`` (0: off) as a TransportConfig, the rest default."""
    ivl, timeout, ttl = (float(x) or None for x in spec.split(","))
    return TransportConfig(heartbeat_ivl=ivl, heartbeat_timeout=timeout, heartbeat_ttl=ttl)


def broker_argv(a: argparse.Namespace, endpoint: str) -> list[str]:
    """The broker's command line."""
    start = ["-c", WRAPPER] if a.io_threads or a.zmtp else ["-m", "mdp_zmq"]
    argv = [PY, *start, "broker", "--bind", endpoint]
    if a.driver != "zmq":
        argv += ["--driver", a.driver]
    return argv + list(a.broker_arg)


def wait_broker(mmi: Mmi, timeout: float) -> None:
    """Until the broker answers an MMI query; RuntimeError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if mmi.workers(0.5) is not None:
            return
    raise RuntimeError(f"the broker did not answer mmi.stats within {timeout:g}s")


def measure(a: argparse.Namespace) -> dict[str, Any]:
    """One run: registration, steady state, expirations. Returns the figures."""
    port = free_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    service = a.service.encode()
    interval = mdp_core.BrokerConfig().heartbeat_interval if a.interval is None else a.interval
    per = [a.workers // a.procs + (1 if i < a.workers % a.procs else 0) for i in range(a.procs)]
    with Procs() as procs:
        with open(a.broker_log or os.devnull, "wb") as log:  # the child has its own copy
            broker = subprocess.Popen(broker_argv(a, endpoint), stdout=subprocess.DEVNULL,
                                      stderr=log, stdin=subprocess.DEVNULL, env=child_env(a),
                                      cwd=str(ROOT))
        procs.procs.append(broker)
        print(f"broker pid {broker.pid} on {endpoint}", flush=True)
        mmi = Mmi(endpoint)
        try:
            wait_broker(mmi, 10.0)
            until = time.monotonic() + a.register_timeout + a.seconds + 60  # a backstop
            gens = []
            for n in per:
                g = subprocess.Popen(
                    [PY, __file__, "--_workers", endpoint, "--_count", str(n), "--service",
                     a.service, "--dialect", a.dialect, "--interval", str(interval),
                     "--zmtp", a.zmtp or "", "--_until", f"{until:.6f}"],
                    stdout=subprocess.PIPE, stderr=None, stdin=subprocess.DEVNULL,
                    env=child_env(a), cwd=str(ROOT))
                procs.procs.append(g)
                gens.append(g)
            starts = []
            for g in gens:
                assert g.stdout is not None
                line = read_line(g.stdout, 30)
                if line is None or not line.startswith("connecting "):
                    raise RuntimeError("a worker process did not start (run it alone: "
                                       "python bench/scale.py --workers N --procs 1)")
                starts.append(float(line.split()[1]))
            t0 = min(starts)
            cpu0 = {g.pid: cpu_seconds(g.pid) for g in gens}
            registered_at = None
            seen = 0
            timeline: list[tuple[float, int]] = []
            while time.monotonic() - t0 < a.register_timeout:
                if any(g.poll() is not None for g in gens) or broker.poll() is not None:
                    raise RuntimeError("a worker process or the broker exited early")
                n = mmi.workers(1.0)
                t = time.monotonic() - t0
                if n is not None:
                    seen = n
                    timeline.append((round(t, 2), n))
                    if n >= a.workers:
                        registered_at = t
                        break
                time.sleep(0.2)
            connected = []
            for g in gens:
                assert g.stdout is not None
                line = read_line(g.stdout, 5)
                connected.append(float(line.split()[1]) - t0 if line else float("nan"))
            if registered_at is None:
                print(f"only {seen} of {a.workers} registered within {a.register_timeout:g}s")
            # Steady state: the broker only heartbeats (and answers probes).
            b_threads0 = thread_cpu(broker.pid)
            b0 = cpu_seconds(broker.pid)
            w0 = {g.pid: cpu_seconds(g.pid) for g in gens}
            s0 = time.monotonic()
            rtts: list[float] = []
            timeouts = 0
            next_probe = s0
            while time.monotonic() - s0 < a.seconds:
                t = time.monotonic()
                reply = mmi.ask(b"mmi.service", service, a.probe_timeout)
                dt = time.monotonic() - t
                if reply is None:
                    timeouts += 1
                rtts.append(dt)
                next_probe += a.probe_interval
                time.sleep(max(0.0, next_probe - time.monotonic()))
            span = time.monotonic() - s0
            b1 = cpu_seconds(broker.pid)
            b_threads1 = thread_cpu(broker.pid)
            w1 = {g.pid: cpu_seconds(g.pid) for g in gens}
            final = mmi.workers(5.0)
            # The workers' own tallies: stop them early by running out their clock.
            results = []
            for g in gens:
                os.kill(g.pid, signal.SIGUSR1)  # ours: report and exit
            for g in gens:
                assert g.stdout is not None
                deadline = time.monotonic() + 30
                got = None
                while got is None and time.monotonic() < deadline:
                    line = read_line(g.stdout, max(0.1, deadline - time.monotonic()))
                    if line is None:
                        break
                    if line.startswith("result "):
                        got = json.loads(line[7:])
                results.append(got or {"expired": float("nan")})
        finally:
            mmi.close()
    threads = {name: (b_threads1.get(name, 0.0) - b_threads0.get(name, 0.0)) / span
               for name in b_threads1}
    io = sum(v for k, v in threads.items() if k.startswith("ZMQbg/IO"))
    return {
        "workers": a.workers, "procs": a.procs, "driver": a.driver,
        "broker_args": list(a.broker_arg), "zmtp": a.zmtp, "io_threads": a.io_threads,
        "interval": interval, "loadavg": os.getloadavg(),
        "registered": seen if registered_at is None else a.workers,
        "register_s": registered_at, "connect_s": connected, "timeline": timeline,
        "expired": sum(r["expired"] for r in results),
        "broker_heartbeats_per_s": sum(r.get("heartbeats_in", 0) / max(1e-9, r.get("seconds", 0))
                                       for r in results),
        "final_registered": final,
        "mmi_p50_ms": pct(rtts, 50) * 1000, "mmi_p99_ms": pct(rtts, 99) * 1000,
        "mmi_max_ms": max(rtts) * 1000 if rtts else float("nan"),
        "mmi_probes": len(rtts), "mmi_timeouts": timeouts,
        "broker_cores": (b1 - b0) / span, "broker_io_cores": io,
        "broker_other_cores": (b1 - b0) / span - io,
        "broker_threads": threads,
        "generator_cores": [(w1[g.pid] - w0[g.pid]) / span for g in gens],
        "generator_register_cores": [(w0[g.pid] - cpu0[g.pid]) /
                                     max(1e-9, (registered_at or a.register_timeout))
                                     for g in gens],
        "steady_s": span,
    }


def table(r: dict[str, Any]) -> str:
    """The run as a markdown table."""
    reg = (f"{r['register_s']:.2f} s" if r["register_s"] is not None
           else f"only {r['registered']:,} within the timeout")
    gens = r["generator_cores"]
    rows = [
        ("workers / processes", f"{r['workers']:,} / {r['procs']}"),
        ("all registered after", reg),
        ("DISCONNECTs while heartbeating (expired or dropped)", fmt_num(r["expired"])),
        ("registered at the end", fmt_num(r["final_registered"] or float("nan"))),
        ("MMI round trip p50 / p99 / max ms",
         f"{r['mmi_p50_ms']:.2f} / {r['mmi_p99_ms']:.2f} / {r['mmi_max_ms']:.1f}"
         f" ({r['mmi_probes']} probes, {r['mmi_timeouts']} timed out)"),
        ("broker CPU, cores (I/O thread + the rest)",
         f"{r['broker_cores']:.3f} ({r['broker_io_cores']:.3f} + "
         f"{r['broker_other_cores']:.3f})"),
        ("worker processes' CPU, cores each", ", ".join(f"{c:.3f}" for c in gens)),
        ("HEARTBEATs received from the broker /s", fmt_num(r["broker_heartbeats_per_s"])),
        ("load average at the end", " ".join(f"{x:.2f}" for x in r["loadavg"])),
    ]
    return md_table(["", "value"], rows)


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments and run (or be one worker process)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", type=int, default=10_000, help="workers in all [10000]")
    p.add_argument("--procs", type=int, default=4, help="worker processes [4]")
    p.add_argument("--driver", choices=["zmq", "trio", "asyncio", "gevent"], default="zmq",
                   help="the broker's driver (mdp broker --driver) [zmq]")
    p.add_argument("--broker-arg", action="append", default=[], metavar="ARG",
                   help="one more argument for 'mdp broker' (repeatable)")
    p.add_argument("--zmtp", metavar="IVL,TIMEOUT,TTL", help="ZMTP heartbeats of the broker "
                   "and the workers, in s (0: off) [TransportConfig's]")
    p.add_argument("--io-threads", type=int, default=0, metavar="N",
                   help="libzmq I/O threads of the broker's context [its default]")
    p.add_argument("--dialect", choices=sorted(DIALECTS), default="mdp02")
    p.add_argument("--service", default="scale")
    p.add_argument("--interval", type=float, help="the workers' MDP heartbeat interval "
                   "[BrokerConfig's]")
    p.add_argument("--seconds", type=float, default=30.0, help="steady state, s [30]")
    p.add_argument("--register-timeout", type=float, default=60.0, metavar="S", help="[60]")
    p.add_argument("--probe-interval", type=float, default=0.05, metavar="S", help="[0.05]")
    p.add_argument("--probe-timeout", type=float, default=5.0, metavar="S", help="[5]")
    p.add_argument("--json", help="write the figures to this file")
    p.add_argument("--tree", metavar="DIR", help="run the broker and the workers' socket "
                   "setup from this copy of the project (A/B runs) [this one]")
    p.add_argument("--broker-log", metavar="FILE", help="the broker's stderr to FILE "
                   "[discarded]")
    p.add_argument("--_workers", help=argparse.SUPPRESS)
    p.add_argument("--_count", type=int, help=argparse.SUPPRESS)
    p.add_argument("--_until", type=float, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a._workers:
        fd_limit(4 * a._count + 64)
        run_workers(a._workers, a._count, a.service.encode(), a.dialect, a.interval,
                    a.zmtp, a._until)
        return 0
    if not 1 <= a.workers <= MAX_WORKERS or not 1 <= a.procs <= a.workers:
        p.error(f"--workers must be 1..{MAX_WORKERS} and --procs 1..workers")
    # The broker holds one fd per worker; each worker process two per worker.
    fd_limit(max(a.workers, 2 * -(-a.workers // a.procs)) + 256)
    print(f"{a.workers:,} workers in {a.procs} processes, broker: "
          f"{' '.join(broker_argv(a, 'tcp://127.0.0.1:PORT')[1:])}; "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    r = measure(a)
    print(table(r))
    save_json(a.json, {"scale": r})
    return 0


if __name__ == "__main__":
    sys.exit(main())
