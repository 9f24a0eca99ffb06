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

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import zmq

import mdp_core
from mdp_core import Event

from ._runner import Runner
from .engine import RouterEngine
from .glue import (
    ConnectionTracker,
    LogLimiter,
    TransportConfig,
    broker_context,
    close_monitor,
    make_router,
    start_zap,
    timeout_ms,
)

__all__ = ["Broker"]

log = logging.getLogger("mdp_zmq.broker")

_POLLIN = int(zmq.POLLIN)


class Broker(Runner):
    """An MDP broker on one ROUTER socket bound to ``endpoints``.

    The socket is bound in the constructor (``endpoints`` then holds the
    resolved addresses, so ``tcp://127.0.0.1:*`` shows its port). ``run()``
    serves until :meth:`close` (from any thread) or, when run in the main
    thread, SIGINT/SIGTERM; on shutdown every live worker gets DISCONNECT
    and the socket closes with a bounded linger. ``on_event`` is called in
    the broker's thread with every core event (after it is logged; an
    exception it raises is logged and ignored). The turn between two polls
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
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if isinstance(endpoints, str):
            endpoints = [endpoints]
        elif not isinstance(endpoints, Sequence) or isinstance(endpoints, (bytes, bytearray)):
            raise TypeError("endpoints must be a str or a sequence of str, not "
                            f"{type(endpoints).__name__}")
        self.core = mdp_core.Broker(config)
        self.transport = transport if transport is not None else TransportConfig()
        self.context, self._own_context = broker_context(context, self.transport)
        self.clock = clock
        try:
            self._zap = start_zap(self.context, self.transport)
            try:
                self._router, self._monitor, self.endpoints = make_router(
                    self.context, endpoints, self.transport, zap=self._zap)
            except BaseException:
                if self._zap is not None:
                    self._zap.close()
                raise
        except BaseException:
            if self._own_context:
                self.context.term()
            raise
        self.engine = RouterEngine(self.core, self._router, self._monitor, self.transport,
                                   log=log, clock=clock, on_event=on_event, zap=self._zap)
        super().__init__()  # after the bind: nothing to release if it fails

    # --------------------------------------------------------------- public

    @property
    def endpoint(self) -> str:
        """The first bound endpoint (resolved)."""
        return self.endpoints[0]

    @property
    def tracker(self) -> ConnectionTracker:
        """Which routing id came on which connection (the engine's)."""
        return self.engine.tracker

    @property
    def log_limiter(self) -> LogLimiter:
        """Rate-limits this broker's repeated warnings (the engine's; settable)."""
        return self.engine.log_limiter

    @log_limiter.setter
    def log_limiter(self, limiter: LogLimiter) -> None:
        """Use another limiter (tests shorten its window)."""
        self.engine.log_limiter = limiter

    @property
    def on_event(self) -> Callable[[Event], None] | None:
        """The callback given every core event (settable before :meth:`run`)."""
        return self.engine.on_event

    @on_event.setter
    def on_event(self, callback: Callable[[Event], None] | None) -> None:
        """Set the callback (None: none)."""
        self.engine.on_event = callback

    def _prepare(self) -> None:
        log.info("broker listening on %s", ", ".join(self.endpoints))

    # --------------------------------------------------------------- loop

    def _loop(self) -> None:
        engine, router, monitor, clock = self.engine, self._router, self._monitor, self.clock
        waker = self._waker.fileno()
        # zmq.zmq_poll on a list built once: what zmq.Poller.poll does,
        # without its per-call argument handling and the dict built from its
        # result. With one request in flight the loop turns once per message.
        items: list[tuple[Any, int]] = [(router, _POLLIN), (monitor, _POLLIN), (waker, _POLLIN)]
        zap = self._zap.socket if self._zap is not None else None
        if zap is not None:
            items.append((zap, _POLLIN))
        poll = zmq.zmq_poll
        while not self._closing:
            # One deadline per turn: one that the messages read below bring
            # forward is met on the next turn (its poll won't wait).
            wait = timeout_ms(engine.wake_at(), clock())
            router_ready = monitor_ready = woken = False
            for item, _ in poll(items, -1 if wait is None else wait):
                if item is router:
                    router_ready = True
                elif item is monitor:
                    monitor_ready = True
                elif item is zap:
                    engine.zap_ready()
                else:
                    woken = True
            if monitor_ready:
                engine.monitor_ready()
            engine.turn(clock(), router_ready)
            if woken:
                self._waker.clear()

    # --------------------------------------------------------------- shutdown

    def _shutdown(self) -> None:
        if not self._finish():
            return
        try:
            self.engine.close(self.clock())
        finally:
            close_monitor(self._router, self._monitor)
            self._router.close()  # LINGER from TransportConfig bounds this
            if self._zap is not None:
                self._zap.close()  # after the ROUTER: no handshake is left unchecked
            if self._own_context:
                self.context.term()
            self._waker.close()
            log.info("broker stopped")
