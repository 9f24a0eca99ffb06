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
  MUST replace its socket *before* flushing ``outgoing()``.
* :meth:`Client.connection_lost`: the broker has dropped the request with
  the connection, so the deadline is treated as passed at once. (With
  several brokers a lost connection with no request outstanding moves the
  client to the next broker as well.)
* :meth:`Client.send_failed`: the driver could not send the request (the
  socket's queue is full); the attempt counts and the deadline is treated
  as passed at once.
* :meth:`Client.cancel`: the application gives up; the request is dropped
  with a :class:`~mdp_core.ResetConnection` and no other event.

A client may know several brokers (``brokers=N``: the driver's endpoints
by index). Every ``ResetConnection`` names the broker the new socket is
for (``broker``, always 0 with one broker) and :attr:`Client.broker` the
current one (where the driver opens its first socket). A failed attempt
moves the request to the next broker, avoiding those in cool-off; a new
request goes to the client's home broker (``spread % N``) unless it is
in cool-off, or with ``ClientConfig.round_robin`` to the next one; a
request that changes broker first emits ``ResetConnection``. The rule is
in :mod:`mdp_core._brokers`. Brokers share nothing: a resend to another
broker is a new request there.

``retries`` counts *resends*: a request is sent at most ``1 + retries``
times. A resend may reach a worker again (MDP assumes idempotent workers),
and after a resend a streamed reply may start again from its first PARTIAL.

When the last attempt fails, :class:`~mdp_core.ResetConnection` is emitted
(so a late reply cannot be taken for the next request's) and the client
works out why, to end the request with one
:class:`~mdp_core.RequestFailed` whose ``cause`` is a
:class:`~mdp_core.FailureCause`:

1. If no connection to a broker completed during any attempt (the driver
   never called :meth:`Client.connected` for a socket the request was
   sent on, and nothing arrived on one), to any of its brokers:
   ``REFUSED`` at once if a broker refused the client's credentials at
   the handshake during one (:meth:`Client.handshake_refused`), reason
   ``"... after N attempts: the broker refused this client's key at the
   handshake"``; else ``UNREACHABLE``, reason ``"no reply after N
   attempts: no broker reachable"``.
2. Else, if the request was itself to ``mmi.*``, or
   ``ClientConfig.diagnose_timeout`` is None: ``NO_REPLY`` at once,
   reason ``"no reply after N attempts"``.
3. Else the client asks a broker once, on the new socket: the last
   broker a connection to completed during an attempt (the only one,
   with one broker) gets an ``mmi.service`` request for the service, with
   the deadline ``now + diagnose_timeout``. Meanwhile :attr:`Client.outstanding` still
   names the original request and :meth:`Client.request` raises
   :class:`RequestInProgress`; the answer never becomes a reply event.
   A FINAL ``404`` (which a broker whose policy hides the service from
   this client answers too) leads to a second question, ``mmi.allowed``
   for the service, with a new deadline ``now + diagnose_timeout``: a
   FINAL ``403`` ends the request with ``REFUSED`` (reason ``"no reply
   after N attempts: the broker does not allow this client to call
   'x'"``); anything else, or no answer, with ``NO_WORKER`` (reason ``"no
   reply after N attempts: no worker registered for 'x'"``). Any other
   answer to ``mmi.service`` (``200``, ``501``, junk) ends it with
   ``NO_REPLY``. No answer by the deadline, a lost connection or a failed
   send ends it with a further ``ResetConnection`` and what is known so
   far (``NO_REPLY``, or ``NO_WORKER`` after a ``404``). PARTIALs are
   dropped with a :class:`~mdp_core.ProtocolError` (MMI answers are one
   FINAL).

(``"no reply"`` at the start of a reason reads ``"connection lost"`` or
``"send failed"`` when that is how the last attempt ended.)

Every request therefore ends in exactly one FinalReply or RequestFailed
(or is cancelled), within about ``(1 + retries) * timeout + 2 *
diagnose_timeout`` without replies. A reply that names another service or
arrives with no request outstanding is dropped with a
:class:`~mdp_core.ProtocolError` (majortomo replies carry no service name
and are accepted).

The driver's loop: act on :meth:`Client.events` (``ResetConnection``:
replace the socket), send each message of :meth:`Client.outgoing` without
blocking, report each one that could not be sent with
:meth:`Client.send_failed`, then handle ``events()`` again (a report may
have queued a reset and a resend). Call :meth:`Client.connected` when a
socket's handshake with the broker succeeds, :meth:`Client.handshake_refused`
when the broker refused it (before the :meth:`Client.connection_lost` of
the drop that follows).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ._brokers import Rotation
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
from ._codec import ClientReply, ClientRequest, Dialect, decode, encode
from ._errors import LocalProtocolError, MalformedMessage
from ._events import (
    Event,
    FailureCause,
    FinalReply,
    PartialReply,
    ProtocolError,
    RequestFailed,
    ResetConnection,
)

__all__ = [
    "MMI_SERVICE",
    "Client",
    "ClientConfig",
    "RequestInProgress",
    "mmi_list",
    "mmi_service_found",
]

MMI_SERVICE = b"mmi.service"
MMI_ALLOWED = b"mmi.allowed"

# How the last attempt ended: the start of a RequestFailed reason (stable; tests match on it).
REASON_TIMEOUT = "no reply"
REASON_CONNECTION_LOST = "connection lost"
REASON_SEND_FAILED = "send failed"


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
    fails (so at most ``1 + retries`` sends). ``diagnose_timeout``: after
    the last attempt, how long to wait for the broker's ``mmi.service``
    answer that tells "no worker" from "no reply" (None: do not ask).
    Raises :class:`TypeError` for a value of the wrong type,
    :class:`ValueError` for ``timeout <= 0``, ``retries < 0`` or
    ``diagnose_timeout <= 0`` or ``cool_off < 0``.

    With several brokers (``Client(brokers=N)``): ``cool_off`` is how long
    a broker on which an attempt failed is avoided (0: not at all; when
    every broker is, the one whose cool-off ends first is tried), and so
    how soon a client goes back to its home broker after it failed;
    ``round_robin`` sends each new request to the next broker not in
    cool-off, at the cost of a new connection per request (False: to the
    home broker, or while it cools off to the last one used). Neither
    matters with one broker.
    """

    timeout: float = 2.5
    retries: int = 3
    diagnose_timeout: float | None = 1.0
    cool_off: float = 30.0
    round_robin: bool = False

    def __post_init__(self) -> None:
        _check(self.timeout, self.retries)
        if self.diagnose_timeout is not None and not check_real(
                self.diagnose_timeout, "diagnose_timeout") > 0:
            raise ValueError("diagnose_timeout must be > 0 or None")
        if check_real(self.cool_off, "cool_off") < 0:
            raise ValueError("cool_off must be >= 0")
        if not isinstance(self.round_robin, bool):
            raise TypeError(f"round_robin must be a bool, not {type(self.round_robin).__name__}")


def _check(timeout: float, retries: int) -> None:
    if not check_real(timeout, "timeout") > 0:
        raise ValueError("timeout must be > 0")
    if check_int(retries, "retries") < 0:
        raise ValueError("retries must be >= 0")


@dataclass(slots=True)
class _Pending:
    request_id: int
    service: bytes
    frames: list[bytes]
    timeout: float
    retries_left: int
    deadline: float
    #: the last broker a transport handshake completed with during one of its attempts
    reached: int | None
    sends: int = 1
    #: a broker refused the client's credentials at the handshake during an attempt
    refused: bool = False
    #: while the diagnosis runs: the reason so far ("no reply after N attempts")
    failure: str | None = None
    #: the MMI service asked during the diagnosis, how long each question
    #: may wait, and what stands if it gets no answer
    question: bytes = MMI_SERVICE
    question_timeout: float = 0.0
    known: FailureCause = FailureCause.NO_REPLY


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


def mmi_list(reply: FinalReply) -> list[bytes]:
    """The names in the reply to an ``mmi.services`` or ``mmi.workers`` request.

    One frame per item; a single empty frame means none (an MDP body
    cannot be empty), so it gives ``[]``, and a list the broker cut to
    ``max_mmi_reply_bytes`` ends with an empty frame, which is left out
    (no item is empty). Raises nothing.
    """
    return [item for item in reply.body if item]


class Client:
    """Deterministic MDP client (no I/O, no clock); one request at a time.

    Events: :class:`~mdp_core.PartialReply`, :class:`~mdp_core.FinalReply`,
    :class:`~mdp_core.RequestFailed` (``cause`` and ``reason`` say why; see
    the module's theory of operation), :class:`~mdp_core.ResetConnection`
    (close the socket, open a new one, *then* flush :meth:`outgoing`),
    :class:`~mdp_core.ProtocolError`. Attributes ``config``, ``version``
    and ``brokers`` are what it was made with.
    """

    def __init__(
        self,
        config: ClientConfig | None = None,
        version: Dialect = Dialect.MDP02,
        *,
        brokers: int = 1,
        spread: int = 0,
    ) -> None:
        """Make a client speaking ``version`` (default MDP/0.2) to ``brokers`` brokers.

        Its home broker is ``spread % brokers``: give each client another
        ``spread`` to spread clients over the brokers. Raises
        :class:`TypeError` if ``config`` is not a :class:`ClientConfig` (or
        None), ``version`` not a :class:`~mdp_core.Dialect`, or ``brokers``
        or ``spread`` not an int; :class:`ValueError` for ``brokers < 1``.
        """
        if config is not None and not isinstance(config, ClientConfig):
            raise TypeError(f"config must be a ClientConfig, not {type(config).__name__}")
        self.config = config if config is not None else ClientConfig()
        self.version = check_version(version)
        self._rotation = Rotation(brokers, spread, self.config.cool_off,
                                  self.config.round_robin)
        self.brokers = brokers
        self._out: list[list[bytes]] = []
        self._sent: list[list[bytes]] = []  # the latest outgoing() batch, while it counts
        self._events: list[Event] = []
        self._pending: _Pending | None = None
        self._link_up = False  # the current socket's handshake succeeded
        self._link_refused = False  # the current socket's handshake was refused
        self._ids = 0

    # ------------------------------------------------------------ queries

    @property
    def broker(self) -> int:
        """The index of the broker the current socket is for (0 with one broker).

        Open the first socket to it; each :class:`~mdp_core.ResetConnection`
        then names the next one.
        """
        return self._rotation.current

    @property
    def outstanding(self) -> int | None:
        """The id of the outstanding request (also while its failure is diagnosed), or None."""
        return None if self._pending is None else self._pending.request_id

    def next_deadline(self) -> float | None:
        """When :meth:`tick` must next be called; None if nothing is outstanding."""
        return None if self._pending is None else self._pending.deadline

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

    # ------------------------------------------------------------ application

    def request(
        self,
        service: BytesLike | str,
        body: BodyLike,
        now: float,
        timeout: float | None = None,
        retries: int | None = None,
    ) -> int:
        """Queue a request to ``service`` and return its id (1, 2, ...).

        ``service`` is bytes-like or a ``str`` (sent as UTF-8); ``body`` is
        one bytes-like frame or a sequence of them. ``timeout``/``retries``
        override the config for this request. Raises (nothing queued)
        :class:`RequestInProgress` if a request is outstanding,
        :class:`TypeError` for an argument of the wrong type,
        :class:`~mdp_core.EmptyBody` for a body with no frames,
        :class:`ValueError` for an empty service name or a bad
        timeout/retries.
        """
        if self._pending is not None:
            raise RequestInProgress(
                f"request {self._pending.request_id} is still outstanding on this client")
        name = as_service(service)
        timeout = self.config.timeout if timeout is None else timeout
        retries = self.config.retries if retries is None else retries
        _check(timeout, retries)
        frames = encode(ClientRequest(name, as_body(body)), self.version)
        brokers = self._rotation
        if brokers.for_request(now):
            self._reset()  # this request goes to another broker, on a socket of its own
        self._ids += 1
        self._pending = _Pending(self._ids, name, frames, timeout, retries, now + timeout,
                                 reached=brokers.current if self._link_up else None,
                                 refused=self._link_refused)
        self._out.append(frames)
        return self._ids

    def service_exists(self, name: BytesLike | str, now: float) -> int:
        """Ask the broker whether ``name`` has workers (an ``mmi.service`` request).

        Returns the request id; its :class:`~mdp_core.FinalReply` body is
        ``b"200"`` or ``b"404"`` (see :func:`mmi_service_found`). Raises
        like :meth:`request`.
        """
        return self.request(MMI_SERVICE, as_service(name, "name"), now)

    def cancel(self, now: float) -> None:
        """Drop the outstanding request (or the diagnosis of its failure).

        Emits only :class:`~mdp_core.ResetConnection`, so that a late reply
        cannot be read as the next request's; the request gets no other
        event. Does nothing with no request outstanding.
        """
        if self._pending is not None:
            self._finish()
            self._reset()

    # ------------------------------------------------------------ transport

    def receive(self, frames: Sequence[bytes], now: float) -> None:
        """Feed one message from the broker. Never raises on bad input.

        Anything but a reply (in this client's dialect, for the outstanding
        request's service) is dropped with a :class:`~mdp_core.ProtocolError`.
        Any message proves that the socket reached a broker, as
        :meth:`connected` does.
        """
        self.connected(now)
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
        expected = pending.service if pending.failure is None else pending.question
        if command.service is not None and command.service != expected:
            self._error(f"reply from service {command.service!r} to a request for "
                        f"{expected!r}; dropped")
            return
        self._rotation.answered()
        if pending.failure is not None:
            self._diagnosed(pending, command, now)
        elif command.final:
            self._finish()
            self._events.append(FinalReply(pending.request_id, pending.service, command.body))
        else:
            pending.deadline = now + pending.timeout
            self._events.append(PartialReply(pending.request_id, pending.service, command.body))

    def connected(self, now: float) -> None:
        """The transport handshake with the broker succeeded on the current socket.

        (A driver learns it from the socket monitor's
        ``EVENT_HANDSHAKE_SUCCEEDED``.) It decides whether a failed request
        was ``UNREACHABLE``. Raises nothing.
        """
        self._link_up = True
        self._link_refused = False
        if self._pending is not None:
            self._pending.reached = self._rotation.current

    def handshake_refused(self, now: float) -> None:
        """The broker refused this client's credentials at the transport handshake
        of the current socket.

        (A driver learns it from the socket monitor's
        ``EVENT_HANDSHAKE_FAILED_AUTH``: the broker's ZAP handler did not
        accept the client's CURVE key.) Like :meth:`connected`, it only
        decides how a failed request is reported: one that reached no
        broker, but was refused by one, fails with ``REFUSED`` instead of
        ``UNREACHABLE``; that includes a request made later on this socket
        (libzmq keeps retrying the handshake), until one succeeds. The
        attempt ends with the drop that follows (:meth:`connection_lost`)
        or its timeout. Raises nothing.
        """
        self._link_up = False
        self._link_refused = True  # also for a request made before the socket connects again
        if self._pending is not None:
            self._pending.refused = True

    def connection_lost(self, now: float) -> None:
        """The transport says the connection to the broker dropped.

        The broker drops an outstanding request with the connection, so
        this retries (or fails) it at once, as if its timeout had passed.
        Without a request outstanding it notes that the link is down, and
        with several brokers it also counts as a failure of this one: it
        cools off and a :class:`~mdp_core.ResetConnection` moves the
        client to the next broker (with one, the socket reconnects on its
        own and the next request waits for it).
        """
        self._link_up = False
        if self._pending is not None:
            self._expire(self._pending, now, REASON_CONNECTION_LOST)
        elif self._rotation.count > 1:
            self._rotation.failed(now)
            self._reset()

    def send_failed(self, frames: Sequence[bytes], now: float) -> None:
        """The driver could not send ``frames`` (from the latest :meth:`outgoing`).

        The socket's queue to the broker was full, so the request was not
        sent: like :meth:`connection_lost`, the attempt counts and the
        request is retried on a new socket at once or fails. Reports for
        frames this client did not queue in that batch (or whose attempt
        is already over) are ignored.
        """
        pending = self._pending
        if pending is not None and in_batch(self._sent, frames):
            self._expire(pending, now, REASON_SEND_FAILED)

    def tick(self, now: float) -> None:
        """Fire the request's timeout if due at ``now``; safe to call early or late."""
        pending = self._pending
        if pending is not None and now >= pending.deadline:
            self._expire(pending, now, REASON_TIMEOUT)

    # ------------------------------------------------------------ internals

    def _reset(self) -> None:
        """The current socket is abandoned: nothing queued or sent on it counts.

        The new one is for the current broker.
        """
        self._out.clear()
        self._sent = []
        self._link_up = self._link_refused = False
        self._events.append(ResetConnection(self._rotation.current))

    def _expire(self, pending: _Pending, now: float, how: str) -> None:
        self._rotation.failed(now)
        if pending.failure is not None:  # the diagnosis got no answer
            self._reset()
            self._fail(pending, pending.known)
            return
        if pending.retries_left > 0:
            self._reset()
            pending.retries_left -= 1
            pending.sends += 1
            pending.deadline = now + pending.timeout
            self._out.append(pending.frames)
            return
        reason = f"{how} after {pending.sends} attempt{'s' if pending.sends > 1 else ''}"
        diagnose = self.config.diagnose_timeout
        pending.failure = reason
        if pending.reached is None:
            self._reset()
            self._fail(pending, FailureCause.REFUSED if pending.refused
                       else FailureCause.UNREACHABLE)
        elif diagnose is None or pending.service.startswith(b"mmi."):
            self._reset()
            self._fail(pending, FailureCause.NO_REPLY)
        else:
            # Asked where a connection completed: a broker that cannot be
            # reached would turn every diagnosis into NO_REPLY.
            self._rotation.current = pending.reached
            self._reset()
            pending.question_timeout = diagnose
            self._ask(pending, MMI_SERVICE, now)

    def _ask(self, pending: _Pending, question: bytes, now: float) -> None:
        """Ask the broker ``question`` (an MMI service) about the failed request's service."""
        pending.question = question
        pending.deadline = now + pending.question_timeout
        self._out.append(encode(ClientRequest(question, (pending.service,)), self.version))

    def _diagnosed(self, pending: _Pending, answer: ClientReply, now: float) -> None:
        if not answer.final:
            self._error(f"PARTIAL to the {pending.question.decode()} question dropped; "
                        "waiting for the FINAL")
            return
        if pending.question == MMI_SERVICE:
            if answer.body == (b"404",):
                # A broker whose policy hides the service from this client says
                # 404 too: ask whether it may call it at all.
                pending.known = FailureCause.NO_WORKER
                self._ask(pending, MMI_ALLOWED, now)
            else:
                self._fail(pending, FailureCause.NO_REPLY)
        else:
            self._fail(pending, FailureCause.REFUSED if answer.body == (b"403",)
                       else FailureCause.NO_WORKER)

    def _finish(self) -> None:
        """The request is over: an unsent copy must not go out (its reply would be stray)."""
        self._pending = None
        self._out.clear()
        self._sent = []

    def _fail(self, pending: _Pending, cause: FailureCause) -> None:
        """End the request with ``cause``; the reason is ``pending.failure`` and what it means."""
        self._finish()
        reason = pending.failure or ""
        name = pending.service.decode(errors="backslashreplace")
        if cause is FailureCause.UNREACHABLE:
            reason += ": no broker reachable"
        elif cause is FailureCause.NO_WORKER:
            reason += f": no worker registered for '{name}'"
        elif cause is FailureCause.REFUSED and pending.reached is None:
            reason += ": the broker refused this client's key at the handshake"
        elif cause is FailureCause.REFUSED:
            reason += f": the broker does not allow this client to call '{name}'"
        self._events.append(RequestFailed(pending.request_id, pending.service, reason, cause))

    def _error(self, reason: str) -> None:
        self._events.append(ProtocolError(b"", reason))

