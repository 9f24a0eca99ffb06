"""Async driver for :class:`mdp_core.Broker` (anyio: trio or asyncio).

Two tasks: the *pump* owns the ROUTER (waits for it, reads every waiting
message into the core, ticks the core's timers, sends what it queued) and
a *monitor* task reads the ROUTER's monitor into the
:class:`~mdp_zmq.glue.ConnectionTracker` and wakes the pump when a peer's
connection is gone. Dead peers are found in the same layers as by the
blocking broker: monitor DISCONNECTED + ``zmq.SRCFD``, ZMTP heartbeats
(which end in the same DISCONNECTED), ``ROUTER_MANDATORY`` (EHOSTUNREACH
on send), then the core's own MDP heartbeats.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import anyio
import zmq
from anyio.abc import TaskStatus
from mdp_zmq.glue import (
    ConnectionTracker,
    MonitorEvent,
    TransportConfig,
    drain_monitor,
    log_event,
    make_router,
    recv_routed,
    send_frames,
)

import mdp_core
from mdp_core import Event

from ._background import Background, plain_interrupt
from ._pump import Pump, close_monitor_socket, close_socket, make_pump, watch_monitor

__all__ = ["Broker"]

log = logging.getLogger("mdp_async.broker")

#: Messages read per turn before the other tasks get a turn.
BATCH = 256
#: Turns a known loss may wait for the ROUTER to be emptied (busy broker).
MAX_LOSS_DEFERRAL = 4

_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)
_ACCEPTED = int(zmq.EVENT_ACCEPTED)
_DISCONNECTED = int(zmq.EVENT_DISCONNECTED)


class Broker(Background):
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
    it raises is logged and ignored. Raises ``zmq.ZMQError`` if an endpoint cannot be bound,
    ValueError if there is none.
    """

    def __init__(
        self,
        endpoints: str | Sequence[str],
        config: mdp_core.BrokerConfig | None = None,
        *,
        transport: TransportConfig | None = None,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
        on_event: Callable[[Event], None] | None = None,
    ) -> None:
        if isinstance(endpoints, str):
            endpoints = [endpoints]
        self.core = mdp_core.Broker(config)
        self.transport = transport if transport is not None else TransportConfig()
        self.context = context if context is not None else zmq.Context.instance()
        self.on_event = on_event
        self.tracker = ConnectionTracker()
        self.dropped = 0  # messages dropped because a peer's send queue was full
        self._router, self._monitor, self.endpoints = make_router(
            self.context, endpoints, self.transport)
        self._pump: Pump | None = None  # made in serve(): it needs the running loop
        self._lost: dict[bytes, None] = {}  # peers lost, in order, not yet told to the core
        self._lost_turns = 0
        self._deadline: float | None = None
        self._served = False

    @property
    def endpoint(self) -> str:
        """The first bound endpoint (resolved)."""
        return self.endpoints[0]

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
        self._pump = make_pump(self._router)
        log.info("broker listening on %s", ", ".join(self.endpoints))
        try:
            with plain_interrupt():
                async with anyio.create_task_group() as tg:
                    tg.start_soon(watch_monitor, self._monitor, self._on_monitor)
                    task_status.started()
                    await self._pump.run(self._turn)
        finally:
            self._shutdown()

    # --------------------------------------------------------------- the pump

    def _turn(self, now: float) -> tuple[bool, float | None]:
        """Read, feed, tick, send, report (see :data:`~mdp_async._pump.Turn`)."""
        core = self.core
        drained = self._read(now)
        if self._lost:
            self._lost_turns += 1
            if drained or self._lost_turns > MAX_LOSS_DEFERRAL:
                self._apply_losses(now)
        deadline = self._deadline
        if deadline is not None and now >= deadline:
            core.tick(now)
        self._flush(now)
        self._report()
        # One next_deadline() per turn, after everything this turn changed.
        self._deadline = deadline = core.next_deadline()
        return drained, deadline

    def _read(self, now: float) -> bool:
        """Feed up to BATCH messages to the core; True if the ROUTER was emptied."""
        core, tracker, router, lost = self.core, self.tracker, self._router, self._lost
        events = router.get
        for _ in range(BATCH):
            item = recv_routed(router)
            if item is None:
                return True
            peer, frames, fd = item
            if fd >= 0 and not tracker.knows(peer, fd):
                # A routing id new on this fd: read the monitor first, so an fd
                # the kernel reused for this peer is not taken for the old one.
                self._on_monitor(drain_monitor(self._monitor))
                moved = tracker.connection_of(peer) is not None or peer in lost
                if tracker.bind(peer, fd):
                    lost.setdefault(peer)  # queued from a closed connection: message first
                elif moved:
                    # The same routing id on a new connection (a peer that
                    # chose its own): the old session ended before this message.
                    lost.pop(peer, None)
                    core.connection_lost(peer, now)
            core.receive(peer, frames, now)
            if not int(events(_EVENTS)) & _POLLIN:
                return True
        return False

    def _on_monitor(self, events: list[MonitorEvent]) -> None:
        """Feed the tracker; wake the pump if a peer's connection is gone."""
        tracker, lost = self.tracker, self._lost
        before = len(lost)
        for ev in events:
            if ev.event == _ACCEPTED:
                gone = tracker.accepted(ev.value)
            elif ev.event == _DISCONNECTED:
                gone = tracker.disconnected(ev.value)
            else:  # pragma: no cover - not subscribed
                continue
            for peer in gone:
                lost.setdefault(peer)
        if len(lost) > before and self._pump is not None:
            self._pump.wake()

    def _apply_losses(self, now: float) -> None:
        """Tell the core about lost peers, after their queued messages were read.

        libzmq queues a connection's last messages before it reports the
        disconnect, so a worker's last FINAL counts before its loss does.
        """
        lost, self._lost = self._lost, {}
        self._lost_turns = 0
        for peer in lost:
            self.core.connection_lost(peer, now)

    def _flush(self, now: float) -> None:
        core, router = self.core, self._router
        while out := core.outgoing():
            for peer, frames in out:
                try:
                    send_frames(router, [peer, *frames])
                except zmq.Again:
                    self._send_failed(peer)
                except zmq.ZMQError as exc:
                    if exc.errno != zmq.EHOSTUNREACH:
                        raise
                    # ROUTER_MANDATORY: the peer is gone (layer 1's backstop).
                    self.tracker.forget(peer)
                    core.connection_lost(peer, now)

    def _send_failed(self, peer: bytes) -> None:
        """The one place a send refused for a full queue ends up."""
        self.dropped += 1
        log.warning("send queue to %s full; message dropped", peer.hex())

    def _report(self) -> None:
        for event in self.core.events():
            log_event(log, event)
            if self.on_event is not None:
                try:
                    self.on_event(event)
                except Exception:  # a bad callback must not take the broker down
                    log.exception("on_event callback failed for %s", type(event).__name__)

    def _shutdown(self) -> None:
        """DISCONNECT every worker, send it, close (no await: safe while cancelled)."""
        router = self._router
        try:
            if not router.closed:
                now = anyio.current_time()
                self.core.close(now)
                try:
                    self._flush(now)
                except zmq.ZMQError as exc:  # pragma: no cover - best effort
                    log.debug("flush at shutdown failed: %s", exc)
                self._report()
        finally:
            close_monitor_socket(router, self._monitor)
            close_socket(router, self._pump, self.transport.linger)
            log.info("broker stopped")
