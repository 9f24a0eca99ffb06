"""gevent driver for :class:`mdp_core.Broker`.

Two greenlets: the *pump* owns the ROUTER (waits for it, and each turn is
:class:`~mdp_zmq.engine.RouterEngine`'s: read every waiting message into
the core, tick its timers, send what it queued) and a watcher reads the
ROUTER's monitor into the :class:`~mdp_zmq.glue.ConnectionTracker` and
wakes the pump when a peer's connection is gone. Dead peers are found in
the same layers as by the other brokers: monitor DISCONNECTED +
``zmq.SRCFD``, ZMTP heartbeats (which end in the same DISCONNECTED),
``ROUTER_MANDATORY`` (EHOSTUNREACH on send), then the core's own MDP
heartbeats. With CURVE (``TransportConfig.security``) a third greenlet
answers the ZAP handler.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

import zmq
import zmq.green
from gevent.monkey import get_original
from mdp_zmq.engine import EngineViews, RouterEngine
from mdp_zmq.glue import MonitorEvent, TransportConfig, bind_endpoints, close_broker, open_broker

import mdp_core
from mdp_core import Event

from ._pump import MonitorWatch, Pump, Watch, green_context, plain
from ._service import Service

__all__ = ["Broker"]

log = logging.getLogger("mdp_gevent.broker")

#: The OS thread's id, also under ``monkey.patch_all()`` (whose get_ident
#: names the greenlet).
_thread_id = get_original("_thread", "get_ident")
_allocate_lock = get_original("_thread", "allocate_lock")


class Broker(EngineViews, Service):
    """An MDP broker on one ROUTER socket bound to ``endpoints``, for gevent programs.

    The socket is bound in the constructor (``endpoints`` then holds the
    resolved addresses, so ``tcp://127.0.0.1:*`` shows its port).
    ``serve()`` blocks the calling greenlet until :meth:`close` (from any
    greenlet, thread or signal handler, e.g. ``gevent.signal_handler(
    signal.SIGTERM, broker.close)``); ``start()`` serves in a new greenlet
    and returns it; ``with broker:`` serves in the background until the
    block ends. On shutdown every live worker gets DISCONNECT and the
    socket closes with the bounded linger of ``transport``. A broker
    serves once. The sockets belong to the hub of the thread that made
    them: serve in that thread.

    With ``transport.security`` (a broker's :class:`~mdp_zmq.glue.Security`)
    every connection is CURVE: keys not in its allow-list are refused at
    the handshake (logged, rate-limited), and each message reaches the
    core with its sender's identity. A greenlet answers the ZAP handler,
    which is bound in the broker's context: then a new
    ``zmq.green.Context`` unless ``context`` is given (one secured broker
    per context), terminated when the broker stops (which waits at most
    the ROUTER's linger for unsent messages).

    ``context`` must be a ``zmq.green.Context`` (default: its
    ``instance()``, or a new one with security). ``on_event`` is called with
    every core event, after it is logged, in the pump's greenlet between a
    read and the next send: it must not block (spawn a greenlet for slow
    work); an exception it raises is logged and ignored. ``metrics`` (a
    :class:`mdp_core.BrokerMetrics`) is fed every core event in the pump's
    turn and makes the core time each request; read it with
    :meth:`metrics_snapshot`, from any thread. Raises ``zmq.ZMQError`` if an
    endpoint cannot be bound (or a ZAP handler is already bound in
    ``context``), ValueError if there is none or one is empty, TypeError if
    one is not a str or ``context`` is not green.
    """

    _name = "broker"

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
        if context is not None:
            green_context(context)  # the TypeError of a plain one
        self.core = mdp_core.Broker(config, timed=metrics is not None)
        self.metrics = metrics
        self._done = False  # shut down: the hub's thread no longer uses the core
        self._thread: int | None = None  # the serving hub's thread
        self.transport = transport if transport is not None else TransportConfig()
        (self.context, self._own_context, self._zap, self._router, self._monitor,
         self.endpoints) = open_broker(context, endpoints, self.transport, zmq.green.Context)
        self.engine = RouterEngine(self.core, plain(self._router), plain(self._monitor),
                                   self.transport, log=log, clock=time.monotonic,
                                   on_event=on_event, metrics=metrics, zap=self._zap)
        self._pump: Pump | None = None
        super().__init__()  # after the bind: nothing to release if it fails

    def metrics_snapshot(self, timeout: float = 5.0) -> mdp_core.MetricsSnapshot:
        """The broker's metrics now (:meth:`mdp_core.BrokerMetrics.snapshot`).

        Thread-safe: asked from another thread (a Prometheus scrape's) while
        the broker serves, the snapshot is taken in the serving hub, as a
        callback between two greenlet switches (so never in the middle of a
        turn), and this thread waits for it on a real (not monkey-patched)
        lock. From a greenlet of the serving hub, or before serving and
        after the shutdown, it is taken at once. Raises RuntimeError if the
        broker has no ``metrics``, TimeoutError if no snapshot came within
        ``timeout`` s.
        """
        metrics = self.metrics
        if metrics is None:
            raise RuntimeError("this broker was made without metrics=")
        if self._state == "new" or self._done or self._thread == _thread_id():
            return metrics.snapshot(self.core)
        done = _allocate_lock()
        done.acquire()
        got: list[mdp_core.MetricsSnapshot] = []

        def take() -> None:
            try:
                got.append(metrics.snapshot(self.core))
            finally:
                done.release()

        self._loop.run_callback_threadsafe(take)
        deadline = time.monotonic() + timeout
        # In slices: a hub whose thread stopped running it answers no callback.
        while not done.acquire(True, min(0.05, max(0.0, deadline - time.monotonic()))):
            if self._done:
                return metrics.snapshot(self.core)
            if time.monotonic() >= deadline:
                raise TimeoutError(f"no metrics snapshot from the broker in {timeout:g} s")
        return got[0]

    # --------------------------------------------------------------- the pump

    def _begin(self) -> None:
        super()._begin()
        self._thread = _thread_id()  # serve() and start() run in the hub's thread

    def _serve(self) -> None:
        log.info("broker listening on %s", ", ".join(self.endpoints))
        self._pump = pump = Pump(self.engine.router, pending=self.engine.pending)
        watches: list[Watch] = [MonitorWatch(self.engine.monitor, self._on_monitor)]
        if self._zap is not None:
            watches.append(Watch(plain(self._zap.socket), self._on_zap))
        try:
            pump.run(self._turn)
        finally:
            for watch in watches:
                watch.stop()
            pump.stop()

    def _turn(self, now: float) -> tuple[bool, float | None]:
        """The engine's turn (see :data:`~mdp_gevent._pump.Turn`), until closing."""
        if self._closing:
            assert self._pump is not None
            self._pump.stop()
            return True, None
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
        if self.engine.zap_ready():
            self._wake()

    def _wake(self) -> None:
        if self._pump is not None:
            self._pump.wake()

    def _shutdown(self) -> None:
        """DISCONNECT every worker, send it, close: the ZAP handler after the
        ROUTER, then an owned context (whose term waits at most the linger)."""
        try:
            self.engine.close(time.monotonic())
        finally:
            self._done = True
            close_broker(self.context, self._own_context, self._zap, self._router,
                         self._monitor)
            log.info("broker stopped")
