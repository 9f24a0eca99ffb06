"""Hostile peers against a broker process: its peak memory and log volume.

Each case starts ``python -m mdp_zmq broker`` on a free loopback port (the
checkout under test: set PYTHONPATH to compare two), attacks it with raw
pyzmq sockets, then reads the broker's VmHWM (peak RSS) and VmRSS from
/proc and counts the lines and bytes it logged. The cases are the ones of
the hardening work (docs/performance.md, "Hostile peers"):

  logflood      N 10-byte messages that are not MDP
  frame100mb    one 100 MB frame
  queued        10 requests of SIZE MB for a service with no worker
  mmiflood      1,000 workers with long service names, then a client that
                never reads sends 150 ``mmi.services``
  services      N requests, each for a service of its own
  nonreading    a client that pipelines 3,000 64 KB requests to an echo
                worker and does not read

Loopback only; every case ends by itself (bounded counts and sleeps).
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time
from collections.abc import Callable

import zmq

CTX = zmq.Context.instance()


def free_endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def memory_mb(pid: int) -> dict[str, int]:
    """Peak (VmHWM) and current (VmRSS) resident memory of ``pid``, in MB."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS", "VmHWM")):
                key, value = line.split(":")
                out[key] = int(value.split()[0]) // 1024
    return out


def dealer(endpoint: str, **options: int) -> zmq.Socket[bytes]:
    s: zmq.Socket[bytes] = CTX.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    for name, value in options.items():
        s.setsockopt(getattr(zmq, name.upper()), value)
    s.connect(endpoint)
    return s


def request(service: bytes, body: bytes) -> list[bytes]:
    return [b"MDPC02", b"\x01", service, body]


def wait_ready(endpoint: str) -> None:
    for _ in range(100):
        with dealer(endpoint) as s:
            s.send_multipart(request(b"mmi.service", b"x"))
            if s.poll(100):
                return
    raise SystemExit("the broker did not answer")


def logflood(ep: str, a: argparse.Namespace) -> None:
    with dealer(ep, sndhwm=0) as s:
        for _ in range(a.count):
            s.send(b"0123456789")
        time.sleep(3)


def frame100mb(ep: str, a: argparse.Namespace) -> None:
    with dealer(ep) as s:
        s.send_multipart(request(b"echo", b"x" * (100 * 1024 * 1024)))
        time.sleep(3)


def queued(ep: str, a: argparse.Namespace) -> None:
    big = b"x" * (a.size * 1024 * 1024)
    with dealer(ep, sndhwm=0) as s:
        for _ in range(10):
            s.send_multipart(request(b"nobody", big))
        time.sleep(4)


def mmiflood(ep: str, a: argparse.Namespace) -> None:
    workers = [dealer(ep) for _ in range(1000)]
    for i, w in enumerate(workers):
        w.send_multipart([b"MDPW02", b"\x01", b"%05d" % i + b"s" * (a.name_bytes - 5)])
    time.sleep(2)
    with dealer(ep, rcvhwm=1) as c:
        for _ in range(150):
            c.send_multipart(request(b"mmi.services", b""))
        time.sleep(3)
    for w in workers:
        w.close()


def services(ep: str, a: argparse.Namespace) -> None:
    with dealer(ep, sndhwm=0) as s:
        for i in range(a.count):
            s.send_multipart(request(b"svc-%06d" % i, b"x"))
        time.sleep(4)


def nonreading(ep: str, a: argparse.Namespace) -> None:
    worker = subprocess.Popen(
        [sys.executable, "-m", "mdp_zmq", "worker", "echo", "--echo", "--connect", ep],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.5)
        with dealer(ep, rcvhwm=1, sndhwm=0) as c:
            body = b"y" * 65536
            for _ in range(3000):
                c.send_multipart(request(b"echo", body))
            time.sleep(6)
    finally:
        worker.kill()
        worker.wait()


CASES: dict[str, Callable[[str, argparse.Namespace], None]] = {
    f.__name__: f for f in (logflood, frame100mb, queued, mmiflood, services, nonreading)
}


def run(case: str, a: argparse.Namespace) -> str:
    ep, log = free_endpoint(), f"/tmp/mdp-hostile-{case}.log"
    with open(log, "wb") as err:
        broker = subprocess.Popen([sys.executable, "-m", "mdp_zmq", "broker", "--bind", ep],
                                  stdout=subprocess.DEVNULL, stderr=err)
    try:
        wait_ready(ep)
        before = memory_mb(broker.pid)["VmRSS"]
        CASES[case](ep, a)
        after = memory_mb(broker.pid)
    finally:
        broker.terminate()
        try:
            broker.wait(10)
        except subprocess.TimeoutExpired:
            broker.kill()
            broker.wait()
    with open(log, "rb") as f:
        data = f.read()
    lines = data.count(b"\n")
    return (f"{case}: RSS {before} MB at start, peak {after['VmHWM']} MB, "
            f"{after['VmRSS']} MB after; log {lines} lines, {len(data)} bytes")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("cases", nargs="*", metavar="CASE",
                   help=f"some of {', '.join(CASES)} (default: all)")
    p.add_argument("--count", type=int, default=100_000, help="logflood/services messages")
    p.add_argument("--size", type=int, default=100, help="queued: MB per request")
    p.add_argument("--name-bytes", type=int, default=10 * 1024, help="mmiflood: name length")
    a = p.parse_args(argv)
    unknown = [c for c in a.cases if c not in CASES]
    if unknown:
        p.error(f"unknown case(s): {', '.join(unknown)}")
    for case in a.cases or CASES:
        print(run(case, a), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
