"""What ``tests/async_peer.py`` and ``tests/gevent_peer.py`` share: their command
line and the broker or echo worker it describes, with the lines they print.

Each peer passes its driver's module (``mdp_async`` or ``mdp_gevent``) and
its echo handler; serving is the peer's own. The arguments are those of
``mdp broker`` / ``mdp worker SERVICE --echo --announce``.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from types import ModuleType
from typing import Any

from mdp_core import BrokerConfig, Dialect, WorkerConfig

VERSIONS = {"0.1": Dialect.MDP01, "0.2": Dialect.MDP02}


def parser(description: str) -> argparse.ArgumentParser:
    """The peer's parser: a ``broker`` and a ``worker`` role, as ``mdp`` has them."""
    p = argparse.ArgumentParser(description=description.split("\n\n")[0])
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
    return p


def transport(driver: ModuleType, args: argparse.Namespace) -> Any:
    """ZMTP heartbeats as the ``mdp`` command sets them."""
    ivl = args.zmtp_heartbeat
    timeout = args.zmtp_timeout or 3 * ivl
    return driver.TransportConfig(heartbeat_ivl=ivl, heartbeat_timeout=timeout,
                                  heartbeat_ttl=timeout)


def served(driver: ModuleType, args: argparse.Namespace,
           echo: Callable[[list[bytes]], Any]) -> Any:
    """The broker or worker the arguments describe, not yet serving; prints
    ``mdp broker listening on <endpoints>`` or ``ready pid=<pid>``. ``echo``
    is the worker's handler (it prints ``started pid=<pid>`` per job)."""
    if args.role == "broker":
        b = driver.Broker(args.bind, BrokerConfig(heartbeat_interval=args.heartbeat),
                          transport=transport(driver, args))
        print("mdp broker listening on " + " ".join(b.endpoints), flush=True)
        return b
    w = driver.Worker(args.connect, args.service, echo,
                      WorkerConfig(heartbeat_interval=args.heartbeat), VERSIONS[args.mdp],
                      transport=transport(driver, args))
    print(f"ready pid={os.getpid()}", flush=True)
    return w
