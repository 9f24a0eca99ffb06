"""Explicit states and the legal transitions between them.

Theory of operation
-------------------
A *worker session* is one MDP/Worker conversation, seen from either end:
the :class:`~mdp_core.Worker` keeps one for itself and the
:class:`~mdp_core.Broker` keeps one per remote worker. Both drive it with
the same inputs (the commands that cross the wire, whichever way, plus the
transport and timer events), so one table serves both ends::

    NEW --READY--> IDLE --REQUEST--> BUSY --FINAL--> IDLE
                    |  HEARTBEAT       |  PARTIAL, HEARTBEAT
                    v                  v
                   GONE  <-- DISCONNECT, CONNECTION_LOST, EXPIRED, TIMEOUT

``EXPIRED`` (heartbeat silence) only applies to an IDLE session: a busy
single-threaded worker cannot heartbeat, so a busy session is ended by the
transport (CONNECTION_LOST) or by an optional processing deadline
(TIMEOUT) instead. Any ``(state, input)`` pair missing from the table is a
protocol violation; the caller decides the consequence (the broker sends
DISCONNECT, the worker reconnects).

A *request* at the broker is QUEUED until a worker takes it, DISPATCHED
while a worker has it, and ends DONE (reply delivered) or EXPIRED (timed
out, out of attempts, or its client went away). A dispatched request whose
worker is lost goes back to QUEUED (REQUEUE).
"""

from __future__ import annotations

import enum

__all__ = [
    "REQUEST_TRANSITIONS",
    "SESSION_TRANSITIONS",
    "RequestInput",
    "RequestState",
    "SessionInput",
    "WorkerState",
    "next_request_state",
    "next_session_state",
]


class WorkerState(enum.Enum):
    """State of one worker session."""

    NEW = "new"
    IDLE = "idle"
    BUSY = "busy"
    GONE = "gone"


class SessionInput(enum.Enum):
    """What can happen to a worker session."""

    READY = "READY"
    REQUEST = "REQUEST"
    PARTIAL = "PARTIAL"
    FINAL = "FINAL"
    HEARTBEAT = "HEARTBEAT"
    DISCONNECT = "DISCONNECT"
    CONNECTION_LOST = "connection lost"
    EXPIRED = "heartbeat expired"
    TIMEOUT = "processing timeout"


_W = WorkerState
_S = SessionInput

SESSION_TRANSITIONS: dict[tuple[WorkerState, SessionInput], WorkerState] = {
    (_W.NEW, _S.READY): _W.IDLE,
    (_W.NEW, _S.DISCONNECT): _W.GONE,
    (_W.NEW, _S.CONNECTION_LOST): _W.GONE,
    (_W.IDLE, _S.REQUEST): _W.BUSY,
    (_W.IDLE, _S.HEARTBEAT): _W.IDLE,
    (_W.IDLE, _S.DISCONNECT): _W.GONE,
    (_W.IDLE, _S.CONNECTION_LOST): _W.GONE,
    (_W.IDLE, _S.EXPIRED): _W.GONE,
    (_W.BUSY, _S.PARTIAL): _W.BUSY,
    (_W.BUSY, _S.FINAL): _W.IDLE,
    (_W.BUSY, _S.HEARTBEAT): _W.BUSY,
    (_W.BUSY, _S.DISCONNECT): _W.GONE,
    (_W.BUSY, _S.CONNECTION_LOST): _W.GONE,
    (_W.BUSY, _S.TIMEOUT): _W.GONE,
}


def next_session_state(state: WorkerState, event: SessionInput) -> WorkerState | None:
    """The state after ``event`` in ``state``, or None if that is a violation."""
    return SESSION_TRANSITIONS.get((state, event))


class RequestState(enum.Enum):
    """State of one client request at the broker."""

    QUEUED = "queued"
    DISPATCHED = "dispatched"
    DONE = "done"
    EXPIRED = "expired"


class RequestInput(enum.Enum):
    """What can happen to a request at the broker."""

    DISPATCH = "dispatch"
    REQUEUE = "requeue"
    DELIVER = "deliver"
    EXPIRE = "expire"


_R = RequestState
_I = RequestInput

REQUEST_TRANSITIONS: dict[tuple[RequestState, RequestInput], RequestState] = {
    (_R.QUEUED, _I.DISPATCH): _R.DISPATCHED,
    (_R.QUEUED, _I.EXPIRE): _R.EXPIRED,
    (_R.DISPATCHED, _I.REQUEUE): _R.QUEUED,
    (_R.DISPATCHED, _I.DELIVER): _R.DONE,
    (_R.DISPATCHED, _I.EXPIRE): _R.EXPIRED,
}


def next_request_state(state: RequestState, event: RequestInput) -> RequestState | None:
    """The state after ``event`` in ``state``, or None if that is a violation."""
    return REQUEST_TRANSITIONS.get((state, event))
