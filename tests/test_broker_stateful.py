"""Random interleavings against the Broker, with invariants after every step.

Clients send requests (three dialects, pipelined), workers register,
reply (right or wrong client, PARTIAL or FINAL), heartbeat, disconnect,
peers lose their connections, garbage arrives, time passes, and sends fail
(the driver reports some messages of each step's ``outgoing()`` with
``send_failed``, as a full send queue would make it, and sometimes reports
one of an earlier step late). After every step:

* ``receive`` and friends never raised (Hypothesis would report it);
* no request is both queued and dispatched: a QUEUED request sits in its
  service queue and no worker holds it; a DISPATCHED one is held by exactly
  one live BUSY worker;
* every accepted request is accounted for: queued, dispatched, or ended
  with exactly one end event (matched per client and service), and an
  ended request never comes back; each refused request gets one
  ``RequestRefused``; each MMI request ends with one ``RequestDelivered``
  or ``RequestUndelivered``;
* the bytes the broker counts against ``max_queued_bytes`` are those of
  the live requests;
* nothing is sent to a worker whose session ended, unless that peer spoke
  again (a new conversation: it may then get DISCONNECT or, after READY,
  anything).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from mdp_core import (
    Broker,
    BrokerConfig,
    ClientRequest,
    Dialect,
    Disconnect,
    Heartbeat,
    Ready,
    RequestAbandoned,
    RequestDelivered,
    RequestExpired,
    RequestRefused,
    RequestUndelivered,
    WorkerLost,
    WorkerReply,
    decode,
    encode,
)
from mdp_core._state import RequestState, WorkerState

CLIENTS = [b"c1", b"c2", b"c3"]
WORKERS = [b"w1", b"w2", b"w3"]
SERVICES = [b"a", b"b"]
DIALECTS = list(Dialect)
LIVE = (RequestState.QUEUED, RequestState.DISPATCHED)
ENDS = (RequestDelivered, RequestUndelivered, RequestExpired, RequestAbandoned)

frames_st = st.lists(st.binary(max_size=8), max_size=6) | st.sampled_from([
    [b"MDPW02", b"\x04", b"c1", b"", b"x"],
    [b"MDPW02", b"\x03", b"c2", b"", b"x"],
    [b"", b"MDPW01", b"\x03", b"c1", b""],
    [b"MDPC02", b"\x02", b"a", b"x"],
    [b"MDPW02", b"\x02", b"c1", b"", b"x"],
    [b"MDPW02", b"\x01", b"mmi.x"],
])


class BrokerMachine(RuleBasedStateMachine):
    """Drives one Broker; checks the invariants after each rule."""

    def __init__(self) -> None:
        super().__init__()
        self.b = Broker(BrokerConfig(
            heartbeat_interval=2.0, heartbeat_liveness=5, request_timeout=8.0,
            max_attempts=2, max_queue=3, processing_timeout=6.0, max_gathered_bytes=8,
            max_queued_bytes=4 * (512 + 64 + 3)))
        self.now = 0.0
        self.fail_mask: list[bool] = []  # which messages of a step fail, in turn
        self.last_out: list[tuple[bytes, list[bytes]]] = []  # sent in the previous step
        self.requests: dict[int, Any] = {}  # every request object ever accepted
        self.ended: set[int] = set()
        self.gone: set[bytes] = set()  # worker peers whose session ended, silent since

    # ------------------------------------------------------------ step

    def step(
        self, sender: bytes | None, action: Any, *args: Any, request: bool = False
    ) -> list[Any]:
        """Run one input, then flush as a driver would: send each message of
        ``outgoing()`` or report it failed (``fail_mask``), until it is
        empty, then ``events()``. ``request``: the input is a client REQUEST
        (accepted or refused). Returns the events."""
        before = {rid for rid, r in self.requests.items() if r.state in LIVE}
        action(*args)
        out = []
        k = 0
        while batch := self.b.outgoing():
            for peer, frames in batch:
                mask = self.fail_mask
                if mask and mask[k % len(mask)]:
                    self.b.send_failed(peer, frames, self.now)
                else:
                    out.append((peer, frames))
                k += 1
        self.last_out = out
        events = self.b.events()
        # discover newly accepted requests
        new = 0
        for reqs in self.b._clients.values():
            for rid, req in reqs.items():
                if rid not in self.requests:
                    self.requests[rid] = req
                    before.add(rid)
                    new += 1
        refused = [e for e in events if isinstance(e, RequestRefused)]
        if request:
            assert len(refused) + new == 1
        else:
            assert not refused and new == 0
        # end events match the requests that ended in this step
        ended_now: Counter[tuple[bytes, bytes]] = Counter()
        for rid in before:
            req = self.requests[rid]
            if req.state not in LIVE:
                ended_now[(req.client, req.service.name)] += 1
                assert rid not in self.ended
                self.ended.add(rid)
        end_events = Counter(
            (e.client, e.service) for e in events
            if isinstance(e, ENDS) and not e.service.startswith(b"mmi."))
        assert ended_now == end_events
        for rid in self.ended:
            assert self.requests[rid].state not in LIVE
        # nothing to a worker whose session ended, unless it spoke again
        for peer, frames in out:
            if peer in self.gone and peer != sender:
                raise AssertionError(f"sent {frames!r} to gone worker {peer!r}")
            if peer in self.gone and peer not in self.b._workers:
                assert decode(frames, from_broker=True)[1] == Disconnect()
        for e in events:
            if isinstance(e, WorkerLost):
                self.gone.add(e.worker)
        for peer, frames in out:
            if peer in WORKERS and decode(frames, from_broker=True)[1] == Disconnect():
                self.gone.add(peer)
        if sender is not None and sender in self.b._workers:
            self.gone.discard(sender)
        self.gone -= set(self.b._workers)
        return events

    # ----------------------------------------------------------- rules

    @initialize(d1=st.sampled_from(DIALECTS), d2=st.sampled_from(DIALECTS))
    def two_workers(self, d1: Dialect, d2: Dialect) -> None:
        self.step(b"w1", self.b.receive, b"w1", encode(Ready(b"a"), d1), self.now)
        self.step(b"w2", self.b.receive, b"w2", encode(Ready(b"b"), d2), self.now)

    @rule(client=st.sampled_from(CLIENTS), service=st.sampled_from(SERVICES),
          dialect=st.sampled_from(DIALECTS), size=st.integers(1, 3))
    def client_request(self, client: bytes, service: bytes, dialect: Dialect, size: int) -> None:
        frames = encode(ClientRequest(service, (b"x" * size,)), dialect)
        self.step(client, self.b.receive, client, frames, self.now, request=True)

    @rule(client=st.sampled_from(CLIENTS),
          service=st.sampled_from([b"mmi.service", b"mmi.services", b"mmi.workers", b"mmi.x"]))
    def mmi_query(self, client: bytes, service: bytes) -> None:
        frames = encode(ClientRequest(service, (b"a",)), Dialect.MDP02)
        events = self.step(client, self.b.receive, client, frames, self.now)
        assert len(events) == 1
        assert isinstance(events[0], (RequestDelivered, RequestUndelivered))
        assert (events[0].client, events[0].service, events[0].worker) == (client, service, b"")
        assert [p for p, _ in self.last_out] == ([client] if isinstance(
            events[0], RequestDelivered) else [])

    @rule(mask=st.lists(st.booleans(), max_size=5))
    def send_failures(self, mask: list[bool]) -> None:
        self.fail_mask = mask

    @rule(index=st.integers(0, 5))
    def late_report(self, index: int) -> None:
        if self.last_out:
            peer, frames = self.last_out[index % len(self.last_out)]
            self.step(None, self.b.send_failed, peer, frames, self.now)

    @rule(worker=st.sampled_from(WORKERS), service=st.sampled_from([*SERVICES, b"mmi.x"]),
          dialect=st.sampled_from(DIALECTS))
    def worker_ready(self, worker: bytes, service: bytes, dialect: Dialect) -> None:
        self.step(worker, self.b.receive, worker, encode(Ready(service), dialect), self.now)

    @rule(worker=st.sampled_from(WORKERS), right_client=st.booleans(), final=st.booleans(),
          client=st.sampled_from(CLIENTS), size=st.integers(1, 6))
    def worker_reply(
        self, worker: bytes, right_client: bool, final: bool, client: bytes, size: int
    ) -> None:
        w = self.b._workers.get(worker)
        dialect = w.dialect if w is not None else Dialect.MDP02
        if right_client and w is not None and w.request is not None:
            client = w.request.client
        if dialect is Dialect.MDP01:
            final = True
        frames = encode(WorkerReply(client, (b"r" * size,), final), dialect)
        self.step(worker, self.b.receive, worker, frames, self.now)

    @rule(index=st.integers(0, 3), partials=st.integers(0, 2), size=st.integers(1, 4),
          together=st.booleans())
    def busy_worker_replies(self, index: int, partials: int, size: int, together: bool) -> None:
        """PARTIALs then a FINAL, one step each or (``together``) all read
        before one flush, as a driver reading a batch of messages would."""
        busy = sorted(p for p, w in self.b._workers.items() if w.request is not None)
        if not busy:
            return
        worker = busy[index % len(busy)]
        w = self.b._workers[worker]
        assert w.request is not None
        client, dialect = w.request.client, w.dialect
        if dialect is Dialect.MDP01:
            partials = 0
        messages = [encode(WorkerReply(client, (b"p" * size,), False), dialect)
                    for _ in range(partials)]
        messages.append(encode(WorkerReply(client, (b"f",)), dialect))
        if together:
            def read_all() -> None:
                for frames in messages:
                    self.b.receive(worker, frames, self.now)
            self.step(worker, read_all)
        else:
            for frames in messages:
                self.step(worker, self.b.receive, worker, frames, self.now)

    @rule(worker=st.sampled_from(WORKERS))
    def worker_heartbeat(self, worker: bytes) -> None:
        w = self.b._workers.get(worker)
        dialect = w.dialect if w is not None else Dialect.MDP02
        self.step(worker, self.b.receive, worker, encode(Heartbeat(), dialect), self.now)

    @rule(worker=st.sampled_from(WORKERS))
    def worker_disconnect(self, worker: bytes) -> None:
        self.step(worker, self.b.receive, worker, encode(Disconnect(), Dialect.MDP02), self.now)

    @rule(peer=st.sampled_from(WORKERS + CLIENTS))
    def connection_lost(self, peer: bytes) -> None:
        self.step(None, self.b.connection_lost, peer, self.now)
        if peer in WORKERS:  # a lost connection cannot receive; a new one may speak
            self.gone.add(peer)

    @rule(peer=st.sampled_from(WORKERS + CLIENTS), frames=frames_st)
    def garbage(self, peer: bytes, frames: list[bytes]) -> None:
        try:
            cmd = decode(frames)[1]
        except ValueError:
            cmd = None
        request = isinstance(cmd, ClientRequest) and not cmd.service.startswith(b"mmi.")
        self.step(peer, self.b.receive, peer, frames, self.now, request=request)

    @rule(dt=st.sampled_from([0.1, 0.5, 1.0, 3.0]))
    def advance(self, dt: float) -> None:
        self.now += dt
        self.step(None, self.b.tick, self.now)

    @rule()
    def tick_at_deadline(self) -> None:
        deadline = self.b.next_deadline()
        if deadline is not None:
            self.now = max(self.now, deadline)
            self.step(None, self.b.tick, self.now)

    # ------------------------------------------------------- invariants

    @invariant()
    def held_bytes_are_those_of_the_live_requests(self) -> None:
        live = [r for r in self.requests.values() if r.state in LIVE]
        assert self.b._held == sum(r.size for r in live)

    @invariant()
    def queued_and_dispatched_are_disjoint(self) -> None:
        holders: Counter[int] = Counter()
        for peer, w in self.b._workers.items():
            assert w.state in (WorkerState.IDLE, WorkerState.BUSY)
            assert (w.state is WorkerState.BUSY) == (w.request is not None)
            assert (peer in w.service.idle) == (w.state is WorkerState.IDLE)
            assert self.b._services.get(w.service.name) is w.service
            if w.request is not None:
                holders[w.request.id] += 1
        for name, svc in self.b._services.items():
            live = [r for r in svc.queue if r.state is RequestState.QUEUED]
            assert len(live) == svc.queued == len({r.id for r in live})
            assert svc.workers == sum(1 for w in self.b._workers.values() if w.service is svc)
            assert not (svc.idle and svc.queued)  # an idle worker never waits beside a request
            assert svc.name == name
        for rid, req in self.requests.items():
            if req.state is RequestState.QUEUED:
                assert holders[rid] == 0
                assert self.b._services[req.service.name] is req.service
                assert req in req.service.queue
                assert self.b._clients[req.client][rid] is req
            elif req.state is RequestState.DISPATCHED:
                assert holders[rid] == 1
                assert req not in req.service.queue
                assert self.b._clients[req.client][rid] is req
            else:
                assert rid not in self.b._clients.get(req.client, {})
                assert holders[rid] <= 1  # an abandoned one may still await its FINAL


BrokerMachine.TestCase.settings = settings(
    max_examples=100, stateful_step_count=40, deadline=None)
test_broker_state_machine = BrokerMachine.TestCase
