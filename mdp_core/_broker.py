"""The deterministic sans-IO Majordomo broker.

Theory of operation
-------------------
The broker keeps three kinds of record, all in dicts keyed by bytes:

* a **service** per name (created on demand, dropped when it has neither
  workers nor queued requests): a FIFO deque of queued requests, an
  ``OrderedDict`` of its idle workers in least-recently-used order, and a
  count of live workers;
* a **worker session** per worker routing id, whose state follows
  ``SESSION_TRANSITIONS`` of :mod:`mdp_core._state` (the only place that
  says which command is legal when). A session that ends is forgotten, so
  a later message from the same routing id is judged as coming from a new
  peer (state ``NEW``): READY opens a new session, anything else is a
  violation answered with DISCONNECT;
* a **request** per accepted client REQUEST, keyed by an internal id (a
  client may pipeline several), whose state follows ``REQUEST_TRANSITIONS``.

Removal from the middle of a deque is lazy: a request that leaves its
service queue early (expired, abandoned) stays there until it reaches the
head and is skipped because its table says it can no longer be dispatched.

Timers are derived, never scanned. Each worker has a heartbeat-send time,
an idle-expiry time (last heard + ``heartbeat_liveness`` *
``heartbeat_interval``) and, while busy, an optional processing deadline.
A heap holds one entry per worker with the earliest of these *as it was
when pushed*; a message from a worker only moves a float later, and when
the entry pops the real time is recomputed and re-pushed if it moved
(lazy invalidation). All requests share one ``request_timeout`` counted
from arrival, so a plain deque in arrival order is already sorted by
deadline; the rare request that goes back to a queue after its worker was
lost goes to a small heap instead. Per-message cost is therefore O(1) in
the number of workers, services and queued requests (O(log n) heap pushes
only on timer events).
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Sequence

from ._broker_parts import (
    _DELIVER,
    _DISCONNECT,
    _DISPATCH,
    _EXPIRE,
    _EXPIRED,
    _FINAL,
    _GONE,
    _HEARTBEAT,
    _INF,
    _LOST,
    _PARTIAL,
    _QUEUED,
    _READY,
    _REQUEST,
    _REQUEUE,
    _TIMEOUT,
    _W_HEARTBEAT,
    _W_PREFIX,
    BrokerConfig,
    _bytes_only,
    _disconnect_frames,
    _reply_frames,
    _Request,
    _request_rows,
    _Service,
    _session_rows,
    _Worker,
)
from ._codec import (
    C02,
    W02,
    ClientReply,
    ClientRequest,
    Dialect,
    Disconnect,
    Heartbeat,
    Ready,
    WorkerReply,
    decode,
)
from ._errors import MalformedMessage
from ._events import (
    Event,
    ProtocolError,
    RequestAbandoned,
    RequestDelivered,
    RequestExpired,
    RequestRefused,
    RequestRequeued,
    WorkerLost,
    WorkerReady,
)
from ._mmi import MMI_PREFIX, mmi_reply
from ._state import WorkerState

__all__ = ["Broker", "BrokerConfig"]


class Broker:
    """A Majordomo broker (MDP/0.1, MDP/0.2, majortomo dialect, RFC 8/MMI).

    Feed it what the ROUTER socket receives (:meth:`receive`), transport
    news (:meth:`connection_lost`) and the clock (:meth:`tick` at
    :meth:`next_deadline`); send what :meth:`outgoing` returns and act on
    :meth:`events`. Each peer is answered in the dialect it used.

    Every accepted request ends with exactly one of
    :class:`~mdp_core.RequestDelivered`, :class:`~mdp_core.RequestExpired`,
    :class:`~mdp_core.RequestRefused` or :class:`~mdp_core.RequestAbandoned`.
    Requests to ``mmi.*`` are answered at once by the broker itself (see
    :mod:`mdp_core._mmi` for the formats: ``mmi.service`` -> ``200``/``404``,
    ``mmi.services`` -> one frame per service with a live worker, sorted,
    ``mmi.workers`` -> one ``b"<service> <state>"`` frame per live worker,
    sorted; an empty list is one empty frame; other ``mmi.*`` -> ``501``)
    and end with ``RequestDelivered`` whose ``worker`` is ``b""``.

    An MDP/0.1 client served by an MDP/0.2 worker gets the PARTIAL bodies
    gathered and sent, followed by the FINAL's body, as one REPLY; beyond
    ``BrokerConfig.max_gathered_bytes`` of gathered PARTIALs the request
    ends with ``RequestExpired`` and the rest of that reply is dropped.

    Nothing any peer sends makes a method raise. After :meth:`close` every
    input is ignored.
    """

    def __init__(self, config: BrokerConfig | None = None) -> None:
        """Make an empty broker with ``config`` (default ``BrokerConfig()``)."""
        cfg = config if config is not None else BrokerConfig()
        self.config = cfg
        self._interval = cfg.heartbeat_interval
        self._expiry = cfg.heartbeat_interval * cfg.heartbeat_liveness
        self._srows = _session_rows()
        self._rrows = _request_rows()
        self._new_row = self._srows[WorkerState.NEW]
        self._queued_row = self._rrows[_QUEUED]
        self._services: dict[bytes, _Service] = {}
        self._workers: dict[bytes, _Worker] = {}
        self._clients: dict[bytes, dict[int, _Request]] = {}
        self._timers: list[tuple[float, int, _Worker]] = []
        self._waiting: deque[_Request] = deque()  # first-time queued, by deadline
        self._requeued: list[tuple[float, int, _Request]] = []  # re-queued, by deadline
        self._seq = itertools.count()
        self._ids = itertools.count(1)
        self._out: list[tuple[bytes, list[bytes]]] = []
        self._events: list[Event] = []
        self._closed = False

    # ------------------------------------------------------------ output

    def outgoing(self) -> list[tuple[bytes, list[bytes]]]:
        """Drain the messages to send: ``(routing id, frames)`` pairs. Raises nothing."""
        out = self._out
        self._out = []
        return out

    def events(self) -> list[Event]:
        """Drain the events that happened since the last call. Raises nothing."""
        events = self._events
        self._events = []
        return events

    # ------------------------------------------------------------- input

    def receive(self, peer: bytes, frames: Sequence[bytes], now: float) -> None:
        """Handle one message from ``peer`` (the ROUTER routing id), without
        the identity frame.

        Never raises on peer input: malformed or unexpected messages are
        dropped and reported as :class:`~mdp_core.ProtocolError` (a worker
        that sends a valid but unexpected command also gets DISCONNECT).
        """
        if self._closed:
            return
        n = len(frames)
        # Fast paths for the MDP/0.2 data path (client REQUEST, worker
        # PARTIAL/FINAL): they accept exactly what decode() accepts for those
        # shapes; everything else, and any non-bytes frame, takes decode().
        if n >= 4 and type(peer) is bytes:
            f0 = frames[0]
            f2 = frames[2]
            if f0 == C02:
                if frames[1] == b"\x01" and f2 and _bytes_only(frames, 2):
                    self._on_request(peer, Dialect.MDP02, f2, frames[3:], now)
                    return
            elif f0 == W02 and n >= 5:
                f1 = frames[1]
                if (
                    (f1 == b"\x04" or f1 == b"\x03") and f2 and frames[3] == b""
                    and _bytes_only(frames, 2)
                ):
                    self._on_reply(peer, Dialect.MDP02, f2, frames[4:], f1 == b"\x04", now)
                    return
        peer = bytes(peer)
        try:
            dialect, cmd = decode(frames)
        except MalformedMessage as exc:
            self._events.append(ProtocolError(peer, f"malformed message dropped: {exc.reason}"))
            return
        if isinstance(cmd, ClientRequest):
            self._on_request(peer, dialect, cmd.service, cmd.body, now)
        elif isinstance(cmd, WorkerReply):
            self._on_reply(peer, dialect, cmd.client, cmd.body, cmd.final, now)
        elif isinstance(cmd, Heartbeat):
            self._on_heartbeat(peer, dialect, now)
        elif isinstance(cmd, Ready):
            self._on_ready(peer, dialect, cmd.service, now)
        elif isinstance(cmd, Disconnect):
            self._on_disconnect(peer, dialect, now)
        elif isinstance(cmd, ClientReply):
            self._events.append(ProtocolError(
                peer, "client sent a PARTIAL/FINAL, which only a broker sends; dropped"))
        else:  # WorkerRequest
            self._unexpected(peer, self._workers.get(peer), dialect,
                             "REQUEST, which only a broker sends", now)

    def connection_lost(self, peer: bytes, now: float) -> None:
        """The transport says ``peer``'s connection is gone.

        A worker's session ends (:class:`~mdp_core.WorkerLost`) and its
        request, if busy, is re-dispatched at once; a client's requests end
        with :class:`~mdp_core.RequestAbandoned` (replies to them are then
        dropped silently). Unknown peers are ignored. Raises nothing.
        """
        if self._closed:
            return
        w = self._workers.get(peer)
        if w is not None:
            self._end_session(w, w.row[_LOST][0], "connection lost", False, now)
        requests = self._clients.pop(peer, None)
        if requests is not None:
            for req in requests.values():
                was_queued = req.state is _QUEUED
                req.state, req.row = req.row[_EXPIRE]
                req.body = ()
                svc = req.service
                if was_queued:
                    svc.queued -= 1
                    self._maybe_drop(svc)
                self._events.append(RequestAbandoned(req.client, svc.name))

    def tick(self, now: float) -> None:
        """Run the timers due at ``now``: send heartbeats, expire silent idle
        workers and overdue busy ones, expire requests queued too long.

        Safe to call early or late. Raises nothing.
        """
        if self._closed:
            return
        timers = self._timers
        rearm: list[_Worker] = []  # re-pushed after the loop: each worker runs once per tick
        while timers and timers[0][0] <= now:
            at, _, w = heapq.heappop(timers)
            if w.timer_at != at or w.state is _GONE:
                continue  # superseded entry
            w.timer_at = _INF
            if w.expires <= now and _EXPIRED in w.row:
                self._end_session(
                    w, w.row[_EXPIRED][0],
                    f"heartbeat expired: silent for {self._expiry:g}s", False, now)
                continue
            if w.deadline <= now and _TIMEOUT in w.row:
                self._end_session(
                    w, w.row[_TIMEOUT][0],
                    f"processing timeout ({w.service.processing_timeout:g}s) passed",
                    True, now)
                continue
            if w.heartbeat_at <= now:
                self._out.append((w.peer, [*_W_PREFIX[w.dialect], _W_HEARTBEAT[w.dialect]]))
                w.heartbeat_at = now + self._interval
            rearm.append(w)
        for w in rearm:
            self._arm(w)
        waiting = self._waiting
        while waiting and waiting[0].deadline <= now:
            req = waiting.popleft()
            if req.state is _QUEUED:
                self._expire_queued(req)
        requeued = self._requeued
        while requeued and requeued[0][0] <= now:
            req = heapq.heappop(requeued)[2]
            if req.state is _QUEUED:
                self._expire_queued(req)

    def next_deadline(self) -> float | None:
        """When :meth:`tick` must next be called, or None if no timer runs.

        Raises nothing.
        """
        if self._closed:
            return None
        timers = self._timers
        while timers and (timers[0][2].timer_at != timers[0][0] or timers[0][2].state is _GONE):
            heapq.heappop(timers)
        waiting = self._waiting
        while waiting and waiting[0].state is not _QUEUED:
            waiting.popleft()
        requeued = self._requeued
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

    def close(self, now: float) -> None:
        """Shut down cleanly: DISCONNECT every live worker (each ends with
        :class:`~mdp_core.WorkerLost`), end every pending request with
        :class:`~mdp_core.RequestExpired`, and ignore all later input.

        Calling it again does nothing. Raises nothing.
        """
        if self._closed:
            return
        self._closed = True
        for w in self._workers.values():
            self._out.append((w.peer, _disconnect_frames(w.dialect)))
            w.state, w.row = _GONE, self._srows[_GONE]
            self._events.append(WorkerLost(w.peer, w.service.name, "broker closed"))
        for requests in self._clients.values():
            for req in requests.values():
                req.state, req.row = req.row[_EXPIRE]
                self._events.append(RequestExpired(req.client, req.service.name, "broker closed"))
        self._workers.clear()
        self._clients.clear()
        self._services.clear()
        self._timers.clear()
        self._waiting.clear()
        self._requeued.clear()

    # ------------------------------------------------------------ clients

    def _on_request(
        self, peer: bytes, dialect: Dialect, service: bytes, body: Sequence[bytes], now: float
    ) -> None:
        if service.startswith(MMI_PREFIX):
            reply = mmi_reply(
                service, body, self._services,
                (w.service.name + b" " + w.state.value.encode() for w in self._workers.values()),
            )
            self._out.append((peer, _reply_frames(dialect, service, None, reply, True)))
            self._events.append(RequestDelivered(peer, service, b""))
            return
        svc = self._service(service)
        idle = svc.idle
        if not idle and svc.queued >= self.config.max_queue:
            self._events.append(RequestRefused(
                peer, service, f"service queue is full (max_queue={self.config.max_queue})"))
            self._maybe_drop(svc)
            return
        req = _Request(next(self._ids), peer, svc, dialect, body,
                       now + self.config.request_timeout, self._queued_row)
        requests = self._clients.get(peer)
        if requests is None:
            self._clients[peer] = {req.id: req}
        else:
            requests[req.id] = req
        if idle:
            self._dispatch(req, idle.popitem(last=False)[1], now)
        else:
            svc.queue.append(req)
            svc.queued += 1
            self._waiting.append(req)

    def _service(self, name: bytes) -> _Service:
        """The service called ``name``, created on demand."""
        svc = self._services.get(name)
        if svc is None:
            cfg = self.config
            svc = self._services[name] = _Service(
                name, cfg.service_processing_timeouts.get(name, cfg.processing_timeout))
        return svc

    def _forget(self, req: _Request) -> None:
        """Remove an ended request from its client's table."""
        requests = self._clients[req.client]
        del requests[req.id]
        if not requests:
            del self._clients[req.client]
        req.body = ()

    def _expire_queued(self, req: _Request) -> None:
        req.state, req.row = req.row[_EXPIRE]
        svc = req.service
        svc.queued -= 1
        self._forget(req)
        self._events.append(RequestExpired(
            req.client, svc.name,
            f"request_timeout ({self.config.request_timeout:g}s) passed with no worker to take it"))
        self._maybe_drop(svc)

    def _maybe_drop(self, svc: _Service) -> None:
        if svc.workers == 0 and svc.queued == 0:
            del self._services[svc.name]

    # ------------------------------------------------------------ workers

    def _dispatch(self, req: _Request, w: _Worker, now: float) -> None:
        """Hand a QUEUED request to an IDLE worker."""
        req.state, req.row = req.row[_DISPATCH]
        w.state, w.row = w.row[_REQUEST]
        req.attempts += 1
        w.request = req
        self._out.append((w.peer, [*w.request_prefix, req.client, b"", *req.body]))
        w.heartbeat_at = now + self._interval  # any command counts as a heartbeat
        timeout = w.service.processing_timeout
        if timeout is not None:
            w.deadline = deadline = now + timeout
            if deadline < w.timer_at:
                self._push(w, deadline)

    def _make_idle(self, w: _Worker, now: float) -> None:
        """Give an IDLE worker the next queued request of its service, or park it."""
        svc = w.service
        queue = svc.queue
        while queue:
            req = queue.popleft()
            if _DISPATCH in req.row:  # else a stale entry (expired or abandoned)
                svc.queued -= 1
                self._dispatch(req, w, now)
                return
        svc.idle[w.peer] = w

    def _push(self, w: _Worker, at: float) -> None:
        w.timer_at = at
        heapq.heappush(self._timers, (at, next(self._seq), w))

    def _arm(self, w: _Worker) -> None:
        due = w.heartbeat_at
        if _EXPIRED in w.row and w.expires < due:
            due = w.expires
        if w.deadline < due:
            due = w.deadline
        self._push(w, due)

    def _on_ready(self, peer: bytes, dialect: Dialect, service: bytes, now: float) -> None:
        w = self._workers.get(peer)
        t = (self._new_row if w is None else w.row).get(_READY)
        if t is None or w is not None:
            self._unexpected(peer, w, dialect, "READY (a worker MUST NOT send a second READY)",
                             now)
            return
        if service.startswith(MMI_PREFIX):
            self._out.append((peer, _disconnect_frames(dialect)))
            self._events.append(ProtocolError(
                peer, f"READY for {service!r}: workers may not register mmi.* services; "
                "sent DISCONNECT"))
            return
        svc = self._service(service)
        w = _Worker(peer, svc, dialect, t[0], t[1], now, self._expiry, self._interval)
        self._workers[peer] = w
        svc.workers += 1
        self._events.append(WorkerReady(peer, service))
        self._push(w, w.heartbeat_at)
        self._make_idle(w, now)

    def _on_heartbeat(self, peer: bytes, dialect: Dialect, now: float) -> None:
        w = self._workers.get(peer)
        t = (self._new_row if w is None else w.row).get(_HEARTBEAT)
        if t is None or w is None:
            self._unexpected(peer, w, dialect, "HEARTBEAT", now)
            return
        w.state, w.row = t
        w.expires = now + self._expiry

    def _on_disconnect(self, peer: bytes, dialect: Dialect, now: float) -> None:
        w = self._workers.get(peer)
        t = (self._new_row if w is None else w.row).get(_DISCONNECT)
        if t is None:
            self._unexpected(peer, w, dialect, "DISCONNECT", now)
        elif w is not None:
            self._end_session(w, t[0], "worker sent DISCONNECT", False, now)

    def _on_reply(
        self, peer: bytes, dialect: Dialect, client: bytes, body: Sequence[bytes], final: bool,
        now: float,
    ) -> None:
        w = self._workers.get(peer)
        what = "FINAL/REPLY" if final else "PARTIAL"
        t = (self._new_row if w is None else w.row).get(_FINAL if final else _PARTIAL)
        if t is None or w is None:
            self._unexpected(peer, w, dialect, what, now)
            return
        req = w.request
        if req is None or req.client != client:
            self._unexpected(peer, w, dialect, f"{what} for client {client!r}, which it does "
                             "not serve", now)
            return
        w.state, w.row = t
        w.expires = now + self._expiry
        if final:
            w.request = None
            w.deadline = _INF
            row = req.row
            if _DELIVER in row:  # else its client is gone or it expired: drop silently
                req.state, req.row = row[_DELIVER]
                svc = req.service
                self._out.append((client, _reply_frames(
                    req.dialect, svc.name, req.gathered, body, True)))
                self._events.append(RequestDelivered(client, svc.name, peer))
                self._forget(req)
            self._make_idle(w, now)
        elif _DELIVER in req.row:
            if req.dialect is Dialect.MDP01:
                self._gather(req, body)
            else:
                self._out.append((client, _reply_frames(
                    req.dialect, req.service.name, None, body, False)))

    def _gather(self, req: _Request, body: Sequence[bytes]) -> None:
        size = req.gathered_bytes + sum(len(f) for f in body)
        limit = self.config.max_gathered_bytes
        if size > limit:
            req.state, req.row = req.row[_EXPIRE]
            req.gathered = None
            self._forget(req)
            self._events.append(RequestExpired(
                req.client, req.service.name,
                f"MDP/0.1 client: PARTIAL replies gathered for one REPLY exceed "
                f"max_gathered_bytes={limit}; rest of the reply dropped"))
            return
        req.gathered_bytes = size
        if req.gathered is None:
            req.gathered = list(body)
        else:
            req.gathered.extend(body)

    def _unexpected(
        self, peer: bytes, w: _Worker | None, dialect: Dialect, what: str, now: float
    ) -> None:
        """A valid but unexpected worker command: DISCONNECT (RFC 7/18)."""
        if w is None:
            self._out.append((peer, _disconnect_frames(dialect)))
            self._events.append(ProtocolError(
                peer, f"unexpected {what} from a peer with no worker session; dropped, "
                "sent DISCONNECT"))
            return
        reason = f"unexpected {what} in state {w.state.value}"
        self._events.append(ProtocolError(peer, f"{reason}; dropped, sent DISCONNECT"))
        self._end_session(w, _GONE, f"protocol violation: {reason}", True, now)

    def _end_session(
        self, w: _Worker, state: WorkerState, reason: str, disconnect: bool, now: float
    ) -> None:
        """End a live session: forget the worker, re-dispatch its request."""
        w.state, w.row = state, self._srows[state]
        del self._workers[w.peer]
        svc = w.service
        svc.workers -= 1
        svc.idle.pop(w.peer, None)
        if disconnect:
            self._out.append((w.peer, _disconnect_frames(w.dialect)))
        self._events.append(WorkerLost(w.peer, svc.name, reason))
        req = w.request
        if req is not None:
            w.request = None
            self._requeue(req, w.peer, now)
        self._maybe_drop(svc)

    def _requeue(self, req: _Request, worker: bytes, now: float) -> None:
        row = req.row
        if _REQUEUE not in row:  # its client is gone or it expired already
            return
        req.state, req.row = row[_REQUEUE]
        # PARTIALs gathered for an MDP/0.1 client belong to the lost attempt;
        # the next attempt's REPLY must hold only its own.
        req.gathered = None
        req.gathered_bytes = 0
        svc = req.service
        cfg = self.config
        if req.attempts >= cfg.max_attempts:
            req.state, req.row = req.row[_EXPIRE]
            self._forget(req)
            self._events.append(RequestExpired(
                req.client, svc.name,
                f"worker lost on attempt {req.attempts} of max_attempts={cfg.max_attempts}"))
            return
        self._events.append(RequestRequeued(req.client, svc.name, worker, req.attempts))
        if svc.idle:
            self._dispatch(req, svc.idle.popitem(last=False)[1], now)
        elif now >= req.deadline:
            req.state, req.row = req.row[_EXPIRE]
            self._forget(req)
            self._events.append(RequestExpired(
                req.client, svc.name,
                f"worker lost and request_timeout ({cfg.request_timeout:g}s) already passed"))
        else:
            svc.queue.appendleft(req)
            svc.queued += 1
            heapq.heappush(self._requeued, (req.deadline, req.id, req))
