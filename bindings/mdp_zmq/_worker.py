"""Blocking pyzmq driver for :class:`mdp_core.Worker`.

One DEALER per conversation with the broker. The handler runs in the
driver's thread, so while it works nothing is read; that is fine: the
ZMTP heartbeats are answered by libzmq's I/O thread (a busy worker stays
connected), and the core does not judge the broker's silence while busy.
The DEALER's monitor reports a dropped connection (a broker that died or
restarted), which ends the conversation at once through
``Worker.connection_lost``; the driver then opens a new socket after the
core's reconnect delay.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence

import zmq

import mdp_core
from mdp_core import BrokerLost, BytesLike, Dialect, RequestReceived

from ._runner import Runner
from .engine import DealerEngine
from .glue import (
    LogLimiter,
    TransportConfig,
    close_monitor,
    log_event,
    log_handler_failure,
    make_dealer,
    next_part,
    normalize_endpoint,
    timeout_ms,
)

__all__ = ["Handler", "Reply", "Worker"]

log = logging.getLogger("mdp_zmq.worker")

#: What a handler may return: one frame, a list of frames, or (MDP/0.2) an
#: iterator whose items are PARTIAL bodies and whose return value is the FINAL.
Reply = bytes | Sequence[bytes] | Iterator[bytes | Sequence[bytes]]
#: A request handler: takes the request's body frames, returns a :data:`Reply`.
Handler = Callable[[list[bytes]], Reply]

_BATCH = 64


class Worker(Runner):
    """An MDP worker for ``service`` that calls ``handler`` for each request.

    ``handler(frames)`` gets the request body (a list of bytes frames) and
    returns the reply: ``bytes`` (one frame) or a sequence of frames; or it
    is a generator (MDP/0.2 only) whose yielded items are sent as PARTIAL
    replies at once and whose ``return`` value is the FINAL reply (``b""``
    if it returns nothing).

    If the handler raises, or returns something that cannot be sent (not
    bytes-like or a non-empty list/tuple of bytes-like frames, e.g. ``[]``,
    ``["a"]`` or None; a PARTIAL likewise), the error is logged once and the
    request is abandoned (``Worker.abandon`` in the core): this worker sends
    DISCONNECT and registers again, and the broker re-dispatches the
    request to another worker or, out of attempts, expires it. The client
    never sees the exception; it gets a reply from another attempt or its
    own timeout. PARTIALs already sent stay sent. A generator on MDP/0.1
    fails the same way (0.1 has no PARTIAL).

    ``run()`` registers with the broker and serves until :meth:`close` or
    (main thread) SIGINT/SIGTERM; a request in progress is finished and
    answered first (a second signal interrupts it). On return the worker has
    sent DISCONNECT and closed its socket.

    Raises TypeError at construction if ``endpoint`` is not a str,
    ``service`` not str or bytes, ``handler`` not callable or ``version``
    not a :class:`mdp_core.Dialect`; ValueError for an empty endpoint or
    service name.
    """

    _name = "worker"
    _log = log

    def __init__(
        self,
        endpoint: str,
        service: str | BytesLike,
        handler: Handler,
        config: mdp_core.WorkerConfig | None = None,
        version: Dialect = Dialect.MDP02,
        *,
        transport: TransportConfig | None = None,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        normalize_endpoint(endpoint)  # TypeError/ValueError now, not at connect
        if not callable(handler):
            raise TypeError(f"handler must be callable, not {type(handler).__name__}")
        self.endpoint = endpoint
        self.handler = handler
        # The core checks service, config and version (TypeError/ValueError).
        self.core = mdp_core.Worker(service, config, version)
        self.service = self.core.service
        self.transport = transport if transport is not None else TransportConfig()
        self.context = context if context is not None else zmq.Context.instance()
        self.clock = clock
        #: Rate-limits this worker's repeated warnings (see LogLimiter).
        self.log_limiter = LogLimiter(clock=clock)
        self._engine: DealerEngine | None = None  # the conversation's socket
        self._reconnect_at: float | None = None
        super().__init__()
        self._poller = self._make_poller()
        self.handled = 0  # requests answered with a FINAL

    # --------------------------------------------------------------- public

    def _prepare(self) -> None:
        self._open(self.clock())

    # --------------------------------------------------------------- loop

    def _loop(self) -> None:
        core = self.core
        while not self._closing:
            now = self.clock()
            deadline = core.next_deadline()
            if self._reconnect_at is not None:
                deadline = self._reconnect_at
            ready = dict(self._poller.poll(timeout_ms(deadline, now)))
            now = self.clock()
            if self._waker.fileno() in ready:
                self._waker.clear()
            engine = self._engine
            if engine is not None and (engine.sock in ready or engine.monitor in ready):
                if engine.monitor in ready:
                    engine.monitor_ready()
                # The engine tells the core of a drop once the socket is read:
                # libzmq queues a connection's last messages (a broker's
                # DISCONNECT) before it reports the drop.
                if self._read(now) and self._engine is engine:
                    engine.settle(now)
                    self._after(now)
            deadline = core.next_deadline()
            if deadline is not None and now >= deadline:
                core.tick(now)
            self._after(now)
            if self._reconnect_at is not None and self.clock() >= self._reconnect_at:
                self._open(self.clock())

    def _read(self, now: float) -> bool:
        """Feed up to a batch of messages to the core, acting on each (a request is
        handled before the next message is read); True if the socket was emptied."""
        for _ in range(_BATCH):
            engine = self._engine
            if engine is None:
                return True
            emptied = engine.read(now, 1)
            self._after(now)
            if emptied:
                return True
        return False

    def _after(self, now: float) -> None:
        """Send what the core queued, then act on its events (in order)."""
        self._flush()
        # Until quiet: acting on an event (a handler's reply) or a failed
        # send reported by _flush() can make new events.
        while events := self.core.events():
            for event in events:
                log_event(log, event, self.log_limiter)
                if isinstance(event, RequestReceived):
                    self._handle(event)
                elif isinstance(event, BrokerLost):
                    self._flush()
                    self._close_socket(linger=self.transport.linger)
                    self._reconnect_at = self.clock() + event.reconnect_delay
                    log.info("reconnecting in %.2f s", event.reconnect_delay)
            self._flush()
        self.log_limiter.flush()

    def _handle(self, request: RequestReceived) -> None:
        core = self.core
        try:
            result = self.handler(list(request.body))
            if isinstance(result, Iterator):
                result = yield_partials(result, lambda body: self._partial(request, body))
            engine = self._engine
            if engine is not None:
                # The broker may have gone while the handler ran: learn it now, so
                # the reply is not queued for whatever broker the socket reaches next.
                engine.monitor_ready()
                engine.settle(self.clock())
            core.reply(request, result, self.clock())
        except Exception as exc:
            if core.current is not request:
                # The conversation ended while the handler ran: nothing to abandon.
                log.warning("reply dropped: %s", exc)
                return
            # A raising handler and an unsendable result alike (TypeError,
            # EmptyBody, PartialNotSupported): the request goes back to the broker.
            log_handler_failure(log, self.log_limiter, self.service, exc)
            core.abandon(request, self.clock())
            return
        self.handled += 1

    def _partial(self, request: RequestReceived, body: object) -> None:
        self.core.partial(request, body, self.clock())
        self._flush()

    def _flush(self) -> None:
        engine = self._engine
        if engine is None:
            self.core.outgoing()  # the conversation's socket is gone: nothing can reach the broker
            return
        engine.flush(self.clock())

    # --------------------------------------------------------------- sockets

    def _make_poller(self) -> zmq.Poller:
        poller = zmq.Poller()
        poller.register(self._waker.fileno(), zmq.POLLIN)
        if self._engine is not None:
            poller.register(self._engine.sock, zmq.POLLIN)
            poller.register(self._engine.monitor, zmq.POLLIN)
        return poller

    def _open(self, now: float) -> None:
        self._reconnect_at = None
        sock, mon = make_dealer(self.context, self.endpoint, self.transport)
        assert mon is not None
        self._engine = DealerEngine(self.core, sock, mon, log=log, endpoint=self.endpoint)
        self._poller = self._make_poller()
        log.info("worker for %s connecting to %s", self.service.decode(errors="replace"),
                 self.endpoint)
        self.core.connect(now)
        self._flush()

    def _close_socket(self, linger: float | None = None) -> None:
        engine, self._engine = self._engine, None
        if engine is None:
            return
        close_monitor(engine.sock, engine.monitor)
        ms = None if linger is None else max(0, round(linger * 1000))
        engine.sock.close(ms if ms is not None else 0)
        self._poller = self._make_poller()

    def _shutdown(self) -> None:
        if not self._finish():
            return
        try:
            if self._engine is not None:
                self.core.disconnect(self.clock())
                self._flush()
                self.core.events()
        finally:
            self._close_socket(linger=self.transport.linger)
            self._waker.close()
            self.log_limiter.flush(final=True)
            log.info("worker for %s stopped", self.service.decode(errors="replace"))


def yield_partials(
    stream: Iterator[bytes | Sequence[bytes]],
    send: Callable[[bytes | Sequence[bytes]], None],
) -> bytes | Sequence[bytes]:
    """Send every item of ``stream`` with ``send``; return its return value.

    The value a generator ``return``s is the FINAL body; ``b""`` if None.
    """
    while True:
        done, item = next_part(stream)
        if done:
            return item
        send(item)
