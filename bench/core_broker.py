"""Round trips per second of the sans-IO Broker core (no sockets).

One round trip = a client REQUEST in + the worker's FINAL in, with
``outgoing()`` and ``events()`` drained after each message, as a driver
would. The clock advances 10 us per message and ``tick`` runs whenever
``next_deadline()`` passes, so heartbeats to idle workers are included.
Run: ``python bench/core_broker.py [workers ...]`` (default 2 1000 10000).
"""

from __future__ import annotations

import sys
import time

from mdp_core import Broker, BrokerConfig


def run(workers: int, rounds: int = 200_000) -> float:
    """Return round trips/s with ``workers`` idle workers on one service."""
    b = Broker(BrokerConfig())
    now = 0.0
    for i in range(workers):
        b.receive(b"w%d" % i, [b"MDPW02", b"\x01", b"echo"], now)
    b.outgoing()
    b.events()
    client = b"client"
    request = [b"MDPC02", b"\x01", b"echo", b"hello"]
    deadline = b.next_deadline()
    start = time.perf_counter()
    for _ in range(rounds):
        b.receive(client, request, now)
        out = b.outgoing()
        b.events()
        worker = out[-1][0]
        now += 1e-5
        b.receive(worker, [b"MDPW02", b"\x04", client, b"", b"hello"], now)
        b.outgoing()
        b.events()
        now += 1e-5
        if deadline is not None and now >= deadline:
            b.tick(now)
            b.outgoing()
            b.events()
            deadline = b.next_deadline()
    return rounds / (time.perf_counter() - start)


def main() -> None:
    """Print round trips/s for each worker count on the command line."""
    counts = [int(a) for a in sys.argv[1:]] or [2, 1000, 10_000]
    for n in counts:
        best = max(run(n) for _ in range(3))
        print(f"{n:>6} idle workers: {best:>9,.0f} round trips/s")


if __name__ == "__main__":
    main()
