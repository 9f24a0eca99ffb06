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

from ._endpoints import as_endpoints, normalize_endpoint, parse_host_port
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
from ._waker import Waker

__all__ = [
    "DEALER_MONITOR_EVENTS",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "DealerCore",
    "HANDSHAKE_FAILURE_EVENTS",
    "ConnectionTracker",
    "HandlerError",
    "JsonFormatter",
    "KeyFileError",
    "LogLimiter",
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


#: ``TransportConfig.max_message_bytes`` by default: 64 MiB per frame.
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
#: The broker ROUTER's per-peer high-water marks (messages) unless
#: ``TransportConfig.sndhwm``/``rcvhwm`` say otherwise; see TransportConfig.
ROUTER_HWM = 100


@dataclass(frozen=True, slots=True)
class TransportConfig:
    """ZeroMQ-level settings of a driver's socket (all times in seconds).

    ``heartbeat_ivl``/``heartbeat_timeout``/``heartbeat_ttl`` are the ZMTP
    heartbeats (``ZMQ_HEARTBEAT_IVL``/``_TIMEOUT``/``_TTL``): libzmq's I/O
    thread pings the peer and drops a connection that stays silent past the
    timeout, which the drivers then see as a disconnect. They are answered
    by the I/O thread, so a peer busy in Python is *not* dropped, while a
    frozen or vanished one is. ``None`` (or 0) turns one off; all three off
    disables ZMTP heartbeating.

    ``linger`` bounds how long closing a socket may wait for unsent
    messages. ``reconnect_ivl``/``reconnect_ivl_max`` are libzmq's own
    reconnect backoff for connecting sockets.

    ``max_message_bytes`` (``ZMQ_MAXMSGSIZE``) is the largest *frame* a
    socket accepts (``None``: no limit). libzmq reads the size from the
    frame's header and drops the connection before allocating anything:
    the peer sees a disconnect (and reconnects, its message lost); the
    application never sees the frame. A message of n frames can still be n
    times this size.

    ``sndhwm``/``rcvhwm`` are the per-peer high-water marks in messages
    (0: unlimited). ``None`` means the socket's default: :data:`ROUTER_HWM`
    on the broker's ROUTER, libzmq's 1000 on a worker's or client's DEALER.
    They bound what one peer can pin in the broker: a client that stops
    reading holds at most ``sndhwm`` replies (plus the kernel's socket
    buffers) of up to ``max_message_bytes`` per frame; past it, sends to
    it fail at once rather than queue. A peer that sends faster than the
    broker reads is slowed by TCP instead (``rcvhwm``), never dropped.
    Raise ``sndhwm`` for clients that pipeline many replies and read them
    late; lower ``max_message_bytes`` to tighten the bound.

    ``router_handover`` (``ZMQ_ROUTER_HANDOVER``, broker only) lets a new
    connection take over a routing id that a live connection already has.
    Off by default, because libzmq's automatic routing ids are predictable:
    with handover on, any peer that sets ``ZMQ_ROUTING_ID`` to a waiting
    client's id receives that client's reply, and one that claims a
    worker's id ends the worker's session. Off, libzmq ignores a second
    connection that claims a live routing id: nothing sent on it is ever
    read, even after the first one closes; the peer is heard again once it
    connects anew. Turn it on only where every peer is trusted and peers
    choose their own routing ids and reconnect over half-open connections;
    the broker then ends the old connection's session when the new one
    speaks. It cannot be combined with ``security``.

    ``security`` (:class:`Security`, None: none) turns on CURVE (RFC 26):
    encryption, and keys checked at the handshake. A broker's
    ``Security`` holds its key pair and the public keys it lets in (with
    the identity of each, which the broker's core is told with every
    message); a peer's holds its key pair and the broker's public key.

    Raises ValueError if ``router_handover`` and ``security`` are both
    set: handover would let a connection with any valid key take over a
    routing id, and its replies, before the broker could tell.
    """

    heartbeat_ivl: float | None = 1.0
    heartbeat_timeout: float | None = 3.0
    heartbeat_ttl: float | None = 3.0
    linger: float = 1.0
    reconnect_ivl: float = 0.1
    reconnect_ivl_max: float = 2.0
    sndhwm: int | None = None
    rcvhwm: int | None = None
    max_message_bytes: int | None = DEFAULT_MAX_MESSAGE_BYTES
    router_handover: bool = False
    security: Security | None = None

    def __post_init__(self) -> None:
        if self.security is not None and not isinstance(self.security, Security):
            raise TypeError(f"security must be a mdp_zmq.glue.Security or None, not "
                            f"{type(self.security).__name__}")
        if self.router_handover and self.security is not None:
            raise ValueError("router_handover cannot be combined with security: it would let "
                             "any authenticated connection take over another's routing id")


@dataclass(frozen=True, slots=True)
class MonitorEvent:
    """One parsed monitor event: ``event`` is a ``zmq.EVENT_*`` value.

    ``value`` is the fd for ACCEPTED/DISCONNECTED (an errno or interval
    for other events).
    """

    event: int
    value: int
    endpoint: str


def _ms(seconds: float | None) -> int:
    return 0 if not seconds else max(1, round(seconds * 1000))


def configure_socket(
    sock: zmq.Socket[bytes], transport: TransportConfig, *, default_hwm: int | None = None
) -> None:
    """Apply ``transport`` (heartbeats, linger, reconnect, HWMs, the largest
    frame, CURVE keys) to ``sock``; ``default_hwm`` replaces a ``None`` HWM
    (``None``: leave libzmq's)."""
    sock.setsockopt(zmq.LINGER, _ms(transport.linger) if transport.linger > 0 else 0)
    sock.setsockopt(zmq.HEARTBEAT_IVL, _ms(transport.heartbeat_ivl))
    if transport.heartbeat_ivl:
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, _ms(transport.heartbeat_timeout))
        # TTL travels in deciseconds; libzmq rejects values below 100 ms.
        ttl = _ms(transport.heartbeat_ttl)
        if ttl:
            sock.setsockopt(zmq.HEARTBEAT_TTL, max(100, ttl))
    sock.setsockopt(zmq.RECONNECT_IVL, _ms(transport.reconnect_ivl))
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, _ms(transport.reconnect_ivl_max))
    sndhwm = transport.sndhwm if transport.sndhwm is not None else default_hwm
    if sndhwm is not None:
        sock.setsockopt(zmq.SNDHWM, sndhwm)
    rcvhwm = transport.rcvhwm if transport.rcvhwm is not None else default_hwm
    if rcvhwm is not None:
        sock.setsockopt(zmq.RCVHWM, rcvhwm)
    limit = transport.max_message_bytes
    sock.setsockopt(zmq.MAXMSGSIZE, -1 if limit is None else limit)
    if transport.security is not None:
        apply_security(sock, transport.security)


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
    broker terminates an owned context when it stops."""
    if context is not None:
        return context, False
    if transport.security is not None:
        return kind(), True
    return kind.instance(), False


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
    ``EHOSTUNREACH`` instead of vanishing; ``ROUTER_HANDOVER`` only if
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


def flush_dealer(sock: zmq.Socket[bytes], core: DealerCore, now: float) -> bool:
    """Send what a Worker or Client core queued on its DEALER, never blocking.

    A message the socket refuses (its queue to the broker is full) is
    reported with ``core.send_failed``: the core decides what that means
    (a client's attempt is over, a worker's conversation broken, a lost
    HEARTBEAT nothing). Returns False if one was refused; the core then
    has events to act on.
    """
    ok = True
    for frames in core.outgoing():
        try:
            send_frames(sock, frames)
        except zmq.Again:
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
