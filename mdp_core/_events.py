"""Events the state machines emit; drained with ``events()``.

Every event is a small frozen dataclass. Bodies are tuples of bytes.
Reasons are short human-readable strings (stable enough to log and to
match in tests; not meant to be parsed).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = [
    "BrokerLost",
    "Disconnected",
    "Event",
    "FailureCause",
    "FinalReply",
    "PartialReply",
    "ProtocolError",
    "RequestAbandoned",
    "RequestDelivered",
    "RequestExpired",
    "RequestFailed",
    "RequestReceived",
    "RequestRedispatched",
    "RequestRefused",
    "RequestRequeued",
    "RequestUndelivered",
    "ResetConnection",
    "TimedRequestDelivered",
    "WorkerLost",
    "WorkerReady",
    "WorkerRefused",
]

Body = tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Event:
    """Base class of all events."""


# ------------------------------------------------------------- any machine


@dataclass(frozen=True, slots=True)
class ProtocolError(Event):
    """A peer sent something malformed or unexpected; it was dropped.

    ``peer`` is the routing id at the broker, ``b""`` (the broker) on the
    worker and client side. What the machine did about it (DISCONNECT,
    reconnect) is stated in ``reason``.
    """

    peer: bytes
    reason: str


# ------------------------------------------------------------------ broker


@dataclass(frozen=True, slots=True)
class WorkerReady(Event):
    """A worker registered for ``service``."""

    worker: bytes
    service: bytes


@dataclass(frozen=True, slots=True)
class WorkerLost(Event):
    """A worker session ended (``reason`` says how); it gets nothing more."""

    worker: bytes
    service: bytes
    reason: str


@dataclass(frozen=True, slots=True)
class WorkerRefused(Event):
    """A worker may not serve ``service`` (``BrokerConfig.policy``): its READY
    was refused and it was sent DISCONNECT; it has no session."""

    worker: bytes
    service: bytes
    reason: str


@dataclass(frozen=True, slots=True)
class RequestRequeued(Event):
    """A request's worker was lost mid-job, or the REQUEST could not be sent
    to it; the request goes to another one.

    ``attempt`` is the number of attempts that reached a worker so far (a
    REQUEST the transport refused does not count).
    """

    client: bytes
    service: bytes
    worker: bytes
    attempt: int


@dataclass(frozen=True, slots=True)
class RequestRedispatched(Event):
    """A request that went back to its queue after its worker was lost
    (:class:`RequestRequeued`) was given to another worker.

    ``attempt`` is the number of this dispatch among those that reached a
    worker; ``recovery`` is the seconds from the loss (as the broker learnt
    it) to this dispatch: 0 when a worker was idle at once.
    """

    client: bytes
    service: bytes
    worker: bytes
    attempt: int
    recovery: float


@dataclass(frozen=True, slots=True)
class RequestDelivered(Event):
    """A request ended well: the transport accepted its FINAL (or REPLY) for
    the client.

    ``worker`` is ``b""`` for an ``mmi.*`` request, which the broker answers
    itself. If the driver then reports the send as failed
    (``Broker.send_failed``), this event is replaced, in place and before
    ``events()`` returns it, by :class:`RequestUndelivered`. A broker made
    with ``timed=True`` reports a worker's reply as
    :class:`TimedRequestDelivered` instead.
    """

    client: bytes
    service: bytes
    worker: bytes


@dataclass(frozen=True, slots=True)
class TimedRequestDelivered(RequestDelivered):
    """:class:`RequestDelivered` with how long the request took at the broker.

    ``waited`` is the seconds from the request's arrival to the dispatch
    whose worker answered (earlier attempts included); ``processing`` the
    seconds from that dispatch to the FINAL; their sum is the time the
    request spent at the broker. Only a ``Broker(timed=True)`` emits it,
    for replies from workers (``mmi.*`` answers stay :class:`RequestDelivered`).
    """

    waited: float
    processing: float


@dataclass(frozen=True, slots=True)
class RequestUndelivered(Event):
    """A request ended because its reply could not be sent to its client.

    The transport refused the FINAL/REPLY, or a PARTIAL (a stream with a
    hole would be corrupt; the rest of that reply is dropped), because the
    client's send queue was full; ``reason`` says which. ``worker`` is the
    worker that answered, ``b""`` for an ``mmi.*`` request.
    """

    client: bytes
    service: bytes
    worker: bytes
    reason: str


@dataclass(frozen=True, slots=True)
class RequestExpired(Event):
    """A request ended without a reply (timeout, out of attempts, ...)."""

    client: bytes
    service: bytes
    reason: str


@dataclass(frozen=True, slots=True)
class RequestRefused(Event):
    """A request was refused on arrival; ``reason`` names the limit (its
    service queue was full, the broker's byte budget was spent, the service
    name was too long, too many services exist, too many frames) or, when
    it starts with ``"not allowed"``, the policy (``BrokerConfig.policy``)."""

    client: bytes
    service: bytes
    reason: str


@dataclass(frozen=True, slots=True)
class RequestAbandoned(Event):
    """A request ended because its client's connection is gone."""

    client: bytes
    service: bytes


# ------------------------------------------------------------------ worker


@dataclass(frozen=True, slots=True)
class RequestReceived(Event):
    """The broker handed this worker a request.

    Pass the event itself back to ``Worker.reply``/``Worker.partial``;
    ``handle`` tells requests apart.
    """

    client: bytes
    body: Body
    handle: int


@dataclass(frozen=True, slots=True)
class BrokerLost(Event):
    """The conversation with the broker is over.

    The driver drops its socket and calls ``Worker.connect`` on a new one
    after ``reconnect_delay`` seconds.
    """

    reason: str
    reconnect_delay: float


@dataclass(frozen=True, slots=True)
class Disconnected(Event):
    """The local application ended the conversation (``Worker.disconnect``)."""


# ------------------------------------------------------------------ client


@dataclass(frozen=True, slots=True)
class PartialReply(Event):
    """An MDP/0.2 PARTIAL reply to request ``request_id``."""

    request_id: int
    service: bytes
    body: Body


@dataclass(frozen=True, slots=True)
class FinalReply(Event):
    """The last (or only) reply to request ``request_id``; it is complete."""

    request_id: int
    service: bytes
    body: Body


class FailureCause(enum.Enum):
    """Why a client request failed, as far as the client could tell.

    ``UNREACHABLE``: no connection to a broker completed during any of its
    attempts (broker down, wrong endpoint, network). ``NO_WORKER``: the
    broker answered, and said (``mmi.service``: 404) that no worker is
    registered for the service. ``NO_REPLY``: anything else (a worker
    exists but no reply came in time, the broker did not answer the
    question, or nothing was asked). ``REFUSED``: the broker said
    (``mmi.allowed``: 403) that its policy does not let this client call
    the service, or it refused the client's credentials (its CURVE key) at
    the handshake and no broker let it in (``Client.handshake_refused``).
    """

    UNREACHABLE = "unreachable"
    NO_WORKER = "no worker"
    NO_REPLY = "no reply"
    REFUSED = "refused"


@dataclass(frozen=True, slots=True)
class RequestFailed(Event):
    """Request ``request_id`` ended without a reply.

    ``reason`` is for people (it starts with ``"no reply after N
    attempts"``, ``"connection lost after N attempts"`` or ``"send failed
    after N attempts"``, then says what the client learned); ``cause`` is
    for code.
    """

    request_id: int
    service: bytes
    reason: str
    cause: FailureCause


@dataclass(frozen=True, slots=True)
class ResetConnection(Event):
    """Lazy Pirate: close the client socket and open a new one, then flush.

    ``broker`` is the index, in the driver's list of broker endpoints, of
    the broker the new socket connects to (always 0 with one broker).
    """

    broker: int = 0
