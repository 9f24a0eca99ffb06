"""Blocking pyzmq driver for :class:`mdp_core.Broker`.

One ROUTER socket serves clients and workers of every dialect. The loop
polls the ROUTER, its monitor and a wake-up fd with the timeout the core
asks for (``next_deadline()``), feeds the core, sends what it queued and
reports its events. Dead peers are found in layers (DESIGN.md): monitor
DISCONNECTED + ``zmq.SRCFD`` through :class:`ConnectionTracker`, ZMTP
heartbeats (which end in the same DISCONNECTED), ``ROUTER_MANDATORY``
(EHOSTUNREACH on send), then the core's own MDP heartbeats.
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
from .engine import EngineViews, RouterEngine
from .glue import (
    TransportConfig,
    close_monitor,
    make_router,
    timeout_ms,
)

__all__ = ["Broker"]

log = logging.getLogger("mdp_zmq.broker")

_POLLIN = int(zmq.POLLIN)


class Broker(Runner, EngineViews):
    """An MDP broker on one ROUTER socket bound to ``endpoints``.

    The socket is bound in the constructor (``endpoints`` then holds the
    resolved addresses, so ``tcp://127.0.0.1:*`` shows its port). ``run()``
    serves until :meth:`close` (from any thread) or, when run in the main
    thread, SIGINT/SIGTERM; on shutdown every live worker gets DISCONNECT
    and the socket closes with a bounded linger. ``on_event`` is called in
    the broker's thread with every core event (after it is logged; an
    exception it raises is logged and ignored). The turn between two polls
    is :class:`~mdp_zmq.engine.RouterEngine`'s, as in every driver. Raises
    ``zmq.ZMQError`` if an endpoint cannot be bound, ValueError if there is
    none or one is empty, TypeError if one is not a str.
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
        self.context = context if context is not None else zmq.Context.instance()
        self.clock = clock
        self._router, self._monitor, self.endpoints = make_router(
            self.context, endpoints, self.transport
        )
        self.engine = RouterEngine(self.core, self._router, self._monitor, self.transport,
                                   log=log, clock=clock, on_event=on_event)
        super().__init__()  # after the bind: nothing to release if it fails

    # --------------------------------------------------------------- public

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
            self._waker.close()
            log.info("broker stopped")
