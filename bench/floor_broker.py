"""The floor: a bare pyzmq ROUTER loop that forwards with no protocol at all.

Workers say ``[b"READY"]`` once; any other message from a peer that is not
a worker is a request, forwarded to the next worker round-robin as
``[worker, client, body...]``; a worker's ``[client, body...]`` goes back
to that client as ``[client, body...]``. No queues, no heartbeats, no
checks: one ``recv_multipart`` and one ``send_multipart`` per message, the
least any Python broker on pyzmq can do.

With ``--lru`` it keeps Majordomo's dispatch rule and nothing else: a
worker gets one request at a time (others wait in a FIFO queue in the
broker) and the least recently used idle worker goes first. That is the
floor for any MDP broker, whose workers take one request at a time, while
the plain floor lets libzmq pipeline requests into the workers' queues.

With ``--mdp`` (implies ``--lru``) it does the same on MDP/0.2's frames
(RFC 18: a client REQUEST ``[MDPC02, 0x01, service, body...]`` goes to an
idle worker as ``[MDPW02, 0x02, client, "", body...]``, the worker's FINAL
``[MDPW02, 0x04, client, "", body...]`` back as ``[MDPC02, 0x03, service,
body...]``), still with no checks, heartbeats or bookkeeping: what the
frames of MDP cost by themselves, in this loop and in libzmq's I/O thread.

Run: ``python bench/floor_broker.py tcp://127.0.0.1:5555 [--lru | --mdp]``.
"""

from __future__ import annotations

import contextlib
import signal
import sys
from collections import deque

import zmq


def main(endpoint: str, lru: bool = False, mdp: bool = False) -> None:
    """Bind ``endpoint`` and forward until SIGTERM/SIGINT."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    router.bind(endpoint)
    print("listening " + router.getsockopt_string(zmq.LAST_ENDPOINT), flush=True)
    workers: list[bytes] = []
    known: set[bytes] = set()
    nxt = 0
    recv, send = router.recv_multipart, router.send_multipart
    if mdp:
        _mdp_loop(recv, send)
    if lru:
        _lru_loop(recv, send)
    while True:
        msg = recv()
        peer = msg[0]
        if peer in known:
            send(msg[1:])
        elif msg[1] == b"READY" and len(msg) == 2:
            workers.append(peer)
            known.add(peer)
        elif workers:
            nxt = (nxt + 1) % len(workers)
            msg.insert(0, workers[nxt])
            send(msg)


def _mdp_loop(recv, send) -> None:  # type: ignore[no-untyped-def]
    idle: deque[bytes] = deque()
    queue: deque[list[bytes]] = deque()
    service: dict[bytes, bytes] = {}  # worker -> the service it registered for
    w02, c02 = b"MDPW02", b"MDPC02"
    while True:
        msg = recv()
        peer = msg[0]
        if msg[1] == w02:
            if msg[2] == b"\x04":  # FINAL [worker, W02, 4, client, "", body...]
                send([msg[3], c02, b"\x03", service[peer], *msg[5:]])
            elif msg[2] == b"\x01":  # READY [worker, W02, 1, service]
                service[peer] = msg[3]
            else:
                continue
            if queue:
                client, body = queue.popleft()
                send([peer, w02, b"\x02", client, b"", *body])
            else:
                idle.append(peer)
        elif idle:  # REQUEST [client, C02, 1, service, body...]
            send([idle.popleft(), w02, b"\x02", peer, b"", *msg[4:]])
        else:
            queue.append([peer, msg[4:]])


def _lru_loop(recv, send) -> None:  # type: ignore[no-untyped-def]
    idle: deque[bytes] = deque()
    queue: deque[list[bytes]] = deque()
    known: set[bytes] = set()
    while True:
        msg = recv()
        peer = msg[0]
        if peer in known:
            send(msg[1:])
            if queue:
                send([peer, *queue.popleft()])
            else:
                idle.append(peer)
        elif msg[1] == b"READY" and len(msg) == 2:
            known.add(peer)
            if queue:
                send([peer, *queue.popleft()])
            else:
                idle.append(peer)
        elif idle:
            msg.insert(0, idle.popleft())
            send(msg)
        else:
            queue.append(msg)


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a not in ("--lru", "--mdp")]
    with contextlib.suppress(KeyboardInterrupt):
        main(args[0] if args else "tcp://127.0.0.1:5555", "--lru" in sys.argv[1:],
             "--mdp" in sys.argv[1:])
