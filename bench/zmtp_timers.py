"""What ZMTP heartbeats cost libzmq itself: a bare ROUTER and N idle DEALERs.

No MDP and no Python work per message: this process binds a ROUTER (with
``--io-threads`` libzmq I/O threads and the ZMTP heartbeat settings given)
and starts ``--procs`` processes that connect ``--connections`` DEALERs
with the same settings and then only sleep. Reported: how long until
every handshake completed (from the ROUTER's monitor), how many
connections dropped, and the CPU of the ROUTER's I/O threads over
``--seconds`` of steady state (from ``/proc/self/task/*/stat``).

This isolates the cost that made 10,000 workers collapse a broker
(docs/performance.md, section 9): libzmq keeps an I/O thread's timers in
one sorted tree and cancels one by walking the tree from its start, once
per pong (and once per ping received with a TTL), so the cost grows with
the square of the connections per I/O thread.

Run: ``python bench/zmtp_timers.py --connections 10000 --ivl 5 --timeout 15``
(``--ivl 0``: heartbeats off).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import zmq
from _common import PY, Procs
from scale import fd_limit, thread_cpu
from zmq.utils.monitor import recv_monitor_message


def heartbeats(sock: zmq.Socket[bytes], ivl: float, timeout: float, ttl: float) -> None:
    """Set the ZMTP heartbeat options (seconds; 0: off) and no linger."""
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.HEARTBEAT_IVL, int(ivl * 1000))
    if ivl:
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, int(timeout * 1000))
        if ttl:
            sock.setsockopt(zmq.HEARTBEAT_TTL, max(100, int(ttl * 1000)))


def dealers(endpoint: str, n: int, ivl: float, timeout: float, ttl: float, seconds: float
            ) -> None:
    """One connecting process: ``n`` DEALERs, then sleep ``seconds``."""
    ctx = zmq.Context()
    ctx.set(zmq.MAX_SOCKETS, n + 16)
    socks = []
    for _ in range(n):
        s: zmq.Socket[bytes] = ctx.socket(zmq.DEALER)
        heartbeats(s, ivl, timeout, ttl)
        s.connect(endpoint)
        socks.append(s)
    time.sleep(seconds)
    os._exit(0)  # nothing to flush; closing 1,000s of sockets only costs time


def main(argv: list[str] | None = None) -> int:
    """Run one configuration and print one line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--connections", type=int, default=10_000)
    p.add_argument("--procs", type=int, default=4)
    p.add_argument("--ivl", type=float, default=5.0, help="ZMTP ping interval, s (0: off)")
    p.add_argument("--timeout", type=float, default=15.0)
    p.add_argument("--ttl", type=float, default=0.0)
    p.add_argument("--io-threads", type=int, default=1)
    p.add_argument("--seconds", type=float, default=10.0, help="steady state, s [10]")
    p.add_argument("--_dealers", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if not 1 <= a.connections <= 50_000 or not 1 <= a.procs <= a.connections:
        p.error("--connections must be 1..50000 and --procs 1..connections")
    per = a.connections // a.procs
    fd_limit(max(a.connections, 2 * per) + 256)
    if a._dealers:
        dealers(a._dealers, per, a.ivl, a.timeout, a.ttl, a.seconds + 40)
        return 0
    ctx = zmq.Context(io_threads=a.io_threads)
    router: zmq.Socket[bytes] = ctx.socket(zmq.ROUTER)
    heartbeats(router, a.ivl, a.timeout, a.ttl)
    router.setsockopt(zmq.BACKLOG, 4096)
    endpoint = f"tcp://127.0.0.1:{router.bind_to_random_port('tcp://127.0.0.1')}"
    mon = router.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED)
    handshakes = drops = 0

    def drain(wait_ms: int) -> None:
        nonlocal handshakes, drops
        while mon.poll(wait_ms):
            wait_ms = 0
            event = recv_monitor_message(mon)["event"]
            handshakes += event == zmq.EVENT_HANDSHAKE_SUCCEEDED
            drops += event == zmq.EVENT_DISCONNECTED

    with Procs() as procs:
        for _ in range(a.procs):
            procs.start([PY, __file__, "--_dealers", endpoint, "--connections",
                         str(a.connections), "--procs", str(a.procs), "--ivl", str(a.ivl),
                         "--timeout", str(a.timeout), "--ttl", str(a.ttl), "--seconds",
                         str(a.seconds)])
        t0 = time.monotonic()
        while handshakes < per * a.procs and time.monotonic() - t0 < 60:
            drain(100)
        connected = time.monotonic() - t0
        time.sleep(3)  # the last pings of the connect storm
        before, t1 = thread_cpu(os.getpid()), time.monotonic()
        time.sleep(a.seconds)
        after, span = thread_cpu(os.getpid()), time.monotonic() - t1
        drain(0)
    io = sum(v - before.get(k, 0.0) for k, v in after.items() if k.startswith("ZMQbg/IO"))
    print(f"{per * a.procs} connections, ZMTP ivl {a.ivl:g} s timeout {a.timeout:g} s "
          f"ttl {a.ttl:g} s, {a.io_threads} I/O thread(s): {handshakes} handshakes in "
          f"{connected:.2f} s, {drops} dropped, steady I/O threads {io / span:.3f} cores, "
          f"load average {os.getloadavg()[0]:.2f}")
    mon.close(0)
    router.close(0)
    ctx.term()
    return 0


if __name__ == "__main__":
    sys.exit(main())
