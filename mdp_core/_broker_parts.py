"""Records, configuration and wire helpers of the Broker (see ``_broker.py``).

Everything here is private to the broker. Transition *rows* are the
tables of :mod:`mdp_core._state` re-keyed by the input's string value
(str hashes are cached, ``Enum.__hash__`` is a Python-level call), rebuilt
from those tables each time a Broker is made, so the tables stay the
single source of legality.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ._codec import C01, C02, W01, W02, Dialect
from ._events import Event
from ._policy import Policy
from ._state import (
    REQUEST_TRANSITIONS,
    SESSION_TRANSITIONS,
    RequestInput,
    RequestState,
    SessionInput,
    WorkerState,
)

__all__ = ["BrokerConfig"]

_INF = float("inf")

_SessionRow = dict[str, tuple[WorkerState, "_SessionRow"]]
_RequestRow = dict[str, tuple[RequestState, "_RequestRow"]]

_READY = SessionInput.READY.value
_REQUEST = SessionInput.REQUEST.value
_PARTIAL = SessionInput.PARTIAL.value
_FINAL = SessionInput.FINAL.value
_HEARTBEAT = SessionInput.HEARTBEAT.value
_DISCONNECT = SessionInput.DISCONNECT.value
_LOST = SessionInput.CONNECTION_LOST.value
_EXPIRED = SessionInput.EXPIRED.value
_TIMEOUT = SessionInput.TIMEOUT.value

_DISPATCH = RequestInput.DISPATCH.value
_REQUEUE = RequestInput.REQUEUE.value
_DELIVER = RequestInput.DELIVER.value
_EXPIRE = RequestInput.EXPIRE.value

_QUEUED = RequestState.QUEUED
_GONE = WorkerState.GONE


def _session_rows() -> dict[WorkerState, _SessionRow]:
    rows: dict[WorkerState, _SessionRow] = {s: {} for s in WorkerState}
    for (state, event), nxt in SESSION_TRANSITIONS.items():
        rows[state][event.value] = (nxt, rows[nxt])
    return rows


def _request_rows() -> dict[RequestState, _RequestRow]:
    rows: dict[RequestState, _RequestRow] = {s: {} for s in RequestState}
    for (state, event), nxt in REQUEST_TRANSITIONS.items():
        rows[state][event.value] = (nxt, rows[nxt])
    return rows


# Worker-protocol prefixes (before the command byte) and command bytes.
_W_PREFIX = {Dialect.MDP01: (b"", W01), Dialect.MDP02: (W02,), Dialect.MAJORTOMO: (b"", W02)}
_W_REQUEST = {Dialect.MDP01: b"\x02", Dialect.MDP02: b"\x02", Dialect.MAJORTOMO: b"\x02"}
_W_HEARTBEAT = {Dialect.MDP01: b"\x04", Dialect.MDP02: b"\x05", Dialect.MAJORTOMO: b"\x05"}
_W_DISCONNECT = {Dialect.MDP01: b"\x05", Dialect.MDP02: b"\x06", Dialect.MAJORTOMO: b"\x06"}


def _disconnect_frames(dialect: Dialect) -> list[bytes]:
    return [*_W_PREFIX[dialect], _W_DISCONNECT[dialect]]


# What a held request counts against max_queued_bytes beside its body's
# bytes: its records (about 500 bytes measured, bench/core_broker.py) and
# each frame's object. MMI replies count frames the same way.
_REQUEST_OVERHEAD = 512
_FRAME_OVERHEAD = 64
_ONE_FRAME = _REQUEST_OVERHEAD + _FRAME_OVERHEAD  # a one-frame body, the usual case
_MIN_FRAMES = 6  # MDP/0.1 worker REPLY: "", MDPW01, 0x03, client, "", one body frame
_SHOWN = 64  # bytes of a peer-supplied value quoted in a reason string


def _shown(value: bytes) -> str:
    """A peer-supplied value as quoted in a reason string: its repr, cut to
    the first 64 bytes (then ``...(N bytes)``), so a huge value cannot make
    a huge log line."""
    if len(value) <= _SHOWN:
        return repr(value)
    return f"{value[:_SHOWN]!r}...({len(value)} bytes)"


def _is_client(frames: Sequence[bytes]) -> bool:
    """Whether the header of a message (of at least 2 frames) is the client
    sub-protocol's, in any dialect."""
    f0 = frames[0]
    return f0 == C02 or (f0 == b"" and frames[1] in (C01, C02))


def _bytes_only(frames: Sequence[bytes], start: int) -> bool:
    for i in range(start, len(frames)):  # noqa: SIM110 - a plain loop is faster than all()
        if type(frames[i]) is not bytes:
            return False
    return True


@dataclass(frozen=True)
class BrokerConfig:
    """Tunables of a :class:`Broker`; times are in seconds, sizes in bytes.

    ``heartbeat_interval``: the broker sends HEARTBEAT to every worker this
    often, and expects to hear from idle workers as often.
    ``heartbeat_liveness``: an idle worker silent for ``heartbeat_liveness *
    heartbeat_interval`` is expired (busy workers are not: they may not be
    able to heartbeat; see ``processing_timeout``).
    ``request_timeout``: how long, from its arrival, a request may wait in a
    service queue before it ends with :class:`~mdp_core.RequestExpired`. It
    does not limit a dispatched request; but if its worker is lost after that
    time, the request goes on only if a worker of its service is idle, and
    otherwise ends with ``RequestExpired``.
    ``max_attempts``: a request is dispatched at most this many times; the
    loss of its worker on the last attempt ends it (``RequestExpired``).
    ``max_queue``: requests queued per service; beyond it new ones are
    refused (:class:`~mdp_core.RequestRefused`). ``max_queued_bytes`` is the
    real bound on memory; this one only caps a single service's share.
    ``processing_timeout``: default limit on how long a busy worker may take
    (``None``: unlimited); past it the worker gets DISCONNECT and its request
    is re-dispatched. ``service_processing_timeouts`` overrides it per
    service name (a ``None`` value there means unlimited for that service).
    ``max_gathered_bytes``: an MDP/0.1 client cannot take PARTIAL replies,
    so the broker gathers them and sends them with the FINAL as one REPLY;
    if the gathered PARTIAL bodies exceed this many bytes, the request ends
    with ``RequestExpired`` and the rest of that reply is dropped.
    ``max_queued_bytes``: budget for the bodies of all the requests the
    broker holds, queued or dispatched (a dispatched body is kept for a
    re-dispatch). A request counts 512 bytes, plus its body frames'
    lengths, plus 64 bytes per frame (what its records and frame objects
    cost beside the bytes themselves). A request
    that would take the total past the budget is refused; its bytes are
    released when it ends, whatever the outcome.
    ``max_frames``: a message with more frames (after the routing id) is
    not decoded: a client REQUEST is refused, a live worker gets DISCONNECT
    (its request is re-dispatched), anything else is dropped
    (:class:`~mdp_core.ProtocolError`).
    ``max_service_name``: longest service name; a REQUEST for a longer one
    is refused, a READY for one gets DISCONNECT.
    ``max_services``: most services at once; a REQUEST or READY that would
    create one more is refused (READY: DISCONNECT); existing services are
    unaffected.
    ``max_mmi_reply_bytes``: size to which ``mmi.services`` and
    ``mmi.workers`` replies are cut (see :mod:`mdp_core._mmi`).
    ``policy``: who may serve and call which service
    (:class:`~mdp_core.Policy`, judged on the identity the driver passes
    to ``Broker.receive``); ``None``: everyone may do everything.

    Raises :class:`ValueError` for a value out of range, :class:`TypeError`
    for a ``policy`` that is not a :class:`~mdp_core.Policy`.
    """

    heartbeat_interval: float = 2.5
    heartbeat_liveness: int = 3
    request_timeout: float = 30.0
    max_attempts: int = 3
    max_queue: int = 100_000
    processing_timeout: float | None = None
    service_processing_timeouts: Mapping[bytes, float | None] = field(
        default_factory=dict, hash=False)
    max_gathered_bytes: int = 16 * 1024 * 1024
    max_queued_bytes: int = 256 * 1024 * 1024
    max_frames: int = 1024
    max_service_name: int = 255
    max_services: int = 10_000
    max_mmi_reply_bytes: int = 64 * 1024
    policy: Policy | None = None

    def __post_init__(self) -> None:
        if self.policy is not None and not isinstance(self.policy, Policy):
            raise TypeError(f"policy must be a mdp_core.Policy or None, not "
                            f"{type(self.policy).__name__}")
        if not self.heartbeat_interval > 0:
            raise ValueError("heartbeat_interval must be > 0")
        if self.heartbeat_liveness < 1:
            raise ValueError("heartbeat_liveness must be >= 1")
        if not self.request_timeout > 0:
            raise ValueError("request_timeout must be > 0")
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        for name in ("max_queue", "max_gathered_bytes", "max_queued_bytes",
                     "max_mmi_reply_bytes"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.max_frames < _MIN_FRAMES:
            raise ValueError(f"max_frames must be >= {_MIN_FRAMES} (the longest MDP envelope "
                             "plus one body frame)")
        if self.max_service_name < 1:
            raise ValueError("max_service_name must be >= 1")
        if self.max_services < 1:
            raise ValueError("max_services must be >= 1")
        timeouts = dict(self.service_processing_timeouts)
        for value in (self.processing_timeout, *timeouts.values()):
            if value is not None and not value > 0:
                raise ValueError("processing timeouts must be > 0 or None")
        object.__setattr__(self, "service_processing_timeouts", timeouts)


class _Service:
    __slots__ = ("idle", "name", "processing_timeout", "queue", "queued", "workers")

    def __init__(self, name: bytes, processing_timeout: float | None) -> None:
        self.name = name
        self.queue: deque[_Request] = deque()
        self.queued = 0  # live requests in ``queue`` (it may hold stale ones)
        self.idle: OrderedDict[bytes, _Worker] = OrderedDict()
        self.workers = 0
        self.processing_timeout = processing_timeout


class _Worker:
    __slots__ = (
        "deadline", "dialect", "expires", "heartbeat_at", "identity", "peer", "request",
        "request_prefix", "row", "sent", "service", "state", "timer_at",
    )

    def __init__(
        self, peer: bytes, service: _Service, dialect: Dialect, state: WorkerState,
        row: _SessionRow, now: float, expiry: float, interval: float, identity: str | None,
    ) -> None:
        self.peer = peer
        self.identity = identity  # authenticated when the session started (None: none)
        self.service = service
        self.dialect = dialect
        self.request_prefix = (*_W_PREFIX[dialect], _W_REQUEST[dialect])  # frames before client
        self.state = state
        self.row = row
        self.request: _Request | None = None
        self.sent: list[bytes] | None = None  # the frames of the REQUEST for ``request``
        self.expires = now + expiry  # idle expiry: last heard + liveness * interval
        self.heartbeat_at = now + interval  # when the broker next sends HEARTBEAT
        self.deadline = _INF  # processing deadline while busy
        self.timer_at = _INF  # the time of this worker's live heap entry


class _Request:
    __slots__ = (
        "arrived", "attempts", "body", "client", "deadline", "delivered", "dialect",
        "dispatched", "gathered", "gathered_bytes", "id", "identity", "lost_at", "row",
        "service", "size", "state",
    )

    def __init__(
        self, rid: int, client: bytes, service: _Service, dialect: Dialect,
        body: Sequence[bytes], size: int, now: float, deadline: float, row: _RequestRow,
        identity: str | None,
    ) -> None:
        self.id = rid
        self.client = client
        self.identity = identity  # the client's, authenticated (None: none)
        self.service = service
        self.dialect = dialect
        self.body = body
        self.arrived = self.dispatched = now  # dispatched: set by each dispatch
        self.deadline = deadline
        # When its worker was lost, while it waits in its queue for another.
        self.lost_at: float | None = None
        self.state = _QUEUED
        self.row = row
        self.attempts = 0
        self.gathered: list[bytes] | None = None
        self.gathered_bytes = 0
        self.size = size  # what it counts against max_queued_bytes
        # Where its FINAL waits to be settled by send_failed/events(): the
        # frames, the events list and the index of its RequestDelivered.
        self.delivered: _Final | None = None


_Final = tuple[list[bytes], list[Event], int]
_Partial = tuple[list[bytes], _Request, bytes]  # frames, request, worker
_Sent = _Final | _Partial
"""A reply to a client whose send is not settled yet."""


def _reply_frames(
    dialect: Dialect, service: bytes, gathered: list[bytes] | None, body: Sequence[bytes],
    final: bool,
) -> list[bytes]:
    """Frames of a reply to a client in its dialect (same as ``encode`` would build)."""
    if dialect is Dialect.MDP02:
        return [C02, b"\x03" if final else b"\x02", service, *body]
    if dialect is Dialect.MDP01:
        if gathered:
            return [b"", C01, service, *gathered, *body]
        return [b"", C01, service, *body]
    return [b"", C02, b"\x04" if final else b"\x03", *body]
