"""The ``mdp`` command: broker, worker, call, services, demo.

``-v`` logs lifecycle events (INFO: workers registered or lost, requests
re-dispatched, reconnects); ``-vv`` adds one line per message (DEBUG).
The broker endpoint defaults to ``$MDP_ENDPOINT`` or ``tcp://127.0.0.1:5555``.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence

import zmq

import mdp_core
from mdp_core import Dialect

from ._broker import Broker
from ._client import Client, RequestTimeout
from ._worker import Handler, Worker
from .glue import TransportConfig

__all__ = ["main"]

DEFAULT_ENDPOINT = "tcp://127.0.0.1:5555"
_VERSIONS = {"0.1": Dialect.MDP01, "0.2": Dialect.MDP02}

log = logging.getLogger("mdp_zmq.cli")


def _default_endpoint() -> str:
    return os.environ.get("MDP_ENDPOINT", DEFAULT_ENDPOINT)


def _transport(args: argparse.Namespace) -> TransportConfig:
    zmtp = args.zmtp_heartbeat
    if zmtp <= 0:
        return TransportConfig(heartbeat_ivl=None, heartbeat_timeout=None, heartbeat_ttl=None)
    return TransportConfig(
        heartbeat_ivl=zmtp, heartbeat_timeout=args.zmtp_timeout or 3 * zmtp,
        heartbeat_ttl=args.zmtp_timeout or 3 * zmtp,
    )


# ------------------------------------------------------------------ commands


def cmd_broker(args: argparse.Namespace) -> int:
    """Run a broker until SIGINT/SIGTERM."""
    config = mdp_core.BrokerConfig(heartbeat_interval=args.heartbeat)
    broker = Broker(args.bind or [DEFAULT_ENDPOINT], config, transport=_transport(args))
    print("mdp broker listening on " + " ".join(broker.endpoints), flush=True)
    broker.run()
    return 0


def _exec_handler(command: str) -> Handler:
    argv = shlex.split(command)

    def handler(frames: list[bytes]) -> bytes:
        done = subprocess.run(argv, input=b"\n".join(frames), capture_output=True, check=True)
        return done.stdout

    return handler


def cmd_worker(args: argparse.Namespace) -> int:
    """Serve SERVICE with --echo or --exec until SIGINT/SIGTERM."""
    delay, announce = args.delay, args.announce

    def echo(frames: list[bytes]) -> list[bytes]:
        if announce:
            print(f"started pid={os.getpid()}", flush=True)
        if delay:
            time.sleep(delay)
        return frames

    handler: Handler = echo if args.echo else _exec_handler(args.exec)
    config = mdp_core.WorkerConfig(heartbeat_interval=args.heartbeat)
    worker = Worker(args.connect, args.service, handler, config, _VERSIONS[args.mdp],
                    transport=_transport(args))
    if announce:
        print(f"ready pid={os.getpid()}", flush=True)
    worker.run()
    return 0


def _show(frames: Sequence[bytes]) -> str:
    return " ".join(f.decode(errors="backslashreplace") for f in frames)


def cmd_call(args: argparse.Namespace) -> int:
    """Send one request and print the reply frames (PARTIALs too with --stream)."""
    body = [b.encode() for b in args.body] or [b""]
    config = mdp_core.ClientConfig(timeout=args.timeout, retries=args.retries)
    with Client(args.connect, config, _VERSIONS[args.mdp], transport=_transport(args)) as client:
        try:
            if args.stream:
                for frames in client.stream(args.service, *body):
                    print(_show(frames), flush=True)
            else:
                print(_show(client.request(args.service, *body)))
        except RequestTimeout as exc:
            print(f"mdp call: {exc}", file=sys.stderr)
            return 2
    return 0


def cmd_services(args: argparse.Namespace) -> int:
    """List the services that have workers (MMI ``mmi.services``)."""
    config = mdp_core.ClientConfig(timeout=args.timeout, retries=args.retries)
    with Client(args.connect, config, transport=_transport(args)) as client:
        try:
            names = client.request("mmi.services", b"")
        except RequestTimeout as exc:
            print(f"mdp services: {exc}", file=sys.stderr)
            return 2
    for name in names:
        if name:
            print(name.decode(errors="backslashreplace"))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Kill a busy worker mid-job and show the request re-dispatched."""
    from ._demo import run_demo

    return run_demo(job_seconds=args.job, kill_after=args.kill_after)


# ------------------------------------------------------------------ parser


def build_parser() -> argparse.ArgumentParser:
    """The ``mdp`` argument parser."""
    p = argparse.ArgumentParser(prog="mdp", description="ZeroMQ Majordomo (MDP/0.1, 0.2, MMI)")
    p.add_argument("-v", "--verbose", action="count", default=0,
                   help="-v: lifecycle events; -vv: every message")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(sp: argparse.ArgumentParser, *, heartbeat: bool = True) -> None:
        sp.add_argument("--zmtp-heartbeat", type=float, default=1.0, metavar="S",
                        help="ZMTP ping interval in s (0: off) [1.0]")
        sp.add_argument("--zmtp-timeout", type=float, default=0.0, metavar="S",
                        help="drop a silent connection after S s [3 x interval]")
        if heartbeat:
            sp.add_argument("--heartbeat", type=float, default=2.5, metavar="S",
                            help="MDP heartbeat interval in s [2.5]")

    b = sub.add_parser("broker", help="run a broker")
    b.add_argument("--bind", action="append", metavar="ENDPOINT",
                   help=f"endpoint to bind (repeatable) [{DEFAULT_ENDPOINT}]")
    common(b)
    b.set_defaults(func=cmd_broker)

    w = sub.add_parser("worker", help="run a worker for SERVICE")
    w.add_argument("service")
    mode = w.add_mutually_exclusive_group(required=True)
    mode.add_argument("--echo", action="store_true", help="reply with the request frames")
    mode.add_argument("--exec", metavar="CMD",
                      help="run CMD per request: frames joined by newlines on stdin, "
                      "stdout is the reply")
    w.add_argument("--connect", default=_default_endpoint(), metavar="ENDPOINT")
    w.add_argument("--mdp", choices=sorted(_VERSIONS), default="0.2", help="MDP version [0.2]")
    w.add_argument("--delay", type=float, default=0.0, metavar="S",
                   help="--echo: sleep S s per request (a slow job)")
    w.add_argument("--announce", action="store_true", help=argparse.SUPPRESS)
    common(w)
    w.set_defaults(func=cmd_worker)

    c = sub.add_parser("call", help="send one request and print the reply")
    c.add_argument("service")
    c.add_argument("body", nargs="*", help="one frame each (default: one empty frame)")
    c.add_argument("--connect", default=_default_endpoint(), metavar="ENDPOINT")
    c.add_argument("--mdp", choices=sorted(_VERSIONS), default="0.2", help="MDP version [0.2]")
    c.add_argument("--stream", action="store_true", help="print PARTIAL replies as they come")
    c.add_argument("--timeout", type=float, default=5.0, metavar="S", help="per attempt [5]")
    c.add_argument("--retries", type=int, default=1, metavar="N", help="resends [1]")
    common(c, heartbeat=False)
    c.set_defaults(func=cmd_call)

    s = sub.add_parser("services", help="list services that have workers (MMI)")
    s.add_argument("--connect", default=_default_endpoint(), metavar="ENDPOINT")
    s.add_argument("--timeout", type=float, default=2.0, metavar="S")
    s.add_argument("--retries", type=int, default=0, metavar="N")
    common(s, heartbeat=False)
    s.set_defaults(func=cmd_services)

    d = sub.add_parser("demo", help="kill a busy worker mid-job; watch the request survive")
    d.add_argument("--job", type=float, default=2.0, metavar="S", help="job length [2]")
    d.add_argument("--kill-after", type=float, default=0.5, metavar="S",
                   help="kill the busy worker S s into the job [0.5]")
    d.set_defaults(func=cmd_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mdp`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        status: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    except zmq.ZMQError as exc:
        print(f"mdp {args.command}: {exc}", file=sys.stderr)
        return 1
    return status


if __name__ == "__main__":
    sys.exit(main())
