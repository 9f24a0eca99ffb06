"""The Broker's timers, as functions of the broker (see ``_broker.py``).

``Broker.tick`` and ``Broker.next_deadline`` of an open broker. The heap
holds one entry per worker, stale once its ``timer_at`` moved or the
worker is gone (lazy invalidation); queued requests expire from a deque
in arrival order, re-queued ones from a small heap (the module docstring
of ``_broker.py`` says why both are sorted by deadline).
"""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING

from ._broker_parts import (
    _EXPIRE,
    _EXPIRED,
    _GONE,
    _INF,
    _QUEUED,
    _TIMEOUT,
    _W_HEARTBEAT,
    _W_PREFIX,
    _Request,
    _Worker,
)
from ._events import RequestExpired

if TYPE_CHECKING:
    from ._broker import Broker

__all__ = ["earliest_timer", "run_timers"]


def run_timers(b: Broker, now: float) -> None:
    """Send heartbeats, expire silent idle workers, overdue busy ones and
    requests queued too long, as of ``now``."""
    timers = b._timers
    rearm: list[_Worker] = []  # re-pushed after the loop: each worker runs once per tick
    while timers and timers[0][0] <= now:
        at, _, w = heapq.heappop(timers)
        if w.timer_at != at or w.state is _GONE:
            continue  # superseded entry
        w.timer_at = _INF
        if w.expires <= now and _EXPIRED in w.row:
            b._end_session(
                w, w.row[_EXPIRED][0],
                f"heartbeat expired: silent for {b._expiry:g}s", False, now)
            continue
        if w.deadline <= now and _TIMEOUT in w.row:
            b._end_session(
                w, w.row[_TIMEOUT][0],
                f"processing timeout ({w.service.processing_timeout:g}s) passed",
                True, now)
            continue
        if w.heartbeat_at <= now:
            b._out.append((w.peer, [*_W_PREFIX[w.dialect], _W_HEARTBEAT[w.dialect]]))
            w.heartbeat_at = now + b._interval
        rearm.append(w)
    for w in rearm:
        _arm(b, w)
    waiting = b._waiting
    while waiting and waiting[0].deadline <= now:
        req = waiting.popleft()
        if req.state is _QUEUED:
            _expire_queued(b, req)
    requeued = b._requeued
    while requeued and requeued[0][0] <= now:
        req = heapq.heappop(requeued)[2]
        if req.state is _QUEUED:
            _expire_queued(b, req)


def earliest_timer(b: Broker) -> float | None:
    """The earliest live deadline (dropping stale entries on the way), or None."""
    timers = b._timers
    while timers and (timers[0][2].timer_at != timers[0][0] or timers[0][2].state is _GONE):
        heapq.heappop(timers)
    waiting = b._waiting
    while waiting and waiting[0].state is not _QUEUED:
        waiting.popleft()
    requeued = b._requeued
    while requeued and requeued[0][2].state is not _QUEUED:
        heapq.heappop(requeued)
    best = timers[0][0] if timers else None
    for t in (
        waiting[0].deadline if waiting else None,
        requeued[0][0] if requeued else None,
    ):
        if t is not None and (best is None or t < best):
            best = t
    return best


def _expire_queued(b: Broker, req: _Request) -> None:
    req.state, req.row = req.row[_EXPIRE]
    svc = req.service
    svc.queued -= 1
    b._forget(req)
    b._events.append(RequestExpired(
        req.client, svc.name,
        f"request_timeout ({b.config.request_timeout:g}s) passed with no worker to take it"))
    b._maybe_drop(svc)


def _arm(b: Broker, w: _Worker) -> None:
    due = w.heartbeat_at
    if _EXPIRED in w.row and w.expires < due:
        due = w.expires
    if w.deadline < due:
        due = w.deadline
    b._push(w, due)
