"""The I/O-free metrics collector, Broker.stats(), mmi.stats and the timed events.

Fake time throughout: each step sets ``now`` by hand, so every duration
the core reports is known exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from mdp_core import (
    DEFAULT_BUCKETS,
    LOSS_REASONS,
    OTHER,
    OUTCOMES,
    Broker,
    BrokerConfig,
    BrokerLost,
    BrokerMetrics,
    BrokerStats,
    ClientRequest,
    Dialect,
    Disconnect,
    Event,
    HistogramSnapshot,
    ProtocolError,
    Ready,
    RequestDelivered,
    RequestReceived,
    RequestRedispatched,
    RequestRequeued,
    ServiceStats,
    TimedRequestDelivered,
    WorkerLost,
    WorkerMetrics,
    WorkerReply,
    encode,
    loss_reason,
    parse_mmi_stats,
)

D2 = Dialect.MDP02
BUCKETS = (0.1, 1.0, 10.0)


class Rig:
    """A timed broker, a collector fed with every event, and a hand-set clock."""

    def __init__(self, max_services: int = 100, timed: bool = True, **config: object) -> None:
        self.b = Broker(BrokerConfig(**config), timed=timed)  # type: ignore[arg-type]
        self.m = BrokerMetrics(max_services, BUCKETS)
        self.now = 0.0
        self.seen: list[Event] = []

    def feed(self) -> list[Event]:
        """Send nothing back, count what the broker reports; return those events."""
        self.b.outgoing()
        events = self.b.events()
        self.m.observe(events)
        self.seen += events
        return events

    def ready(self, worker: bytes, service: bytes = b"echo") -> list[Event]:
        self.b.receive(worker, encode(Ready(service), D2), self.now)
        return self.feed()

    def request(self, client: bytes, service: bytes = b"echo", body: Sequence[bytes] = (b"x",)
                ) -> list[Event]:
        self.b.receive(client, encode(ClientRequest(service, tuple(body)), D2), self.now)
        return self.feed()

    def reply(self, worker: bytes, client: bytes) -> list[Event]:
        self.b.receive(worker, encode(WorkerReply(client, (b"ok",), True), D2), self.now)
        return self.feed()

    def at(self, now: float) -> list[Event]:
        self.now = now
        self.b.tick(now)
        return self.feed()

    def lost(self, peer: bytes) -> list[Event]:
        self.b.connection_lost(peer, self.now)
        return self.feed()


def hist(bounds: tuple[float, ...], *values: float) -> HistogramSnapshot:
    """The snapshot a histogram over ``bounds`` has after ``values``."""
    return HistogramSnapshot(bounds, tuple(sum(v <= b for v in values) for b in bounds),
                             len(values), sum(values))


# ------------------------------------------------------------------ timed events


def test_timed_broker_reports_wait_and_processing_of_a_delivered_request() -> None:
    r = Rig()
    r.now = 1.0
    r.request(b"c1")  # queued: no worker yet
    r.now = 3.0
    r.ready(b"w1")  # dispatched at 3.0
    r.now = 3.5
    assert r.reply(b"w1", b"c1") == [TimedRequestDelivered(b"c1", b"echo", b"w1", 2.0, 0.5)]


def test_untimed_broker_reports_plain_delivery() -> None:
    r = Rig(timed=False)
    r.ready(b"w1")
    r.request(b"c1")
    r.now = 2.0
    events = r.reply(b"w1", b"c1")
    assert events == [RequestDelivered(b"c1", b"echo", b"w1")]
    assert type(events[0]) is RequestDelivered


def test_wait_counts_from_arrival_to_the_dispatch_that_answered() -> None:
    r = Rig()
    r.ready(b"w1")
    r.now = 1.0
    r.request(b"c1")  # to w1 at 1.0
    r.now = 4.0
    assert r.lost(b"w1")[1:] == [RequestRequeued(b"c1", b"echo", b"w1", 1)]
    r.now = 6.0
    assert r.ready(b"w2")[1:] == [RequestRedispatched(b"c1", b"echo", b"w2", 2, 2.0)]
    r.now = 6.25
    assert r.reply(b"w2", b"c1") == [TimedRequestDelivered(b"c1", b"echo", b"w2", 5.0, 0.25)]


def test_redispatch_to_an_idle_worker_has_zero_recovery() -> None:
    r = Rig()
    r.ready(b"w1")
    r.ready(b"w2")
    r.request(b"c1")  # to w1 (least recently used)
    r.now = 2.0
    assert r.lost(b"w1")[-1] == RequestRedispatched(b"c1", b"echo", b"w2", 2, 0.0)


def test_the_lost_request_is_redispatched_once_only() -> None:
    r = Rig()
    r.ready(b"w1")
    r.request(b"c1")
    r.request(b"c2")  # queued behind c1
    r.now = 1.0
    r.lost(b"w1")  # c1 goes back to the head of the queue
    r.now = 2.0
    assert r.ready(b"w2")[1:] == [RequestRedispatched(b"c1", b"echo", b"w2", 2, 1.0)]
    r.now = 3.0
    r.reply(b"w2", b"c1")  # w2 now takes c2: a first dispatch, not a re-dispatch
    assert not [e for e in r.seen if isinstance(e, RequestRedispatched) and e.client == b"c2"]


# ------------------------------------------------------------------ Broker.stats


def test_stats_counts_workers_queues_and_requests_per_service() -> None:
    r = Rig()
    assert r.b.stats() == BrokerStats(0, 0, 0, 0, ())
    r.ready(b"w1", b"a")
    r.ready(b"w2", b"a")
    r.request(b"c1", b"a")  # to w1
    r.request(b"c2", b"b")  # queued: b has no worker
    r.request(b"c3", b"b")
    st = r.b.stats()
    held = st.queued_bytes
    assert held == 3 * (512 + 64 + 1)
    assert st == BrokerStats(3, 2, held, 2, (ServiceStats(b"a", 1, 1, 0, 1),
                                              ServiceStats(b"b", 0, 0, 2, 2)))


def test_stats_in_flight_leaves_out_a_request_whose_client_is_gone() -> None:
    r = Rig()
    r.ready(b"w1")
    r.request(b"c1")
    r.lost(b"c1")  # abandoned, but w1 is still busy with it
    assert r.b.stats().services == (ServiceStats(b"echo", 0, 1, 0, 0),)


# ------------------------------------------------------------------ mmi.stats


def mmi_stats(r: Rig, client: bytes = b"admin") -> list[bytes]:
    r.b.receive(client, encode(ClientRequest(b"mmi.stats", (b"",)), D2), r.now)
    (peer, frames), = r.b.outgoing()
    assert peer == client and frames[:3] == [b"MDPC02", b"\x03", b"mmi.stats"]
    r.feed()
    return frames[3:]


def test_mmi_stats_answers_totals_then_one_frame_per_service() -> None:
    r = Rig()
    r.ready(b"w1", b"a b")  # a name with a space
    r.request(b"c1", b"a b")
    r.request(b"c2", b"zz")
    body = mmi_stats(r)
    held = r.b.stats().queued_bytes
    assert body == [b"requests=2 workers=1 services=2 queued_bytes=%d" % held,
                    b"a b idle=0 busy=1 queued=0 in_flight=1",
                    b"zz idle=0 busy=0 queued=1 in_flight=1"]
    assert parse_mmi_stats(body) == r.b.stats()
    assert r.seen[-1] == RequestDelivered(b"admin", b"mmi.stats", b"")


def test_mmi_stats_of_an_empty_broker_is_the_totals_alone() -> None:
    r = Rig()
    body = mmi_stats(r)
    assert body == [b"requests=0 workers=0 services=0 queued_bytes=0"]
    assert parse_mmi_stats(body) == BrokerStats(0, 0, 0, 0, ())


def test_mmi_stats_is_cut_to_max_mmi_reply_bytes_and_marked() -> None:
    r = Rig(max_mmi_reply_bytes=300)
    for i in range(10):
        r.ready(b"w%d" % i, b"svc-%d" % i)
    body = mmi_stats(r)
    # The totals count first (48 + 64 bytes), then each line its length +
    # 64 (41 + 64): one line fits in 300 bytes, two do not.
    assert len(body[0]) == 48
    assert body[1:] == [b"svc-0 idle=1 busy=0 queued=0 in_flight=0", b""]
    parsed = parse_mmi_stats(body)
    assert parsed.service_count == 10 and len(parsed.services) == 1


def test_mmi_stats_keeps_one_service_even_under_a_tiny_limit() -> None:
    r = Rig(max_mmi_reply_bytes=0)
    r.ready(b"w1", b"a")
    r.ready(b"w2", b"b")
    assert mmi_stats(r)[1:] == [b"a idle=1 busy=0 queued=0 in_flight=0", b""]


@pytest.mark.parametrize("body", [
    [],
    [b"501"],
    [b"requests=1 workers=1 services=1"],
    [b"requests=1 workers=x services=1 queued_bytes=0"],
    [b"requests=1 workers=1 services=1 bytes=0"],
    [b"requests=1 workers=1 services=1 queued_bytes=0", b"a idle=1 busy=0 queued=0"],
    [b"requests=1 workers=1 services=1 queued_bytes=0", b" idle=1 busy=0 queued=0 in_flight=0"],
    [b"requests=1 workers=1 services=1 queued_bytes=0", b"a idle=1 busy=0 queued=0 flight=0"],
])
def test_parse_mmi_stats_rejects_what_is_not_an_answer(body: list[bytes]) -> None:
    with pytest.raises(ValueError, match=r"not an mmi\.stats answer"):
        parse_mmi_stats(body)


# ------------------------------------------------------------------ the collector


def test_each_outcome_moves_its_own_counter() -> None:
    r = Rig(max_queue=1, request_timeout=5.0)
    r.request(b"c3", b"slow")  # expires below
    r.request(b"c4", b"slow")  # refused: the queue is full (max_queue=1)
    r.ready(b"w1")
    r.request(b"c1")  # delivered below
    r.reply(b"w1", b"c1")
    r.b.receive(b"c2", encode(ClientRequest(b"echo", (b"x",)), D2), r.now)
    ((peer, frames),) = r.b.outgoing()  # to w1
    r.now = 1.0
    r.b.receive(b"w1", encode(WorkerReply(b"c2", (b"ok",), True), D2), r.now)
    ((peer, frames),) = r.b.outgoing()
    r.b.send_failed(peer, frames, r.now)  # undelivered
    r.m.observe(r.b.events())
    r.request(b"c5")  # abandoned below
    r.request(b"c6")  # queued behind c5, in flight at the snapshot
    r.lost(b"c5")
    r.at(5.5)  # c3 expires (queued at 0), c6 not (queued at 1)
    snap = r.m.snapshot(r.b)
    assert {k: n for k, n in snap.requests.items() if n} == {
        ("echo", "delivered"): 1, ("echo", "undelivered"): 1, ("echo", "abandoned"): 1,
        ("slow", "expired"): 1, ("slow", "refused"): 1}
    assert sorted(snap.requests) == sorted((s, o) for s in ("echo", "slow") for o in OUTCOMES)
    # received = every outcome + what the broker still holds (c6)
    assert snap.received == {"echo": 4, "slow": 2}
    assert snap.queue_depth == {"echo": 1}
    assert snap.workers == {("echo", "idle"): 0, ("echo", "busy"): 1}
    assert snap.queued_bytes == r.b.stats().queued_bytes > 0


def test_delivery_fills_the_wait_processing_and_duration_histograms() -> None:
    r = Rig()
    r.request(b"c1")
    r.now = 0.5
    r.ready(b"w1")
    r.now = 2.5
    r.reply(b"w1", b"c1")  # waited 0.5, processing 2.0
    r.request(b"c2")
    r.now = 2.55
    r.reply(b"w1", b"c2")  # waited 0, processing 0.05
    snap = r.m.snapshot(r.b)
    assert snap.request_wait["echo"] == hist(BUCKETS, 0.5, 0.0)
    assert snap.worker_processing["echo"] == hist(BUCKETS, 2.0, 2.55 - 2.5)
    assert snap.request_duration["echo"] == hist(BUCKETS, 2.5, 2.55 - 2.5)
    assert snap.request_wait["echo"].buckets == (1, 2, 2)  # 0.0 <= 0.1, 0.5 <= 1.0
    assert snap.worker_processing["echo"].buckets == (1, 1, 2)


def test_an_untimed_broker_counts_deliveries_without_timings() -> None:
    r = Rig(timed=False)
    r.ready(b"w1")
    r.request(b"c1")
    r.reply(b"w1", b"c1")
    snap = r.m.snapshot(r.b)
    assert snap.requests[("echo", "delivered")] == 1
    assert snap.worker_processing["echo"].count == 0


def test_mmi_answers_count_as_delivered_without_timings() -> None:
    r = Rig()
    mmi_stats(r)
    snap = r.m.snapshot(r.b)
    assert snap.requests[("mmi.stats", "delivered")] == 1
    assert snap.received["mmi.stats"] == 1
    assert snap.request_duration["mmi.stats"].count == 0


def test_redispatch_counts_and_times_the_recovery() -> None:
    r = Rig()
    r.ready(b"w1")
    r.request(b"c1")
    r.now = 1.0
    r.lost(b"w1")
    r.now = 1.05
    r.ready(b"w2")
    snap = r.m.snapshot(r.b)
    assert snap.redispatched == {"echo": 1}
    assert snap.recovery["echo"] == hist(BUCKETS, 1.05 - 1.0)
    assert snap.workers_registered == {"echo": 2}
    assert snap.workers_lost == {("echo", "connection_lost"): 1}
    assert snap.received == {"echo": 1}  # in flight on w2, not counted twice


def lose_workers_every_way(r: Rig) -> None:
    """One WorkerLost for each cause the core has."""
    r.ready(b"conn")
    r.lost(b"conn")  # connection lost
    r.ready(b"bye")
    r.b.receive(b"bye", encode(Disconnect(), D2), r.now)  # DISCONNECT
    r.feed()
    r.ready(b"bad")
    r.ready(b"bad")  # a second READY: protocol violation
    r.ready(b"busy", b"slow")
    r.request(b"c1", b"slow")
    r.ready(b"unsent")
    r.b.receive(b"c2", encode(ClientRequest(b"echo", (b"x",)), D2), r.now)
    (peer, frames), = r.b.outgoing()
    r.b.send_failed(peer, frames, r.now)  # send failed
    r.feed()
    r.ready(b"quiet", b"other.svc")
    r.at(10.0)  # heartbeat expired (quiet), processing timeout (busy, 4 s)
    r.ready(b"last")
    r.b.close(r.now)  # broker closed
    r.feed()


def test_every_worker_loss_reason_the_core_gives_has_its_own_label() -> None:
    r = Rig(processing_timeout=4.0, heartbeat_interval=1.0, heartbeat_liveness=3)
    lose_workers_every_way(r)
    reasons = [e.reason for e in r.seen if isinstance(e, WorkerLost)]
    assert sorted(loss_reason(why) for why in reasons) == sorted(LOSS_REASONS[:-1])
    snap = r.m.snapshot(r.b)
    assert sum(snap.workers_lost.values()) == len(reasons) == 7
    assert snap.workers_lost[("slow", "processing_timeout")] == 1
    assert snap.protocol_errors == sum(isinstance(e, ProtocolError) for e in r.seen) == 1


def test_an_unknown_loss_reason_is_other() -> None:
    assert loss_reason("something new") == "other"


def test_services_past_max_services_fold_into_other_for_good() -> None:
    r = Rig(max_services=2)
    r.ready(b"w1", b"a")
    r.ready(b"w2", b"b")
    r.ready(b"w3", b"c")
    r.ready(b"w4", b"d")
    r.request(b"c1", b"c")
    assert [r.m.label(n) for n in (b"a", b"b", b"c", b"d")] == ["a", "b", OTHER, OTHER]
    snap = r.m.snapshot(r.b)
    assert snap.workers_registered == {"a": 1, "b": 1, OTHER: 2}
    assert snap.workers == {("a", "idle"): 1, ("a", "busy"): 0, ("b", "idle"): 1,
                            ("b", "busy"): 0, (OTHER, "idle"): 1, (OTHER, "busy"): 1}
    assert snap.received == {"a": 0, "b": 0, OTHER: 1}
    r.lost(b"w1")  # a is gone from the broker; its label stays a's
    assert r.m.label(b"a") == "a"
    assert r.m.label(b"e") == OTHER


def test_a_name_too_long_for_a_service_is_other() -> None:
    m = BrokerMetrics()
    assert m.label(b"x" * 256) == OTHER
    assert m.label(b"x" * 255) == "x" * 255


def test_names_are_label_text_even_when_not_utf8() -> None:
    m = BrokerMetrics()
    assert m.label(b"caf\xc3\xa9") == "café"
    assert m.label(b"\xff") == "\\xff"
    assert m.label(b"\\xff") == "\\xff"  # the same text: one label
    r = Rig()
    r.ready(b"w1", b"\xff")
    r.ready(b"w2", b"\\xff")
    assert r.m.snapshot(r.b).workers_registered == {"\\xff": 2}


def test_zero_max_services_puts_everything_in_other() -> None:
    r = Rig(max_services=0)
    r.ready(b"w1")
    assert r.m.snapshot(r.b).workers_registered == {OTHER: 1}


def test_events_of_other_machines_are_ignored() -> None:
    m = BrokerMetrics()
    m.observe([BrokerLost("gone", 1.0), RequestReceived(b"c", (b"x",), 1)])
    snap = m.snapshot(Broker())
    assert snap.requests == {} and snap.protocol_errors == 0


@pytest.mark.parametrize("buckets", [(), (1.0, 1.0), (2.0, 1.0), (1.0, float("inf")),
                                     (float("nan"),)])
def test_bad_buckets_are_refused(buckets: tuple[float, ...]) -> None:
    with pytest.raises(ValueError, match="buckets"):
        BrokerMetrics(buckets=buckets)
    with pytest.raises(ValueError, match="buckets"):
        WorkerMetrics(b"echo", buckets)


def test_negative_max_services_is_refused() -> None:
    with pytest.raises(ValueError, match="max_services"):
        BrokerMetrics(-1)


def test_default_buckets_are_used_when_none_given() -> None:
    m = BrokerMetrics()
    assert m.buckets == DEFAULT_BUCKETS and m.max_services == 100


# ------------------------------------------------------------------ worker metrics


def test_worker_metrics_time_the_handler_and_count_outcomes() -> None:
    m = WorkerMetrics(b"echo", BUCKETS)
    one, two = RequestReceived(b"c", (b"x",), 1), RequestReceived(b"c", (b"y",), 2)
    m.started(one, 1.0)
    m.started(two, 1.5)
    assert m.snapshot().in_progress == 2
    m.finished(one, True, 1.25)
    m.finished(two, False, 4.0)
    m.finished(one, True, 9.0)  # not started (again): ignored
    m.observe([BrokerLost("gone", 0.5), ProtocolError(b"", "x"), BrokerLost("gone", 0.5)])
    snap = m.snapshot()
    assert snap.service == "echo"
    assert snap.handled == {"replied": 1, "failed": 1}
    assert snap.handler == hist(BUCKETS, 0.25, 2.5)
    assert snap.broker_lost == 2 and snap.in_progress == 0
