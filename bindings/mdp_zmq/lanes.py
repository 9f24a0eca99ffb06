"""The synchronous half of the async and gevent drivers' workers and client pools.

Both drivers run a worker's conversation with one broker (a *lane*) and
a client pool's (core, socket) *pair* the same way between two waits: a
:class:`~mdp_zmq.engine.DealerEngine` turn, then acting on the core's
events (start a job, end the conversation, hand a request its replies).
That part is here, once: :class:`WorkerLane` and :class:`ClientPair`. A
driver subclasses them for what differs: how it waits (its pump), runs
a job (a task, a greenlet) and opens and closes a socket.

Everything here is synchronous and runs in the driver's I/O context (the
pump's turn, or the task that owns the lane or pair); it decides nothing
about MDP: the core does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import mdp_core
from mdp_core import (
    BodyLike,
    BrokerLost,
    FinalReply,
    NotCurrentRequest,
    PartialReply,
    ProtocolError,
    RequestFailed,
    RequestReceived,
    ResetConnection,
)

from ._client import RequestTimeout
from .engine import DealerEngine
from .glue import LogLimiter, MonitorEvent, log_event, log_handler_failure

__all__ = ["ClientPair", "LaneOwner", "PumpControl", "WorkerLane"]


class PumpControl(Protocol):
    """What the shared halves need of a driver's pump: wake it, stop it."""

    def wake(self) -> None:
        """Have the turn called again soon."""

    def stop(self, result: Any = None) -> None:
        """End the pump's run after the current turn, returning ``result``."""


class LaneOwner(Protocol):
    """What a :class:`WorkerLane` needs of its worker (the driver's ``Worker``)."""

    #: Times each handler call and counts lost conversations (None: none).
    metrics: mdp_core.WorkerMetrics | None
    #: Rate-limits the worker's repeated warnings.
    log_limiter: LogLimiter
    #: The service's name (for log lines).
    service: bytes
    #: Requests answered with a FINAL, by every lane.
    handled: int


class WorkerLane:
    """One conversation at a time of a worker with one broker: a core Worker,
    its DEALER's :class:`DealerEngine` and the driver's pump.

    The subclass opens a socket (setting :attr:`engine` and :attr:`pump`),
    implements :meth:`start_job` and :meth:`close`, and runs :meth:`turn`
    in its pump. ``clock`` is the driver's (what ``now`` is in); ``log``
    the driver's logger.
    """

    def __init__(self, owner: LaneOwner, endpoint: str, core: mdp_core.Worker, *,
                 log: logging.Logger, clock: Callable[[], float]) -> None:
        self.owner = owner
        self.endpoint = endpoint
        self.core = core
        self.log = log
        self.clock = clock
        #: The conversation's socket (None between conversations).
        self.engine: DealerEngine | None = None
        #: The pump of the conversation's socket (None between conversations).
        self.pump: PumpControl | None = None

    def start_job(self, request: RequestReceived) -> None:
        """Run the handler for ``request`` in a task (greenlet) of its own
        (the subclass's); it ends with :meth:`answer`."""
        raise NotImplementedError

    def close(self) -> None:
        """End the conversation (:meth:`end`) and close its socket (the subclass's)."""
        raise NotImplementedError

    def turn(self, now: float) -> tuple[bool, float | None]:
        """The pump's turn: read, feed, tick, send, start jobs; stop the pump
        with the reconnect delay once the conversation ended. Returns what
        the pump needs (``drained``, the next deadline)."""
        core, engine, owner = self.core, self.engine, self.owner
        assert engine is not None
        emptied = engine.turn(now)
        self.flush(now)
        events = core.events()
        if owner.metrics is not None:
            owner.metrics.observe(events)
        for event in events:
            log_event(self.log, event, owner.log_limiter)
            if isinstance(event, RequestReceived):
                self.start_job(event)
            elif isinstance(event, BrokerLost):
                self.flush(now)
                assert self.pump is not None
                self.pump.stop(event.reconnect_delay)
                return emptied, None
        return emptied, core.next_deadline()

    def on_monitor(self, events: Sequence[MonitorEvent]) -> None:
        """Hand the DEALER's monitor events to the engine; wake the pump if the
        core must hear of one."""
        engine = self.engine
        if engine is not None and engine.monitor_events(events):
            self.wake()

    def flush(self, now: float) -> None:
        """Send what the core queued; a refused send wakes the pump (the core
        has news: a broken conversation)."""
        if self.engine is not None and not self.engine.flush(now):
            self.wake()

    def wake(self) -> None:
        """Wake the pump, if a conversation is open."""
        if self.pump is not None:
            self.pump.wake()

    def end(self) -> None:
        """End the conversation (DISCONNECT if still open) and send that; the
        subclass then closes the socket."""
        now = self.clock()
        self.core.disconnect(now)
        self.flush(now)
        for event in self.core.events():
            log_event(self.log, event, self.owner.log_limiter)

    def answer(self, request: RequestReceived, result: BodyLike | Exception) -> bool:
        """Send ``result`` (the handler's FINAL body) for ``request``, or
        abandon the request if it is an exception the handler raised or a
        body that cannot be sent (logged, rate-limited). True if answered.

        A request whose conversation ended meanwhile is dropped (logged at
        DEBUG): its broker re-dispatches it.
        """
        core, owner, log = self.core, self.owner, self.log
        try:
            if isinstance(result, Exception):
                raise result
            core.reply(request, result, self.clock())
        except NotCurrentRequest as exc:  # the conversation ended meanwhile
            log.debug("reply dropped: %s", exc)
            return False
        except Exception as exc:
            log_handler_failure(log, owner.log_limiter, owner.service, exc)
            try:
                core.abandon(request, self.clock())
            except NotCurrentRequest as exc:
                log.debug("cannot abandon: %s", exc)
            return False
        owner.handled += 1
        return True


class ClientPair:
    """A client pool's core Client and its DEALER's :class:`DealerEngine` (opened
    on first use, replaced on ``ResetConnection``), and the driver's pump.

    The subclass implements :meth:`open` and :meth:`close`, and drives a
    request with :meth:`begin`, then, until the pump stops with the
    request's replies, :meth:`prepare`, a run of :meth:`turn` in its pump
    and :meth:`after_run` (also when the run raised).
    ``endpoints`` are the client's, ``clock`` and ``log`` the driver's.
    """

    def __init__(self, core: mdp_core.Client, endpoints: list[str], *,
                 log: logging.Logger, clock: Callable[[], float]) -> None:
        self.core = core
        self.endpoints = endpoints
        self.log = log
        self.clock = clock
        #: The current socket (None until the next use).
        self.engine: DealerEngine | None = None
        #: The pump of the current socket.
        self.pump: PumpControl | None = None
        self._reset = False  # the core asked for a new socket
        self._rid = 0

    @property
    def endpoint(self) -> str:
        """The broker the core chose: the one its latest ``ResetConnection`` named."""
        return self.endpoints[self.core.broker]

    def open(self) -> None:
        """Open a socket to :attr:`endpoint`: set :attr:`engine` and :attr:`pump`
        and start watching the monitor (the subclass's)."""
        raise NotImplementedError

    def close(self) -> None:
        """Close the socket, if any (the subclass's; opened again on next use)."""
        raise NotImplementedError

    def prepare(self) -> None:
        """Before a run of the pump: open a socket if there is none (the first
        use, or after a reset), and send what the core queued."""
        if self.engine is None:
            self.open()
        assert self.engine is not None
        self.engine.flush(self.clock())

    def report_idle_drop(self) -> None:
        """Before a request: tell the core of a drop the monitor saw while idle.

        It is not the next request's loss: with one broker the DEALER
        queues the request until it is connected again; with several the
        core moves on to another broker (a ``ResetConnection``, acted on
        in :meth:`begin`).
        """
        engine = self.engine
        if engine is not None and engine.dropped:
            engine.dropped = False
            self.core.connection_lost(self.clock())

    def begin(self, rid: int) -> None:
        """Request ``rid`` is queued in the core, not sent yet.

        A ``ResetConnection`` before it (a drop while idle, or a request the
        core sends to another broker) closes the old socket before anything
        is sent; the next run opens one to the broker the core chose.
        """
        self._rid = rid
        for event in self.core.events():
            if isinstance(event, ResetConnection):
                self.close()

    def turn(self, now: float) -> tuple[bool, float | None]:
        """The pump's turn: read, feed, tick; stop the run with the request's
        replies (a list, in order) or when the core wants a new socket.

        Raises :class:`~mdp_zmq.RequestTimeout` when the core gives up on
        the request.
        """
        core, engine = self.core, self.engine
        assert engine is not None and self.pump is not None
        # The engine tells the core of a drop after reading: a reply queued
        # before the drop still counts.
        drained = engine.turn(now)
        rid = self._rid
        out: list[PartialReply | FinalReply] = []
        for event in core.events():
            if isinstance(event, ResetConnection):
                self._reset = True
            elif isinstance(event, (PartialReply, FinalReply)) and event.request_id == rid:
                out.append(event)
            elif isinstance(event, RequestFailed) and event.request_id == rid:
                raise RequestTimeout(event.service, event.reason, event.cause,
                                     ", ".join(self.endpoints))
            elif isinstance(event, ProtocolError):
                self.log.debug("dropped: %s", event.reason)
        if out or self._reset:
            self.pump.stop(out)
        elif not engine.flush(now):
            # What a reply made the core queue (the diagnosis' second
            # question) went out here; a send that was refused has news.
            self.pump.wake()
        return drained, core.next_deadline()

    def after_run(self) -> None:
        """After every run of the pump (also one that raised): close the socket
        if the core asked for a new one, before the resend goes out (it waits
        in the core), so a late reply to the abandoned attempt dies with it."""
        if self._reset:
            self.log.debug("no reply in time; new socket")
            self._reset = False
            self.close()

    def on_monitor(self, events: Sequence[MonitorEvent]) -> None:
        """Hand the DEALER's monitor events to the engine; wake the pump if the
        core must hear of one."""
        engine = self.engine
        if engine is not None and engine.monitor_events(events) and self.pump is not None:
            self.pump.wake()

    def cancel(self) -> None:
        """Drop the outstanding request (the core's cancel) and its socket."""
        self.core.cancel(self.clock())
        self.core.events()
        self.close()
