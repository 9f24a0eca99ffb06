"""A tiny deterministic in-memory network for end-to-end tests of the core.

One :class:`~mdp_core.Broker`, several :class:`~mdp_core.Worker` and
:class:`~mdp_core.Client` machines, wired by routing id through in-memory
queues, with a fake clock. No sockets, no threads, no sleeps: the same
calls always produce the same run.

Model (what each simulated driver does, as the real drivers do):

* Every worker or client *socket* has a routing id (``b"W1.1"``: worker 1,
  socket 1). A new socket gets a new routing id, like a fresh DEALER.
* :meth:`Sim.pump` moves messages until nothing moves: the broker's
  ``outgoing()`` to the node owning the routing id; each node's
  ``outgoing()`` to ``Broker.receive``. Delivery is instantaneous and in
  order. A message to a broker that is down, over a partitioned link, or
  to a routing id nobody owns, is dropped.
* Workers (the driver, after flushing ``outgoing()``) act on
  ``BrokerLost`` by closing the socket (the broker's transport reports
  ``connection_lost`` for it if the link is up) and reconnecting on a new
  socket after ``reconnect_delay``. Clients act on ``ResetConnection`` by
  replacing the socket *before* flushing ``outgoing()``. A client's
  transport reports ``connected`` whenever its socket reaches the broker:
  on opening with the broker up and the link whole, when the broker comes
  back, and when a partition heals.
* A worker's handler returns a :class:`Job`: how long it takes in simulated
  time, its reply, PARTIALs, or failure. A single-threaded worker (the
  default) neither reads nor ticks while a job runs; its messages wait in
  its inbox. A ``concurrent`` worker keeps reading and ticking.
* :meth:`Sim.advance` moves the clock from deadline to deadline (every
  ``next_deadline()``, job ends, reconnects, broker restarts, transport
  timeouts), ticking what is due and pumping after each step.
* :meth:`Sim.kill_worker`: the process dies (the broker's transport sees
  the connection drop unless the link is partitioned).
  :meth:`Sim.restart_broker`: a fresh Broker, after an optional down time;
  connected nodes' transports report ``connection_lost``.
  :meth:`Sim.partition`/:meth:`Sim.heal`: the link between a node and the
  broker drops every message; with ``transport_timeout`` set, a partition
  lasting that long is reported as ``connection_lost`` on both ends (as
  ZMTP heartbeats would). :meth:`Sim.refuse_sends`: a node's socket
  refuses its next sends (queue full); the driver reports each one to its
  core with ``send_failed``.

Invariants are recorded as the run goes (:attr:`Sim.violations`) and by
:meth:`Sim.check` at the end.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from mdp_core import (
    Broker,
    BrokerConfig,
    BrokerLost,
    Client,
    ClientConfig,
    Dialect,
    Event,
    FinalReply,
    MalformedMessage,
    NotCurrentRequest,
    PartialReply,
    RequestFailed,
    RequestReceived,
    ResetConnection,
    Worker,
    WorkerConfig,
    WorkerRequest,
    decode,
)


@dataclass(frozen=True)
class Job:
    """What a simulated handler does with one request.

    ``duration``: simulated seconds of work. ``reply``: the FINAL body
    (None: echo the request body). ``partials``: PARTIAL bodies sent when
    the work is done, before the FINAL. ``fail``: the handler raises, so
    the driver calls ``Worker.abandon``. ``hang``: it never finishes.
    """

    duration: float = 0.0
    reply: Sequence[bytes] | None = None
    partials: Sequence[Sequence[bytes]] = ()
    fail: bool = False
    hang: bool = False


Handler = Callable[[RequestReceived], Job]


def echo(request: RequestReceived) -> Job:
    """The default handler: answer at once with the request body."""
    return Job()


def takes(seconds: float) -> Handler:
    """A handler that echoes after ``seconds`` of simulated work."""
    return lambda request: Job(duration=seconds)


@dataclass
class _Running:
    request: RequestReceived
    job: Job
    ends: float | None


@dataclass
class SimNode:
    """What the nodes share: a routing id, an inbox and a link."""

    name: str
    routing_id: bytes | None = None
    inbox: deque[list[bytes]] = field(default_factory=deque)
    partitioned: bool = False
    #: (when the transport gives up, routing id of the socket cut) during a partition
    cut: tuple[float, bytes] | None = None
    sockets: int = 0
    #: how many of its next sends the node's socket refuses (queue full)
    refuse_sends: int = 0


@dataclass
class SimWorker(SimNode):
    """A simulated worker process with its driver."""

    core: Worker = field(default=None)  # type: ignore[assignment]
    handler: Handler = echo
    concurrent: bool = False
    alive: bool = True
    reconnect_at: float | None = None
    job: _Running | None = None
    #: every RequestReceived this worker's core emitted, with the socket it came in on
    handled: list[tuple[bytes, RequestReceived]] = field(default_factory=list)
    #: every REQUEST message delivered to this worker: (routing id, client, body)
    delivered: list[tuple[bytes, bytes, tuple[bytes, ...]]] = field(default_factory=list)
    #: requests whose FINAL this worker sent
    finished: list[RequestReceived] = field(default_factory=list)
    lost: list[BrokerLost] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)

    @property
    def busy(self) -> bool:
        """True while a job runs."""
        return self.job is not None

    @property
    def can_read(self) -> bool:
        """A single-threaded worker cannot read or tick while its handler runs."""
        return self.alive and (self.job is None or self.concurrent)


@dataclass
class SimClient(SimNode):
    """A simulated client process with its driver."""

    core: Client = field(default=None)  # type: ignore[assignment]
    #: request id -> (service, body)
    requests: dict[int, tuple[bytes, tuple[bytes, ...]]] = field(default_factory=dict)
    #: request id -> the FinalReply/RequestFailed events that ended it
    outcomes: dict[int, list[Event]] = field(default_factory=dict)
    partials: dict[int, list[PartialReply]] = field(default_factory=dict)
    resets: int = 0
    events: list[Event] = field(default_factory=list)


class SimError(AssertionError):
    """The simulation did not settle (a livelock in the machines under test)."""


class Sim:
    """One broker, workers and clients on a fake clock; see the module docstring."""

    MAX_STEPS = 20_000

    def __init__(
        self,
        broker_config: BrokerConfig | None = None,
        *,
        now: float = 0.0,
        transport_timeout: float | None = None,
    ) -> None:
        self.now = now
        self.broker_config = broker_config if broker_config is not None else BrokerConfig()
        self.broker = Broker(config=self.broker_config)
        self.broker_up = True
        self.broker_back_at: float | None = None
        self.broker_events: list[Event] = []
        self.transport_timeout = transport_timeout
        self.workers: list[SimWorker] = []
        self.clients: list[SimClient] = []
        self.violations: list[str] = []
        self._owners: dict[bytes, SimNode] = {}

    # ------------------------------------------------------------ building

    def add_worker(
        self,
        service: bytes,
        handler: Handler = echo,
        *,
        config: WorkerConfig | None = None,
        version: Dialect = Dialect.MDP02,
        concurrent: bool = False,
    ) -> SimWorker:
        """Start a worker process for ``service``: new socket, ``connect``."""
        w = SimWorker(name=f"W{len(self.workers) + 1}", handler=handler, concurrent=concurrent)
        w.core = Worker(service, config, version)
        self.workers.append(w)
        self._open(w)
        w.core.connect(self.now)
        return w

    def add_client(
        self, config: ClientConfig | None = None, *, version: Dialect = Dialect.MDP02
    ) -> SimClient:
        """Start a client process with its socket."""
        c = SimClient(name=f"C{len(self.clients) + 1}")
        c.core = Client(config, version)
        self.clients.append(c)
        self._open(c)
        self._handshake(c)
        return c

    def request(
        self,
        client: SimClient,
        service: bytes,
        body: Sequence[bytes] | bytes,
        *,
        timeout: float | None = None,
        retries: int | None = None,
    ) -> int:
        """Have ``client`` send a request; returns its id."""
        rid = client.core.request(service, body, self.now, timeout=timeout, retries=retries)
        frames = (body,) if isinstance(body, bytes) else tuple(body)
        client.requests[rid] = (service, frames)
        client.outcomes[rid] = []
        return rid

    # ------------------------------------------------------------ faults

    def kill_worker(self, w: SimWorker) -> None:
        """The worker process dies: its socket closes, its queues are gone."""
        w.alive = False
        w.job = None
        w.inbox.clear()
        w.reconnect_at = None
        w.core.outgoing()
        self._close(w)
        self.pump()

    def restart_broker(self, down_for: float = 0.0) -> None:
        """The broker process dies; a fresh Broker starts after ``down_for``.

        Every node whose link is up sees its connection drop (workers:
        ``connection_lost`` -> BrokerLost; clients: ``connection_lost``); a
        busy single-threaded worker sees it after its job. Messages already
        in a node's inbox stay there. Restarting a broker that is down only
        moves the time it comes back.
        """
        was_up, self.broker_up = self.broker_up, False
        self.broker.outgoing()
        self.broker_events += self.broker.events()
        for node in [*self.workers, *self.clients]:
            if not was_up or node.routing_id is None or node.partitioned:
                continue
            if isinstance(node, SimWorker):
                if node.can_read:
                    node.core.connection_lost(self.now)
                else:
                    node.inbox.append([])  # marker: connection lost, seen after the job
            else:
                node.core.connection_lost(self.now)
        self.broker_back_at = self.now + down_for
        if down_for == 0:
            self._broker_back()
        self.pump()

    def partition(self, node: SimNode) -> None:
        """Cut the link between ``node`` and the broker (messages are dropped)."""
        node.partitioned = True
        if self.transport_timeout is not None and node.routing_id is not None:
            node.cut = (self.now + self.transport_timeout, node.routing_id)

    def refuse_sends(self, node: SimNode, count: int = 1) -> None:
        """The node's socket refuses its next ``count`` sends (its queue is full).

        The driver reports each refused message to its core with
        ``send_failed``; the message never reaches the broker.
        """
        node.refuse_sends += count

    def heal(self, node: SimNode) -> None:
        """Restore the link between ``node`` and the broker."""
        node.partitioned = False
        node.cut = None
        self._handshake(node)
        self.pump()

    # ------------------------------------------------------------ running

    def pump(self) -> None:
        """Move messages and act on events until nothing more happens."""
        for _ in range(self.MAX_STEPS):
            if not self._step():
                return
        raise SimError("pump did not settle")

    def advance(self, dt: float) -> None:
        """Let ``dt`` simulated seconds pass, firing everything due on the way."""
        target = self.now + dt
        self.pump()
        for _ in range(self.MAX_STEPS):
            due = self._next_due()
            if due is None or due > target:
                break
            self.now = max(self.now, due)
            self._fire_due()
            self.pump()
        else:
            raise SimError("advance did not settle")
        self.now = target
        self._fire_due()
        self.pump()

    def run_until(self, done: Callable[[], bool], limit: float, step: float = 0.05) -> None:
        """Advance in small steps until ``done()`` or ``limit`` seconds have passed."""
        end = self.now + limit
        while not done():
            if self.now >= end:
                raise SimError(f"condition not reached within {limit} s")
            self.advance(min(step, end - self.now))

    # ------------------------------------------------------------ checks

    def check(self) -> None:
        """Assert the invariants: nothing handled unsent, outcomes exactly once."""
        assert self.violations == [], self.violations
        for c in self.clients:
            for rid, outcome in c.outcomes.items():
                assert len(outcome) <= 1, (c.name, rid, outcome)

    def all_done(self) -> bool:
        """Every request of every client has ended."""
        return all(c.core.outstanding is None for c in self.clients)

    # ------------------------------------------------------------ internals

    def _open(self, node: SimNode) -> None:
        node.sockets += 1
        node.routing_id = f"{node.name}.{node.sockets}".encode()
        node.inbox.clear()
        self._owners[node.routing_id] = node

    def _close(self, node: SimNode) -> None:
        rid = node.routing_id
        if rid is None:
            return
        node.routing_id = None
        node.inbox.clear()
        del self._owners[rid]
        if self.broker_up and not node.partitioned:
            self.broker.connection_lost(rid, self.now)

    def _handshake(self, node: SimNode) -> None:
        if isinstance(node, SimClient) and self._reachable(node):
            node.core.connected(self.now)

    def _reachable(self, node: SimNode) -> bool:
        return self.broker_up and not node.partitioned and node.routing_id is not None

    def _step(self) -> bool:
        moved = False
        if self.broker_up:
            for peer, frames in self.broker.outgoing():
                moved = True
                owner = self._owners.get(peer)
                if owner is not None and self._reachable(owner):
                    owner.inbox.append(list(frames))
            self.broker_events += self.broker.events()
        for w in self.workers:
            moved |= self._step_worker(w)
        for c in self.clients:
            moved |= self._step_client(c)
        return moved

    def _send(self, node: SimWorker | SimClient, messages: list[list[bytes]]) -> bool:
        for frames in messages:
            if node.refuse_sends > 0:  # the socket's queue is full: the driver reports it
                node.refuse_sends -= 1
                node.core.send_failed(frames, self.now)
                continue
            if self._reachable(node):
                assert node.routing_id is not None
                self.broker.receive(node.routing_id, frames, self.now)
        return bool(messages)

    def _step_worker(self, w: SimWorker) -> bool:
        if not w.alive:
            return False
        moved = False
        if w.job is not None and w.job.ends is not None and self.now >= w.job.ends:
            self._finish(w)
            moved = True
        if w.can_read and w.inbox:
            frames = w.inbox.popleft()
            if not frames:
                w.core.connection_lost(self.now)
            else:
                self._note_delivery(w, frames)
                w.core.receive(frames, self.now)
            moved = True
        moved |= self._send(w, w.core.outgoing())
        for event in w.core.events():
            moved = True
            w.events.append(event)
            if isinstance(event, RequestReceived):
                self._start(w, event)
            elif isinstance(event, BrokerLost):
                w.lost.append(event)
                self._close(w)
                w.reconnect_at = self.now + event.reconnect_delay
        if w.job is not None and w.job.ends is not None and self.now >= w.job.ends:
            moved = True
        return moved

    def _note_delivery(self, w: SimWorker, frames: list[bytes]) -> None:
        try:
            _, command = decode(frames, from_broker=True)
        except MalformedMessage:
            return
        if isinstance(command, WorkerRequest):
            assert w.routing_id is not None
            w.delivered.append((w.routing_id, command.client, command.body))

    def _start(self, w: SimWorker, request: RequestReceived) -> None:
        rid = w.routing_id
        assert rid is not None
        w.handled.append((rid, request))
        if (rid, request.client, request.body) not in w.delivered:
            self.violations.append(f"{w.name} handled a request it was not sent: {request}")
        job = w.handler(request)
        ends = None if job.hang else self.now + job.duration
        w.job = _Running(request, job, ends)

    def _finish(self, w: SimWorker) -> None:
        running = w.job
        assert running is not None
        w.job = None
        request, job = running.request, running.job
        try:
            if job.fail:
                w.core.abandon(request, self.now)
                return
            for body in job.partials:
                w.core.partial(request, body, self.now)
            w.core.reply(request, request.body if job.reply is None else job.reply, self.now)
            w.finished.append(request)
        except NotCurrentRequest:
            pass  # the conversation ended meanwhile (concurrent driver): drop the result

    def _step_client(self, c: SimClient) -> bool:
        moved = False
        if c.inbox:
            c.core.receive(c.inbox.popleft(), self.now)
            moved = True
        for event in c.core.events():
            moved = True
            c.events.append(event)
            if isinstance(event, ResetConnection):
                c.resets += 1
                self._close(c)
                self._open(c)
                self._handshake(c)
            elif isinstance(event, (FinalReply, RequestFailed)):
                c.outcomes.setdefault(event.request_id, []).append(event)
            elif isinstance(event, PartialReply):
                c.partials.setdefault(event.request_id, []).append(event)
        moved |= self._send(c, c.core.outgoing())
        return moved

    def _next_due(self) -> float | None:
        times: list[float] = []
        if self.broker_up:
            d = self.broker.next_deadline()
            if d is not None:
                times.append(d)
        elif self.broker_back_at is not None:
            times.append(self.broker_back_at)
        for w in self.workers:
            if not w.alive:
                continue
            if w.job is not None and w.job.ends is not None:
                times.append(w.job.ends)
            if w.reconnect_at is not None:
                times.append(w.reconnect_at)
            d = w.core.next_deadline()
            if d is not None and w.can_read:
                times.append(d)
        for c in self.clients:
            d = c.core.next_deadline()
            if d is not None:
                times.append(d)
        times += [n.cut[0] for n in [*self.workers, *self.clients] if n.cut is not None]
        return min(times, default=None)

    def _fire_due(self) -> None:
        now = self.now
        if not self.broker_up and self.broker_back_at is not None and now >= self.broker_back_at:
            self._broker_back()
        if self.broker_up:
            d = self.broker.next_deadline()
            if d is not None and d <= now:
                self.broker.tick(now)
        for w in self.workers:
            if w.alive and w.reconnect_at is not None and now >= w.reconnect_at:
                w.reconnect_at = None
                self._open(w)
                w.core.connect(now)
            d = w.core.next_deadline()
            if w.can_read and d is not None and d <= now:
                w.core.tick(now)
        for c in self.clients:
            d = c.core.next_deadline()
            if d is not None and d <= now:
                c.core.tick(now)
        self._transport_timeouts(now)

    def _transport_timeouts(self, now: float) -> None:
        for node in [*self.workers, *self.clients]:
            if node.cut is None or now < node.cut[0]:
                continue
            rid = node.cut[1]
            node.cut = None
            # ZMTP heartbeats fail on both ends: the broker drops the peer,
            # and the node's driver is told its connection dropped (if the
            # node still uses that socket; a later socket never connected).
            if self.broker_up:
                self.broker.connection_lost(rid, now)
            if node.routing_id != rid:
                continue
            if isinstance(node, SimWorker):
                if node.can_read:
                    node.core.connection_lost(now)
                else:
                    node.inbox.append([])
            else:
                node.core.connection_lost(now)

    def _broker_back(self) -> None:
        self.broker = Broker(config=self.broker_config)
        self.broker_up = True
        self.broker_back_at = None
        for c in self.clients:
            self._handshake(c)
