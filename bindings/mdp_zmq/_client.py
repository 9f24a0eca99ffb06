"""Blocking pyzmq driver for :class:`mdp_core.Client` (Lazy Pirate).

The core decides when to give up on a reply and resend, and to which of
the brokers; the driver waits on its DEALER for the core's deadline, and
on ``ResetConnection`` closes the DEALER and opens a new one to the broker
the event names before sending again, so a late reply to an abandoned
attempt can never be read as the answer to a later one. The DEALER's
monitor reports a dropped connection (broker died or restarted), which
the core treats as an immediate timeout of the outstanding request.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType

import zmq

import mdp_core
from mdp_core import (
    BodyLike,
    BytesLike,
    Dialect,
    FailureCause,
    FinalReply,
    PartialReply,
    ProtocolError,
    RequestFailed,
    ResetConnection,
)

from .engine import DealerEngine
from .glue import (
    TransportConfig,
    as_endpoints,
    close_monitor,
    make_dealer,
    next_spread,
    shorten,
    timeout_ms,
)

__all__ = ["Client", "MdpZmqError", "RequestTimeout"]

log = logging.getLogger("mdp_zmq.client")


class MdpZmqError(Exception):
    """Base class of the exceptions the pyzmq drivers raise."""


class RequestTimeout(MdpZmqError):
    """A request got no (final) reply after all its attempts.

    ``service`` is the service asked, ``reason`` the core's reason, e.g.
    ``"no reply after 4 attempts"`` or ``"no reply after 1 attempt: no
    worker registered for 'x'"``, and ``cause`` the core's
    :class:`mdp_core.FailureCause` (``UNREACHABLE``: no connection to the
    broker ever completed; ``NO_WORKER``: the broker has no worker for
    the service; ``NO_REPLY``: anything else, e.g. a job longer than the
    timeout). For ``UNREACHABLE`` the message names ``endpoint`` (the
    client's endpoints, comma-separated).
    """

    def __init__(
        self,
        service: bytes,
        reason: str,
        cause: FailureCause = FailureCause.NO_REPLY,
        endpoint: str | None = None,
    ) -> None:
        where = f" at {endpoint}" if cause is FailureCause.UNREACHABLE and endpoint else ""
        super().__init__(f"{shorten(service)}: {reason}{where}")
        self.service = service
        self.reason = reason
        self.cause = cause
        self.endpoint = endpoint


class Client:
    """A blocking MDP client of the broker at ``endpoints`` (one, or a list).

    One request at a time (MDP's rule per socket); use one Client per
    thread. ``config`` gives the default ``timeout`` (seconds per attempt)
    and ``retries`` (resends after the first attempt). With several
    brokers the core picks the broker of each attempt: the home broker
    ``endpoints[spread % len(endpoints)]`` first, the next one after a
    failed attempt (see ``ClientConfig.cool_off`` and ``round_robin``);
    ``spread`` defaults to :func:`mdp_zmq.glue.next_spread`, so that
    clients are spread over the brokers. Use it as a context manager or
    call :meth:`close`. Raises TypeError if ``endpoints`` is not a str or
    a list of str or ``version`` not a :class:`mdp_core.Dialect`,
    ValueError for no endpoint, an empty one or one given twice.
    """

    def __init__(
        self,
        endpoints: str | Sequence[str],
        config: mdp_core.ClientConfig | None = None,
        version: Dialect = Dialect.MDP02,
        *,
        spread: int | None = None,
        transport: TransportConfig | None = None,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.endpoints = as_endpoints(endpoints)  # TypeError/ValueError now, not at connect
        self.config = config
        # TypeError for a wrong config/version
        self.core = mdp_core.Client(config, version, brokers=len(self.endpoints),
                                    spread=next_spread() if spread is None else spread)
        self.version = version
        self.transport = transport if transport is not None else TransportConfig()
        self.context = context if context is not None else zmq.Context.instance()
        self.clock = clock
        self._engine: DealerEngine | None = None  # the current socket's
        self._poller = zmq.Poller()
        self._closed = False

    # --------------------------------------------------------------- public

    @property
    def endpoint(self) -> str:
        """The endpoint of the broker the client uses now (the core's choice)."""
        return self.endpoints[self.core.broker]

    def request(
        self,
        service: str | BytesLike,
        *frames: BytesLike,
        timeout: float | None = None,
        retries: int | None = None,
    ) -> list[bytes]:
        """Send ``frames`` to ``service`` and return the reply's frames.

        PARTIAL replies (MDP/0.2) are skipped; the FINAL is returned.
        ``timeout``/``retries`` override the config for this call. Raises
        :class:`RequestTimeout` if no reply came after all attempts,
        :class:`mdp_core.EmptyBody` if no frame is given, ValueError for an
        empty service name, TypeError if ``service`` is not str or bytes or
        a frame is not bytes-like (the message names its index).
        """
        for reply in self._exchange(service, frames, timeout, retries):
            if isinstance(reply, FinalReply):
                return list(reply.body)
        raise AssertionError("unreachable: an exchange ends with a FINAL or raises")

    def stream(
        self,
        service: str | BytesLike,
        *frames: BytesLike,
        timeout: float | None = None,
        retries: int | None = None,
    ) -> Iterator[list[bytes]]:
        """Send a request and yield each PARTIAL body, then the FINAL body.

        ``timeout`` applies to each gap between replies. After a resend a
        stream may start again from its first PARTIAL (see the core).
        Leaving the loop early cancels the request (the socket is
        replaced). Raises like :meth:`request`; a wrong argument type at
        the call, the rest while iterating.
        """
        # Checked now, sent when the caller starts iterating.
        name, body = mdp_core.as_service(service), mdp_core.as_body(frames)
        return (list(reply.body) for reply in self._exchange(name, body, timeout, retries))

    def service_exists(self, name: str | BytesLike) -> bool:
        """Ask the broker (MMI ``mmi.service``) whether ``name`` has workers.

        Uses the config's timeout and retries. Raises :class:`RequestTimeout`
        without an answer, ValueError if the broker does not implement MMI,
        TypeError if ``name`` is not str or bytes.
        """
        if self._closed:
            raise RuntimeError("client is closed")
        rid = self.core.service_exists(name, self.clock())
        for reply in self._run(rid):
            if isinstance(reply, FinalReply):
                return mdp_core.mmi_service_found(reply)
        raise AssertionError("unreachable: an exchange ends with a FINAL or raises")

    def close(self) -> None:
        """Close the socket; idempotent. The client cannot be used afterwards."""
        self._closed = True
        self._close_socket()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --------------------------------------------------------------- engine

    def _exchange(
        self,
        service: str | BytesLike,
        body: BodyLike,
        timeout: float | None,
        retries: int | None,
    ) -> Iterator[PartialReply | FinalReply]:
        if self._closed:
            raise RuntimeError("client is closed")
        rid = self.core.request(service, body, self.clock(), timeout, retries)
        yield from self._run(rid)

    def _run(self, rid: int) -> Iterator[PartialReply | FinalReply]:
        """Drive the core until request ``rid`` ends: yield its PARTIAL and
        FINAL events; raise :class:`RequestTimeout` if it fails."""
        core = self.core
        done = False
        try:
            while True:
                # Act on the events, send what the core queued, and again
                # while a failed send makes the core reset and resend.
                settled = False
                while not settled:
                    for event in core.events():
                        if isinstance(event, ResetConnection):
                            log.debug("new socket, to %s", self.endpoints[event.broker])
                            self._close_socket()
                            self._open(event.broker)
                        elif isinstance(event, PartialReply) and event.request_id == rid:
                            yield event
                        elif isinstance(event, FinalReply) and event.request_id == rid:
                            done = True
                            yield event
                            return
                        elif isinstance(event, RequestFailed) and event.request_id == rid:
                            done = True
                            raise RequestTimeout(event.service, event.reason, event.cause,
                                                 ", ".join(self.endpoints))
                        elif isinstance(event, ProtocolError):
                            log.debug("dropped: %s", shorten(event.reason))
                    if self._engine is None:
                        self._open(core.broker)
                    settled = self._flush()
                engine = self._engine
                assert engine is not None
                ready = dict(self._poller.poll(timeout_ms(core.next_deadline(), self.clock())))
                now = self.clock()
                mon = engine.monitor
                if mon in ready:
                    engine.monitor_ready()
                # Read, then tell the core what the monitor saw once the
                # socket is empty (a reply queued before a drop still
                # counts), then tick it.
                engine.turn(now, readable=engine.sock in ready or mon in ready)
        finally:
            if not done:
                # Abandoned mid-request (generator closed, KeyboardInterrupt):
                # drop it, and the socket, so that a late reply cannot be
                # taken for the next request's.
                core.cancel(self.clock())
                core.events()
                self._close_socket()

    def _flush(self) -> bool:
        """Send what the core queued; False if a send failed (the core was told)."""
        assert self._engine is not None
        return self._engine.flush(self.clock())

    def _open(self, broker: int) -> None:
        endpoint = self.endpoints[broker]
        sock, mon = make_dealer(self.context, endpoint, self.transport)
        assert mon is not None
        self._engine = DealerEngine(self.core, sock, mon, log=log, endpoint=endpoint)
        self._poller = zmq.Poller()
        self._poller.register(sock, zmq.POLLIN)
        self._poller.register(mon, zmq.POLLIN)

    def _close_socket(self) -> None:
        engine, self._engine = self._engine, None
        if engine is not None:
            close_monitor(engine.sock, engine.monitor)
            engine.sock.close(0)

