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
lost goes to a small heap instead.

Sends can fail (``send_failed``). A REQUEST's frames stay on its worker
record until the reply, so a failed one is found by its worker; replies to
clients are appended to a list that ``events()`` empties, and indexed by
``id(frames)`` only when a failure is reported. The bytes of held requests
(``max_queued_bytes``) are a running sum, added on arrival and taken off
when the request ends. Per-message cost is therefore O(1) in the number of
workers, services and queued requests (O(log n) heap pushes only on timer
events).
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Sequence

from ._broker_auth import bound, refuse_caller, refuse_worker
from ._broker_edges import (
    abandon,
    answer_mmi,
    close_all,
    gather,
    keep_unsent,
    no_new_service,
    oversized,
    redispatched,
    refuse,
    requeue,
    settle_failed_send,
    unexpected,
)
from ._broker_parts import (
    _DELIVER,
    _DISCONNECT,
    _DISPATCH,
    _FINAL,
    _FRAME_OVERHEAD,
    _HEARTBEAT,
    _INF,
    _LOST,
    _ONE_FRAME,
    _PARTIAL,
    _QUEUED,
    _READY,
    _REQUEST,
    _REQUEST_OVERHEAD,
    BrokerConfig,
    _bytes_only,
    _disconnect_frames,
    _reply_frames,
    _Request,
    _request_rows,
    _Sent,
    _Service,
    _session_rows,
    _shown,
    _Worker,
)
from ._broker_timers import earliest_timer, run_timers
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
    RequestDelivered,
    RequestRefused,
    TimedRequestDelivered,
    WorkerLost,
    WorkerReady,
)
from ._mmi import MMI_PREFIX
from ._state import WorkerState
from ._stats import BrokerStats, broker_stats

__all__ = ["Broker", "BrokerConfig"]


class Broker:
    """A Majordomo broker (MDP/0.1, MDP/0.2, majortomo dialect, RFC 8/MMI).

    Feed it what the ROUTER socket receives (:meth:`receive`), transport
    news (:meth:`connection_lost`) and the clock (:meth:`tick` at
    :meth:`next_deadline`); send what :meth:`outgoing` returns and act on
    :meth:`events`. Each peer is answered in the dialect it used.

    Every request ends with exactly one of :class:`~mdp_core.RequestDelivered`
    (the transport accepted its reply), :class:`~mdp_core.RequestUndelivered`
    (it refused the reply: :meth:`send_failed`),
    :class:`~mdp_core.RequestExpired`, :class:`~mdp_core.RequestRefused` (on
    arrival) or :class:`~mdp_core.RequestAbandoned` (its client is gone).
    A request whose worker is lost goes to another one
    (:class:`~mdp_core.RequestRequeued`, then
    :class:`~mdp_core.RequestRedispatched`). Requests to ``mmi.*`` are
    answered at once by the broker itself (``mmi.service``,
    ``mmi.services``, ``mmi.workers``, ``mmi.stats``; other ``mmi.*`` ->
    ``501``; formats in :mod:`mdp_core._mmi`) and end with
    ``RequestDelivered`` whose ``worker`` is ``b""``.

    An MDP/0.1 client served by an MDP/0.2 worker gets the PARTIAL bodies
    gathered and sent, followed by the FINAL's body, as one REPLY; beyond
    ``BrokerConfig.max_gathered_bytes`` of gathered PARTIALs the request
    ends with ``RequestExpired`` and the rest of that reply is dropped.

    Memory is bounded by bytes and counts (:class:`BrokerConfig`:
    ``max_queued_bytes``, ``max_frames``, ``max_service_name``,
    ``max_services``, ``max_mmi_reply_bytes``), and a peer-supplied value
    quoted in a ``reason`` is cut to its first 64 bytes.

    Nothing any peer sends makes a method raise. After :meth:`close` every
    input is ignored.
    """

    def __init__(self, config: BrokerConfig | None = None, *, timed: bool = False) -> None:
        """Make an empty broker with ``config`` (default ``BrokerConfig()``).

        ``timed``: report each worker's reply as
        :class:`~mdp_core.TimedRequestDelivered` (what metrics need; off, the
        data path does not pay for it).
        """
        cfg = config if config is not None else BrokerConfig()
        self.config = cfg
        self.timed = timed
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
        self._accepted = 0  # requests accepted so far (the last one's id)
        self._out: list[tuple[bytes, list[bytes]]] = []
        self._events: list[Event] = []
        # Replies to clients whose send may still be reported failed (a
        # worker's REQUEST is found by its worker: _Worker.sent), and an
        # index by id(frames) of the first _indexed of them, built by the
        # first report. events() keeps only those still in _out.
        self._track: list[_Sent] = []
        self._index: dict[int, _Sent] = {}
        self._indexed = 0
        self._held = 0  # bytes of the requests held, against max_queued_bytes
        self._max_held = cfg.max_queued_bytes
        self._max_frames = cfg.max_frames
        self._policy = cfg.policy
        # Whether messages are checked against their identity (bound()):
        # with a policy, and once any message came with an identity.
        self._guarded = cfg.policy is not None
        self._closed = False

    # ------------------------------------------------------------ output

    def outgoing(self) -> list[tuple[bytes, list[bytes]]]:
        """Drain the messages to send: ``(routing id, frames)`` pairs. Raises nothing."""
        out = self._out
        self._out = []
        return out

    def events(self) -> list[Event]:
        """Drain the events that happened since the last call. Raises nothing.

        Call it after reporting every failed send of what :meth:`outgoing`
        returned (:meth:`send_failed`): this settles those replies' outcomes.
        """
        events = self._events
        self._events = []
        if self._track:
            if self._out:
                keep_unsent(self)
            else:
                self._track.clear()
                if self._indexed:
                    self._index.clear()
                    self._indexed = 0
        return events

    # ------------------------------------------------------------- input

    def receive(
        self, peer: bytes, frames: Sequence[bytes], now: float, identity: str | None = None
    ) -> None:
        """Handle one message from ``peer`` (the ROUTER routing id), without
        the identity frame.

        ``identity`` is who the transport authenticated the sender as (the
        ``User-Id`` of a CURVE connection; None: not authenticated). A
        worker session and a client's pending requests keep the identity
        they started with: a message from their routing id under another
        one is dropped (:class:`~mdp_core.ProtocolError`), the session and
        the requests untouched. ``BrokerConfig.policy`` is judged on it.

        Never raises on peer input: malformed or unexpected messages are
        dropped and reported as :class:`~mdp_core.ProtocolError` (a worker
        that sends a valid but unexpected command also gets DISCONNECT). A
        message over ``BrokerConfig.max_frames`` is judged by its header
        alone (see there). Raises TypeError, changing nothing, for an
        ``identity`` that is neither a str nor None.
        """
        if self._closed:
            return
        if (identity is not None or self._guarded) and not bound(self, peer, identity):
            return
        n = len(frames)
        if n > self._max_frames:
            oversized(self, peer, frames, now)
            return
        # Fast paths for the MDP/0.2 data path (client REQUEST, worker
        # PARTIAL/FINAL): they accept exactly what decode() accepts for those
        # shapes; everything else, and any non-bytes frame, takes decode().
        if n >= 4 and type(peer) is bytes:
            f0 = frames[0]
            f2 = frames[2]
            if f0 == C02:
                if frames[1] == b"\x01" and f2 and _bytes_only(frames, 2):
                    self._on_request(peer, Dialect.MDP02, f2, frames[3:], now, identity)
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
            self._on_request(peer, dialect, cmd.service, cmd.body, now, identity)
        elif isinstance(cmd, WorkerReply):
            self._on_reply(peer, dialect, cmd.client, cmd.body, cmd.final, now)
        elif isinstance(cmd, Heartbeat):
            self._on_heartbeat(peer, dialect, now)
        elif isinstance(cmd, Ready):
            self._on_ready(peer, dialect, cmd.service, now, identity)
        elif isinstance(cmd, Disconnect):
            self._on_disconnect(peer, dialect, now)
        elif isinstance(cmd, ClientReply):
            self._events.append(ProtocolError(
                peer, "client sent a PARTIAL/FINAL, which only a broker sends; dropped"))
        else:  # WorkerRequest
            unexpected(self, peer, self._workers.get(peer), dialect,
                       "REQUEST, which only a broker sends", now)

    def send_failed(self, peer: bytes, frames: Sequence[bytes], now: float) -> None:
        """The driver could not send ``frames`` to ``peer`` because the
        transport refused it (the peer's send queue is full: ``zmq.Again``).

        ``peer`` and ``frames`` are a pair from the latest :meth:`outgoing`
        (the very list object). A peer that is gone is
        :meth:`connection_lost` instead. The contract: send every message
        :meth:`outgoing` returned (draining it until empty, since this call
        may queue more), call this for each one that failed, and only then
        call :meth:`events`, which settles the outcomes.

        * A REQUEST that did not reach its worker goes back to the head of
          its service queue, without counting as an attempt
          (:class:`~mdp_core.RequestRequeued`), or at once to an idle
          worker; that worker's session ends (:class:`~mdp_core.WorkerLost`,
          and it is sent DISCONNECT).
        * A FINAL/REPLY, an MMI answer or a PARTIAL that did not reach its
          client ends the request with
          :class:`~mdp_core.RequestUndelivered` instead of
          :class:`~mdp_core.RequestDelivered` (which it replaces in place);
          after a lost PARTIAL, the rest of that reply is dropped.
        * A HEARTBEAT or DISCONNECT is ignored (liveness is judged by what
          arrives), and so is a report for frames the broker does not know.

        :meth:`events` settles the replies: a report after it changes
        nothing for a reply (its outcome was already returned); one for a
        REQUEST still counts while its worker holds that request. Raises
        nothing.
        """
        if not self._closed:
            settle_failed_send(self, peer, frames, now)

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
            abandon(self, requests.values())

    def tick(self, now: float) -> None:
        """Run the timers due at ``now``: send heartbeats, expire silent idle
        workers and overdue busy ones, expire requests queued too long.

        Safe to call early or late. Raises nothing.
        """
        if not self._closed:
            run_timers(self, now)

    def next_deadline(self) -> float | None:
        """When :meth:`tick` must next be called, or None if no timer runs.

        Raises nothing.
        """
        return None if self._closed else earliest_timer(self)

    def stats(self) -> BrokerStats:
        """What the broker holds now, per service (:class:`~mdp_core.BrokerStats`).

        O(services + workers): for management, not per message. Raises nothing.
        """
        return broker_stats(self)

    def close(self, now: float) -> None:
        """Shut down cleanly: DISCONNECT every live worker (each ends with
        :class:`~mdp_core.WorkerLost`), end every pending request with
        :class:`~mdp_core.RequestExpired`, and ignore all later input.

        Calling it again does nothing. Raises nothing.
        """
        if not self._closed:
            self._closed = True
            close_all(self)

    # ------------------------------------------------------------ clients

    def _on_request(
        self, peer: bytes, dialect: Dialect, service: bytes, body: Sequence[bytes], now: float,
        identity: str | None,
    ) -> None:
        if service.startswith(MMI_PREFIX):
            answer_mmi(self, peer, dialect, service, body, identity)
            return
        policy = self._policy
        if policy is not None and not policy._may_call(identity, service):
            refuse_caller(self, peer, service, identity)
            return
        svc = self._services.get(service)
        if svc is None:
            refusal = no_new_service(self, service)
            if refusal is not None:
                self._events.append(RequestRefused(peer, service, refusal))
                return
            svc = self._new_service(service)
        size = (len(body[0]) + _ONE_FRAME if len(body) == 1
                else _REQUEST_OVERHEAD + sum(map(len, body)) + _FRAME_OVERHEAD * len(body))
        held = self._held + size
        idle = svc.idle
        if held > self._max_held or (not idle and svc.queued >= self.config.max_queue):
            refuse(self, peer, svc, size)
            return
        self._held = held
        self._accepted = rid = self._accepted + 1
        req = _Request(rid, peer, svc, dialect, body, size, now,
                       now + self.config.request_timeout, self._queued_row, identity)
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

    def _new_service(self, name: bytes) -> _Service:
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
        self._held -= req.size

    def _maybe_drop(self, svc: _Service) -> None:
        if svc.workers == 0 and svc.queued == 0:
            del self._services[svc.name]

    # ------------------------------------------------------------ workers

    def _dispatch(self, req: _Request, w: _Worker, now: float) -> None:
        """Hand a QUEUED request to an IDLE worker."""
        req.state, req.row = req.row[_DISPATCH]
        w.state, w.row = w.row[_REQUEST]
        req.attempts += 1
        req.dispatched = now
        w.request = req
        frames = [*w.request_prefix, req.client, b"", *req.body]
        self._out.append((w.peer, frames))
        w.sent = frames
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
                lost_at = req.lost_at
                if lost_at is not None:
                    redispatched(self, req, w, lost_at, now)
                return
        svc.idle[w.peer] = w

    def _push(self, w: _Worker, at: float) -> None:
        w.timer_at = at
        heapq.heappush(self._timers, (at, next(self._seq), w))

    def _on_ready(
        self, peer: bytes, dialect: Dialect, service: bytes, now: float, identity: str | None
    ) -> None:
        w = self._workers.get(peer)
        t = (self._new_row if w is None else w.row).get(_READY)
        if t is None or w is not None:
            unexpected(self, peer, w, dialect, "READY (a worker MUST NOT send a second READY)",
                       now)
            return
        policy = self._policy
        if policy is not None and not policy._may_serve(identity, service):
            refuse_worker(self, peer, dialect, service, identity)
            return
        svc = self._services.get(service)
        if svc is None:
            refusal = ("workers may not register mmi.* services"
                       if service.startswith(MMI_PREFIX) else no_new_service(self, service))
            if refusal is not None:
                self._out.append((peer, _disconnect_frames(dialect)))
                self._events.append(ProtocolError(
                    peer, f"READY for {_shown(service)}: {refusal}; sent DISCONNECT"))
                return
            svc = self._new_service(service)
        w = _Worker(peer, svc, dialect, t[0], t[1], now, self._expiry, self._interval, identity)
        self._workers[peer] = w
        svc.workers += 1
        self._events.append(WorkerReady(peer, service))
        self._push(w, w.heartbeat_at)
        self._make_idle(w, now)

    def _on_heartbeat(self, peer: bytes, dialect: Dialect, now: float) -> None:
        w = self._workers.get(peer)
        t = (self._new_row if w is None else w.row).get(_HEARTBEAT)
        if t is None or w is None:
            unexpected(self, peer, w, dialect, "HEARTBEAT", now)
            return
        w.state, w.row = t
        w.expires = now + self._expiry

    def _on_disconnect(self, peer: bytes, dialect: Dialect, now: float) -> None:
        w = self._workers.get(peer)
        t = (self._new_row if w is None else w.row).get(_DISCONNECT)
        if t is None:
            unexpected(self, peer, w, dialect, "DISCONNECT", now)
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
            unexpected(self, peer, w, dialect, what, now)
            return
        req = w.request
        if req is None or req.client != client:
            unexpected(self, peer, w, dialect,
                       f"{what} for client {_shown(client)}, which it does not serve", now)
            return
        w.state, w.row = t
        w.expires = now + self._expiry
        if final:
            w.request = w.sent = None
            w.deadline = _INF
            row = req.row
            if _DELIVER in row:  # else it ended already (client gone, expired...): drop
                req.state, req.row = row[_DELIVER]
                svc = req.service
                frames = _reply_frames(req.dialect, svc.name, req.gathered, body, True)
                self._out.append((client, frames))
                events = self._events
                req.delivered = rec = (frames, events, len(events))
                self._track.append(rec)
                if self.timed:
                    sent = req.dispatched
                    events.append(TimedRequestDelivered(
                        client, svc.name, peer, sent - req.arrived, now - sent))
                else:
                    events.append(RequestDelivered(client, svc.name, peer))
                self._forget(req)
            self._make_idle(w, now)
        elif _DELIVER in req.row:
            if req.dialect is Dialect.MDP01:
                gather(self, req, body)
            else:
                frames = _reply_frames(req.dialect, req.service.name, None, body, False)
                self._out.append((client, frames))
                self._track.append((frames, req, peer))

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
            w.request = w.sent = None
            requeue(self, req, w.peer, now)
        self._maybe_drop(svc)
