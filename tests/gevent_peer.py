"""An ``mdp_gevent`` broker or echo worker in a process of its own, monkey-patched.

Stands in for ``mdp broker`` / ``mdp worker SERVICE --echo --announce``
with the gevent driver and prints the same lines, so tests can treat
every driver alike: ``mdp broker listening on <endpoint>``; ``ready
pid=<pid>`` before the worker connects and ``started pid=<pid>`` when a
job starts. It calls ``gevent.monkey.patch_all()`` first, as a gunicorn
gevent worker or a greenlet daemon would, so the worker's job sleeps
with a plain ``time.sleep`` and still yields to the hub (the in-process
tests run gevent unpatched). SIGTERM or SIGINT stops it cleanly
(``gevent.signal_handler`` calls ``close``: the broker DISCONNECTs its
workers, the worker its broker).

Run: ``python tests/gevent_peer.py broker --bind tcp://127.0.0.1:5555`` or
``python tests/gevent_peer.py worker echo --connect ... --delay 30``
(``--heartbeat``, ``--zmtp-heartbeat``, ``--zmtp-timeout`` after the role, as for ``mdp``).
"""

from gevent import monkey

monkey.patch_all()

import os  # noqa: E402 - after patch_all, as patched programs do
import signal  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402
import mdp_gevent  # noqa: E402
from peer_args import parser, served  # noqa: E402


def main(argv: list[str]) -> None:
    """Parse, build the broker or worker, serve until SIGTERM/SIGINT."""
    p = parser(__doc__ or "")
    args = p.parse_args(argv)
    pid = os.getpid()

    def echo(frames: list[bytes]) -> list[bytes]:
        print(f"started pid={pid}", flush=True)
        if args.delay:
            time.sleep(args.delay)  # patched: the pump keeps heartbeating meanwhile
        return frames

    peer = served(mdp_gevent, args, echo)
    for sig in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(sig, peer.close)
    peer.serve()


if __name__ == "__main__":
    main(sys.argv[1:])
