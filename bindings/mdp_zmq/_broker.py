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

import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

import zmq

import mdp_core
from mdp_core import Event

from ._runner import Runner
from .glue import (
    ConnectionTracker,
    LogLimiter,
    TransportConfig,
    close_monitor,
    drain_monitor,
    log_event,
    make_router,
    recv_routed,
    send_frames,
    shorten,
    timeout_ms,
)

__all__ = ["Broker"]

log = logging.getLogger("mdp_zmq.broker")

#: Messages read per loop turn before timers, monitor and sends get a turn.
BATCH = 256
#: Loop turns a known loss may wait for the ROUTER to be emptied (busy broker).
MAX_LOSS_DEFERRAL = 4

_POLLIN = int(zmq.POLLIN)
_EVENTS = int(zmq.EVENTS)


class Broker(Runner):
    """An MDP broker on one ROUTER socket bound to ``endpoints``.

    The socket is bound in the constructor (``endpoints`` then holds the
    resolved addresses, so ``tcp://127.0.0.1:*`` shows its port). ``run()``
    serves until :meth:`close` (from any thread) or, when run in the main
    thread, SIGINT/SIGTERM; on shutdown every live worker gets DISCONNECT
    and the socket closes with a bounded linger. ``on_event`` is called in the broker's thread
    with every core event (after it is logged; an exception it raises is
    logged and ignored). ``metrics`` (a :class:`mdp_core.BrokerMetrics`)
    is fed every core event, in the broker's thread, and makes the core
    time each request (``Broker(timed=True)``); read it with
    :meth:`metrics_snapshot`. Raises ``zmq.ZMQError`` if an endpoint cannot be
    bound, ValueError if there is none or one is empty, TypeError if one
    is not a str.
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
        if isinstance(endpoints, str):
            endpoints = [endpoints]
        elif not isinstance(endpoints, Sequence) or isinstance(endpoints, (bytes, bytearray)):
            raise TypeError("endpoints must be a str or a sequence of str, not "
                            f"{type(endpoints).__name__}")
        self.core = mdp_core.Broker(
            config=config if config is not None else mdp_core.BrokerConfig(),
            timed=metrics is not None,
        )
        self.metrics = metrics
        # Snapshots asked for by other threads, taken by the loop between
        # turns (the core is not thread-safe); None once the loop is over.
        self._asks: list[Future[mdp_core.MetricsSnapshot]] | None = []
        self._loop_ident: int | None = None
        self.transport = transport if transport is not None else TransportConfig()
        self.context = context if context is not None else zmq.Context.instance()
        self.on_event = on_event
        self.clock = clock
        self.tracker = ConnectionTracker()
        #: Rate-limits this broker's repeated warnings (see LogLimiter).
        self.log_limiter = LogLimiter(clock=clock)
        self._lost: dict[bytes, None] = {}  # peers lost, in order, not yet told to the core
        self._lost_turns = 0
        self._router, self._monitor, self.endpoints = make_router(
            self.context, endpoints, self.transport
        )
        super().__init__()  # after the bind: nothing to release if it fails

    # --------------------------------------------------------------- public

    @property
    def endpoint(self) -> str:
        """The first bound endpoint (resolved)."""
        return self.endpoints[0]

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
        core, router, monitor, clock = self.core, self._router, self._monitor, self.clock
        waker = self._waker.fileno()
        # zmq.zmq_poll on a list built once: what zmq.Poller.poll does,
        # without its per-call argument handling and the dict built from its
        # result. With one request in flight the loop turns once per message.
        items: list[tuple[Any, int]] = [(router, _POLLIN), (monitor, _POLLIN), (waker, _POLLIN)]
        poll, next_deadline, limiter = zmq.zmq_poll, core.next_deadline, self.log_limiter
        self._loop_ident = threading.get_ident()
        while not self._closing:
            # One next_deadline() per turn: a deadline that the messages read
            # below bring forward is met on the next turn (its poll won't wait).
            deadline = wake_at = next_deadline()
            due = limiter.next_due  # a summary of suppressed warnings to write
            if due is not None and (wake_at is None or due < wake_at):
                wake_at = due
            wait = timeout_ms(wake_at, clock())
            timeout = -1 if wait is None else wait
            router_ready = monitor_ready = woken = False
            for item, _ in poll(items, timeout):
                if item is router:
                    router_ready = True
                elif item is monitor:
                    monitor_ready = True
                else:
                    woken = True
            now = clock()
            if monitor_ready:
                self._drain_monitor()
            drained = self._read(now) if router_ready or self._lost else True
            if self._lost:
                self._lost_turns += 1
                if drained or self._lost_turns > MAX_LOSS_DEFERRAL:
                    self._apply_losses(now)
            if deadline is not None and now >= deadline:
                core.tick(now)
            self._flush(now)
            self._report()
            if woken:
                self._waker.clear()
                if self._asks:
                    self._answer_asks()

    def _read(self, now: float) -> bool:
        """Read up to BATCH messages; True if the socket was emptied."""
        core, tracker, router = self.core, self.tracker, self._router
        events = router.get
        for _ in range(BATCH):
            item = recv_routed(router)
            if item is None:
                return True
            peer, frames, fd = item
            if fd < 0 or tracker.knows(peer, fd) or self._admit(peer, fd, now):
                core.receive(peer, frames, now)
            # Ask ZMQ_EVENTS whether another message waits rather than let
            # the next recv fail: a raised zmq.Again costs a few us more,
            # paid once per message when requests come one at a time.
            if not int(events(_EVENTS)) & _POLLIN:
                return True
        return False

    def _admit(self, peer: bytes, fd: int, now: float) -> bool:
        """Bind a routing id new to the tracker on ``fd``; False: drop the message."""
        tracker = self.tracker
        # Read the monitor first, so an fd reused by this new peer is not
        # confused with the old one.
        self._drain_monitor()
        rival = tracker.rival(peer, fd)
        if rival is not None and not self.transport.router_handover:
            # libzmq ignores such a connection without handover; should one
            # get through anyway, it must not end or take over the session.
            if self.log_limiter.allow(log, logging.WARNING, "routing id claimed twice"):
                log.warning("routing id %s came on a new connection (fd %d) while its "
                            "connection on fd %d is open; message dropped",
                            shorten(peer), fd, rival[0])
            return False
        if tracker.bind(peer, fd):
            # Still queued from a closed connection: feed it, then the loss.
            self._lost.setdefault(peer)
        elif rival is not None or peer in self._lost:
            # The same routing id on a new connection (handed over, or after
            # the old one closed): the old session is over, before this message.
            if rival is not None:
                log.info("routing id %s handed over from fd %d to fd %d; its session ends",
                         shorten(peer), rival[0], fd)
            self._lost.pop(peer, None)
            self.core.connection_lost(peer, now)
        return True

    def _drain_monitor(self) -> None:
        """Feed the tracker every monitor event; collect the peers lost."""
        tracker, lost = self.tracker, self._lost
        for ev in drain_monitor(self._monitor):
            if ev.event == zmq.EVENT_ACCEPTED:
                gone = tracker.accepted(ev.value)
            elif ev.event == zmq.EVENT_DISCONNECTED:
                gone = tracker.disconnected(ev.value)
            else:  # pragma: no cover - not subscribed
                continue
            for peer in gone:
                lost.setdefault(peer)

    def _apply_losses(self, now: float) -> None:
        """Tell the core about lost peers, once their last messages are read.

        libzmq queues a connection's messages before it reports the
        disconnect, so reading the ROUTER until it is empty first lets a
        worker's last FINAL (or DISCONNECT) count before its loss does, and
        the request is not re-dispatched for nothing.
        """
        lost, self._lost = self._lost, {}
        self._lost_turns = 0
        for peer in lost:
            self.core.connection_lost(peer, now)

    def _flush(self, now: float) -> None:
        core, router = self.core, self._router
        while True:
            out = core.outgoing()
            if not out:
                return
            for peer, frames in out:
                try:
                    send_frames(router, [peer, *frames])
                except zmq.Again:
                    # The peer's queue is full: the core decides what that
                    # means (requeue a REQUEST, RequestUndelivered for a reply)
                    # before _report() settles this turn's events.
                    core.send_failed(peer, frames, now)
                except zmq.ZMQError as exc:
                    if exc.errno != zmq.EHOSTUNREACH:
                        raise
                    # ROUTER_MANDATORY: the peer is gone (layer 1's backstop).
                    self.tracker.forget(peer)
                    core.connection_lost(peer, now)

    def _report(self) -> None:
        limiter = self.log_limiter
        events = self.core.events()
        if self.metrics is not None:
            self.metrics.observe(events)
        for event in events:
            log_event(log, event, limiter)
            if self.on_event is not None:
                try:
                    self.on_event(event)
                except Exception:  # a bad callback must not take the broker down
                    log.exception("on_event callback failed for %s", type(event).__name__)
        limiter.flush()

    # --------------------------------------------------------------- shutdown

    def _shutdown(self) -> None:
        if not self._finish():
            return
        try:
            if not self._router.closed:
                now = self.clock()
                self.core.close(now)
                try:
                    self._flush(now)
                except zmq.ZMQError as exc:  # pragma: no cover - best effort
                    log.debug("flush at shutdown failed: %s", exc)
                self._report()
        finally:
            close_monitor(self._router, self._monitor)
            self._router.close()  # LINGER from TransportConfig bounds this
            self._answer_asks(final=True)
            self._waker.close()
            self.log_limiter.flush(final=True)
            log.info("broker stopped")
