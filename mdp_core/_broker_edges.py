"""The Broker's rare paths, as functions of the broker (see ``_broker.py``).

Sends the transport refused, messages over a limit, refusals, MMI answers,
protocol violations, re-dispatch after a worker is lost, clients gone, the
gathering of PARTIALs for MDP/0.1 clients and shutdown: none of them is on
the data path, so they live here to keep ``_broker.py`` small. Each takes
the :class:`~mdp_core.Broker` whose private state it works on, as a method
would.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from functools import partial
from typing import TYPE_CHECKING

from ._broker_parts import (
    _DELIVER,
    _EXPIRE,
    _GONE,
    _MIN_FRAMES,
    _QUEUED,
    _REQUEUE,
    _disconnect_frames,
    _Final,
    _is_client,
    _reply_frames,
    _Request,
    _Service,
    _Worker,
)
from ._codec import ClientRequest, Dialect, decode
from ._errors import MalformedMessage
from ._events import (
    ProtocolError,
    RequestAbandoned,
    RequestDelivered,
    RequestExpired,
    RequestRedispatched,
    RequestRefused,
    RequestRequeued,
    RequestUndelivered,
    WorkerLost,
)
from ._mmi import mmi_reply

if TYPE_CHECKING:
    from ._broker import Broker

__all__ = ["abandon", "answer_mmi", "close_all", "gather", "keep_unsent", "no_new_service",
           "oversized", "redispatched", "refuse", "requeue", "settle_failed_send",
           "unexpected"]


def settle_failed_send(b: Broker, peer: bytes, frames: Sequence[bytes], now: float) -> None:
    """``Broker.send_failed`` (see there) on an open broker."""
    w = b._workers.get(peer)
    if w is not None and w.sent is frames and (req := w.request) is not None:
        req.attempts -= 1  # it never reached a worker
        b._end_session(
            w, _GONE, "send failed: the transport refused its REQUEST (send queue full)",
            True, now)
        return
    track, index = b._track, b._index
    for i in range(b._indexed, len(track)):
        index[id(track[i][0])] = track[i]
    b._indexed = len(track)
    # Each record holds its frames, so no two share an id. Settling one
    # twice changes nothing: every branch checks that its outcome is open.
    rec = index.get(id(frames))
    if rec is None:
        return
    if isinstance(rec[1], _Request):
        _, req, worker = rec
        if _DELIVER in req.row:
            req.state, req.row = req.row[_EXPIRE]
            b._forget(req)
            b._events.append(RequestUndelivered(
                req.client, req.service.name, worker,
                "send failed: the transport refused a PARTIAL (the client's send queue is "
                "full); rest of the reply dropped"))
            return
        if req.delivered is None:  # it ended otherwise already
            return
        rec = req.delivered
    _undeliver(b, rec)


def keep_unsent(b: Broker) -> None:
    """Settle the replies handed out, keeping those still in ``_out`` (for
    a driver that calls ``events()`` before it drained ``outgoing()``)."""
    unsent = {id(frames) for _, frames in b._out}
    b._track = [rec for rec in b._track if id(rec[0]) in unsent]
    b._index.clear()
    b._indexed = 0


def _undeliver(b: Broker, rec: _Final) -> None:
    """Replace a RequestDelivered not drained yet by RequestUndelivered."""
    _, events, index = rec
    if events is b._events:  # else drained already: too late to settle
        ev = events[index]
        if isinstance(ev, RequestDelivered):  # else a lost PARTIAL replaced it already
            events[index] = RequestUndelivered(
                ev.client, ev.service, ev.worker,
                "send failed: the transport refused the reply (the client's send queue is "
                "full)")


def oversized(b: Broker, peer: bytes, frames: Sequence[bytes], now: float) -> None:
    """A message over ``max_frames``, judged by its header alone."""
    peer = bytes(peer)
    what = f"message of {len(frames)} frames, over max_frames={b.config.max_frames}"
    if _is_client(frames):
        try:  # the envelope and one body frame say whether it is a REQUEST
            cmd = decode(frames[:_MIN_FRAMES])[1]
        except MalformedMessage:
            cmd = None
        if isinstance(cmd, ClientRequest):
            b._events.append(RequestRefused(peer, cmd.service, what))
            return
    else:
        w = b._workers.get(peer)
        if w is not None:
            b._events.append(ProtocolError(peer, f"{what}; dropped, sent DISCONNECT"))
            b._end_session(w, _GONE, f"protocol violation: {what}", True, now)
            return
    b._events.append(ProtocolError(peer, f"{what}; dropped"))


def refuse(b: Broker, peer: bytes, svc: _Service, size: int) -> None:
    """Refuse a request of ``size`` bytes: its queue or the byte budget is full."""
    cfg = b.config
    if b._held + size > cfg.max_queued_bytes:
        reason = (f"max_queued_bytes={cfg.max_queued_bytes} reached: the broker holds "
                  f"{b._held} bytes of requests, this one counts {size}")
    else:
        reason = f"service queue is full (max_queue={cfg.max_queue})"
    b._events.append(RequestRefused(peer, svc.name, reason))
    b._maybe_drop(svc)


def _too_long(b: Broker, name: bytes) -> str | None:
    limit = b.config.max_service_name
    if len(name) > limit:
        return f"service name of {len(name)} bytes is over max_service_name={limit}"
    return None


def no_new_service(b: Broker, name: bytes) -> str | None:
    """Why no service called ``name`` may be created, or None if it may."""
    cfg = b.config
    too_long = _too_long(b, name)
    if too_long is not None:
        return too_long
    if len(b._services) >= cfg.max_services:
        return f"max_services={cfg.max_services} services exist already"
    return None


def answer_mmi(
    b: Broker, peer: bytes, dialect: Dialect, service: bytes, body: Sequence[bytes],
    identity: str | None,
) -> None:
    """Answer an ``mmi.*`` request at once (RFC 8; formats in ``_mmi``), about
    the services that ``identity`` may call."""
    too_long = _too_long(b, service)
    if too_long is not None:
        b._events.append(RequestRefused(peer, service, too_long))
        return
    policy = b.config.policy
    visible = None if policy is None else partial(policy._may_call, identity)
    reply = mmi_reply(
        service, body, b._services,
        (w.service.name + b" " + w.state.value.encode() for w in b._workers.values()
         if visible is None or visible(w.service.name)),
        b.stats, b.config.max_mmi_reply_bytes, visible,
    )
    frames = _reply_frames(dialect, service, None, reply, True)
    b._out.append((peer, frames))
    events = b._events
    b._track.append((frames, events, len(events)))
    events.append(RequestDelivered(peer, service, b""))


def gather(b: Broker, req: _Request, body: Sequence[bytes]) -> None:
    """Keep a PARTIAL for an MDP/0.1 client, up to ``max_gathered_bytes``."""
    size = req.gathered_bytes + sum(len(f) for f in body)
    limit = b.config.max_gathered_bytes
    if size > limit:
        req.state, req.row = req.row[_EXPIRE]
        req.gathered = None
        b._forget(req)
        b._events.append(RequestExpired(
            req.client, req.service.name,
            f"MDP/0.1 client: PARTIAL replies gathered for one REPLY exceed "
            f"max_gathered_bytes={limit}; rest of the reply dropped"))
        return
    req.gathered_bytes = size
    if req.gathered is None:
        req.gathered = list(body)
    else:
        req.gathered.extend(body)


def unexpected(
    b: Broker, peer: bytes, w: _Worker | None, dialect: Dialect, what: str, now: float
) -> None:
    """A valid but unexpected worker command: DISCONNECT (RFC 7/18)."""
    if w is None:
        b._out.append((peer, _disconnect_frames(dialect)))
        b._events.append(ProtocolError(
            peer, f"unexpected {what} from a peer with no worker session; dropped, "
            "sent DISCONNECT"))
        return
    reason = f"unexpected {what} in state {w.state.value}"
    b._events.append(ProtocolError(peer, f"{reason}; dropped, sent DISCONNECT"))
    b._end_session(w, _GONE, f"protocol violation: {reason}", True, now)


def abandon(b: Broker, requests: Iterable[_Request]) -> None:
    """End the requests of a client whose connection is gone."""
    for req in requests:
        was_queued = req.state is _QUEUED
        req.state, req.row = req.row[_EXPIRE]
        req.body = ()
        b._held -= req.size
        svc = req.service
        if was_queued:
            svc.queued -= 1
            b._maybe_drop(svc)
        b._events.append(RequestAbandoned(req.client, svc.name))


def close_all(b: Broker) -> None:
    """End every session and request of a broker that is closing."""
    for w in b._workers.values():
        b._out.append((w.peer, _disconnect_frames(w.dialect)))
        w.state, w.row = _GONE, b._srows[_GONE]
        b._events.append(WorkerLost(w.peer, w.service.name, "broker closed"))
    for requests in b._clients.values():
        for req in requests.values():
            req.state, req.row = req.row[_EXPIRE]
            b._events.append(RequestExpired(req.client, req.service.name, "broker closed"))
    for table in (b._workers, b._clients, b._services, b._timers, b._waiting, b._requeued,
                  b._track, b._index):
        table.clear()
    b._indexed = 0
    b._held = 0


def requeue(b: Broker, req: _Request, worker: bytes, now: float) -> None:
    """Give the request of a lost ``worker`` to another one, or end it."""
    row = req.row
    if _REQUEUE not in row:  # its client is gone or it expired already
        return
    req.state, req.row = row[_REQUEUE]
    # PARTIALs gathered for an MDP/0.1 client belong to the lost attempt;
    # the next attempt's REPLY must hold only its own.
    req.gathered = None
    req.gathered_bytes = 0
    svc = req.service
    cfg = b.config
    if req.attempts >= cfg.max_attempts:
        req.state, req.row = req.row[_EXPIRE]
        b._forget(req)
        b._events.append(RequestExpired(
            req.client, svc.name,
            f"worker lost on attempt {req.attempts} of max_attempts={cfg.max_attempts}"))
        return
    b._events.append(RequestRequeued(req.client, svc.name, worker, req.attempts))
    req.lost_at = now
    if svc.idle:
        w = svc.idle.popitem(last=False)[1]
        b._dispatch(req, w, now)
        redispatched(b, req, w, now, now)
    elif now >= req.deadline:
        req.state, req.row = req.row[_EXPIRE]
        b._forget(req)
        b._events.append(RequestExpired(
            req.client, svc.name,
            f"worker lost and request_timeout ({cfg.request_timeout:g}s) already passed"))
    else:
        svc.queue.appendleft(req)
        svc.queued += 1
        heapq.heappush(b._requeued, (req.deadline, req.id, req))


def redispatched(b: Broker, req: _Request, w: _Worker, lost_at: float, now: float) -> None:
    """A request re-queued at ``lost_at`` after its worker's loss was just
    dispatched to ``w``."""
    req.lost_at = None
    b._events.append(RequestRedispatched(
        req.client, req.service.name, w.peer, req.attempts, now - lost_at))
