"""Frame I/O on the broker's ROUTER and the peers' DEALERs (re-exported by ``glue``).

The per-message path of every driver: what ``recv_multipart`` and
``send_multipart`` do, frame by frame with plain int flags and pyzmq's
Cython calls, which costs a fraction of pyzmq's general versions on the
small messages MDP moves (docs/performance.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import zmq

__all__ = ["recv_routed", "recv_routed_identified", "send_frames", "send_routed"]

#: Plain ints: pyzmq's flag enums cost a Python-level call per combination.
_NOBLOCK = int(zmq.NOBLOCK)
_MORE_NOBLOCK = int(zmq.SNDMORE | zmq.NOBLOCK)
#: pyzmq's own send, under ``zmq.Socket.send``: that Python wrapper only adds
#: the DRAFT ``routing_id``/``group`` arguments, and costs about 1 us per
#: message of the 2-3 us a small broker message takes.
_backend_send = zmq.backend.Socket.send


def recv_routed(router: zmq.Socket[bytes]) -> tuple[bytes, list[bytes], int] | None:
    """Receive one message from ``router`` without blocking.

    Returns ``(routing id, frames, fd)`` with the fd read from ``zmq.SRCFD``
    (-1 if libzmq gave none), or None if nothing is waiting.
    """
    got = _recv_parts(router)
    if got is None:
        return None
    peer, frames, last = got
    return peer, frames, _source_fd(last)


def recv_routed_identified(
    router: zmq.Socket[bytes],
) -> tuple[bytes, list[bytes], int, str | None] | None:
    """:func:`recv_routed` on a secured ROUTER: ``(routing id, frames, fd,
    identity)``, the identity being the connection's ``User-Id`` (what the
    ZAP handler named its key; None if libzmq has none), or None if nothing
    is waiting."""
    got = _recv_parts(router)
    if got is None:
        return None
    peer, frames, last = got
    try:
        identity: str | None = last.get("User-Id")  # type: ignore[assignment] # a str property
    except zmq.ZMQError:  # pragma: no cover - a connection without ZAP
        identity = None
    return peer, frames, _source_fd(last), identity


def _recv_parts(router: zmq.Socket[bytes]) -> tuple[bytes, list[bytes], zmq.Frame] | None:
    # Frame by frame with ``Frame.more`` rather than ``recv_multipart``: the
    # latter asks getsockopt(RCVMORE) per frame; this halves the per-message
    # cost on small MDP messages (bench/e2e.py, docs/performance.md). The
    # last frame is returned for its metadata.
    recv = router.recv
    try:
        part = recv(_NOBLOCK, copy=False)
    except zmq.Again:
        return None
    peer = part.bytes
    frames: list[bytes] = []
    while part.more:  # the rest of a multipart message is already there: never EAGAIN
        part = recv(_NOBLOCK, copy=False)
        frames.append(part.bytes)
    return peer, frames, part


def _source_fd(part: zmq.Frame) -> int:
    try:
        return int(part.get(zmq.SRCFD))
    except zmq.ZMQError:  # pragma: no cover - libzmq without SRCFD
        return -1


def send_frames(sock: zmq.Socket[bytes], frames: Sequence[bytes]) -> None:
    """Send a multipart message without blocking (raises ``zmq.Again`` if full).

    What ``send_multipart(frames, NOBLOCK)`` does, frame by frame with
    plain int flags: pyzmq's version type-checks every frame and combines
    enum flags per frame, which costs more than the send on small messages.
    A ROUTER refuses (EAGAIN/EHOSTUNREACH) on the first frame, so nothing is
    sent in part.
    """
    send = _backend_send
    last = len(frames) - 1
    for i in range(last):
        send(sock, frames[i], _MORE_NOBLOCK)
    send(sock, frames[last], _NOBLOCK)


def send_routed(router: zmq.Socket[bytes], peer: bytes, frames: Sequence[bytes]) -> None:
    """``send_frames(router, [peer, *frames])`` without building that list.

    ``frames`` must not be empty. Raises what :func:`send_frames` raises; a
    ROUTER refuses on the routing id frame, so nothing is sent in part.
    """
    send = _backend_send
    send(router, peer, _MORE_NOBLOCK)
    last = len(frames) - 1
    for i in range(last):
        send(router, frames[i], _MORE_NOBLOCK)
    send(router, frames[last], _NOBLOCK)
