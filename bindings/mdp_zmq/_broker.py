"""Blocking pyzmq driver for :class:`mdp_core.Broker`.

One ROUTER socket serves clients and workers of every dialect. The loop
polls the ROUTER, its monitor and a wake-up fd with the timeout the core
asks for (``next_deadline()``), feeds the core, sends what it queued and
reports its events. Dead peers are found in layers (DESIGN.md): monitor
DISCONNECTED + ``zmq.SRCFD`` through :class:`ConnectionTracker`, ZMTP
heartbeats (which end in the same DISCONNECTED), ``ROUTER_MANDATORY``
(EHOSTUNREACH on send), then the core's own MDP heartbeats. With CURVE
(``TransportConfig.security``) the loop also answers the ZAP handler.
"""

from __future__ import annotations

import concurrent.futures
import logging
import select
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future

import zmq

import mdp_core
from mdp_core import Event

from ._runner import Runner
from .engine import EngineViews, RouterEngine
from .glue import (
    TransportConfig,
    bind_endpoints,
    close_broker,
    open_broker,
    timeout_ms,
)

__all__ = ["Broker"]

log = logging.getLogger("mdp_zmq.broker")

_POLLIN = int(zmq.POLLIN)
_FD = int(zmq.FD)
_EVENTS = int(zmq.EVENTS)
_backend_get = zmq.backend.Socket.get  # without zmq.Socket.get's enum for ZMQ_EVENTS


class Broker(Runner, EngineViews):
    """An MDP broker on one ROUTER socket bound to ``endpoints``.

    The socket is bound in the constructor (``endpoints`` then holds the
    resolved addresses, so ``tcp://127.0.0.1:*`` shows its port). ``run()``
    serves until :meth:`close` (from any thread) or, when run in the main
    thread, SIGINT/SIGTERM; on shutdown every live worker gets DISCONNECT
    and the socket closes with a bounded linger. ``on_event`` is called in
    the broker's thread with every core event (after it is logged; an
    exception it raises is logged and ignored). ``metrics`` (a
    :class:`mdp_core.BrokerMetrics`) is fed every core event, in the
    broker's thread, and makes the core time each request
    (``Broker(timed=True)``); read it with :meth:`metrics_snapshot`. The turn between two polls
    is :class:`~mdp_zmq.engine.RouterEngine`'s, as in every driver.

    With ``transport.security`` (a broker's :class:`~mdp_zmq.glue.Security`)
    every connection is CURVE: keys not in its allow-list are refused at
    the handshake (logged, rate-limited), and each message reaches the
    core with its sender's identity. The ZAP handler is bound in the
    broker's context, which is then a new one unless ``context`` is given
    (one secured broker per context); the broker terminates a context it
    made when it stops.

    Raises ``zmq.ZMQError`` if an endpoint cannot be bound (or a ZAP
    handler is already bound in ``context``), ValueError if there is no
    endpoint or one is empty, TypeError if one is not a str.
    """

    _name = "broker"
    _log = log

    def __init__(
        self,
        endpoints: str | Sequence[str],
        config: mdp_core.BrokerConfig | None = None,
        *,
        transport: TransportConfig | None = None,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
        on_event: Callable[[Event], None] | None = None,
        metrics: mdp_core.BrokerMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        endpoints = bind_endpoints(endpoints)
        self.core = mdp_core.Broker(config, timed=metrics is not None)
        self.metrics = metrics
        # Snapshots asked for by other threads, taken by the loop between
        # turns (the core is not thread-safe); None once the loop is over.
        self._asks: list[Future[mdp_core.MetricsSnapshot]] | None = []
        self._loop_ident: int | None = None
        self.transport = transport if transport is not None else TransportConfig()
        self.clock = clock
        (self.context, self._own_context, self._zap, self._router, self._monitor,
         self.endpoints) = open_broker(context, endpoints, self.transport)
        self.engine = RouterEngine(self.core, self._router, self._monitor, self.transport,
                                   log=log, clock=clock, on_event=on_event, metrics=metrics,
                                   zap=self._zap)
        super().__init__()  # after the bind: nothing to release if it fails

    # --------------------------------------------------------------- public

    def metrics_snapshot(self, timeout: float = 5.0) -> mdp_core.MetricsSnapshot:
        """The broker's metrics now (:meth:`mdp_core.BrokerMetrics.snapshot`).

        Thread-safe: asked from another thread while the broker serves (or
        shuts down), the broker's thread takes it between two loop turns and
        this waits for it. Raises RuntimeError if the broker has no
        ``metrics``, TimeoutError if no snapshot came within ``timeout`` s.
        """
        metrics = self.metrics
        if metrics is None:
            raise RuntimeError("this broker was made without metrics=")
        ask: Future[mdp_core.MetricsSnapshot] = Future()
        with self._lock:
            asks = self._asks
            # Not started or shut down, or asked by the loop itself (on_event):
            # no other thread is using the core now.
            direct = (asks is None or not (self._running or self._closed)
                      or threading.get_ident() == self._loop_ident)
            if not direct:
                asks.append(ask)  # type: ignore[union-attr]
        if direct:
            return metrics.snapshot(self.core)
        self._waker.wake()
        try:
            return ask.result(timeout)
        except concurrent.futures.TimeoutError:  # not the builtin one before Python 3.11
            raise TimeoutError(f"no metrics snapshot from the broker in {timeout:g} s") from None

    def _answer_asks(self, final: bool = False) -> None:
        """Take the snapshots other threads wait for (in the broker's thread);
        ``final``: the loop is over, later asks read the core directly."""
        with self._lock:
            asks = self._asks
            self._asks = None if final else []
        if asks and self.metrics is not None:
            snapshot = self.metrics.snapshot(self.core)
            for ask in asks:
                ask.set_result(snapshot)

    def _prepare(self) -> None:
        log.info("broker listening on %s", ", ".join(self.endpoints))

    # --------------------------------------------------------------- loop

    def _loop(self) -> None:
        engine, router, monitor, clock = self.engine, self._router, self._monitor, self.clock
        waker = self._waker.fileno()
        zap = self._zap.socket if self._zap is not None else None
        # A poll(2) on the sockets' zmq.FD, not zmq_poll: zmq_poll makes a
        # first non-blocking pass and asks every socket's ZMQ_EVENTS before
        # and after it blocks, about ten syscalls per wake-up where this
        # needs two (strace, docs/performance.md). A zmq.FD only says that
        # the socket's mailbox has news, and any call into the socket may
        # take that news: so each socket is left in a state where its fd is
        # the whole truth before the poll (the end of the loop's body).
        router_fd, monitor_fd = int(router.get(_FD)), int(monitor.get(_FD))
        poller = select.poll()
        for fd in (router_fd, monitor_fd, waker):
            poller.register(fd, _POLLIN)
        zap_fd = -1
        if zap is not None:
            zap_fd = int(zap.get(_FD))
            poller.register(zap_fd, _POLLIN)
        poll = poller.poll
        self._loop_ident = threading.get_ident()
        engine.monitor_ready()  # from here on the monitor is read to zmq.Again
        readable = True  # the ROUTER may hold messages from before the loop
        zap_more = zap is not None  # so may the ZAP socket
        while not self._closing:
            # One deadline per turn: one that the messages read below bring
            # forward is met on the next turn (its poll won't wait).
            wake = engine.wake_at()
            wait = 0 if readable or zap_more else timeout_ms(wake, clock())
            router_ready, zap_ready = readable, zap_more
            monitor_ready = woken = False
            for fd, _ in poll(-1 if wait is None else wait):
                if fd == router_fd:
                    router_ready = True
                elif fd == monitor_fd:
                    monitor_ready = True
                elif fd == zap_fd:
                    zap_ready = True
                else:
                    woken = True
            if zap_ready:
                engine.zap_ready()
            if monitor_ready:
                engine.monitor_ready()
            drained = engine.turn(clock(), router_ready)
            if woken:
                self._waker.clear()
                if self._asks:
                    self._answer_asks()
            # The turn's sends may have taken a "message arrived" note from
            # the ROUTER's mailbox, and a turn reads one message unless more
            # were known to wait: pending() asks (one ZMQ_EVENTS). The
            # monitor is always read to zmq.Again, so its fd tells the
            # truth; the ZAP socket, read a batch at a time, is asked the
            # same way, after a turn that read it (nothing else calls into it).
            readable = not drained or engine.pending()
            zap_more = zap_ready and zap is not None and bool(_backend_get(zap, _EVENTS) & _POLLIN)

    # --------------------------------------------------------------- shutdown

    def _shutdown(self) -> None:
        if not self._finish():
            return
        try:
            self.engine.close(self.clock())
        finally:
            close_broker(self.context, self._own_context, self._zap, self._router,
                         self._monitor)
            self._answer_asks(final=True)
            self._waker.close()
            log.info("broker stopped")
