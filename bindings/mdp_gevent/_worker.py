"""gevent driver for :class:`mdp_core.Worker`.

Each conversation with the broker (a *lane*: one DEALER, one core Worker)
has a pump greenlet that reads the socket, ticks the core and sends what
it queued (:class:`~mdp_zmq.engine.DealerEngine`'s turn), a greenlet
watching the DEALER's monitor and, while a request is being handled, a
job greenlet running the handler. Because the pump keeps ticking the
core during a job, MDP HEARTBEATs keep flowing as long as the job yields
to the hub (gevent I/O and sleeps, patched or green libraries): RFC 7/18
want both sides to "send heartbeats at regular and agreed-upon
intervals". A handler that computes without yielding holds the hub, so
nothing is sent meanwhile; its death is still seen by the broker at once
through the transport (the connection closes). When the conversation
ends (the broker's DISCONNECT, its silence, a dropped connection) the job
greenlet is killed (the broker re-dispatches its request) and a new
socket connects after the core's reconnect delay.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence

import gevent
import gevent.event
import zmq
from greenlet import getcurrent
from mdp_zmq.engine import DealerEngine
from mdp_zmq.glue import (
    LogLimiter,
    TransportConfig,
    as_endpoints,
    close_monitor,
    make_dealer,
    next_part,
)
from mdp_zmq.lanes import WorkerLane

import mdp_core
from mdp_core import BytesLike, Dialect, RequestReceived

from ._pump import MonitorWatch, Pump, green_context, plain
from ._service import Service

__all__ = ["Body", "Handler", "Worker"]

log = logging.getLogger("mdp_gevent.worker")

Body = bytes | Sequence[bytes]
"""One reply body: one frame, or a sequence of frames."""

Handler = Callable[[list[bytes]], Body | Iterator[Body]]
"""A request handler, given the request's body frames: returns a :data:`Body`,
or is a generator whose items are PARTIALs and whose ``return`` value is
the FINAL (MDP/0.2); see :class:`Worker`."""


class Worker(Service):
    """An MDP worker for ``service`` at ``endpoints`` (one broker, or a list), for
    gevent programs.

    ``handler(frames)`` gets a request's body frames (a list of bytes) and
    returns the reply, ``bytes`` (one frame) or a sequence of frames; or it
    is a generator (MDP/0.2) whose items are sent as PARTIALs at once and
    whose ``return`` value is the FINAL (``b""`` if none), as for
    :class:`mdp_zmq.Worker`. It runs in a greenlet of its own while this
    worker keeps reading the broker and sending HEARTBEATs, as long as the
    handler yields to the hub (gevent or monkey-patched I/O and sleeps); a
    handler that computes for longer than the broker's liveness window
    without yielding is silent meanwhile, like the blocking worker.

    If the handler raises, or returns something that is not a reply (an
    int, an empty list, a PARTIAL on MDP/0.1), the error is logged once
    (rate-limited; one line for :class:`mdp_zmq.HandlerError`) and the
    request abandoned (``mdp_core.Worker.abandon``): DISCONNECT, READY
    again, and the broker re-dispatches the request elsewhere or expires
    it. If the conversation ends during a job (the broker died, restarted
    or sent DISCONNECT, e.g. past its ``processing_timeout``), the job's
    greenlet is killed and a new conversation starts after the core's
    reconnect delay.

    ``concurrency=N`` holds N conversations (N sockets) with each broker,
    so each broker can have N requests handled here at once (all brokers
    together: N times their number); each conversation reconnects on its
    own. ``metrics`` (a :class:`mdp_core.WorkerMetrics`) times each handler
    call and counts lost broker conversations, as in the other workers.
    ``serve()`` blocks the calling greenlet until
    :meth:`close` (from any greenlet, thread or signal handler), then
    sends DISCONNECT on every open conversation; ``start()`` serves in a
    new greenlet and returns it; ``with worker:`` serves in the background
    until the block ends. ``context`` must be a ``zmq.green.Context``
    (default: its ``instance()``).

    Raises TypeError at construction if ``endpoints`` is not a str or a
    list of str, ``service`` not str or bytes, ``handler`` not callable,
    ``version`` not a :class:`mdp_core.Dialect` or ``context`` not green;
    ValueError for an empty service name, ``concurrency < 1``, no
    endpoint, an empty one or one given twice.
    """

    _name = "worker"

    def __init__(
        self,
        endpoints: str | Sequence[str],
        service: str | BytesLike,
        handler: Handler,
        config: mdp_core.WorkerConfig | None = None,
        version: Dialect = Dialect.MDP02,
        *,
        concurrency: int = 1,
        metrics: mdp_core.WorkerMetrics | None = None,
        transport: TransportConfig | None = None,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        self.endpoints = as_endpoints(endpoints)  # TypeError/ValueError now, not at connect
        if not callable(handler):
            raise TypeError(f"handler must be callable, not {type(handler).__name__}")
        self.handler = handler
        self.metrics = metrics
        self.transport = transport if transport is not None else TransportConfig()
        self.context = green_context(context)
        # The core checks service, config and version (TypeError/ValueError).
        self.lanes = [_Lane(self, endpoint, mdp_core.Worker(service, config, version))
                      for endpoint in self.endpoints for _ in range(concurrency)]
        self.service = self.lanes[0].core.service
        #: Rate-limits this worker's repeated warnings (see LogLimiter).
        self.log_limiter = LogLimiter(clock=time.monotonic)
        self.handled = 0  # requests answered with a FINAL
        self._stop = gevent.event.Event()
        super().__init__()

    @property
    def core(self) -> mdp_core.Worker:
        """The core of the first conversation (the only one with one broker and
        ``concurrency=1``)."""
        return self.lanes[0].core

    def _serve(self) -> None:
        log.info("worker for %s connecting to %s (%d conversation(s))",
                 self.service.decode(errors="replace"), ", ".join(self.endpoints),
                 len(self.lanes))
        runs = [gevent.spawn(lane.run) for lane in self.lanes]
        for run in runs:
            run.link_exception(lambda _: self._stop.set())
        try:
            self._stop.wait()
        finally:
            # Each lane's conversation ends with DISCONNECT (in its finally).
            gevent.killall(runs)
        for run in runs:
            if run.exception is not None:
                raise run.exception

    def _wake(self) -> None:
        self._stop.set()

    def _shutdown(self) -> None:
        for lane in self.lanes:
            lane.close()  # those a serve that never ran left open
        self.log_limiter.flush(final=True)
        log.info("worker for %s stopped", self.service.decode(errors="replace"))


class _Lane(WorkerLane):
    """One conversation at a time with one broker: a DEALER, a core, a pump
    (the turn and the answer are :class:`~mdp_zmq.lanes.WorkerLane`'s)."""

    pump: Pump | None

    def __init__(self, worker: Worker, endpoint: str, core: mdp_core.Worker) -> None:
        super().__init__(worker, endpoint, core, log=log, clock=time.monotonic)
        self.worker = worker
        self.job: gevent.Greenlet[..., None] | None = None
        self._sock: zmq.Socket[bytes] | None = None  # the green sockets, which own them
        self._mon: zmq.Socket[bytes] | None = None

    def run(self) -> None:
        """Conversations, one after the other, until killed."""
        while True:
            self.open()
            try:
                delay = self._converse()
            finally:
                self.close()
            log.info("reconnecting to %s in %.2f s", self.endpoint, delay)
            gevent.sleep(delay)

    def open(self) -> None:
        """A new socket and a new conversation (READY queued and sent)."""
        w = self.worker
        self._sock, self._mon = make_dealer(w.context, self.endpoint, w.transport)
        assert self._mon is not None
        sock = plain(self._sock)
        self.engine = DealerEngine(self.core, sock, plain(self._mon), log=log,
                                   endpoint=self.endpoint, log_limiter=w.log_limiter)
        self.pump = Pump(sock)
        now = time.monotonic()
        self.core.connect(now)
        self.flush(now)

    def _converse(self) -> float:
        """Pump until the conversation ends; return the reconnect delay."""
        assert self.engine is not None and self.pump is not None
        watch = MonitorWatch(self.engine.monitor, self.on_monitor)
        try:
            delay: float = self.pump.run(self.turn)
        finally:
            watch.stop()
            if self.job is not None:
                self.job.kill(block=False)  # its request is the broker's to re-dispatch
                self.job = None
        return delay

    def start_job(self, request: RequestReceived) -> None:
        """Run the handler in a greenlet of its own."""
        self.job = gevent.spawn(self._job, request)

    def close(self) -> None:
        """End the conversation (DISCONNECT if still open), send it, close."""
        if self.engine is None:
            return
        self.end()
        if self.pump is not None:
            self.pump.stop()
        assert self._sock is not None and self._mon is not None
        close_monitor(self._sock, self._mon)
        self._sock.close(max(0, round(self.worker.transport.linger * 1000)))
        self.engine = self.pump = None
        self._sock = self._mon = None

    # ---------------------------------------------------------------- jobs

    def _job(self, request: RequestReceived) -> None:
        """Run the handler for ``request`` and send its FINAL (or abandon it)."""
        metrics, replied = self.worker.metrics, False
        if metrics is not None:
            metrics.started(request, time.monotonic())
        try:
            result: Body | Exception
            try:
                result = self._call(request)
            except Exception as exc:
                result = exc
            replied = self.answer(request, result)
        finally:
            if metrics is not None:
                metrics.finished(request, replied, time.monotonic())
            if self.job is getcurrent():
                self.job = None
        self.wake()

    def _call(self, request: RequestReceived) -> Body:
        """The handler's FINAL body; its PARTIALs are sent on the way."""
        result = self.worker.handler(list(request.body))
        if not isinstance(result, Iterator):
            return result
        while True:
            done, value = next_part(result)
            if done:
                return value
            self.core.partial(request, value, time.monotonic())
            self.wake()
            gevent.sleep(0)  # let the pump send it
