"""A load generator speaking raw MDP/0.2 client frames: a window of requests in flight.

One DEALER to one broker. Once a request has been answered (the broker
has a worker) it prints ``ready``, waits until the wall-clock time
``--start-at`` (so that several of these start together), keeps
``--window`` requests in flight for ``--seconds`` (a new one as each reply
arrives; every request carries a sequence number that its reply echoes)
and prints one JSON line: replies counted, the seconds they took, its own
CPU seconds over that time, and whether it was ready late.

Run: ``python bench/raw_client.py tcp://127.0.0.1:5555 --window 25 --seconds 2``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import zmq

C02 = b"MDPC02"


def main(argv: list[str] | None = None) -> None:
    """Probe, wait for the start, load the broker, report."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("endpoint")
    p.add_argument("--window", type=int, default=25, help="requests in flight [25]")
    p.add_argument("--seconds", type=float, default=2.0, help="how long [2]")
    p.add_argument("--start-at", type=float, default=0.0,
                   help="time.time() to start at [at once]")
    p.add_argument("--service", default="echo")
    a = p.parse_args(argv)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 10_000)
    sock.connect(a.endpoint)
    service = a.service.encode()
    seq = 0

    def send() -> None:
        nonlocal seq
        seq += 1
        sock.send_multipart([C02, b"\x01", service, seq.to_bytes(8, "little")])

    send()
    sock.recv_multipart()  # the broker has a worker (zmq.Again after 10 s: it has none)
    print("ready", flush=True)
    late = time.time() > a.start_at
    time.sleep(max(0.0, a.start_at - time.time()))
    cpu0, start = time.process_time(), time.perf_counter()
    stop = start + a.seconds
    for _ in range(a.window):
        send()
    replies, inflight, now = 0, a.window, start
    recv, clock = sock.recv_multipart, time.perf_counter
    while inflight:
        recv()
        replies += 1
        inflight -= 1
        now = clock()
        if now < stop:
            send()
            inflight += 1
    print(json.dumps({"replies": replies, "seconds": now - start,
                      "cpu": time.process_time() - cpu0, "late": late}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
