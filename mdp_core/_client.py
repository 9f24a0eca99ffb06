"""The MDP client state machine (sans-IO), with Lazy Pirate recovery.

Theory of operation
-------------------
MDP/Client is strictly synchronous: one request at a time per socket. A
:class:`Client` holds at most one *outstanding* request. :meth:`Client.request`
queues it and arms a deadline ``now + timeout``. Then one of:

* a FINAL (MDP/0.1: REPLY) for it arrives: :class:`~mdp_core.FinalReply`,
  the request is done. Before it, MDP/0.2 and majortomo may deliver any
  number of :class:`~mdp_core.PartialReply`; each one re-arms the deadline
  (the worker is making progress).
* the deadline passes (Lazy Pirate, as RFC 7 and 18 recommend): if retries
  remain, :class:`~mdp_core.ResetConnection` is emitted and the request is
  queued again in :meth:`Client.outgoing` with a fresh deadline; the driver
  MUST replace its socket *before* flushing ``outgoing()``. With no retries
  left, :class:`~mdp_core.ResetConnection` (so a late reply cannot be taken
  for the next request's) and then :class:`~mdp_core.RequestFailed`.
* :meth:`Client.connection_lost`: the broker has dropped the request with
  the connection, so the deadline is treated as passed at once.

``retries`` counts *resends*: a request is sent at most ``1 + retries``
times. A resend may reach a worker again (MDP assumes idempotent workers),
and after a resend a streamed reply may start again from its first PARTIAL.

Every request therefore ends in exactly one FinalReply or RequestFailed,
within about ``(1 + retries) * timeout`` without replies. A reply that
names another service or arrives with no request outstanding is dropped
with a :class:`~mdp_core.ProtocolError` (majortomo replies carry no service
name and are accepted).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ._codec import ClientReply, ClientRequest, Dialect, decode, encode
from ._errors import LocalProtocolError, MalformedMessage
from ._events import Event, FinalReply, PartialReply, ProtocolError, RequestFailed, ResetConnection
from ._worker import BodyLike, as_body

__all__ = [
    "MMI_SERVICE",
    "Client",
    "ClientConfig",
    "RequestInProgress",
    "mmi_service_found",
]

MMI_SERVICE = b"mmi.service"

# RequestFailed reasons (stable prefixes; tests match on them).
REASON_TIMEOUT = "no reply"
REASON_CONNECTION_LOST = "connection lost"


class RequestInProgress(LocalProtocolError):
    """``Client.request`` while another request is outstanding.

    MDP allows one outstanding request per client socket; use several
    clients (sockets) for concurrency.
    """


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """Lazy Pirate settings of a :class:`Client`.

    ``timeout``: seconds to wait for a reply (or the next PARTIAL) before
    retrying. ``retries``: how many times a request is resent before it
    fails (so at most ``1 + retries`` sends). Raises :class:`ValueError`
    for ``timeout <= 0`` or ``retries < 0``.
    """

    timeout: float = 2.5
    retries: int = 3

    def __post_init__(self) -> None:
        _check(self.timeout, self.retries)


def _check(timeout: float, retries: int) -> None:
    if not timeout > 0:
        raise ValueError("timeout must be > 0")
    if retries < 0:
        raise ValueError("retries must be >= 0")


@dataclass(slots=True)
class _Pending:
    request_id: int
    service: bytes
    frames: list[bytes]
    timeout: float
    retries_left: int
    deadline: float
    sends: int = 1


def mmi_service_found(reply: FinalReply) -> bool:
    """Interpret the reply to :meth:`Client.service_exists` (RFC 8/MMI).

    True for ``200`` (a worker serves it), False for ``404``. Raises
    :class:`ValueError` for anything else (e.g. ``501``: the broker does
    not implement ``mmi.service``).
    """
    code = reply.body[0] if len(reply.body) == 1 else None
    if code == b"200":
        return True
    if code == b"404":
        return False
    raise ValueError(f"not an mmi.service answer: {reply.body!r}")


class Client:
    """Deterministic MDP client (no I/O, no clock); one request at a time.

    Events: :class:`~mdp_core.PartialReply`, :class:`~mdp_core.FinalReply`,
    :class:`~mdp_core.RequestFailed` (reason ``"no reply after N attempts"``
    or ``"connection lost after N attempts"``),
    :class:`~mdp_core.ResetConnection` (close the socket, open a new one,
    *then* flush :meth:`outgoing`), :class:`~mdp_core.ProtocolError`.
    Attributes ``config`` and ``version`` are what it was made with.
    """

    def __init__(self, config: ClientConfig | None = None, version: Dialect = Dialect.MDP02
                 ) -> None:
        """Make a client speaking ``version`` (default MDP/0.2). Raises nothing."""
        self.config = config if config is not None else ClientConfig()
        self.version = version
        self._out: list[list[bytes]] = []
        self._events: list[Event] = []
        self._pending: _Pending | None = None
        self._ids = 0

    # ------------------------------------------------------------ queries

    @property
    def outstanding(self) -> int | None:
        """The id of the outstanding request, or None."""
        return None if self._pending is None else self._pending.request_id

    def next_deadline(self) -> float | None:
        """When :meth:`tick` must next be called; None if nothing is outstanding."""
        return None if self._pending is None else self._pending.deadline

    def outgoing(self) -> list[list[bytes]]:
        """Drain the messages to send to the broker, oldest first."""
        out, self._out = self._out, []
        return out

    def events(self) -> list[Event]:
        """Drain the events that happened since the last call, oldest first."""
        events, self._events = self._events, []
        return events

    # ------------------------------------------------------------ application

    def request(
        self,
        service: bytes,
        body: BodyLike,
        now: float,
        timeout: float | None = None,
        retries: int | None = None,
    ) -> int:
        """Queue a request to ``service`` and return its id (1, 2, ...).

        ``timeout``/``retries`` override the config for this request.
        Raises (nothing queued) :class:`RequestInProgress` if a request is
        outstanding, :class:`~mdp_core.EmptyBody` for a body with no
        frames, :class:`ValueError` for an empty service name or a bad
        timeout/retries.
        """
        if self._pending is not None:
            raise RequestInProgress(
                f"request {self._pending.request_id} is still outstanding on this client")
        if not service:
            raise ValueError("empty service name")
        timeout = self.config.timeout if timeout is None else timeout
        retries = self.config.retries if retries is None else retries
        _check(timeout, retries)
        frames = encode(ClientRequest(bytes(service), as_body(body)), self.version)
        self._ids += 1
        self._pending = _Pending(self._ids, bytes(service), frames, timeout, retries,
                                 now + timeout)
        self._out.append(frames)
        return self._ids

    def service_exists(self, name: bytes, now: float) -> int:
        """Ask the broker whether ``name`` has workers (an ``mmi.service`` request).

        Returns the request id; its :class:`~mdp_core.FinalReply` body is
        ``b"200"`` or ``b"404"`` (see :func:`mmi_service_found`). Raises
        like :meth:`request`.
        """
        if not name:
            raise ValueError("empty service name")
        return self.request(MMI_SERVICE, bytes(name), now)

    # ------------------------------------------------------------ transport

    def receive(self, frames: Sequence[bytes], now: float) -> None:
        """Feed one message from the broker. Never raises on bad input.

        Anything but a reply (in this client's dialect, for the outstanding
        request's service) is dropped with a :class:`~mdp_core.ProtocolError`.
        """
        try:
            dialect, command = decode(frames, from_broker=True)
        except MalformedMessage as exc:
            self._error(f"malformed message dropped: {exc.reason}")
            return
        if dialect is not self.version:
            self._error(f"{dialect.value} message dropped; this client speaks "
                        f"{self.version.value}")
            return
        if not isinstance(command, ClientReply):
            self._error(f"unexpected {type(command).__name__} dropped; not a reply")
            return
        pending = self._pending
        if pending is None:
            self._error("reply with no request outstanding; dropped")
            return
        if command.service is not None and command.service != pending.service:
            self._error(f"reply from service {command.service!r} to a request for "
                        f"{pending.service!r}; dropped")
            return
        if command.final:
            self._pending = None
            self._events.append(FinalReply(pending.request_id, pending.service, command.body))
        else:
            pending.deadline = now + pending.timeout
            self._events.append(PartialReply(pending.request_id, pending.service, command.body))

    def connection_lost(self, now: float) -> None:
        """The transport says the connection to the broker dropped.

        The broker drops an outstanding request with the connection, so
        this retries (or fails) it at once, as if its timeout had passed.
        Does nothing with no request outstanding.
        """
        if self._pending is not None:
            self._expire(self._pending, now, REASON_CONNECTION_LOST)

    def tick(self, now: float) -> None:
        """Fire the request's timeout if due at ``now``; safe to call early or late."""
        pending = self._pending
        if pending is not None and now >= pending.deadline:
            self._expire(pending, now, REASON_TIMEOUT)

    # ------------------------------------------------------------ internals

    def _expire(self, pending: _Pending, now: float, reason: str) -> None:
        self._out.clear()
        self._events.append(ResetConnection())
        if pending.retries_left > 0:
            pending.retries_left -= 1
            pending.sends += 1
            pending.deadline = now + pending.timeout
            self._out.append(pending.frames)
            return
        self._pending = None
        self._events.append(RequestFailed(
            pending.request_id, pending.service,
            f"{reason} after {pending.sends} attempt{'s' if pending.sends > 1 else ''}"))

    def _error(self, reason: str) -> None:
        self._events.append(ProtocolError(b"", reason))
