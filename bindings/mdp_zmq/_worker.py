"""Blocking pyzmq driver for :class:`mdp_core.Worker`.

One DEALER per conversation with a broker, one conversation (one core
Worker) per broker the worker serves. A *lane* is a thread with one
conversation per broker: it polls all of them and runs the handler in
that thread, so while it works none of its conversations is read. That is
fine for the one whose request it serves: the ZMTP heartbeats are answered
by libzmq's I/O thread (a busy worker stays connected), and the core does
not judge the broker's silence while busy. Its other conversations wait:
a request another broker dispatched to this lane meanwhile waits for the
job to end (``concurrency=N`` lanes serve N requests at once). A DEALER's
monitor reports a dropped connection (a broker that died or restarted),
which ends that conversation at once through ``Worker.connection_lost``;
the lane then opens a new socket to that broker after the core's
reconnect delay, while its other conversations go on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence

import zmq

import mdp_core
from mdp_core import BrokerLost, BytesLike, Dialect, RequestReceived

from ._runner import Runner
from .engine import DEALER_BATCH, DealerEngine
from .glue import (
    LogLimiter,
    TransportConfig,
    Waker,
    as_endpoints,
    close_monitor,
    log_event,
    log_handler_failure,
    make_dealer,
    timeout_ms,
)

__all__ = ["Handler", "Reply", "Worker"]

log = logging.getLogger("mdp_zmq.worker")

#: What a handler may return: one frame, a list of frames, or (MDP/0.2) an
#: iterator whose items are PARTIAL bodies and whose return value is the FINAL.
Reply = bytes | Sequence[bytes] | Iterator[bytes | Sequence[bytes]]
#: A request handler: takes the request's body frames, returns a :data:`Reply`.
Handler = Callable[[list[bytes]], Reply]


class Worker(Runner):
    """An MDP worker for ``service`` that calls ``handler`` for each request.

    ``endpoints`` is one broker endpoint or a list of them: the worker
    holds a conversation with each (READY, heartbeats and reconnects of
    its own), so every broker can dispatch to it.

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

    The handler runs in the thread of a *lane*, which holds one
    conversation per broker and reads none of them while it works: with
    several brokers, a request one broker dispatched waits behind a job
    from another. ``concurrency=N`` runs N lanes (N threads, each with its
    own conversations: N registrations per broker), so N requests are
    handled at once; the handler must then be thread-safe.

    ``run()`` registers with the brokers and serves until :meth:`close` or
    (main thread) SIGINT/SIGTERM; requests in progress are finished and
    answered first (a second signal interrupts the one in the main
    thread). On return the worker has sent DISCONNECT on every
    conversation and closed its sockets. A lane's thread that fails
    stops the worker, and ``run()`` raises its exception.

    Raises TypeError at construction if ``endpoints`` is not a str or a
    list of str, ``service`` not str or bytes, ``handler`` not callable or
    ``version`` not a :class:`mdp_core.Dialect`; ValueError for no
    endpoint, an empty one or one given twice, an empty service name or
    ``concurrency < 1``.

    ``metrics`` (a :class:`mdp_core.WorkerMetrics`) times each handler
    call, from the start to the reply sent or the request abandoned, and
    counts lost broker conversations, for every lane and broker; its
    ``snapshot()`` may be read from another thread.
    """

    _name = "worker"
    _log = log

    def __init__(
        self,
        endpoints: str | Sequence[str],
        service: str | BytesLike,
        handler: Handler,
        config: mdp_core.WorkerConfig | None = None,
        version: Dialect = Dialect.MDP02,
        *,
        concurrency: int = 1,
        transport: TransportConfig | None = None,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
        metrics: mdp_core.WorkerMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.endpoints = as_endpoints(endpoints)  # TypeError/ValueError now, not at connect
        if not callable(handler):
            raise TypeError(f"handler must be callable, not {type(handler).__name__}")
        if isinstance(concurrency, bool) or not isinstance(concurrency, int):
            raise TypeError(f"concurrency must be an int, not {type(concurrency).__name__}")
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        self.handler = handler
        self.transport = transport if transport is not None else TransportConfig()
        self.context = context if context is not None else zmq.Context.instance()
        self.clock = clock
        self.metrics = metrics
        #: Serializes the lanes' calls into ``metrics`` (one thread per lane).
        self.metrics_lock = threading.Lock()
        #: Rate-limits this worker's repeated warnings (see LogLimiter).
        self.log_limiter = LogLimiter(clock=clock)
        # The core checks service, config and version (TypeError/ValueError),
        # before any socket exists.
        cores = [[(ep, mdp_core.Worker(service, config, version)) for ep in self.endpoints]
                 for _ in range(concurrency)]
        super().__init__()
        self.lanes = [_Lane(self, lane, self._waker if n == 0 else Waker())
                      for n, lane in enumerate(cores)]
        self.service = self.core.service
        self._failure: BaseException | None = None

    @property
    def core(self) -> mdp_core.Worker:
        """The core of the first conversation (the only one with one broker and
        ``concurrency=1``)."""
        return self.lanes[0].conversations[0].core

    @property
    def handled(self) -> int:
        """Requests answered with a FINAL, by every lane."""
        return sum(lane.handled for lane in self.lanes)

    # --------------------------------------------------------------- Runner

    def _prepare(self) -> None:
        self.lanes[0].open()

    def _loop(self) -> None:
        threads = [threading.Thread(target=self._lane, args=(lane,),
                                    name=f"mdp-worker-lane-{n}", daemon=True)
                   for n, lane in enumerate(self.lanes[1:], 1)]
        for thread in threads:
            thread.start()
        try:
            self.lanes[0].loop()
        finally:
            self._closing = True
            for lane in self.lanes[1:]:
                lane.waker.wake()
            for thread in threads:
                thread.join()
        if self._failure is not None:
            raise self._failure

    def _lane(self, lane: _Lane) -> None:
        try:
            lane.open()
            lane.loop()
        except BaseException as exc:
            log.exception("a lane of the worker for %s failed; stopping",
                          self.service.decode(errors="replace"))
            self._failure = exc
            self._closing = True
            self._waker.wake()

    def _shutdown(self) -> None:
        if not self._finish():
            return
        try:
            for lane in self.lanes:
                lane.shutdown()
        finally:
            for lane in self.lanes:
                lane.waker.close()
            self.log_limiter.flush(final=True)
            log.info("worker for %s stopped", self.service.decode(errors="replace"))


class _Lane:
    """A thread's conversations, one per broker, polled together."""

    def __init__(self, worker: Worker, cores: list[tuple[str, mdp_core.Worker]], waker: Waker
                 ) -> None:
        self.worker = worker
        self.conversations = [_Conversation(self, ep, core) for ep, core in cores]
        self.waker = waker
        self.handled = 0
        self.changed = True  # a socket was opened or closed: the poller is out of date
        self._poller = zmq.Poller()

    def open(self) -> None:
        """Open every conversation (READY queued and sent)."""
        for conv in self.conversations:
            conv.open(self.worker.clock())
        self.changed = True

    def loop(self) -> None:
        """Serve until the worker closes."""
        clock = self.worker.clock
        while not self.worker._closing:
            if self.changed:
                self._poller = self._make_poller()
            now = clock()
            deadlines = [d for conv in self.conversations if (d := conv.deadline()) is not None]
            ready = dict(self._poller.poll(timeout_ms(min(deadlines, default=None), now)))
            if self.waker.fileno() in ready:
                self.waker.clear()
            for conv in self.conversations:
                conv.turn(ready, clock())

    def _make_poller(self) -> zmq.Poller:
        self.changed = False
        poller = zmq.Poller()
        poller.register(self.waker.fileno(), zmq.POLLIN)
        for conv in self.conversations:
            if conv.engine is not None:
                poller.register(conv.engine.sock, zmq.POLLIN)
                poller.register(conv.engine.monitor, zmq.POLLIN)
        return poller

    def shutdown(self) -> None:
        """DISCONNECT every open conversation; close the sockets."""
        for conv in self.conversations:
            conv.shutdown()


class _Conversation:
    """The conversation with one broker: a core Worker and its DEALER."""

    def __init__(self, lane: _Lane, endpoint: str, core: mdp_core.Worker) -> None:
        self.lane = lane
        self.worker = lane.worker
        self.endpoint = endpoint
        self.core = core
        self.engine: DealerEngine | None = None  # the conversation's socket
        self.reconnect_at: float | None = None

    def deadline(self) -> float | None:
        """When this conversation needs the lane again (None: only for a message)."""
        return self.reconnect_at if self.reconnect_at is not None else self.core.next_deadline()

    def turn(self, ready: dict[object, int], now: float) -> None:
        """Read, watch the monitor, tick, reconnect: what ``ready`` and ``now`` call for."""
        core, engine = self.core, self.engine
        if engine is not None:
            mon = engine.monitor
            emptied = self._read(engine, now) if engine.sock in ready or mon in ready else True
            # The monitor after the socket: libzmq queues a connection's
            # last messages (a broker's DISCONNECT) before it reports the drop.
            if emptied and mon in ready and self.engine is engine:
                engine.monitor_ready()
                engine.settle(now)
                self._after(now)
        deadline = core.next_deadline()
        if deadline is not None and now >= deadline:
            core.tick(now)
        self._after(now)
        if self.reconnect_at is not None and self.worker.clock() >= self.reconnect_at:
            self.open(self.worker.clock())

    def _read(self, engine: DealerEngine, now: float) -> bool:
        """Feed up to a batch of messages to the core, acting on each (a request's
        handler runs here); True if the socket was emptied or closed."""
        for _ in range(DEALER_BATCH):
            emptied = engine.read(now, 1)
            self._after(now)
            if emptied or self.engine is not engine:
                return True
        return False

    def _after(self, now: float) -> None:
        """Send what the core queued, then act on its events (in order)."""
        w = self.worker
        self._flush()
        # Until quiet: acting on an event (a handler's reply) or a failed
        # send reported by _flush() can make new events.
        while events := self.core.events():
            if w.metrics is not None:
                with w.metrics_lock:
                    w.metrics.observe(events)
            for event in events:
                log_event(log, event, w.log_limiter)
                if isinstance(event, RequestReceived):
                    self._handle(event)
                elif isinstance(event, BrokerLost):
                    self._flush()
                    self._close_socket(linger=w.transport.linger)
                    self.reconnect_at = w.clock() + event.reconnect_delay
                    log.info("reconnecting to %s in %.2f s", self.endpoint,
                             event.reconnect_delay)
            self._flush()
        w.log_limiter.flush()

    def _handle(self, request: RequestReceived) -> None:
        w = self.worker
        metrics = w.metrics
        if metrics is None:
            self._run_handler(request)
        else:
            with w.metrics_lock:
                metrics.started(request, w.clock())
            replied = self._run_handler(request)
            with w.metrics_lock:
                metrics.finished(request, replied, w.clock())

    def _run_handler(self, request: RequestReceived) -> bool:
        """Call the handler and send its reply; False if the request was not answered."""
        core, w = self.core, self.worker
        try:
            result = w.handler(list(request.body))
            if isinstance(result, Iterator):
                result = yield_partials(result, lambda body: self._partial(request, body))
            if self.engine is not None:
                # The broker may have gone while the handler ran: learn it now, so
                # the reply is not queued for whatever broker the socket reaches next.
                self.engine.monitor_ready()
                self.engine.settle(w.clock())
            core.reply(request, result, w.clock())
        except Exception as exc:
            if core.current is not request:
                # The conversation ended while the handler ran: nothing to abandon.
                log.warning("reply dropped: %s", exc)
                return False
            # A raising handler and an unsendable result alike (TypeError,
            # EmptyBody, PartialNotSupported): the request goes back to the broker.
            log_handler_failure(log, w.log_limiter, w.service, exc)
            core.abandon(request, w.clock())
            return False
        self.lane.handled += 1
        return True

    def _partial(self, request: RequestReceived, body: bytes | Sequence[bytes]) -> None:
        self.core.partial(request, body, self.worker.clock())
        self._flush()

    def _flush(self) -> None:
        if self.engine is None:
            self.core.outgoing()  # the conversation's socket is gone: nothing can reach it
            return
        self.engine.flush(self.worker.clock())

    def open(self, now: float) -> None:
        """A new socket and a new conversation (READY queued and sent)."""
        w = self.worker
        self.reconnect_at = None
        sock, mon = make_dealer(w.context, self.endpoint, w.transport)
        assert mon is not None
        self.engine = DealerEngine(self.core, sock, mon, log=log, endpoint=self.endpoint,
                                   log_limiter=w.log_limiter)
        self.lane.changed = True
        log.info("worker for %s connecting to %s", w.service.decode(errors="replace"),
                 self.endpoint)
        self.core.connect(now)
        self._flush()

    def _close_socket(self, linger: float | None = None) -> None:
        engine, self.engine = self.engine, None
        if engine is None:
            return
        close_monitor(engine.sock, engine.monitor)
        engine.sock.close(0 if linger is None else max(0, round(linger * 1000)))
        self.lane.changed = True

    def shutdown(self) -> None:
        """DISCONNECT if the conversation is open, send it, close the socket."""
        try:
            if self.engine is not None:
                self.core.disconnect(self.worker.clock())
                self._flush()
                self.core.events()
        finally:
            self._close_socket(linger=self.worker.transport.linger)


def yield_partials(
    stream: Iterator[bytes | Sequence[bytes]],
    send: Callable[[bytes | Sequence[bytes]], None],
) -> bytes | Sequence[bytes]:
    """Send every item of ``stream`` with ``send``; return its return value.

    The value a generator ``return``s is the FINAL body; ``b""`` if None.
    """
    while True:
        try:
            item = next(stream)
        except StopIteration as stop:
            value = stop.value
            return b"" if value is None else value
        send(item)
