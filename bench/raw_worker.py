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

Run: ``python bench/raw_worker.py tcp://127.0.0.1:5555 --dialect mdp02``.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time

import zmq
import zmq.auth

W02 = b"MDPW02"


def main(argv: list[str] | None = None) -> None:
    """Connect and serve until DISCONNECT, SIGTERM or SIGKILL."""
    p = argparse.ArgumentParser(description="raw echo worker")
    p.add_argument("endpoint")
    p.add_argument("--dialect", choices=["mdp02", "majortomo", "floor"], default="mdp02")
    p.add_argument("--service", default="echo")
    p.add_argument("--role", choices=["echo", "victim"], default="echo")
    p.add_argument("--curve-secret", help="CURVE: this worker's secret key file")
    p.add_argument("--broker-key", help="CURVE: the broker's public key file")
    a = p.parse_args(argv)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if a.curve_secret:
        public, secret = zmq.auth.load_certificate(a.curve_secret)
        sock.setsockopt(zmq.CURVE_PUBLICKEY, public)
        sock.setsockopt(zmq.CURVE_SECRETKEY, secret or b"")
        sock.setsockopt(zmq.CURVE_SERVERKEY, zmq.auth.load_certificate(a.broker_key)[0])
    sock.connect(a.endpoint)
    service = a.service.encode()
    victim = a.role == "victim"
    if a.dialect == "floor":
        sock.send_multipart([b"READY"])
        print("ready", flush=True)
        while True:
            msg = sock.recv_multipart()
            if victim:
                break
            sock.send_multipart(msg)
    else:
        prefix = [W02] if a.dialect == "mdp02" else [b"", W02]
        c = len(prefix)  # index of the command byte
        hb_cmd = b"\x05"
        sock.send_multipart([*prefix, b"\x01", service])
        print("ready", flush=True)
        while True:
            msg = sock.recv_multipart()
            cmd = msg[c]
            if cmd == b"\x02":
                if victim:
                    break
                msg[c] = b"\x04"
                sock.send_multipart(msg)
            elif cmd == hb_cmd:
                sock.send_multipart([*prefix, hb_cmd])
            elif cmd == b"\x06":
                return
    # victim: report the job's start, then stay busy until killed
    print(f"busy {time.monotonic():.9f}", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main(sys.argv[1:])
