"""One log line per core event: lifecycle at INFO, per-message at DEBUG."""

from __future__ import annotations

import logging

from mdp_core import Event

__all__ = ["log_event"]

# Events that are about a worker's or broker's life, not about one message.
_INFO = {"WorkerReady", "WorkerLost", "RequestRequeued", "BrokerLost", "Disconnected"}
_WARNING = {"ProtocolError", "RequestExpired", "RequestRefused", "RequestFailed"}


def _fmt(value: object) -> str:
    if isinstance(value, bytes):
        try:
            text = value.decode("ascii")
        except UnicodeDecodeError:
            return value.hex()
        return text if text.isprintable() else value.hex()
    if isinstance(value, tuple):
        return f"<{len(value)} frame(s)>"
    return str(value)


def describe(event: Event) -> str:
    """``Name field=value ...`` with routing ids in hex and bodies summarised."""
    fields = getattr(event, "__dataclass_fields__", {})
    parts = [f"{name}={_fmt(getattr(event, name))}" for name in fields]
    return " ".join([type(event).__name__, *parts])


def log_event(logger: logging.Logger, event: Event) -> None:
    """Log ``event`` at the level its kind deserves."""
    name = type(event).__name__
    if name in _WARNING:
        level = logging.WARNING
    elif name in _INFO:
        level = logging.INFO
    else:
        level = logging.DEBUG
    if logger.isEnabledFor(level):
        logger.log(level, "%s", describe(event))
