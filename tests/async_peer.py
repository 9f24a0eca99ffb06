"""An ``mdp_async`` broker or echo worker in a process of its own, for the socket tests.

Stands in for ``mdp broker`` / ``mdp worker SERVICE --echo --announce``
with the async driver (until the ``mdp`` command's ``--driver`` flag) and
prints the same lines, so tests can treat both alike: ``mdp broker
listening on <endpoint>``; ``ready pid=<pid>`` before the worker connects
and ``started pid=<pid>`` when a job starts. SIGTERM or SIGINT stops it
cleanly (the broker DISCONNECTs its workers, the worker its broker).

Run: ``python tests/async_peer.py --backend trio broker --bind tcp://127.0.0.1:5555``
or ``python tests/async_peer.py --backend asyncio worker echo --connect ... --delay 30``
(``--heartbeat``, ``--zmtp-heartbeat``, ``--zmtp-timeout`` after the role, as for ``mdp``).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

import anyio
import mdp_async

from mdp_core import BrokerConfig, Dialect, WorkerConfig

VERSIONS = {"0.1": Dialect.MDP01, "0.2": Dialect.MDP02}


def transport(args: argparse.Namespace) -> mdp_async.TransportConfig:
    """ZMTP heartbeats as the ``mdp`` command sets them."""
    ivl = args.zmtp_heartbeat
    timeout = args.zmtp_timeout or 3 * ivl
    return mdp_async.TransportConfig(heartbeat_ivl=ivl, heartbeat_timeout=timeout,
                                     heartbeat_ttl=timeout)


def broker(args: argparse.Namespace) -> mdp_async.Broker:
    """The broker the arguments describe (bound, not yet serving)."""
    b = mdp_async.Broker(args.bind, BrokerConfig(heartbeat_interval=args.heartbeat),
                         transport=transport(args))
    print("mdp broker listening on " + " ".join(b.endpoints), flush=True)
    return b


def worker(args: argparse.Namespace) -> mdp_async.Worker:
    """An echo worker that announces each job and takes ``--delay`` s over it."""
    pid = os.getpid()

    async def echo(frames: list[bytes]) -> list[bytes]:
        print(f"started pid={pid}", flush=True)
        if args.delay:
            await anyio.sleep(args.delay)
        return frames

    w = mdp_async.Worker(args.connect, args.service, echo,
                         WorkerConfig(heartbeat_interval=args.heartbeat), VERSIONS[args.mdp],
                         transport=transport(args))
    print(f"ready pid={pid}", flush=True)
    return w


def main(argv: list[str]) -> None:
    """Parse, build the broker or worker, serve until SIGTERM/SIGINT."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", choices=["trio", "asyncio"], default="trio")
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
    anyio.run(serve_until_signal, served, backend=args.backend)


async def serve_until_signal(served: mdp_async.Broker | mdp_async.Worker) -> None:
    """Serve until SIGTERM or SIGINT, then shut down cleanly."""
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with served:
            async for _ in signals:
                return


if __name__ == "__main__":
    main(sys.argv[1:])
