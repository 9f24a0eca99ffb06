"""Log lines of core events, safe against hostile peers.

One line per event: lifecycle at INFO, per-message at DEBUG, trouble at
WARNING. Two guards keep a peer from flooding the log: every value a peer
supplied is truncated (:func:`shorten`), and repeated WARNING lines of one
kind are rate-limited by a :class:`LogLimiter` (the first few per window,
then one summary line with the count of the rest).

:class:`JsonFormatter` writes the same records as one JSON object per line,
with the event's fields as keys (``mdp ... --log-format json``).
"""

from __future__ import annotations

import enum
import json
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone

from mdp_core import Event

__all__ = [
    "HandlerError",
    "JsonFormatter",
    "LogLimiter",
    "describe",
    "event_fields",
    "log_event",
    "log_handler_failure",
    "shorten",
]

#: Bytes of a peer-supplied value shown in a log line (its length follows).
MAX_SHOWN_BYTES = 64
#: Characters of a text field (a reason, which may quote peer bytes) shown.
MAX_SHOWN_CHARS = 256
#: Characters of a reason that name its kind for rate limiting.
_KIND_CHARS = 48
# Letters and spaces, not ending in " b" (the start of a bytes repr).
_KIND_PREFIX = re.compile(r"[A-Za-z _.-]*(?<! b)")

# Events that are about a worker's or broker's life, not about one message.
_INFO = {"WorkerReady", "WorkerLost", "RequestRequeued", "RequestRedispatched", "BrokerLost",
         "Disconnected"}
_WARNING = {
    "ProtocolError", "RequestExpired", "RequestRefused", "RequestFailed", "RequestUndelivered",
    "WorkerRefused",
}


def shorten(value: object) -> str:
    """The text of ``value`` for a log line, at most a bounded size.

    Bytes are shown as ASCII if their first :data:`MAX_SHOWN_BYTES` are
    printable, else in hex, followed by ``...(N bytes)`` when cut; text
    is cut after :data:`MAX_SHOWN_CHARS` characters; a tuple (a body)
    becomes ``<N frame(s)>``.
    """
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = memoryview(value).cast("B")  # slices below copy 64 bytes, not the value
        head = bytes(data[:MAX_SHOWN_BYTES])
        text = head.decode("latin-1")
        shown = text if head.isascii() and text.isprintable() else head.hex()
        return shown if len(data) <= MAX_SHOWN_BYTES else f"{shown}...({len(data)} bytes)"
    if isinstance(value, tuple):
        return f"<{len(value)} frame(s)>"
    text = str(value)
    if len(text) <= MAX_SHOWN_CHARS:
        return text
    return f"{text[:MAX_SHOWN_CHARS]}...({len(text)} chars)"


def _json_value(value: object) -> object:
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, enum.Enum):
        return _json_value(value.value)
    return shorten(value)


def event_fields(event: Event) -> dict[str, object]:
    """``{"event": Name, field: value, ...}``: values JSON-ready, peer bytes
    and text cut as :func:`shorten` does (numbers stay numbers)."""
    fields = getattr(event, "__dataclass_fields__", {})
    out: dict[str, object] = {"event": type(event).__name__}
    for name in fields:
        out[name] = _json_value(getattr(event, name))
    return out


class JsonFormatter(logging.Formatter):
    """Formats each record as one JSON object on one line.

    Keys: ``time`` (ISO 8601, UTC, milliseconds), ``level``, ``logger``,
    ``message``; for a core event logged by :func:`log_event`, also
    :func:`event_fields` (``event`` and the event's fields); ``exception``
    with the traceback if the record has one.
    """

    def format(self, record: logging.LogRecord) -> str:
        """The JSON line of ``record`` (without the newline)."""
        out: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc)
            .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        event = getattr(record, "mdp_event", None)
        if isinstance(event, Event):
            for key, value in event_fields(event).items():
                out.setdefault(key, value)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out)


def describe(event: Event) -> str:
    """``Name field=value ...`` with every value passed through :func:`shorten`."""
    fields = getattr(event, "__dataclass_fields__", {})
    parts = [f"{name}={shorten(getattr(event, name))}" for name in fields]
    return " ".join([type(event).__name__, *parts])


@dataclass(slots=True)
class _Window:
    end: float
    logger: logging.Logger
    level: int
    logged: int = 0
    suppressed: int = 0


class LogLimiter:
    """Rate-limit repeated log lines of one kind.

    Per kind (a short string the caller chooses, stable across lines: never
    peer data), the first ``burst`` lines of each ``window`` seconds are
    let through; the rest are counted, and once the window has ended one
    summary line is written to the same logger at the same level:
    ``suppressed 12345 <kind> lines in the last 10 s``. The summary is
    written at the next :meth:`allow` or :meth:`flush` after the window;
    a driver calls :meth:`flush` from its loop, waits at most until
    :attr:`next_due`, and calls ``flush(final=True)`` when it stops. At
    most ``max_kinds`` kinds are tracked; further kinds share one.
    Thread-safe; ``clock`` is injectable for tests. Raises ValueError if
    ``burst`` < 1, ``window`` <= 0 or ``max_kinds`` < 1.
    """

    #: The kind that kinds beyond ``max_kinds`` share.
    OTHER = "other"

    def __init__(
        self,
        burst: int = 5,
        window: float = 10.0,
        *,
        max_kinds: int = 128,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if burst < 1 or not window > 0 or max_kinds < 1:
            raise ValueError("LogLimiter needs burst >= 1, window > 0 and max_kinds >= 1")
        self.burst = burst
        self.window = window
        self.max_kinds = max_kinds
        self._clock = clock
        self._windows: dict[str, _Window] = {}
        self._lock = threading.Lock()
        self._due: float | None = None  # the earliest end of a window with suppressed lines

    @property
    def next_due(self) -> float | None:
        """When :meth:`flush` has a summary to write (clock time), or None."""
        return self._due

    def allow(self, logger: logging.Logger, level: int, kind: str) -> bool:
        """True if a line of ``kind`` may be written now; else it is counted."""
        with self._lock:
            now = self._clock()
            ended = self._summarise(now) if self._due is not None and now >= self._due else []
            win = self._windows.get(kind)
            if win is None and len(self._windows) >= self.max_kinds:
                ended += self._summarise(now)  # forget ended windows first
                if len(self._windows) >= self.max_kinds:
                    kind = self.OTHER
                    win = self._windows.get(kind)
            # An ended window still here suppressed nothing (else it was summarised).
            if win is None or now >= win.end:
                win = self._windows[kind] = _Window(now + self.window, logger, level)
            allowed = win.logged < self.burst
            if allowed:
                win.logged += 1
            else:
                win.suppressed += 1
                if self._due is None or win.end < self._due:
                    self._due = win.end
        self._write(ended)
        return allowed

    def flush(self, *, final: bool = False) -> None:
        """Write the summary of every window that has ended with lines
        suppressed; with ``final`` (a driver stopping), of every window now."""
        if self._due is None:  # the common case, without the lock
            return
        with self._lock:
            now = self._clock()
            ended = self._summarise(now, final) if final or now >= self._due else []
        self._write(ended)

    def _summarise(self, now: float, final: bool = False) -> list[tuple[str, _Window, float]]:
        """Drop the windows ended by ``now`` (all if ``final``); return those
        that suppressed lines, with the seconds they covered."""
        ended: list[tuple[str, _Window, float]] = []
        due: float | None = None
        for kind, win in list(self._windows.items()):
            if final or now >= win.end:
                del self._windows[kind]
                if win.suppressed:
                    ended.append((kind, win, min(self.window, now - win.end + self.window)))
            elif win.suppressed and (due is None or win.end < due):
                due = win.end
        self._due = due
        return ended

    def _write(self, ended: list[tuple[str, _Window, float]]) -> None:
        # Outside the lock: a handler may be slow, or log through us again.
        for kind, win, span in ended:
            win.logger.log(win.level, "suppressed %d %s lines in the last %.3g s",
                           win.suppressed, kind, span)


#: The limiter :func:`log_event` uses when none is given.
default_limiter = LogLimiter()


def _kind(event: Event, name: str) -> str:
    """``Name (reason prefix)``: the reason up to the first character that
    may start peer data (a quote, ``b'``, digit, colon...): one kind per cause."""
    reason = getattr(event, "reason", None)
    match = _KIND_PREFIX.match(reason, 0, _KIND_CHARS) if isinstance(reason, str) else None
    prefix = match.group().strip() if match else ""
    return f"{name} ({prefix})" if prefix else name


def log_event(
    logger: logging.Logger, event: Event, limiter: LogLimiter | None = None
) -> None:
    """Log ``event`` at the level its kind deserves.

    WARNING lines go through ``limiter`` (default: :data:`default_limiter`),
    one kind per event type and reason prefix.
    """
    name = type(event).__name__
    if name in _WARNING:
        level = logging.WARNING
    elif name in _INFO:
        level = logging.INFO
    else:
        level = logging.DEBUG
    if not logger.isEnabledFor(level):
        return
    if level >= logging.WARNING:
        lim = limiter if limiter is not None else default_limiter
        if not lim.allow(logger, level, _kind(event, name)):
            return
    logger.log(level, "%s", describe(event), extra={"mdp_event": event})


class HandlerError(Exception):
    """Raise it from a handler to give up a request with one log line.

    The request is abandoned as for any exception (the broker re-dispatches
    it, or expires it out of attempts), but the log shows the message
    alone, without a traceback: for failures the handler has already
    explained (a command that exited non-zero, a bad request body).
    """


def log_handler_failure(
    logger: logging.Logger, limiter: LogLimiter, service: bytes, exc: BaseException
) -> None:
    """Log that a handler failed (or its result could not be sent) and its
    request was abandoned: with the traceback, or one line for a
    :class:`HandlerError`; rate-limited, since a peer's requests must not
    be able to flood a worker's log."""
    if not limiter.allow(logger, logging.ERROR, "handler failed"):
        return
    name = shorten(service)
    if isinstance(exc, HandlerError):
        logger.error("handler for %s failed, request abandoned: %s", name, exc)
    else:
        logger.error("handler for %s failed; request abandoned", name, exc_info=exc)
