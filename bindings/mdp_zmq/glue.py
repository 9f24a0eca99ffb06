"""The pyzmq glue every driver shares (blocking, async, gevent): a public module.

Socket options, monitor sockets and their events, the ROUTER receive that
also reads the connection's fd (and, with CURVE, its authenticated
``User-Id``), the fd/generation :class:`ConnectionTracker`, endpoint
parsing, the log line of a core event (peer bytes truncated, repeated
warnings rate-limited by a :class:`LogLimiter`; as JSON with
:class:`JsonFormatter`), a thread- and signal-safe wake-up for blocking
loops, and security: CURVE keys (:class:`Security`, in
``TransportConfig.security``), key files and the ZAP handler
(:class:`ZapHandler`). Nothing here knows MDP: it moves bytes, keys and
events. Other drivers import this module, never a private one of
``mdp_zmq``.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import zmq
from zmq.utils.monitor import parse_monitor_message

from ._endpoints import as_endpoints, bind_endpoints, normalize_endpoint, parse_host_port
from ._frames import recv_routed, recv_routed_identified, send_frames, send_routed
from ._logging import (
    HandlerError,
    JsonFormatter,
    LogLimiter,
    describe,
    event_fields,
    log_event,
    log_handler_failure,
    shorten,
)
from ._security import (
    KeyFileError,
    Refusal,
    Security,
    ZapHandler,
    apply_security,
    keygen,
    load_allowed,
    load_policy,
    load_public_key,
    load_secret_key,
)
from ._tracker import ConnectionTracker
from ._transport import (
    BROKER_IO_THREADS,
    DEFAULT_MAX_MESSAGE_BYTES,
    ROUTER_BACKLOG,
    ROUTER_HWM,
    TransportConfig,
    configure_socket,
)
from ._waker import Waker

__all__ = [
    "BROKER_IO_THREADS",
    "DEALER_MONITOR_EVENTS",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "DealerCore",
    "HANDSHAKE_FAILURE_EVENTS",
    "ConnectionTracker",
    "HandlerError",
    "JsonFormatter",
    "KeyFileError",
    "LogLimiter",
    "ROUTER_BACKLOG",
    "ROUTER_HWM",
    "ROUTER_MONITOR_EVENTS",
    "MonitorEvent",
    "Refusal",
    "Security",
    "TransportConfig",
    "Waker",
    "ZapHandler",
    "apply_security",
    "as_endpoints",
    "bind_endpoints",
    "broker_context",
    "close_broker",
    "close_monitor",
    "configure_socket",
    "describe",
    "drain_monitor",
    "event_fields",
    "flush_dealer",
    "keygen",
    "load_allowed",
    "load_policy",
    "load_public_key",
    "load_secret_key",
    "log_event",
    "log_handler_failure",
    "make_dealer",
    "make_router",
    "next_part",
    "next_spread",
    "normalize_endpoint",
    "parse_host_port",
    "open_broker",
    "open_monitor",
    "recv_routed",
    "recv_routed_identified",
    "send_frames",
    "send_routed",
    "shorten",
    "start_zap",
    "timeout_ms",
]

log = logging.getLogger("mdp_zmq")

#: Events the broker needs from its ROUTER: both carry the connection's fd.
ROUTER_MONITOR_EVENTS = zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED
#: Events a worker or client needs from its DEALER (the last: the broker's
#: ZAP handler refused its CURVE key).
DEALER_MONITOR_EVENTS = (zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_SUCCEEDED
                         | zmq.EVENT_HANDSHAKE_FAILED_AUTH)
#: What a secured broker's ROUTER monitor adds, to log refused handshakes:
#: a peer without CURVE or with another broker key (a key the ZAP handler
#: refuses is logged by it; a peer that hangs up mid-handshake is not a refusal).
HANDSHAKE_FAILURE_EVENTS = zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL

_monitor_ids = itertools.count(1)


@dataclass(frozen=True, slots=True)
class MonitorEvent:
    """One parsed monitor event: ``event`` is a ``zmq.EVENT_*`` value.

    ``value`` is the fd for ACCEPTED/DISCONNECTED (an errno or interval
    for other events).
    """

    event: int
    value: int
    endpoint: str


_spreads = itertools.count()


def next_spread() -> int:
    """A ``spread`` for a client that was given none (see ``mdp_core.Client``).

    Consecutive clients of one process get consecutive numbers, and
    processes start from their pid, so clients start spread over their
    brokers. Thread-safe.
    """
    return os.getpid() + next(_spreads)


def open_monitor(sock: zmq.Socket[bytes], events: int) -> zmq.Socket[bytes]:
    """Start monitoring ``sock`` for ``events``; return the PAIR to read them.

    Like ``Socket.get_monitor_socket`` but with an unlimited receive HWM, so
    that events are not dropped while the driver drains the monitor lazily.
    Call before ``bind``/``connect`` so no connection escapes it.
    """
    addr = f"inproc://mdp-monitor-{os.getpid()}-{next(_monitor_ids)}"
    sock.monitor(addr, events)
    mon: zmq.Socket[bytes] = sock.context.socket(zmq.PAIR)
    mon.setsockopt(zmq.RCVHWM, 0)
    mon.setsockopt(zmq.LINGER, 0)
    mon.connect(addr)
    return mon


def close_monitor(sock: zmq.Socket[bytes], mon: zmq.Socket[bytes]) -> None:
    """Stop monitoring ``sock`` (if still open) and close ``mon``."""
    if not sock.closed:
        with contextlib.suppress(zmq.ZMQError):
            sock.disable_monitor()
    mon.close(0)


def drain_monitor(mon: zmq.Socket[bytes]) -> list[MonitorEvent]:
    """Read every monitor event available now, without blocking."""
    out: list[MonitorEvent] = []
    while True:
        try:
            msg = mon.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return out
        parsed = parse_monitor_message(msg)
        out.append(
            MonitorEvent(
                int(parsed["event"]),
                int(parsed["value"]),
                bytes(parsed["endpoint"]).decode(errors="replace"),
            )
        )


def broker_context(
    context: zmq.Context[Any] | None,
    transport: TransportConfig,
    kind: type[zmq.Context[Any]] = zmq.Context,
) -> tuple[zmq.Context[Any], bool]:
    """The context a broker uses: ``context`` if given; else a new ``kind()``
    when ``transport`` has security (its ZAP handler needs a context of its
    own), else ``kind.instance()``, the process's shared one (``kind``:
    ``zmq.green.Context`` for gevent). Returns ``(context, owned)``; the
    broker terminates an owned context when it stops.

    A context made here has :data:`BROKER_IO_THREADS` libzmq I/O threads
    (the shared one only if the broker is the first to make it): libzmq
    spreads the connections over them, and each thread's timer cost grows
    with the square of its connections (see :class:`TransportConfig`)."""
    if context is not None:
        return context, False
    if transport.security is not None:
        return kind(io_threads=BROKER_IO_THREADS), True
    return kind.instance(io_threads=BROKER_IO_THREADS), False


def start_zap(context: zmq.Context[Any], transport: TransportConfig) -> ZapHandler | None:
    """The :class:`ZapHandler` a broker with ``transport`` needs in
    ``context``, started (None without security). Raises like it."""
    security = transport.security
    return None if security is None else ZapHandler(context, security)


def open_broker(
    context: zmq.Context[Any] | None,
    endpoints: Iterable[str],
    transport: TransportConfig,
    kind: type[zmq.Context[Any]] = zmq.Context,
) -> tuple[zmq.Context[Any], bool, ZapHandler | None, zmq.Socket[bytes], zmq.Socket[bytes],
           list[str]]:
    """Everything a broker opens, in order: its context (:func:`broker_context`,
    of ``kind``), its ZAP handler (:func:`start_zap`) and its ROUTER with its
    monitor (:func:`make_router`). Returns ``(context, owned, zap, router,
    monitor, bound)``; if a step fails, what the earlier ones opened is closed
    (an owned context terminated) and the error raised. Closing is the
    broker's, in the reverse order: see :func:`close_broker`."""
    context, owned = broker_context(context, transport, kind)
    try:
        zap = start_zap(context, transport)
        try:
            router, monitor, bound = make_router(context, endpoints, transport, zap=zap)
        except BaseException:
            if zap is not None:
                zap.close()
            raise
    except BaseException:
        if owned:
            context.term()
        raise
    return context, owned, zap, router, monitor, bound


def close_broker(
    context: zmq.Context[Any],
    owned: bool,
    zap: ZapHandler | None,
    router: zmq.Socket[bytes],
    monitor: zmq.Socket[bytes],
    closing: Callable[[zmq.Socket[bytes]], object] = lambda sock: None,
) -> None:
    """Close what :func:`open_broker` opened, in the order security needs: the
    monitor, the ROUTER (its ``LINGER`` bounds the wait for unsent messages),
    the ZAP handler only then (libzmq admits every key while none is bound),
    and the context if the broker owns it. ``closing(sock)`` runs before each
    socket closes (an async driver wakes the task waiting on its fd). What is
    closed already is skipped; if a step raises, the later ones are not taken."""
    if not monitor.closed:
        closing(monitor)
        close_monitor(router, monitor)
    if not router.closed:
        closing(router)
        router.close()
    if zap is not None and not zap.socket.closed:
        closing(zap.socket)
        zap.close()
    if owned and not context.closed:
        context.term()


def make_router(
    context: zmq.Context[zmq.Socket[bytes]],
    endpoints: Iterable[str],
    transport: TransportConfig,
    *,
    zap: ZapHandler | None = None,
) -> tuple[zmq.Socket[bytes], zmq.Socket[bytes], list[str]]:
    """Create the broker's ROUTER with its monitor, bound to ``endpoints``.

    ``ROUTER_MANDATORY`` is set, so a send to a peer that is gone raises
    ``EHOSTUNREACH`` instead of vanishing; ``BACKLOG`` is
    ``transport.backlog``; ``ROUTER_HANDOVER`` only if
    ``transport.router_handover`` (see :class:`TransportConfig` for the
    risk); the HWMs default to :data:`ROUTER_HWM`. Returns ``(router, monitor,
    bound)`` where ``bound`` holds the resolved endpoints (``LAST_ENDPOINT``,
    so ``tcp://127.0.0.1:*`` shows its port).

    With ``transport.security`` the ROUTER is a CURVE server and ``zap``
    must be the :class:`ZapHandler` already running in ``context`` (libzmq
    lets every key in while no handler is bound); the monitor then also
    reports :data:`HANDSHAKE_FAILURE_EVENTS`. Raises ValueError if the
    security is a peer's or ``zap`` is missing.
    """
    events = ROUTER_MONITOR_EVENTS
    security = transport.security
    if security is not None:
        if not security.is_broker:
            raise ValueError("the broker's ROUTER needs a broker's Security, not a peer's "
                             "(one with broker_key)")
        if zap is None or zap.context is not context:
            raise ValueError("a secured ROUTER needs the ZapHandler of its context, started "
                             "first (see start_zap)")
        events |= HANDSHAKE_FAILURE_EVENTS
    router: zmq.Socket[bytes] = context.socket(zmq.ROUTER)
    try:
        configure_socket(router, transport, default_hwm=ROUTER_HWM)
        router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        router.setsockopt(zmq.BACKLOG, transport.backlog)  # before bind: listen() takes it
        router.setsockopt(zmq.ROUTER_HANDOVER, int(transport.router_handover))
        monitor = open_monitor(router, events)
        bound: list[str] = []
        try:
            for ep in endpoints:
                router.bind(normalize_endpoint(ep, bind=True))
                bound.append(router.getsockopt_string(zmq.LAST_ENDPOINT))
        except BaseException:
            close_monitor(router, monitor)
            raise
    except BaseException:
        router.close(0)
        raise
    if not bound:
        close_monitor(router, monitor)
        router.close(0)
        raise ValueError("a broker needs at least one endpoint to bind")
    return router, monitor, bound


def make_dealer(
    context: zmq.Context[zmq.Socket[bytes]],
    endpoint: str,
    transport: TransportConfig,
    *,
    monitor: bool = True,
) -> tuple[zmq.Socket[bytes], zmq.Socket[bytes] | None]:
    """Create a DEALER connected to ``endpoint``, with its monitor if asked.

    ``IMMEDIATE`` is left off: messages queue until the connection is up,
    which is what a worker's READY and a client's first request want.
    Raises ValueError if ``transport.security`` is a broker's.
    """
    if transport.security is not None and transport.security.is_broker:
        raise ValueError("a worker's or client's socket needs a peer's Security (with the "
                         "broker_key), not a broker's")
    dealer: zmq.Socket[bytes] = context.socket(zmq.DEALER)
    try:
        configure_socket(dealer, transport)
        mon = open_monitor(dealer, DEALER_MONITOR_EVENTS) if monitor else None
        dealer.connect(normalize_endpoint(endpoint))
    except BaseException:
        dealer.close(0)
        raise
    return dealer, mon


class DealerCore(Protocol):
    """What :func:`flush_dealer` needs of a core: a Worker's or a Client's."""

    def outgoing(self) -> list[list[bytes]]:
        """Drain the messages to send."""
        ...  # pragma: no cover - a protocol

    def send_failed(self, frames: Sequence[bytes], now: float) -> None:
        """Report a message the socket refused."""
        ...  # pragma: no cover - a protocol


def flush_dealer(
    sock: zmq.Socket[bytes],
    core: DealerCore,
    now: float,
    before_failure: Callable[[], object] | None = None,
) -> bool:
    """Send what a Worker or Client core queued on its DEALER, never blocking.

    A message the socket refuses (its queue to the broker is full, or it
    has no connection) is reported with ``core.send_failed``: the core
    decides what that means (a client's attempt is over, a worker's
    conversation broken, a lost HEARTBEAT nothing). ``before_failure`` runs
    first (once per refused message): the driver tells the core what it
    must know before that, such as a refused handshake. Returns False if
    one was refused; the core then has events to act on.
    """
    ok = True
    for frames in core.outgoing():
        try:
            send_frames(sock, frames)
        except zmq.Again:
            if before_failure is not None:
                before_failure()
            core.send_failed(frames, now)
            ok = False
    return ok


def timeout_ms(deadline: float | None, now: float, cap: float | None = None) -> int | None:
    """Milliseconds to poll until ``deadline`` (None: forever), at most ``cap`` s.

    Rounded up so a loop never spins just before a deadline.
    """
    if deadline is None:
        return None if cap is None else math.ceil(cap * 1000)
    wait = max(0.0, deadline - now)
    if cap is not None:
        wait = min(wait, cap)
    return math.ceil(wait * 1000)


def next_part(
    stream: Iterator[bytes | Sequence[bytes]],
) -> tuple[bool, bytes | Sequence[bytes]]:
    """One step of a handler's generator: ``(False, item)`` for its next item
    (a PARTIAL body), ``(True, value)`` once it returned (the FINAL body:
    its return value, ``b""`` if None). What it raises comes out."""
    try:
        return False, next(stream)
    except StopIteration as stop:
        value = stop.value
        return True, b"" if value is None else value
