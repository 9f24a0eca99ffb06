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

import argparse  # noqa: E402 - after patch_all, as patched programs do
import os  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402
import mdp_gevent  # noqa: E402

from mdp_core import BrokerConfig, Dialect, WorkerConfig  # noqa: E402

VERSIONS = {"0.1": Dialect.MDP01, "0.2": Dialect.MDP02}


def transport(args: argparse.Namespace) -> mdp_gevent.TransportConfig:
    """ZMTP heartbeats as the ``mdp`` command sets them."""
    ivl = args.zmtp_heartbeat
    timeout = args.zmtp_timeout or 3 * ivl
    return mdp_gevent.TransportConfig(heartbeat_ivl=ivl, heartbeat_timeout=timeout,
                                      heartbeat_ttl=timeout)


def broker(args: argparse.Namespace) -> mdp_gevent.Broker:
    """The broker the arguments describe (bound, not yet serving)."""
    b = mdp_gevent.Broker(args.bind, BrokerConfig(heartbeat_interval=args.heartbeat),
                          transport=transport(args))
    print("mdp broker listening on " + " ".join(b.endpoints), flush=True)
    return b


def worker(args: argparse.Namespace) -> mdp_gevent.Worker:
    """An echo worker that announces each job and takes ``--delay`` s over it."""
    pid = os.getpid()

    def echo(frames: list[bytes]) -> list[bytes]:
        print(f"started pid={pid}", flush=True)
        if args.delay:
            time.sleep(args.delay)  # patched: the pump keeps heartbeating meanwhile
        return frames

    w = mdp_gevent.Worker(args.connect, args.service, echo,
                          WorkerConfig(heartbeat_interval=args.heartbeat), VERSIONS[args.mdp],
                          transport=transport(args))
    print(f"ready pid={pid}", flush=True)
    return w


def main(argv: list[str]) -> None:
    """Parse, build the broker or worker, serve until SIGTERM/SIGINT."""
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    sub = p.add_subparsers(dest="role", required=True)
    b = sub.add_parser("broker")
    b.add_argument("--bind", action="append", required=True)
    w = sub.add_parser("worker")
    w.add_argument("service")
    w.add_argument("--connect", required=True)
    w.add_argument("--delay", type=float, default=0.0)
    w.add_argument("--mdp", choices=sorted(VERSIONS), default="0.2")
    for sp in (b, w):  # after the role, as the `mdp` command takes them
        sp.add_argument("--heartbeat", type=float, default=2.5, help="MDP heartbeat interval")
        sp.add_argument("--zmtp-heartbeat", type=float, default=1.0)
        sp.add_argument("--zmtp-timeout", type=float, default=0.0)
    args = p.parse_args(argv)
    served = broker(args) if args.role == "broker" else worker(args)
    for sig in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(sig, served.close)
    served.serve()


if __name__ == "__main__":
    main(sys.argv[1:])
