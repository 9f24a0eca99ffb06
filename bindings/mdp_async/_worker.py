"""Async driver for :class:`mdp_core.Worker` (anyio: trio or asyncio).

Each conversation with a broker (a *lane*: one DEALER, one core Worker)
has a pump task that reads the socket, ticks the core and sends what it
queued, a task watching the DEALER's monitor, and, while a request is
being handled, a job task running the handler. Because the pump keeps
ticking the core during a job, MDP HEARTBEATs keep flowing however long
the job takes (RFC 7/18: both sides "MUST send heartbeats at regular and
agreed-upon intervals"). When the conversation ends (the broker's
DISCONNECT, its silence, or the monitor's dropped connection) the lane's
task group is cancelled, the job with it (the broker re-dispatches its
request), and a new socket connects after the core's reconnect delay.
A worker of several brokers has ``concurrency`` lanes per broker, each on
its own: one broker's loss leaves the others' lanes serving.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from typing import Any

import anyio
import anyio.to_thread
import zmq
from anyio.abc import TaskGroup, TaskStatus
from mdp_zmq.engine import DealerEngine
from mdp_zmq.glue import LogLimiter, TransportConfig, as_endpoints, make_dealer
from mdp_zmq.lanes import WorkerLane

import mdp_core
from mdp_core import BytesLike, Dialect, RequestReceived

from ._background import Background, plain_interrupt
from ._pump import Pump, close_monitor_socket, close_socket, make_pump, watch_monitor

__all__ = ["Body", "Handler", "Worker"]

log = logging.getLogger("mdp_async.worker")

Body = bytes | Sequence[bytes]
"""One reply body: one frame, or a sequence of frames."""

Handler = Callable[
    [list[bytes]], Awaitable[Body] | AsyncIterator[Body] | Body | Iterator[Body]]
"""A request handler, given the request's body frames: ``async def`` returning
a :data:`Body`, an async generator function whose items are PARTIALs and
whose last item is the FINAL, or a plain function returning a Body or a
generator (items PARTIALs, return value the FINAL); see :class:`Worker`."""

_FRAMES = (bytes, bytearray, memoryview, list, tuple)
_NOTHING: Any = object()


class Worker(Background):
    """An MDP worker for ``service`` at ``endpoints`` (one broker, or a list), for
    anyio apps (trio or asyncio).

    ``handler(frames)`` gets a request's body frames and is one of:

    * ``async def`` returning the reply: ``bytes`` (one frame) or a
      sequence of frames;
    * an async generator function (MDP/0.2): every item but the last is
      sent as a PARTIAL as soon as the next one is produced, the last item
      is the FINAL (one that yields nothing has failed);
    * a plain function returning the reply (or a generator whose items are
      PARTIALs and whose ``return`` value is the FINAL, as for the blocking
      worker). With ``threaded=True`` it runs in a worker thread
      (``anyio.to_thread``), otherwise in the event loop, where it must not
      block.

    The job runs in a task of its own, so this worker keeps sending
    HEARTBEATs and reading the broker while it works. If the handler
    raises, or returns something that is not a reply (an int, an empty
    list, a PARTIAL on MDP/0.1), the error is logged once and the request
    abandoned (``mdp_core.Worker.abandon``): DISCONNECT, READY again, and
    the broker re-dispatches the request elsewhere or expires it. If the
    conversation ends during a job (the broker died, restarted or sent
    DISCONNECT, e.g. past its ``processing_timeout``), the job's task is
    cancelled (a threaded handler's thread cannot be stopped: it runs to
    its end and its result is dropped) and a new conversation starts after
    the core's reconnect delay.

    ``concurrency=N`` holds N conversations (N sockets) with each broker,
    so each broker can have N requests handled here at once (all brokers
    together: N times their number). ``await worker.serve()`` runs until
    cancelled and sends DISCONNECT on every open conversation on the way
    out; ``async with worker:`` serves in the background until the block
    ends. Raises ValueError for an empty service name, ``concurrency <
    1``, no endpoint, an empty one or one given twice; TypeError if
    ``endpoints`` is not a str or a list of str.
    ``metrics`` (a :class:`mdp_core.WorkerMetrics`) times each handler
    call and counts lost broker conversations, as in the blocking worker;
    TypeError also for a handler that is not callable.
    """

    def __init__(
        self,
        endpoints: str | Sequence[str],
        service: str | BytesLike,
        handler: Handler,
        config: mdp_core.WorkerConfig | None = None,
        version: Dialect = Dialect.MDP02,
        *,
        concurrency: int = 1,
        threaded: bool = False,
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
        self.threaded = threaded
        self.metrics = metrics
        self.transport = transport if transport is not None else TransportConfig()
        self.context = context if context is not None else zmq.Context.instance()
        # The core checks service, config and version (TypeError/ValueError).
        self.lanes = [_Lane(self, endpoint, mdp_core.Worker(service, config, version))
                      for endpoint in self.endpoints for _ in range(concurrency)]
        self.service = self.lanes[0].core.service
        #: Rate-limits this worker's repeated warnings (see LogLimiter).
        self.log_limiter = LogLimiter(clock=anyio.current_time)
        self.handled = 0  # requests answered with a FINAL
        self._served = False

    @property
    def core(self) -> mdp_core.Worker:
        """The core of the first conversation (the only one with one broker and
        ``concurrency=1``)."""
        return self.lanes[0].core

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Register with the broker and serve until cancelled (then DISCONNECT).

        ``task_status`` is for ``tg.start(worker.serve)``, which returns once
        every READY is queued. Raises RuntimeError if this worker already
        served; a Ctrl-C comes out as a plain KeyboardInterrupt (after the
        DISCONNECTs), also on trio.
        """
        if self._served:
            raise RuntimeError("this worker already served; make a new one")
        self._served = True
        log.info("worker for %s connecting to %s (%d conversation(s))",
                 self.service.decode(errors="replace"), ", ".join(self.endpoints),
                 len(self.lanes))
        try:
            with plain_interrupt():
                async with anyio.create_task_group() as tg:
                    for lane in self.lanes:
                        lane.open()
                        tg.start_soon(lane.run)
                    task_status.started()
        finally:
            for lane in self.lanes:
                lane.close()  # those a failed open() left behind
            log.info("worker for %s stopped", self.service.decode(errors="replace"))


class _Lane(WorkerLane):
    """One conversation at a time with one broker: a DEALER, a core, a pump
    (the turn and the answer are :class:`~mdp_zmq.lanes.WorkerLane`'s)."""

    pump: Pump | None

    def __init__(self, worker: Worker, endpoint: str, core: mdp_core.Worker) -> None:
        super().__init__(worker, endpoint, core, log=log, clock=anyio.current_time)
        self.worker = worker
        self.jobs: TaskGroup | None = None  # the conversation's task group

    async def run(self) -> None:
        """Conversations, one after the other, until cancelled."""
        while True:
            try:
                delay = await self._converse()
            finally:
                self.close()
            log.info("reconnecting to %s in %.2f s", self.endpoint, delay)
            await anyio.sleep(delay)
            self.open()

    def open(self) -> None:
        """A new socket and a new conversation (READY queued and sent)."""
        w = self.worker
        sock, mon = make_dealer(w.context, self.endpoint, w.transport)
        assert mon is not None
        self.engine = DealerEngine(self.core, sock, mon, log=log, endpoint=self.endpoint,
                                   log_limiter=w.log_limiter)
        self.pump = make_pump(sock)
        now = anyio.current_time()
        self.core.connect(now)
        self.flush(now)

    async def _converse(self) -> float:
        """Pump until the conversation ends; return the reconnect delay."""
        assert self.engine is not None and self.pump is not None
        async with anyio.create_task_group() as tg:
            self.jobs = tg
            tg.start_soon(watch_monitor, self.engine.monitor, self.on_monitor)
            delay: float = await self.pump.run(self.turn)
            tg.cancel_scope.cancel()  # the job, if any (its request is re-dispatched)
        return delay

    def start_job(self, request: RequestReceived) -> None:
        """Run the handler in a task of the conversation's task group."""
        assert self.jobs is not None
        self.jobs.start_soon(self._job, request)

    def close(self) -> None:
        """End the conversation (DISCONNECT if still open), send it, close."""
        engine = self.engine
        if engine is None:
            return
        self.end()
        close_monitor_socket(engine.sock, engine.monitor)
        close_socket(engine.sock, self.pump, self.worker.transport.linger)
        self.engine = self.pump = None
        self.jobs = None

    # ---------------------------------------------------------------- jobs

    async def _job(self, request: RequestReceived) -> None:
        """Run the handler for ``request`` and send its FINAL (or abandon it)."""
        metrics, replied = self.worker.metrics, False
        if metrics is not None:
            metrics.started(request, anyio.current_time())
        try:
            result: Body | Exception
            try:
                result = await self._call(request)
            except Exception as exc:
                result = exc
            replied = self.answer(request, result)
        finally:
            if metrics is not None:
                metrics.finished(request, replied, anyio.current_time())
        self.wake()

    async def _call(self, request: RequestReceived) -> Body:
        """The handler's FINAL body; its PARTIALs are sent on the way."""
        w, frames = self.worker, list(request.body)
        if w.threaded:
            result = await anyio.to_thread.run_sync(w.handler, frames, abandon_on_cancel=True)
        else:
            result = w.handler(frames)
            if inspect.isawaitable(result):
                result = await result
        if isinstance(result, _FRAMES):
            return result
        if isinstance(result, AsyncIterator):
            return await self._stream_async(request, result)
        if isinstance(result, Iterator):
            return await self._stream_sync(request, result)
        raise TypeError(f"handler returned {type(result).__name__}, not bytes/frames")

    async def _stream_async(self, request: RequestReceived, items: AsyncIterator[Body]) -> Body:
        held = _NOTHING
        try:
            async for item in items:
                if held is not _NOTHING:
                    self._partial(request, held)
                held = item
        finally:
            aclose = getattr(items, "aclose", None)
            if aclose is not None:
                await aclose()
        if held is _NOTHING:
            raise TypeError("async generator handler yielded nothing (its last item is the FINAL)")
        return held  # type: ignore[no-any-return]

    async def _stream_sync(self, request: RequestReceived, items: Iterator[Body]) -> Body:
        while True:
            if self.worker.threaded:
                done, value = await anyio.to_thread.run_sync(
                    _step, items, abandon_on_cancel=True)
            else:
                done, value = _step(items)
            if done:
                return b"" if value is None else value
            self._partial(request, value)
            await anyio.lowlevel.checkpoint()  # let the pump send it

    def _partial(self, request: RequestReceived, body: Body) -> None:
        self.core.partial(request, body, anyio.current_time())
        self.wake()


def _step(items: Iterator[Body]) -> tuple[bool, Any]:
    """``(False, item)`` for the next item, ``(True, return value)`` at the end."""
    try:
        return False, next(items)
    except StopIteration as stop:
        return True, stop.value
