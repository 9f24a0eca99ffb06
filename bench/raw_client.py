"""A load generator speaking raw client frames: a window of requests in flight.

One DEALER to one broker, in the broker's dialect (``--dialect``: MDP/0.2,
majortomo's, or the floor's bare body; the frames of ``bench/e2e.py``).
Once a request has been answered (the broker has a worker) it prints
``ready``. Then, by default, it waits until the wall-clock time
``--start-at`` (so that several of these start together), keeps
``--window`` requests in flight for ``--seconds`` (a new one as each reply
arrives; every request carries a sequence number that its reply echoes)
and prints one JSON line: replies counted, the seconds they took, its own
CPU seconds over that time, and whether it was ready late.

With ``--commands`` it stays up instead and runs one such load per line
read from stdin, ``run SECONDS WINDOW``, printing the same JSON line plus
every round trip's latency in microseconds (``lat_us``), until stdin
closes: ``bench/e2e.py`` keeps one per core and starts them together, so
that the load generator is not what limits a fast broker.

Run: ``python bench/raw_client.py tcp://127.0.0.1:5555 --window 25 --seconds 2``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable

import zmq

C02 = b"MDPC02"


def maker(dialect: str, service: bytes) -> Callable[[bytes], list[bytes]]:
    """Request frames in ``dialect`` for a tag (the reply's last frame is the tag)."""
    if dialect == "mdp02":
        return lambda tag: [C02, b"\x01", service, tag]
    if dialect == "majortomo":
        return lambda tag: [b"", C02, b"\x02", service, tag]
    return lambda tag: [tag]


def load(sock: zmq.Socket[bytes], make: Callable[[bytes], list[bytes]], seq: int,
         seconds: float, window: int, lat: list[float] | None) -> tuple[dict[str, object], int]:
    """``window`` requests in flight for ``seconds``; the result and the last tag."""
    send, recv, clock = sock.send_multipart, sock.recv_multipart, time.perf_counter
    sent: dict[bytes, float] = {}
    cpu0, start = time.process_time(), clock()
    stop = start + seconds
    for _ in range(window):
        seq += 1
        tag = seq.to_bytes(8, "little")
        sent[tag] = clock()
        send(make(tag))
    replies, now = 0, start
    while sent:
        reply = recv()
        now = clock()
        t0 = sent.pop(reply[-1], None)
        if t0 is None:  # a late reply to an earlier run
            continue
        replies += 1
        if lat is not None:
            lat.append(now - t0)
        if now < stop:
            seq += 1
            tag = seq.to_bytes(8, "little")
            sent[tag] = now
            send(make(tag))
    return {"replies": replies, "seconds": now - start, "cpu": time.process_time() - cpu0}, seq


def main(argv: list[str] | None = None) -> None:
    """Probe, then load the broker once (or per command), report."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("endpoint")
    p.add_argument("--window", type=int, default=25, help="requests in flight [25]")
    p.add_argument("--seconds", type=float, default=2.0, help="how long [2]")
    p.add_argument("--start-at", type=float, default=0.0,
                   help="time.time() to start at [at once]")
    p.add_argument("--service", default="echo")
    p.add_argument("--dialect", choices=["mdp02", "majortomo", "floor"], default="mdp02")
    p.add_argument("--commands", action="store_true",
                   help="run one load per 'run SECONDS WINDOW' line on stdin")
    a = p.parse_args(argv)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 10_000)
    sock.connect(a.endpoint)
    make = maker(a.dialect, a.service.encode())
    sock.send_multipart(make((0).to_bytes(8, "little")))
    sock.recv_multipart()  # the broker has a worker (zmq.Again after 10 s: it has none)
    print("ready", flush=True)
    seq = 0
    if not a.commands:
        late = time.time() > a.start_at
        time.sleep(max(0.0, a.start_at - time.time()))
        result, seq = load(sock, make, seq, a.seconds, a.window, None)
        print(json.dumps({**result, "late": late}), flush=True)
        return
    for line in sys.stdin:
        _, seconds, window = line.split()
        lat: list[float] = []
        result, seq = load(sock, make, seq, float(seconds), int(window), lat)
        result["lat_us"] = [round(x * 1e6) for x in lat]
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
