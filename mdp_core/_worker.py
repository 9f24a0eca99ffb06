"""The MDP worker state machine (sans-IO).

Theory of operation
-------------------
A :class:`Worker` holds one *conversation* with the broker at a time: it
starts with :meth:`Worker.connect` (on a fresh socket; READY is queued) and
ends with :class:`~mdp_core.BrokerLost` (the driver drops the socket and
calls ``connect`` again after ``reconnect_delay``) or with
:meth:`Worker.disconnect`. The conversation's state is the worker-session
state of :mod:`mdp_core._state` (``IDLE`` waiting for work, ``BUSY`` with one
request, ``GONE`` ended); ``SESSION_TRANSITIONS`` decides which commands from
the broker are legal, and a missing pair is a broker violation.

Timers (all derived from two timestamps, both set by the caller's ``now``):

* **Heartbeat out**: ``last_sent + heartbeat_interval``. Any command the
  worker sends counts (RFC 7/18: peers SHOULD NOT send HEARTBEAT while also
  sending other commands). This is scheduled in every state of a live
  conversation, BUSY included, so a driver that runs its handler
  concurrently and keeps calling :meth:`Worker.tick` keeps the broker fed.
* **Broker expiry**: ``last_heard + heartbeat_liveness * heartbeat_interval``,
  judged only while IDLE. The core knows the worker is busy because it
  handed out a :class:`~mdp_core.RequestReceived` and the application has
  not yet ended the job with :meth:`Worker.reply`, :meth:`Worker.abandon`
  or :meth:`Worker.disconnect`. A single-threaded driver cannot read its
  socket meanwhile, so silence then proves nothing; when the job ends,
  ``last_heard`` is set to that moment and the broker gets a full liveness
  window again. (A lost transport during a job still arrives as
  :meth:`Worker.connection_lost`.)

Reconnect backoff: each :class:`~mdp_core.BrokerLost` carries a delay. The
first loss after a *successful* conversation waits
``WorkerConfig.reconnect_delay``; every further loss without a successful
conversation in between multiplies the delay by ``reconnect_backoff``, up
to ``reconnect_delay_max``. A conversation is *successful* as soon as the
broker sends it a HEARTBEAT or a REQUEST: proof that a broker is alive on
the other end and accepted our READY. (A conversation ended by the broker's
DISCONNECT before it sent anything else, or by silence, is a failure.)

Failed sends: a driver never blocks on a send. It sends each message of
:meth:`Worker.outgoing`, reports each one the socket refused (its queue
to the broker is full) with :meth:`Worker.send_failed`, then acts on
:meth:`Worker.events`. A refused READY, REPLY, PARTIAL or DISCONNECT
means the broker's view of the conversation is no longer ours, so the
conversation ends with :class:`~mdp_core.BrokerLost` and the driver
reconnects on a new socket; the broker sees the old connection close and
re-dispatches the request that was in progress. A refused HEARTBEAT is
ignored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ._checks import (
    BodyLike,
    BytesLike,
    as_body,
    as_service,
    check_int,
    check_real,
    check_version,
    in_batch,
)
from ._codec import (
    ClientReply,
    ClientRequest,
    Command,
    Dialect,
    Disconnect,
    Heartbeat,
    Ready,
    WorkerReply,
    WorkerRequest,
    decode,
    encode,
)
from ._errors import LocalProtocolError, MalformedMessage
from ._events import BrokerLost, Disconnected, Event, ProtocolError, RequestReceived
from ._state import SESSION_TRANSITIONS, SessionInput, WorkerState, next_session_state

__all__ = [
    "AlreadyConnected",
    "AlreadyReplied",
    "NotCurrentRequest",
    "PartialNotSupported",
    "StaleRequest",
    "Worker",
    "WorkerConfig",
]

# BrokerLost reasons (stable strings; tests match on them).
REASON_EXPIRED = "heartbeat expired"
REASON_DISCONNECT = "DISCONNECT from broker"
REASON_CONNECTION_LOST = "connection lost"
REASON_VIOLATION = "protocol violation"
REASON_SEND_FAILED = "send failed: the queue to the broker is full"


class AlreadyConnected(LocalProtocolError):
    """``Worker.connect`` was called while a conversation is still open."""


class NotCurrentRequest(LocalProtocolError):
    """``reply``/``partial``/``abandon`` named a request that is not the current one."""


class AlreadyReplied(NotCurrentRequest):
    """The request already got its FINAL reply; it cannot be answered again."""


class StaleRequest(NotCurrentRequest):
    """The request's conversation ended before it was answered.

    The broker re-dispatches (or expires) such a request on its own; a
    concurrent driver that races with :class:`~mdp_core.BrokerLost` should
    drop the result it was about to send.
    """


class PartialNotSupported(LocalProtocolError):
    """``Worker.partial`` on MDP/0.1, which has no PARTIAL reply."""


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """Timing of a :class:`Worker`; all values in seconds.

    ``heartbeat_interval``: how often the worker sends HEARTBEAT (when it
    sends nothing else) and the broker is expected to. ``heartbeat_liveness``:
    how many silent intervals (while idle) mean the broker is gone.
    ``reconnect_delay``: wait before reconnecting after a loss that follows
    a successful conversation; ``reconnect_backoff`` multiplies it after
    each further failed conversation, up to ``reconnect_delay_max``.
    Raises :class:`TypeError` for a value of the wrong type,
    :class:`ValueError` for non-positive intervals or a backoff < 1.
    """

    heartbeat_interval: float = 2.5
    heartbeat_liveness: int = 3
    reconnect_delay: float = 0.5
    reconnect_delay_max: float = 30.0
    reconnect_backoff: float = 2.0

    def __post_init__(self) -> None:
        if not check_real(self.heartbeat_interval, "heartbeat_interval") > 0:
            raise ValueError("heartbeat_interval must be > 0")
        if check_int(self.heartbeat_liveness, "heartbeat_liveness") < 1:
            raise ValueError("heartbeat_liveness must be >= 1")
        if not check_real(self.reconnect_delay, "reconnect_delay") >= 0:
            raise ValueError("reconnect_delay must be >= 0")
        if not check_real(self.reconnect_delay_max, "reconnect_delay_max") >= self.reconnect_delay:
            raise ValueError("reconnect_delay_max must be >= reconnect_delay")
        if not check_real(self.reconnect_backoff, "reconnect_backoff") >= 1:
            raise ValueError("reconnect_backoff must be >= 1")


# Broker -> worker commands that the session table judges.
_INPUTS: dict[type, SessionInput] = {
    WorkerRequest: SessionInput.REQUEST,
    Heartbeat: SessionInput.HEARTBEAT,
    Disconnect: SessionInput.DISCONNECT,
}


class Worker:
    """Deterministic MDP worker for one ``service`` (no I/O, no clock).

    Call :meth:`connect` on a fresh socket, feed it :meth:`receive`,
    :meth:`connection_lost` and :meth:`tick`, send what :meth:`outgoing`
    returns (reporting refused sends with :meth:`send_failed`) and act on
    :meth:`events`: :class:`~mdp_core.RequestReceived`
    (run the handler, then :meth:`reply`), :class:`~mdp_core.BrokerLost`
    (reasons ``"heartbeat expired"``, ``"DISCONNECT from broker"``,
    ``"connection lost"``, ``"protocol violation: ..."``,
    ``"send failed: ..."``; flush
    ``outgoing()``, close the socket, call :meth:`connect` on a new socket
    after ``reconnect_delay``), :class:`~mdp_core.ProtocolError` (a broker
    message was dropped) and :class:`~mdp_core.Disconnected`.

    Attributes ``service``, ``config`` and ``version`` are what it was
    made with.
    """

    def __init__(
        self,
        service: BytesLike | str,
        config: WorkerConfig | None = None,
        version: Dialect = Dialect.MDP02,
    ) -> None:
        """Make a worker for ``service`` speaking ``version`` (default MDP/0.2).

        ``service`` is bytes-like or a ``str`` (UTF-8). It is not connected
        yet: call :meth:`connect`. Raises :class:`TypeError` for a service,
        config or version of the wrong type, :class:`ValueError` for an
        empty service name or one in ``mmi.`` (the broker answers those
        itself and refuses such a worker).
        """
        name = as_service(service)
        if name.startswith(b"mmi."):
            raise ValueError(f"a worker may not register {name!r}: mmi.* is the broker's "
                             "own management interface (RFC 8)")
        if config is not None and not isinstance(config, WorkerConfig):
            raise TypeError(f"config must be a WorkerConfig, not {type(config).__name__}")
        self.service = name
        self.config = config if config is not None else WorkerConfig()
        self.version = check_version(version)
        self._heartbeat = encode(Heartbeat(), self.version)
        self._state = WorkerState.NEW
        self._out: list[list[bytes]] = []
        self._sent: list[list[bytes]] = []  # the latest outgoing() batch, while it counts
        self._events: list[Event] = []
        self._last_sent = 0.0
        self._last_heard = 0.0
        self._next_delay = self.config.reconnect_delay
        self._handles = 0
        self._current: RequestReceived | None = None
        self._replied: RequestReceived | None = None
        self._stale: RequestReceived | None = None

    # ------------------------------------------------------------ queries

    @property
    def state(self) -> WorkerState:
        """The conversation's state: NEW (never connected), IDLE, BUSY or GONE."""
        return self._state

    @property
    def current(self) -> RequestReceived | None:
        """The request being handled (state BUSY), else None."""
        return self._current

    def next_deadline(self) -> float | None:
        """When :meth:`tick` must next be called; None without a conversation."""
        if self._state is WorkerState.IDLE:
            return min(self._heartbeat_due(), self._expiry_due())
        if self._state is WorkerState.BUSY:
            return self._heartbeat_due()
        return None

    def outgoing(self) -> list[list[bytes]]:
        """Drain the messages to send to the broker, oldest first.

        Report any of them that could not be sent with :meth:`send_failed`
        before the next call.
        """
        out, self._out = self._out, []
        self._sent = out
        return out

    def events(self) -> list[Event]:
        """Drain the events that happened since the last call, oldest first."""
        events, self._events = self._events, []
        return events

    # ------------------------------------------------------------ transport

    def connect(self, now: float) -> None:
        """Start a new conversation on a fresh socket: queue READY.

        Raises :class:`AlreadyConnected` if a conversation is open (IDLE or
        BUSY); end it first with :meth:`disconnect` or let it be lost.
        """
        if self._state in (WorkerState.IDLE, WorkerState.BUSY):
            raise AlreadyConnected("a conversation with the broker is already open")
        self._open(now)

    def receive(self, frames: Sequence[bytes], now: float) -> None:
        """Feed one message from the broker. Never raises on bad input.

        Malformed messages, messages in another dialect and messages while
        no conversation is open are dropped with a
        :class:`~mdp_core.ProtocolError`. A valid but unexpected command
        (a REQUEST while busy, a client or READY command) is a broker
        violation: ProtocolError, DISCONNECT to the broker, then
        :class:`~mdp_core.BrokerLost`.
        """
        if self._state not in (WorkerState.IDLE, WorkerState.BUSY):
            self._events.append(ProtocolError(b"", "message while not connected; dropped"))
            return
        try:
            dialect, command = decode(frames, from_broker=True)
        except MalformedMessage as exc:
            self._events.append(ProtocolError(b"", f"malformed message dropped: {exc.reason}"))
            return
        if dialect is not self.version:
            self._events.append(ProtocolError(
                b"", f"{dialect.value} message dropped; this worker speaks {self.version.value}"))
            return
        event = _INPUTS.get(type(command))
        new_state = None if event is None else next_session_state(self._state, event)
        if event is None or new_state is None:
            name = _name(command)
            self._events.append(ProtocolError(
                b"", f"unexpected {name} while {self._state.value}; sent DISCONNECT, reconnecting"))
            self._send(encode(Disconnect(), self.version), now)
            self._lose(f"{REASON_VIOLATION}: unexpected {name}")
            return
        self._last_heard = now
        if isinstance(command, Disconnect):
            self._lose(REASON_DISCONNECT)
            return
        self._next_delay = self.config.reconnect_delay  # the conversation is successful
        self._state = new_state
        if isinstance(command, WorkerRequest):
            self._handles += 1
            request = RequestReceived(command.client, command.body, self._handles)
            self._current = request
            self._events.append(request)

    def connection_lost(self, now: float) -> None:
        """The transport says the socket's connection to the broker dropped.

        Ends the conversation at once with :class:`~mdp_core.BrokerLost`
        (``"connection lost"``), so workers re-register quickly after a
        broker restart. Does nothing without an open conversation.
        """
        if self._state in (WorkerState.IDLE, WorkerState.BUSY):
            self._lose(REASON_CONNECTION_LOST)

    def send_failed(self, frames: Sequence[bytes], now: float) -> None:
        """The driver could not send ``frames`` (from the latest :meth:`outgoing`).

        The socket's queue to the broker was full. A READY, REPLY, PARTIAL
        or DISCONNECT that did not go out breaks the conversation (the
        broker's view and ours now differ), so it ends with
        :class:`~mdp_core.BrokerLost` (``"send failed: ..."``): the driver
        closes the socket, the broker sees the connection close and
        re-dispatches a request in progress, and the worker reconnects
        after the usual delay. A failed HEARTBEAT is ignored (the next one
        or any other command makes up for it). Reports for frames not in
        that batch, or after the conversation ended, are ignored.
        """
        if (self._state in (WorkerState.IDLE, WorkerState.BUSY)
                and in_batch(self._sent, frames) and list(frames) != self._heartbeat):
            self._lose(REASON_SEND_FAILED)

    def tick(self, now: float) -> None:
        """Fire the timers due at ``now``; safe to call early or late.

        Idle and silent for ``heartbeat_liveness`` intervals: DISCONNECT is
        queued and :class:`~mdp_core.BrokerLost` (``"heartbeat expired"``)
        emitted. Otherwise a HEARTBEAT is queued if nothing was sent for an
        interval (at most one per call, however late).
        """
        if self._state is WorkerState.IDLE and now >= self._expiry_due():
            self._send(encode(Disconnect(), self.version), now)
            self._lose(REASON_EXPIRED)
            return
        if self._state in (WorkerState.IDLE, WorkerState.BUSY) and now >= self._heartbeat_due():
            self._send(encode(Heartbeat(), self.version), now)

    # ------------------------------------------------------------ application

    def reply(self, request: RequestReceived, body: BodyLike, now: float) -> None:
        """Send the FINAL reply (MDP/0.1: REPLY) to ``request``; the job ends.

        The worker is IDLE again and the broker's liveness window restarts
        at ``now``. Raises (state unchanged) :class:`AlreadyReplied`,
        :class:`StaleRequest` or :class:`NotCurrentRequest` if ``request``
        is not the current one, :class:`TypeError` for a body that is not
        bytes-like frames, :class:`~mdp_core.EmptyBody` for a body with no
        frames.
        """
        self._check_current(request)
        frames = encode(WorkerReply(request.client, as_body(body), True), self.version)
        self._send(frames, now)
        self._state = WorkerState.IDLE
        self._replied = request
        self._current = None
        self._last_heard = now

    def partial(self, request: RequestReceived, body: BodyLike, now: float) -> None:
        """Send a PARTIAL reply to ``request`` (MDP/0.2 and majortomo only).

        The job goes on; finish it with :meth:`reply`. Raises
        :class:`PartialNotSupported` on MDP/0.1, and the same exceptions as
        :meth:`reply` otherwise (state unchanged).
        """
        if self.version is Dialect.MDP01:
            raise PartialNotSupported("MDP/0.1 has no PARTIAL reply; send one REPLY instead")
        self._check_current(request)
        self._send(encode(WorkerReply(request.client, as_body(body), False), self.version), now)

    def abandon(self, request: RequestReceived, now: float) -> None:
        """Give up ``request`` (e.g. its handler raised) and start afresh.

        Queues DISCONNECT, so the broker treats this worker as lost and
        re-dispatches the request to another worker (or expires it once out
        of attempts), then READY on the same socket: a new conversation,
        IDLE, with no :class:`~mdp_core.BrokerLost`. The client sees no
        error from this worker: it gets a reply from another attempt, or,
        if the broker gives up, nothing, and its own timeout and retries
        end the request. Raises the same exceptions as :meth:`reply`.
        """
        self._check_current(request)
        self._send(encode(Disconnect(), self.version), now)
        self._stale = request
        self._current = None
        self._open(now)

    def disconnect(self, now: float) -> None:
        """End the conversation: queue DISCONNECT and emit Disconnected.

        A request in progress becomes stale (the broker re-dispatches it).
        Does nothing if no conversation is open. The driver flushes
        :meth:`outgoing` and closes the socket; :meth:`connect` may start a
        new conversation later.
        """
        if self._state not in (WorkerState.IDLE, WorkerState.BUSY):
            return
        self._send(encode(Disconnect(), self.version), now)
        self._end()
        self._events.append(Disconnected())

    # ------------------------------------------------------------ internals

    def _open(self, now: float) -> None:
        self._send(encode(Ready(self.service), self.version), now)
        self._state = SESSION_TRANSITIONS[(WorkerState.NEW, SessionInput.READY)]
        self._last_heard = now

    def _send(self, frames: list[bytes], now: float) -> None:
        self._out.append(frames)
        self._last_sent = now

    def _end(self) -> None:
        self._sent = []  # what went out on the ended conversation is no longer ours to judge
        if self._current is not None:
            self._stale = self._current
            self._current = None
        self._state = WorkerState.GONE

    def _lose(self, reason: str) -> None:
        self._end()
        delay = self._next_delay
        self._next_delay = min(delay * self.config.reconnect_backoff,
                               self.config.reconnect_delay_max)
        self._events.append(BrokerLost(reason, delay))

    def _check_current(self, request: RequestReceived) -> None:
        current = self._current
        if current is not None and (request is current or request == current):
            return
        if request == self._replied:
            raise AlreadyReplied(f"request {request.handle} already got its FINAL reply")
        if request == self._stale:
            raise StaleRequest(
                f"request {request.handle} belongs to a conversation that has ended")
        raise NotCurrentRequest(f"request {request.handle} is not the current request")

    def _heartbeat_due(self) -> float:
        return self._last_sent + self.config.heartbeat_interval

    def _expiry_due(self) -> float:
        return self._last_heard + self.config.heartbeat_interval * self.config.heartbeat_liveness


def _name(command: Command) -> str:
    if isinstance(command, WorkerReply):
        return "FINAL" if command.final else "PARTIAL"
    if isinstance(command, ClientReply):
        return "client reply"
    return _NAMES[type(command)]


_NAMES: dict[type, str] = {
    WorkerRequest: "REQUEST",
    Ready: "READY",
    ClientRequest: "client REQUEST",
}
