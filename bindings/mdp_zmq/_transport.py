"""The transport settings every driver's sockets get: :class:`TransportConfig`.

Part of the shared pyzmq glue, re-exported by :mod:`mdp_zmq.glue` (import
it from there): the ZMTP heartbeats, linger, reconnect backoff, high-water
marks, largest frame, listen backlog and CURVE keys of a socket, the
defaults that make a broker scale, and :func:`configure_socket`, which
applies them. Nothing here knows MDP.
"""

from __future__ import annotations

from dataclasses import dataclass

import zmq

from ._security import Security, apply_security

__all__ = ["BROKER_IO_THREADS", "DEFAULT_MAX_MESSAGE_BYTES", "ROUTER_BACKLOG", "ROUTER_HWM",
           "TransportConfig", "configure_socket"]

#: ``TransportConfig.max_message_bytes`` by default: 64 MiB per frame.
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
#: The broker ROUTER's per-peer high-water marks (messages) unless
#: ``TransportConfig.sndhwm``/``rcvhwm`` say otherwise; see TransportConfig.
ROUTER_HWM = 100
#: libzmq I/O threads of a context a broker makes (``glue.broker_context``).
#: With 10,000 heartbeating workers one thread spent ~0.4 core walking its
#: timer tree, two ~0.1 core together; four did no better on 2 cores
#: (docs/performance.md).
BROKER_IO_THREADS = 2
#: ``TransportConfig.backlog`` by default: pending connections the kernel
#: may queue for the broker's ROUTER (capped by ``net.core.somaxconn``).
ROUTER_BACKLOG = 4096


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

    The defaults (a ping every 5 s, dropped after 15 s of silence, no TTL)
    are set for brokers with thousands of connections: libzmq keeps every
    timer of an I/O thread in one sorted tree and cancels a timer by
    walking that tree from its start, once for each pong received (and,
    with a TTL, once more for each ping received), so a broker's ZMTP cost
    grows with the square of its connections. At 1 s (and a 3 s TTL) a
    broker with 10,000 workers spent its I/O thread walking that tree,
    answered pongs late, dropped live connections and never registered
    them all (``bench/scale.py``, docs/performance.md). A TTL only matters
    towards a peer that does not ping itself; both ends of ours do.

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

    ``backlog`` (``ZMQ_BACKLOG``, broker only) is how many connections
    the kernel may hold for the broker's ROUTER before its I/O thread
    accepts them (the kernel caps it at ``net.core.somaxconn``). libzmq's
    default, 100, is far too few when thousands of workers (re)connect at
    once, say after a broker restart: the kernel drops the excess
    handshakes and the peers retry 1, 3, 7... s later, so the last of
    10,000 workers registered 7-11 s after the first (``bench/scale.py``).

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

    heartbeat_ivl: float | None = 5.0
    heartbeat_timeout: float | None = 15.0
    heartbeat_ttl: float | None = None
    linger: float = 1.0
    reconnect_ivl: float = 0.1
    reconnect_ivl_max: float = 2.0
    sndhwm: int | None = None
    rcvhwm: int | None = None
    max_message_bytes: int | None = DEFAULT_MAX_MESSAGE_BYTES
    backlog: int = ROUTER_BACKLOG
    router_handover: bool = False
    security: Security | None = None

    def __post_init__(self) -> None:
        if self.security is not None and not isinstance(self.security, Security):
            raise TypeError(f"security must be a mdp_zmq.glue.Security or None, not "
                            f"{type(self.security).__name__}")
        if self.router_handover and self.security is not None:
            raise ValueError("router_handover cannot be combined with security: it would let "
                             "any authenticated connection take over another's routing id")


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
