"""Endpoint parsing for every driver and the ``mdp`` command (re-exported by
:mod:`mdp_zmq.glue`): what a user types becomes a ZeroMQ endpoint."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["as_endpoints", "bind_endpoints", "normalize_endpoint", "parse_host_port"]


def parse_host_port(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:9100`` for IPv6; port 0: any free one) as
    ``(host, port)``, e.g. the address of a metrics endpoint. Raises
    ValueError for anything else."""
    host, colon, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not colon or not host or not (port.isascii() and port.isdigit()) or int(port) > 65535:
        raise ValueError(f"{text!r}: expected HOST:PORT with a port 0-65535")
    return host, int(port)


def normalize_endpoint(endpoint: str, *, bind: bool = False) -> str:
    """Turn a user-supplied endpoint into a ZeroMQ one.

    ``"5555"`` becomes ``tcp://127.0.0.1:5555`` (``tcp://*:5555`` is never
    implied), ``"host:port"`` becomes ``tcp://host:port``, a path containing
    ``/`` becomes ``ipc://path``; ``scheme://...`` is kept. ``bind`` only
    affects the message of the ValueError raised for an empty endpoint.
    Raises TypeError if ``endpoint`` is not a str.
    """
    if not isinstance(endpoint, str):
        raise TypeError(f"endpoint must be a str, not {type(endpoint).__name__}")
    ep = endpoint.strip()
    if not ep:
        raise ValueError(f"empty endpoint to {'bind' if bind else 'connect'}")
    if "://" in ep:
        return ep
    if ep.isdigit():
        return f"tcp://127.0.0.1:{ep}"
    if "/" in ep:
        return f"ipc://{ep}"
    return f"tcp://{ep}"


def as_endpoints(endpoints: str | Sequence[str]) -> list[str]:
    """The brokers a worker or client connects to: one endpoint (a str) or a list.

    Each is checked as :func:`normalize_endpoint` does and kept as given.
    Raises TypeError if ``endpoints`` is neither a str nor a list or tuple
    of str (the message says "endpoint must be a str"), ValueError for an
    empty list, an empty endpoint, or one given twice.
    """
    if isinstance(endpoints, str):
        given = [endpoints]
    elif isinstance(endpoints, (list, tuple)):
        given = list(endpoints)
    else:
        raise TypeError("endpoint must be a str or a list of str, "
                        f"not {type(endpoints).__name__}")
    if not given:
        raise ValueError("no broker endpoint to connect to")
    seen: set[str] = set()
    for endpoint in given:
        normal = normalize_endpoint(endpoint)
        if normal in seen:
            raise ValueError(f"broker endpoint {normal} given twice")
        seen.add(normal)
    return given


def bind_endpoints(endpoints: str | Sequence[str]) -> list[str]:
    """The endpoints a broker binds: one (a str) or a sequence of them.

    Each is checked when it is bound (``glue.make_router``). Raises
    TypeError if ``endpoints`` is neither a str nor a sequence (bytes are
    not one), before the broker opens anything.
    """
    if isinstance(endpoints, str):
        return [endpoints]
    if not isinstance(endpoints, Sequence) or isinstance(endpoints, (bytes, bytearray)):
        raise TypeError("endpoints must be a str or a sequence of str, not "
                        f"{type(endpoints).__name__}")
    return list(endpoints)
