"""What the ``mdp`` command's modules share (``cli`` and its private parts):
:class:`CliError`, the argparse types of its flags, and where peers connect.
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import shutil
from collections.abc import Sequence

from .glue import normalize_endpoint, parse_host_port

__all__ = [
    "DEFAULT_ENDPOINT",
    "CliError",
    "bind_endpoint",
    "connect_endpoint",
    "connect_endpoints",
    "connect_to",
    "env_endpoint",
    "exec_command",
    "metrics_address",
    "non_negative_float",
    "non_negative_int",
    "positive_float",
    "positive_int",
    "service_name",
    "worker_service",
]

DEFAULT_ENDPOINT = "tcp://127.0.0.1:5555"


class CliError(Exception):
    """A user error reported as one line on stderr; ``status`` is the exit status
    (2: usage, 1: run time)."""

    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.status = status


# ------------------------------------------------------------------ argument types


def _number(text: str, kind: type[float] | type[int]) -> float:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{'an integer' if kind is int else 'a number'} expected, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"a finite number expected, got {text!r}")
    return value


def _at_least(value: float, text: str, *, positive: bool) -> None:
    if positive and not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text!r}")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text!r}")


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0; raises ArgumentTypeError otherwise."""
    value = _number(text, float)
    _at_least(value, text, positive=True)
    return value


def non_negative_float(text: str) -> float:
    """argparse type: a finite number >= 0; raises ArgumentTypeError otherwise."""
    value = _number(text, float)
    _at_least(value, text, positive=False)
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer > 0; raises ArgumentTypeError otherwise."""
    value = int(_number(text, int))
    _at_least(value, text, positive=True)
    return value


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0; raises ArgumentTypeError otherwise."""
    value = int(_number(text, int))
    _at_least(value, text, positive=False)
    return value


def _endpoint(text: str, *, bind: bool) -> str:
    if "," in text:  # only a list of brokers to connect to has commas
        raise argparse.ArgumentTypeError(
            f"{text!r}: one endpoint expected here, not a comma-separated list")
    try:
        endpoint = normalize_endpoint(text, bind=bind)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    try:
        endpoint.encode()
    except UnicodeEncodeError:  # bytes the shell passed that pyzmq cannot take
        raise argparse.ArgumentTypeError(f"{text!r} is not valid UTF-8") from None
    scheme, _, address = endpoint.partition("://")
    if scheme == "tcp":
        host, colon, port = address.rpartition(":")
        if not colon or not host:
            raise argparse.ArgumentTypeError(f"{endpoint!r}: a tcp endpoint is tcp://HOST:PORT")
        # libzmq accepts a port above 65535 and listens on another one, and
        # "*" or 0 mean a random port: refused, but for "*" when binding.
        valid = port.isascii() and port.isdigit() and 1 <= int(port) <= 65535
        if not (valid or (bind and port == "*")):
            allowed = "1-65535 or * (a free port)" if bind else "1-65535"
            raise argparse.ArgumentTypeError(f"{endpoint!r}: the port must be {allowed}")
    elif scheme == "ipc" and not address:
        raise argparse.ArgumentTypeError(f"{endpoint!r}: an ipc endpoint needs a path")
    return endpoint


def connect_endpoints(text: str) -> list[str]:
    """argparse type: one endpoint to connect to, or several separated by commas
    (``a:5555,b:5555``), each as :func:`connect_endpoint` takes it; none twice.
    Raises ArgumentTypeError."""
    endpoints = [_endpoint(item, bind=False) for item in text.split(",")]
    for i, endpoint in enumerate(endpoints):
        if endpoint in endpoints[:i]:
            raise argparse.ArgumentTypeError(f"{endpoint!r} is given twice")
    return endpoints


def bind_endpoint(text: str) -> str:
    """argparse type: an endpoint to bind (``5555``, ``host:port``, ``tcp://*:*``,
    ``ipc://path``); returns it in ZeroMQ form, raises ArgumentTypeError."""
    return _endpoint(text, bind=True)


def connect_endpoint(text: str) -> str:
    """argparse type: an endpoint to connect to; like :func:`bind_endpoint`
    but a port is required."""
    return _endpoint(text, bind=False)


def metrics_address(text: str) -> str:
    """argparse type: ``HOST:PORT`` for a metrics endpoint (port 0: a free one)."""
    try:
        parse_host_port(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def service_name(text: str) -> bytes:
    """argparse type: a non-empty service name, as the bytes the shell passed
    (``os.fsencode``: bytes that are not UTF-8 are kept as they are)."""
    if not text:
        raise argparse.ArgumentTypeError("a service name cannot be empty")
    return os.fsencode(text)


def worker_service(text: str) -> bytes:
    """argparse type: :func:`service_name`, outside the ``mmi.`` namespace."""
    name = service_name(text)
    # RFC 8: the broker answers every mmi.* service itself; a worker for one
    # would never get a request (and the broker refuses its READY).
    if name.startswith(b"mmi."):
        raise argparse.ArgumentTypeError(
            f"{text!r}: mmi.* services are answered by the broker (RFC 8); "
            "a worker cannot serve them")
    return name


def exec_command(text: str) -> list[str]:
    """argparse type: a command line split like a shell does (no shell runs);
    its program must be found (``shutil.which``). Raises ArgumentTypeError."""
    try:
        argv = shlex.split(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"cannot split {text!r}: {exc}") from None
    if not argv:
        raise argparse.ArgumentTypeError("the command is empty")
    if shutil.which(argv[0]) is None:
        raise argparse.ArgumentTypeError(f"{argv[0]!r}: no such executable on PATH")
    return argv


def env_endpoint(names: Sequence[str], *, bind: bool) -> str | None:
    """The endpoint in the first of ``names`` that is set (even if empty)."""
    for name in names:
        value = os.environ.get(name)
        if value is not None:
            try:
                return _endpoint(value, bind=bind)
            except argparse.ArgumentTypeError as exc:
                raise CliError(f"${name}: {exc}") from None
    return None


def connect_to(args: argparse.Namespace) -> list[str]:
    """The brokers to connect to: ``--connect``, else ``$MDP_ENDPOINT``, else the default."""
    if args.connect:
        given: list[str] = args.connect
        return given
    value = os.environ.get("MDP_ENDPOINT")
    if value is None:
        return [DEFAULT_ENDPOINT]
    try:
        return connect_endpoints(value)
    except argparse.ArgumentTypeError as exc:
        raise CliError(f"$MDP_ENDPOINT: {exc}") from None
