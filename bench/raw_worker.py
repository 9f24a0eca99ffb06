"""A minimal echo worker speaking raw frames, so worker cost does not dominate.

The same loop serves every contender; only the frames differ:

* ``mdp02``: MDP/0.2 (RFC 18): READY ``[MDPW02, 0x01, service]``; REQUEST
  ``[MDPW02, 0x02, client, "", body...]`` is answered by FINAL, the same
  list with the command byte set to 0x04.
* ``majortomo``: majortomo 0.2.0's dialect: the same with a leading empty frame.
* ``floor``: no protocol: ``[b"READY"]`` once, then every message
  ``[client, body...]`` is sent back unchanged.

HEARTBEATs are answered with a HEARTBEAT (MDP dialects). ``--role victim``
(recovery bench) prints ``busy <monotonic>`` on a request and then hangs
until it is killed. Prints ``ready`` once READY is queued. With
``--curve-secret FILE --broker-key FILE`` the socket is a CURVE client
(``bench/e2e.py --curve``).

Given several endpoints (MDP dialects), it holds one DEALER per broker
and serves whichever has a request (the multi-broker topology of
``bench/brokers.py``); with one it blocks in ``recv`` as before.
``--count N`` makes it N workers in one process (N DEALERs per endpoint,
each a worker of its own, served as they become readable), so that many
workers do not need many processes (``bench/e2e.py --workers 128``).

Run: ``python bench/raw_worker.py tcp://127.0.0.1:5555 --dialect mdp02``.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Callable

import zmq
import zmq.auth

W02 = b"MDPW02"


def serve_floor(wait: Callable[[], list[zmq.Socket[bytes]]]) -> None:
    """The floor's worker: send every message back unchanged, forever."""
    while True:
        for sock in wait():
            sock.send_multipart(sock.recv_multipart())


def serve(wait: Callable[[], list[zmq.Socket[bytes]]], prefix: list[bytes], victim: bool
          ) -> bool:
    """Answer REQUESTs and HEARTBEATs on the sockets ``wait()`` returns until a
    DISCONNECT (False) or, as the victim, the first REQUEST (True)."""
    c = len(prefix)  # index of the command byte
    heartbeat = [*prefix, b"\x05"]
    while True:
        for sock in wait():
            msg = sock.recv_multipart()
            cmd = msg[c]
            if cmd == b"\x02":
                if victim:
                    return True
                msg[c] = b"\x04"
                sock.send_multipart(msg)
            elif cmd == b"\x05":
                sock.send_multipart(heartbeat)
            elif cmd == b"\x06":
                return False


def main(argv: list[str] | None = None) -> None:
    """Connect and serve until DISCONNECT, SIGTERM or SIGKILL."""
    p = argparse.ArgumentParser(description="raw echo worker")
    p.add_argument("endpoint", nargs="+")
    p.add_argument("--dialect", choices=["mdp02", "majortomo", "floor"], default="mdp02")
    p.add_argument("--service", default="echo")
    p.add_argument("--role", choices=["echo", "victim"], default="echo")
    p.add_argument("--curve-secret", help="CURVE: this worker's secret key file")
    p.add_argument("--broker-key", help="CURVE: the broker's public key file")
    p.add_argument("--count", type=int, default=1, help="workers in this process [1]")
    a = p.parse_args(argv)
    ctx = zmq.Context()
    socks = []
    for endpoint in [e for e in a.endpoint for _ in range(a.count)]:
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        if a.curve_secret:
            public, secret = zmq.auth.load_certificate(a.curve_secret)
            sock.setsockopt(zmq.CURVE_PUBLICKEY, public)
            sock.setsockopt(zmq.CURVE_SECRETKEY, secret or b"")
            sock.setsockopt(zmq.CURVE_SERVERKEY, zmq.auth.load_certificate(a.broker_key)[0])
        sock.connect(endpoint)
        socks.append(sock)
    service = a.service.encode()
    victim = a.role == "victim"
    if len(socks) > 1 and victim:
        p.error("several workers: --role echo only")
    if len(socks) == 1:
        def wait() -> list[zmq.Socket[bytes]]:
            return socks
    else:
        poller = zmq.Poller()
        for sock in socks:
            poller.register(sock, zmq.POLLIN)

        def wait() -> list[zmq.Socket[bytes]]:
            return [s for s, _ in poller.poll()]
    if a.dialect == "floor":
        for sock in socks:
            sock.send_multipart([b"READY"])
        print("ready", flush=True)
        if not victim:
            serve_floor(wait)
        sock.recv_multipart()
    else:
        prefix = [W02] if a.dialect == "mdp02" else [b"", W02]
        for sock in socks:
            sock.send_multipart([*prefix, b"\x01", service])
        print("ready", flush=True)
        if not serve(wait, prefix, victim):
            return
    # victim: report the job's start, then stay busy until killed
    print(f"busy {time.monotonic():.9f}", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main(sys.argv[1:])
