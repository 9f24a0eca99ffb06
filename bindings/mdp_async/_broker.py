"""Async driver for :class:`mdp_core.Broker` (anyio: trio or asyncio).

Two tasks: the *pump* owns the ROUTER (waits for it, reads every waiting
message into the core, ticks the core's timers, sends what it queued) and
a *monitor* task reads the ROUTER's monitor into the
:class:`~mdp_zmq.glue.ConnectionTracker` and wakes the pump when a peer's
connection is gone. Dead peers are found in the same layers as by the
blocking broker: monitor DISCONNECTED + ``zmq.SRCFD``, ZMTP heartbeats
(which end in the same DISCONNECTED), ``ROUTER_MANDATORY`` (EHOSTUNREACH
on send), then the core's own MDP heartbeats. With CURVE
(``TransportConfig.security``) a third task answers the ZAP handler.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import anyio
import anyio.from_thread
import anyio.lowlevel
import zmq
from anyio.abc import TaskStatus
from anyio.lowlevel import EventLoopToken
from mdp_zmq.engine import EngineViews, RouterEngine
from mdp_zmq.glue import (
    MonitorEvent,
    TransportConfig,
    bind_endpoints,
    close_broker,
    open_broker,
)

import mdp_core
from mdp_core import Event

from ._background import Background, plain_interrupt
from ._pump import Pump, make_pump, watch_monitor, watch_readable

__all__ = ["Broker"]

log = logging.getLogger("mdp_async.broker")


class Broker(Background, EngineViews):
    """An MDP broker on one ROUTER socket bound to ``endpoints``, for anyio apps.

    The socket is bound in the constructor (``endpoints`` then holds the
    resolved addresses, so ``tcp://127.0.0.1:*`` shows its port). ``await
    broker.serve()`` serves until cancelled, e.g. ``tg.start_soon(broker.serve)``
    or ``anyio.run(broker.serve, backend="trio")``; ``async with broker:``
    serves in the background until the block ends. On the way out every
    live worker gets DISCONNECT and the socket closes with the bounded
    linger of ``transport``. A broker serves once: afterwards its socket is
    closed. ``on_event`` is called with every core event, after it is
    logged, synchronously in the pump's turn (on asyncio from a loop
    callback, not a task): it must not block, and hands async work to a
    task, e.g. with a memory object stream's ``send_nowait``; an exception
    it raises is logged and ignored. ``metrics`` (a
    :class:`mdp_core.BrokerMetrics`) is fed every core event in the pump's
    turn and makes the core time each request; read it with
    :meth:`metrics_snapshot`.

    With ``transport.security`` (a broker's :class:`~mdp_zmq.glue.Security`)
    every connection is CURVE: keys not in its allow-list are refused at
    the handshake (logged, rate-limited), and each message reaches the
    core with its sender's identity. The ZAP handler is bound in the
    broker's context, which is then a new one unless ``context`` is given
    (one secured broker per context), terminated when the broker stops.

    Raises ``zmq.ZMQError`` if an endpoint cannot be bound (or a ZAP
    handler is already bound in ``context``), ValueError if there is none.
    """

    def __init__(
        self,
        endpoints: str | Sequence[str],
        config: mdp_core.BrokerConfig | None = None,
        *,
        transport: TransportConfig | None = None,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
        on_event: Callable[[Event], None] | None = None,
        metrics: mdp_core.BrokerMetrics | None = None,
    ) -> None:
        endpoints = bind_endpoints(endpoints)
        self.core = mdp_core.Broker(config, timed=metrics is not None)
        self.metrics = metrics
        self._token: EventLoopToken | None = None  # while serving: the loop to ask
        self.transport = transport if transport is not None else TransportConfig()
        (self.context, self._own_context, self._zap, self._router, self._monitor,
         self.endpoints) = open_broker(context, endpoints, self.transport)
        self.engine = RouterEngine(self.core, self._router, self._monitor, self.transport,
                                   log=log, clock=anyio.current_time, on_event=on_event,
                                   metrics=metrics, zap=self._zap)
        self._pump: Pump | None = None  # made in serve(): it needs the running loop
        self._served = False

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; then DISCONNECT every worker and close.

        ``task_status`` is for ``tg.start(broker.serve)``, which returns
        once the broker is serving. Raises RuntimeError if this broker
        already served; a Ctrl-C comes out as a plain KeyboardInterrupt
        (after the clean shutdown), also on trio.
        """
        if self._served:
            raise RuntimeError("this broker already served; make a new one")
        self._served = True
        self._pump = make_pump(self._router, self.engine.pending)
        self._token = anyio.lowlevel.current_token()
        log.info("broker listening on %s", ", ".join(self.endpoints))
        try:
            with plain_interrupt():
                async with anyio.create_task_group() as tg:
                    tg.start_soon(watch_monitor, self._monitor, self._on_monitor)
                    if self._zap is not None:
                        tg.start_soon(watch_readable, self._zap.socket, self._on_zap)
                    task_status.started()
                    await self._pump.run(self._turn)
        finally:
            self._token = None
            self._shutdown()

    def metrics_snapshot(self) -> mdp_core.MetricsSnapshot:
        """The broker's metrics now (:meth:`mdp_core.BrokerMetrics.snapshot`).

        Thread-safe: from another thread while the broker serves, the
        snapshot is taken in the broker's event loop (a Prometheus scrape
        runs in a thread of its own). Raises RuntimeError if the broker has
        no ``metrics``.
        """
        metrics = self.metrics
        if metrics is None:
            raise RuntimeError("this broker was made without metrics=")
        token = self._token
        if token is not None:
            try:
                return anyio.from_thread.run_sync(metrics.snapshot, self.core, token=token)
            except RuntimeError:  # asked from the loop's own thread (on_event)
                pass
        return metrics.snapshot(self.core)

    # --------------------------------------------------------------- the pump

    def _turn(self, now: float) -> tuple[bool, float | None]:
        """The engine's turn (see :data:`~mdp_async._pump.Turn`)."""
        engine = self.engine
        drained = engine.turn(now)
        return drained, engine.wake_at()

    def _on_monitor(self, events: list[MonitorEvent]) -> None:
        """Feed the tracker; wake the pump if a peer's connection is gone (or a
        summary of refused handshakes is due sooner)."""
        if self.engine.monitor_events(events) and self._pump is not None:
            self._pump.wake()

    def _on_zap(self) -> None:
        """Answer the ZAP handler; wake the pump if a summary is due sooner."""
        if self.engine.zap_ready() and self._pump is not None:
            self._pump.wake()

    def _shutdown(self) -> None:
        """DISCONNECT every worker, send it, close (no await: safe while cancelled)."""
        try:
            self.engine.close(anyio.current_time())
        finally:
            if self._pump is not None:
                self._pump.close()
            close_broker(self.context, self._own_context, self._zap, self._router,
                         self._monitor, _notify_closing)
            log.info("broker stopped")


def _notify_closing(sock: zmq.Socket[bytes]) -> None:
    """Wake the task waiting on ``sock``'s fd (the socket closes next)."""
    anyio.notify_closing(sock.get(zmq.FD))  # type: ignore[arg-type]
