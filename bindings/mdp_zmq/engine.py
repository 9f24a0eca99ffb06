"""The synchronous I/O turns every driver shares (blocking, async, gevent).

A driver owns the waiting: ``zmq_poll`` in a thread, a task per socket on
anyio, a greenlet on gevent. What happens once a socket may be readable is
the same everywhere and lives here: :class:`RouterEngine` for a broker's
ROUTER, :class:`DealerEngine` for a worker's or client's DEALER.

A broker's turn (:class:`RouterEngine`):

* read a message, or what the ROUTER holds once it is known to hold more
  (a batch at most, so timers and sends get a turn), and feed it to
  :class:`mdp_core.Broker`, each message with its connection checked by
  the :class:`~mdp_zmq.glue.ConnectionTracker`;
* tell the core about lost connections once their last messages are read
  (libzmq queues a connection's messages before it reports the drop, so a
  worker's last FINAL counts before its loss does);
* tick the core when its deadline has come, once the ROUTER has been
  read to the end (at most :data:`MAX_TICK_DEFERRAL` turns later), so a
  backlog's heartbeats count before silence is judged;
* send what the core queued without blocking, reporting a refused send
  (a full queue) to ``Broker.send_failed`` and a peer that is gone
  (``ROUTER_MANDATORY``'s EHOSTUNREACH) to ``Broker.connection_lost``;
* log and hand on the core's events, rate-limited;
* then, before the driver waits, one ``ZMQ_EVENTS`` says whether messages
  are waiting (:meth:`RouterEngine.pending`), which the next turn reads;
* with CURVE (``TransportConfig.security``): pass each message's
  authenticated identity (its ``User-Id``) to the core, answer the ZAP
  handler's requests (:meth:`RouterEngine.zap_ready`) and log refused
  keys and failed handshakes, rate-limited.

A worker's or client's turn (:class:`DealerEngine`): read a batch into the
core, tell it what the DEALER's monitor saw (a completed handshake, one the
broker refused, a dropped connection) once the socket is empty, tick it when
due, and send what it queued, reporting a refused send to its
``send_failed``. Acting on the core's events (a worker's job, a client's
reply or reset) is the driver's, between the turn and the next flush.

Nothing here waits or decides anything about MDP: the core decides.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import zmq

import mdp_core
from mdp_core import Event

from .glue import (
    ConnectionTracker,
    LogLimiter,
    MonitorEvent,
    TransportConfig,
    ZapHandler,
    drain_monitor,
    flush_dealer,
    log_event,
    recv_routed,
    recv_routed_identified,
    send_routed,
    shorten,
)

__all__ = ["BATCH", "DEALER_BATCH", "MAX_LOSS_DEFERRAL", "MAX_TICK_DEFERRAL", "DealerEngine",
           "EngineViews",
           "RouterEngine"]

#: Messages read per turn before timers, the monitor and sends get a turn.
BATCH = 256
#: Turns a known loss may wait for the ROUTER to be emptied (busy broker).
MAX_LOSS_DEFERRAL = 4
#: Turns the core's timers may wait for the ROUTER to be emptied: after a
#: stall the queue holds the heartbeats that prove workers alive (10,000
#: workers queue ~40 batches in 2.5 s), but a broker that never catches up
#: must still send heartbeats and expire.
MAX_TICK_DEFERRAL = 64
#: Messages a DEALER's turn reads before its timers and sends get a turn.
DEALER_BATCH = 64

_POLLIN = int(zmq.POLLIN)
_EVENTS = int(zmq.EVENTS)
#: pyzmq's getsockopt without ``zmq.Socket.get``'s wrapping of ZMQ_EVENTS in
#: a flag enum (it still looks the option up in one: ~1.4 us a call).
_backend_get = zmq.backend.Socket.get
_NOBLOCK = int(zmq.NOBLOCK)
_ACCEPTED = int(zmq.EVENT_ACCEPTED)
_DISCONNECTED = int(zmq.EVENT_DISCONNECTED)
_HANDSHAKE = int(zmq.EVENT_HANDSHAKE_SUCCEEDED)
_HANDSHAKE_FAILED = int(zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL)
_HANDSHAKE_REFUSED = int(zmq.EVENT_HANDSHAKE_FAILED_AUTH)
#: Why a handshake failed (monitor values of HANDSHAKE_FAILED_PROTOCOL).
_HANDSHAKE_WHY = {
    int(zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH): "a peer without CURVE",
    int(zmq.PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC): "a peer whose CURVE handshake did not "
                                                "decrypt (another broker key?)",
}


class RouterEngine:
    """Runs a :class:`mdp_core.Broker` on a ROUTER socket and its monitor.

    The driver calls :meth:`monitor_ready` when the monitor may be readable,
    :meth:`turn` when the ROUTER may be readable or :meth:`wake_at` has
    come, :meth:`pending` after a turn and before it waits on the ROUTER's
    fd, :meth:`zap_ready` when the ZAP handler's socket may be readable
    (with ``zap``, which a secured ``transport`` needs), and :meth:`close`
    once at shutdown. All of them run in the driver's one I/O thread
    (task, greenlet) and never block. ``on_event`` gets every core event
    after it is logged; an exception it raises is logged and ignored.
    ``metrics`` (a :class:`mdp_core.BrokerMetrics`, for a core made with
    ``timed=True``) is fed every batch of events. ``tracker`` and
    ``log_limiter`` are public for inspection.

    Raises ValueError if ``transport.security`` is set without ``zap``.
    """

    def __init__(
        self,
        core: mdp_core.Broker,
        router: zmq.Socket[bytes],
        monitor: zmq.Socket[bytes],
        transport: TransportConfig,
        *,
        log: logging.Logger,
        clock: Callable[[], float],
        on_event: Callable[[Event], None] | None = None,
        metrics: mdp_core.BrokerMetrics | None = None,
        zap: ZapHandler | None = None,
    ) -> None:
        if transport.security is not None and zap is None:
            raise ValueError("a secured broker needs its ZapHandler")
        self.core = core
        self.router = router
        self.monitor = monitor
        self.transport = transport
        self.log = log
        self.on_event = on_event
        self.metrics = metrics
        self.tracker = ConnectionTracker()
        #: Rate-limits the broker's repeated warnings (see LogLimiter).
        self.log_limiter = LogLimiter(clock=clock)
        self._lost: dict[bytes, None] = {}  # peers lost, in order, not yet told to the core
        self._lost_turns = 0
        self._tick_turns = 0  # turns the due timers waited for the ROUTER to be emptied
        self._deadline: float | None = None
        self._wake: float | None = None  # what wake_at() last said
        # Messages are known to wait (pending() said so, or a batch ended
        # before the ROUTER was empty): the next turn reads until zmq.Again.
        # True at first: the ROUTER may hold messages from before the loop.
        self._queued = True
        #: The ZAP handler a secured broker answers (None without security).
        self.zap = zap
        # With CURVE every message carries its sender's identity for the core.
        self._read = self._read_identified if transport.security is not None else self._read_plain

    # ------------------------------------------------------------ the driver's calls

    def wake_at(self) -> float | None:
        """When :meth:`turn` must run at the latest, even with nothing to read.

        The core's next deadline (which the next turn acts on), or sooner a
        summary of suppressed log lines; None: only when something happens.
        """
        self._deadline = wake = self.core.next_deadline()
        due = self.log_limiter.next_due
        if due is not None and (wake is None or due < wake):
            wake = due
        self._wake = wake
        return wake

    def monitor_ready(self) -> bool:
        """Feed every monitor event waiting to the tracker; True if a peer was
        found lost, or a refused handshake it logged made a summary due before
        :meth:`wake_at` said (the driver then makes sure :meth:`turn` runs soon)."""
        return self.monitor_events(drain_monitor(self.monitor))

    def monitor_events(self, events: Iterable[MonitorEvent]) -> bool:
        """Like :meth:`monitor_ready`, for events a driver's own watcher read."""
        tracker, lost = self.tracker, self._lost
        before = len(lost)
        for ev in events:
            if ev.event == _ACCEPTED:
                gone = tracker.accepted(ev.value)
            elif ev.event == _DISCONNECTED:
                gone = tracker.disconnected(ev.value)
            elif ev.event == _HANDSHAKE_FAILED:
                self._handshake_failed(ev)
                continue
            else:  # pragma: no cover - not subscribed
                continue
            for peer in gone:
                lost.setdefault(peer)
        return len(lost) > before or self._summary_sooner()

    def zap_ready(self) -> bool:
        """Answer the ZAP requests waiting (a batch at most), logging each key
        refused (rate-limited); does nothing without a ZAP handler. True if a
        refusal it held back made a summary due before :meth:`wake_at` said
        (the driver then makes sure :meth:`turn` runs soon)."""
        zap, log = self.zap, self.log
        if zap is None:
            return False
        for refusal in zap.handle_waiting():
            if self.log_limiter.allow(log, logging.WARNING, "CURVE key refused"):
                log.warning("refused a CURVE key that is not on the allow-list, from %s: %s",
                            shorten(refusal.address), shorten(refusal.key))
        return self._summary_sooner()

    def _summary_sooner(self) -> bool:
        """A summary of suppressed lines is due before the driver's wait ends."""
        due, wake = self.log_limiter.next_due, self._wake
        return due is not None and (wake is None or due < wake)

    def turn(self, now: float, readable: bool = True) -> bool:
        """Read (if ``readable`` or a loss waits), tell losses, tick, send, report.

        Reads one message, or, once :meth:`pending` has found more waiting
        (or a loss waits to be told), up to a batch until the ROUTER is
        empty. Returns False if it stopped reading with messages left (call
        it again soon, after the other sockets had a turn); after True, ask
        :meth:`pending` before waiting on the ROUTER's ``zmq.FD``.
        """
        lost = self._lost
        batch = bool(lost) or self._queued
        if batch:
            drained = self._read(now, BATCH)
            self._queued = not drained
        else:
            if readable:
                # Sequential load (a request, then its reply) brings one
                # message per wake-up: asking for a second costs a syscall
                # per message, and pending() asks anyway once we have sent.
                self._read(now, 1)
            # A loss found while reading (a new peer on a reused fd) is told
            # only once the ROUTER is empty: read on first.
            drained = not lost
            self._queued = not drained
        if lost:
            self._lost_turns += 1
            if drained or self._lost_turns > MAX_LOSS_DEFERRAL:
                self._apply_losses(now)
        deadline = self._deadline
        if deadline is not None and now >= deadline:
            # Timers judge silence: read what has arrived first (after one
            # message read, ask whether more wait: a stalled broker's
            # backlog of heartbeats must count before anyone expires).
            empty = drained and (batch or not self.pending())
            if empty or self._tick_turns >= MAX_TICK_DEFERRAL:
                self._tick_turns = 0
                self.core.tick(now)
            else:
                self._tick_turns += 1
        self._flush(now)
        self._report()
        return drained

    def pending(self) -> bool:
        """Whether a message waits on the ROUTER (the next :meth:`turn` reads them all).

        One ``ZMQ_EVENTS``, which also leaves the ROUTER's ``zmq.FD`` telling
        the truth: a driver asks this after every turn that returned True and
        before it waits on that fd. The fd is edge-like (any call into the
        socket, a send included, may take the news that a message arrived),
        and a turn may leave messages unread (see :meth:`turn`).
        """
        self._queued = queued = bool(_backend_get(self.router, _EVENTS) & _POLLIN)
        return queued

    def close(self, now: float) -> None:
        """Shut the core down (every live worker gets DISCONNECT) and send that.

        Best effort: a send that fails at this point is logged at DEBUG.
        The driver closes the sockets afterwards.
        """
        if self.router.closed:
            return
        self.core.close(now)
        try:
            self._flush(now)
        except zmq.ZMQError as exc:  # pragma: no cover - best effort
            self.log.debug("flush at shutdown failed: %s", exc)
        self._report()
        self.log_limiter.flush(final=True)

    # ------------------------------------------------------------ internals

    def _handshake_failed(self, ev: MonitorEvent) -> None:
        log = self.log
        if self.log_limiter.allow(log, logging.WARNING, "handshake failed"):
            why = _HANDSHAKE_WHY.get(ev.value, f"a peer (protocol error {ev.value:#x})")
            log.warning("refused %s at the handshake on %s", why, shorten(ev.endpoint))

    def _read_plain(self, now: float, limit: int) -> bool:
        """Feed up to ``limit`` messages to the core; True if the ROUTER ran empty."""
        core, router = self.core, self.router
        knows = self.tracker.knows
        for _ in range(limit):
            item = recv_routed(router)
            if item is None:
                return True
            peer, frames, fd = item
            if fd < 0 or knows(peer, fd) or self._admit(peer, fd, now):
                core.receive(peer, frames, now)
        return False

    def _read_identified(self, now: float, limit: int) -> bool:
        """:meth:`_read_plain` with each message's identity (CURVE's User-Id)."""
        core, router = self.core, self.router
        knows = self.tracker.knows
        for _ in range(limit):
            item = recv_routed_identified(router)
            if item is None:
                return True
            peer, frames, fd, identity = item
            if fd < 0 or knows(peer, fd) or self._admit(peer, fd, now):
                core.receive(peer, frames, now, identity)
        return False

    def _admit(self, peer: bytes, fd: int, now: float) -> bool:
        """Bind a routing id new to the tracker on ``fd``; False: drop the message."""
        tracker, log = self.tracker, self.log
        # Read the monitor first, so an fd reused by this new peer is not
        # confused with the old one.
        self.monitor_ready()
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

    def _apply_losses(self, now: float) -> None:
        lost, self._lost = self._lost, {}
        self._lost_turns = 0
        for peer in lost:
            self.core.connection_lost(peer, now)

    def _flush(self, now: float) -> None:
        core, router = self.core, self.router
        while out := core.outgoing():
            for peer, frames in out:
                try:
                    send_routed(router, peer, frames)
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
        limiter, log, on_event = self.log_limiter, self.log, self.on_event
        events = self.core.events()
        if self.metrics is not None:
            self.metrics.observe(events)
        for event in events:
            log_event(log, event, limiter)
            if on_event is not None:
                try:
                    on_event(event)
                except Exception:  # a bad callback must not take the broker down
                    log.exception("on_event callback failed for %s", type(event).__name__)
        limiter.flush()


class EngineViews:
    """What every driver's ``Broker`` shows of itself over its :class:`RouterEngine`.

    A mixin: the class sets ``engine`` and ``endpoints`` (the resolved
    bound endpoints) in its constructor.
    """

    engine: RouterEngine
    endpoints: list[str]

    @property
    def endpoint(self) -> str:
        """The first bound endpoint (resolved)."""
        return self.endpoints[0]

    @property
    def tracker(self) -> ConnectionTracker:
        """Which routing id came on which connection."""
        return self.engine.tracker

    @property
    def log_limiter(self) -> LogLimiter:
        """Rate-limits this broker's repeated warnings (settable)."""
        return self.engine.log_limiter

    @log_limiter.setter
    def log_limiter(self, limiter: LogLimiter) -> None:
        """Use another limiter (tests shorten its window)."""
        self.engine.log_limiter = limiter

    @property
    def on_event(self) -> Callable[[Event], None] | None:
        """The callback given every core event (settable before serving)."""
        return self.engine.on_event

    @on_event.setter
    def on_event(self, callback: Callable[[Event], None] | None) -> None:
        """Set the callback (None: none)."""
        self.engine.on_event = callback


class DealerEngine:
    """Runs a :class:`mdp_core.Worker` or :class:`mdp_core.Client` on a DEALER.

    ``sock`` is the conversation's DEALER and ``monitor`` its monitor
    (``glue.make_dealer``); ``endpoint`` names the broker in log lines.
    The driver calls :meth:`monitor_ready` (or :meth:`monitor_events`)
    when the monitor may be readable, :meth:`turn` when the DEALER may be
    readable or the core's deadline has come, then acts on the core's
    events and calls :meth:`flush`. None of them blocks. One engine serves
    one socket; a new socket gets a new engine.

    :attr:`handshake`, :attr:`refused` and :attr:`dropped` hold what the
    monitor saw and the core has not been told yet: a completed handshake
    (``Client.connected``), one whose credentials the broker refused
    (``Client.handshake_refused``; libzmq's ``EVENT_HANDSHAKE_FAILED_AUTH``,
    logged: as a warning through ``log_limiter`` (a worker's, which keeps
    retrying), else at INFO once per socket (a client, whose failed request
    gives the reason)) and a dropped connection (``connection_lost``); a
    worker's core needs neither handshake input: they are only logged. They
    are told once the socket has been read to the end, because libzmq
    queues a connection's last messages (a broker's DISCONNECT, a reply)
    before it reports the drop; a refusal before the drop that follows it.
    """

    def __init__(
        self,
        core: mdp_core.Worker | mdp_core.Client,
        sock: zmq.Socket[bytes],
        monitor: zmq.Socket[bytes],
        *,
        log: logging.Logger,
        endpoint: str,
        log_limiter: LogLimiter | None = None,
    ) -> None:
        self.core = core
        self.sock = sock
        self.monitor = monitor
        self.log = log
        self.endpoint = endpoint
        #: The monitor saw a handshake the core has not been told of.
        self.handshake = False
        #: The monitor saw the broker refuse the handshake; the core has not been told.
        self.refused = False
        #: The monitor saw the connection drop; the core has not been told.
        self.dropped = False
        self.log_limiter = log_limiter
        self._refusal_logged = False
        client = core if isinstance(core, mdp_core.Client) else None
        self._connected = None if client is None else client.connected
        self._refused = None if client is None else client.handshake_refused

    def monitor_ready(self) -> bool:
        """Read every monitor event waiting; True if the core must hear of one
        (the driver then makes sure :meth:`turn` runs soon)."""
        return self.monitor_events(drain_monitor(self.monitor))

    def monitor_events(self, events: Iterable[MonitorEvent]) -> bool:
        """Like :meth:`monitor_ready`, for events a driver's own watcher read."""
        news = False
        for ev in events:
            if ev.event == _DISCONNECTED:
                self.dropped = news = True
            elif ev.event == _HANDSHAKE:
                if self._connected is not None:
                    self.handshake = news = True
                    self.log.debug("connected to broker at %s", ev.endpoint or self.endpoint)
                else:
                    self.log.info("connected to broker at %s", ev.endpoint or self.endpoint)
            elif ev.event == _HANDSHAKE_REFUSED:
                self._log_refusal(ev)
                if self._refused is not None:
                    self.refused = news = True
        return news

    def _log_refusal(self, ev: MonitorEvent) -> None:
        # libzmq retries with its backoff, refused each time, and a worker
        # opens a new socket after each drop: a worker's warning goes
        # through its limiter; a client's failed request gives the reason,
        # so its line is INFO, once per socket.
        limiter = self.log_limiter
        if limiter is None:
            level = logging.DEBUG if self._refusal_logged else logging.INFO
            self._refusal_logged = True
        elif limiter.allow(self.log, logging.WARNING, "CURVE key refused"):
            level = logging.WARNING
        else:
            return
        self.log.log(level, "the broker at %s refused this peer's CURVE key at the "
                     "handshake (ZAP status %d)", ev.endpoint or self.endpoint, ev.value)

    def turn(self, now: float, readable: bool = True) -> bool:
        """Read (if ``readable``), tell the core what the monitor saw once the
        socket is empty, tick the core if its deadline has come.

        Returns False if it stopped reading with messages left (call it
        again soon). Sends nothing: act on the core's events, then :meth:`flush`.
        """
        emptied = self.read(now) if readable else True
        if emptied:
            self.settle(now)
        core = self.core
        deadline = core.next_deadline()
        if deadline is not None and now >= deadline:
            core.tick(now)
        return emptied

    def read(self, now: float, batch: int = DEALER_BATCH) -> bool:
        """Feed up to ``batch`` messages to the core; True if the socket was emptied."""
        sock, core = self.sock, self.core
        events = sock.get
        for _ in range(batch):
            try:
                frames = sock.recv_multipart(_NOBLOCK)
            except zmq.Again:
                return True
            core.receive(frames, now)
            if not int(events(_EVENTS)) & _POLLIN:
                return True
        return False

    def settle(self, now: float) -> None:
        """Tell the core what the monitor saw (see the class docstring)."""
        connected = self._connected
        if self.handshake and connected is not None:
            self.handshake = False
            connected(now)
        self._tell_refusal_seen(now)
        if self.dropped:
            self.dropped = False
            self.log.info("connection to %s dropped", self.endpoint)
            self.core.connection_lost(now)

    def flush(self, now: float) -> bool:
        """Send what the core queued; False if a send was refused (the core was told).

        A full queue to the broker is the core's to judge: a worker's lost
        REPLY ends its conversation (``BrokerLost``), a lost HEARTBEAT does
        not matter, a client's request is retried on a new socket. A
        refused handshake leaves the DEALER without a connection, so its
        sends fail: the monitor is read first, and a refusal it holds is
        told to a client's core before the failed send ends the attempt.
        """
        return flush_dealer(self.sock, self.core, now, lambda: self._tell_refusal(now))

    def _tell_refusal(self, now: float) -> None:
        self.monitor_ready()
        self._tell_refusal_seen(now)

    def _tell_refusal_seen(self, now: float) -> None:
        refused = self._refused
        if self.refused and refused is not None:
            self.refused = False
            refused(now)
