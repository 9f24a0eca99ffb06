"""Behaviour of the sans-IO Broker, one test per behaviour, with fake time."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mdp_core import (
    Broker,
    BrokerConfig,
    ClientReply,
    ClientRequest,
    Command,
    Dialect,
    Disconnect,
    Event,
    Heartbeat,
    ProtocolError,
    Ready,
    RequestAbandoned,
    RequestDelivered,
    RequestExpired,
    RequestRedispatched,
    RequestRefused,
    RequestRequeued,
    WorkerLost,
    WorkerReady,
    WorkerReply,
    WorkerRequest,
    decode,
    encode,
)

D1, D2, DM = Dialect.MDP01, Dialect.MDP02, Dialect.MAJORTOMO


class Harness:
    """A broker plus helpers that speak to it in commands, not frames."""

    def __init__(self, **config: object) -> None:
        self.b = Broker(BrokerConfig(**config))  # type: ignore[arg-type]
        self.now = 0.0

    # inputs
    def ready(self, worker: bytes, service: bytes = b"echo", dialect: Dialect = D2) -> None:
        self.b.receive(worker, encode(Ready(service), dialect), self.now)

    def request(
        self, client: bytes, service: bytes = b"echo", body: Sequence[bytes] = (b"hi",),
        dialect: Dialect = D2,
    ) -> None:
        self.b.receive(client, encode(ClientRequest(service, tuple(body)), dialect), self.now)

    def reply(
        self, worker: bytes, client: bytes, body: Sequence[bytes] = (b"ok",), final: bool = True,
        dialect: Dialect = D2,
    ) -> None:
        self.b.receive(worker, encode(WorkerReply(client, tuple(body), final), dialect), self.now)

    def heartbeat(self, worker: bytes, dialect: Dialect = D2) -> None:
        self.b.receive(worker, encode(Heartbeat(), dialect), self.now)

    def disconnect(self, worker: bytes, dialect: Dialect = D2) -> None:
        self.b.receive(worker, encode(Disconnect(), dialect), self.now)

    def at(self, now: float) -> None:
        self.now = now
        self.b.tick(now)

    # outputs
    def out(self) -> list[tuple[bytes, Command]]:
        return [(peer, decode(frames, from_broker=True)[1]) for peer, frames in self.b.outgoing()]

    def raw(self) -> list[tuple[bytes, list[bytes]]]:
        return self.b.outgoing()

    def events(self) -> list[Event]:
        return self.b.events()

    def drain(self) -> None:
        self.b.outgoing()
        self.b.events()


def sent_to(out: list[tuple[bytes, Command]], peer: bytes) -> list[Command]:
    return [cmd for p, cmd in out if p == peer]


# ------------------------------------------------------------------ config


@pytest.mark.parametrize(
    "bad",
    [
        {"heartbeat_interval": 0},
        {"heartbeat_liveness": 0},
        {"request_timeout": 0},
        {"max_attempts": 0},
        {"max_queue": -1},
        {"max_gathered_bytes": -1},
        {"processing_timeout": 0},
        {"service_processing_timeouts": {b"x": -1.0}},
    ],
)
def test_config_rejects_out_of_range_values(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        BrokerConfig(**bad)  # type: ignore[arg-type]


def test_config_keeps_its_own_copy_of_service_timeouts() -> None:
    timeouts = {b"slow": 5.0}
    cfg = BrokerConfig(service_processing_timeouts=timeouts)
    timeouts[b"slow"] = 1.0
    assert cfg.service_processing_timeouts == {b"slow": 5.0}


def test_config_is_hashable_and_compares_by_value() -> None:
    cfg = BrokerConfig(service_processing_timeouts={b"a": 1.0})
    assert hash(cfg) == hash(BrokerConfig(service_processing_timeouts={b"a": 1.0}))
    assert cfg == BrokerConfig(service_processing_timeouts={b"a": 1.0})
    assert cfg != BrokerConfig()


def test_default_config_is_used_when_none_given() -> None:
    assert Broker().config == BrokerConfig()


# ------------------------------------------------------------ data path


def test_request_is_dispatched_to_idle_worker_and_reply_delivered() -> None:
    h = Harness()
    h.ready(b"w1")
    assert h.events() == [WorkerReady(b"w1", b"echo")]
    h.request(b"c1", body=(b"a", b"b"))
    assert h.out() == [(b"w1", WorkerRequest(b"c1", (b"a", b"b")))]
    h.reply(b"w1", b"c1", (b"A", b"B"))
    assert h.raw() == [(b"c1", [b"MDPC02", b"\x03", b"echo", b"A", b"B"])]
    assert h.events() == [RequestDelivered(b"c1", b"echo", b"w1")]


def test_request_waits_in_queue_until_a_worker_is_ready() -> None:
    h = Harness()
    h.request(b"c1")
    assert h.out() == []
    h.ready(b"w1")
    assert h.out() == [(b"w1", WorkerRequest(b"c1", (b"hi",)))]


def test_services_are_created_on_demand_and_dropped_when_empty() -> None:
    h = Harness()
    h.request(b"c1", b"new")
    assert b"new" in h.b._services
    h.at(30.0)
    assert b"new" not in h.b._services
    h.ready(b"w1", b"other")
    assert b"other" in h.b._services
    h.b.connection_lost(b"w1", h.now)
    assert h.b._services == {}


def test_idle_workers_are_dispatched_least_recently_used_first() -> None:
    h = Harness()
    for w in (b"w1", b"w2", b"w3"):
        h.ready(w)
    h.drain()
    order = []
    for i in range(5):
        h.request(b"c%d" % i)
        ((worker, _),) = h.out()
        order.append(worker)
        h.reply(worker, b"c%d" % i)
        h.drain()
    assert order == [b"w1", b"w2", b"w3", b"w1", b"w2"]


def test_requests_are_served_in_arrival_order_within_a_service() -> None:
    h = Harness()
    for i in range(3):
        h.request(b"c%d" % i)
    h.ready(b"w1")
    served = []
    for _ in range(3):
        cmds = [c for p, c in h.out() if p == b"w1"]
        (cmd,) = cmds
        assert isinstance(cmd, WorkerRequest)
        served.append(cmd.client)
        h.reply(b"w1", cmd.client)
    assert served == [b"c0", b"c1", b"c2"]


def test_one_worker_serves_only_its_own_service() -> None:
    h = Harness()
    h.ready(b"wa", b"a")
    h.ready(b"wb", b"b")
    h.drain()
    h.request(b"c1", b"b")
    h.request(b"c2", b"a")
    assert h.out() == [(b"wb", WorkerRequest(b"c1", (b"hi",))),
                       (b"wa", WorkerRequest(b"c2", (b"hi",)))]


def test_client_may_pipeline_several_requests_and_replies_map_back() -> None:
    h = Harness()
    h.ready(b"w1")
    h.ready(b"w2")
    h.drain()
    h.request(b"c1", body=(b"one",))
    h.request(b"c1", body=(b"two",))
    assert h.out() == [(b"w1", WorkerRequest(b"c1", (b"one",))),
                       (b"w2", WorkerRequest(b"c1", (b"two",)))]
    h.reply(b"w2", b"c1", (b"TWO",))
    h.reply(b"w1", b"c1", (b"ONE",))
    assert [c for _, c in h.out()] == [ClientReply(b"echo", (b"TWO",)),
                                       ClientReply(b"echo", (b"ONE",))]
    assert h.events() == [RequestDelivered(b"c1", b"echo", b"w2"),
                          RequestDelivered(b"c1", b"echo", b"w1")]
    assert h.b._clients == {}


def test_memoryview_frames_are_accepted() -> None:
    h = Harness()
    h.b.receive(b"w1", [memoryview(f) for f in encode(Ready(b"echo"), D2)], 0.0)
    h.b.receive(bytearray(b"c1"),  # type: ignore[arg-type]
                [memoryview(f) for f in encode(ClientRequest(b"echo", (b"x",)), D2)], 0.0)
    assert h.out() == [(b"w1", WorkerRequest(b"c1", (b"x",)))]
    h.b.receive(b"w1", [memoryview(f) for f in encode(WorkerReply(b"c1", (b"y",)), D2)], 0.0)
    assert h.raw() == [(b"c1", [b"MDPC02", b"\x03", b"echo", b"y"])]


# -------------------------------------------------------------- heartbeats


def test_broker_sends_heartbeat_to_each_worker_every_interval() -> None:
    h = Harness(heartbeat_interval=2.5)
    h.ready(b"w1")
    h.ready(b"w2", dialect=D1)
    h.drain()
    assert h.b.next_deadline() == 2.5
    h.at(2.4)
    assert h.out() == []
    h.heartbeat(b"w1")
    h.heartbeat(b"w2", D1)
    h.at(2.5)
    assert h.raw() == [(b"w1", [b"MDPW02", b"\x05"]), (b"w2", [b"", b"MDPW01", b"\x04"])]
    assert h.b.next_deadline() == 5.0


def test_idle_worker_silent_for_liveness_intervals_expires_at_that_tick() -> None:
    h = Harness(heartbeat_interval=2.5, heartbeat_liveness=3)
    h.ready(b"w1")
    h.drain()
    h.at(2.5)
    h.at(5.0)
    assert sent_to(h.out(), b"w1") == [Heartbeat(), Heartbeat()]
    assert h.b.next_deadline() == 7.5
    h.at(7.4999)
    assert h.events() == []
    h.at(7.5)
    assert h.events() == [WorkerLost(b"w1", b"echo", "heartbeat expired: silent for 7.5s")]
    assert h.out() == []  # neither heartbeat nor DISCONNECT to a worker presumed dead
    assert h.b.next_deadline() is None


def test_any_command_from_a_worker_counts_as_a_heartbeat() -> None:
    h = Harness(heartbeat_interval=1.0, heartbeat_liveness=3)
    h.ready(b"w1")
    h.now = 2.0
    h.request(b"c1")
    h.now = 2.9
    h.reply(b"w1", b"c1")  # no HEARTBEAT, but a FINAL
    h.at(5.8)
    h.drain()
    h.at(5.9)
    assert [e for e in h.events() if isinstance(e, WorkerLost)] == [
        WorkerLost(b"w1", b"echo", "heartbeat expired: silent for 3s")]


def test_heartbeat_from_idle_worker_keeps_it_alive() -> None:
    h = Harness(heartbeat_interval=1.0, heartbeat_liveness=3)
    h.ready(b"w1")
    for t in (1.0, 2.0, 3.0, 4.0, 5.0):
        h.at(t)
        h.heartbeat(b"w1")
    assert not [e for e in h.events() if isinstance(e, WorkerLost)]
    h.at(7.99)
    assert not [e for e in h.events() if isinstance(e, WorkerLost)]
    h.at(8.0)
    assert [type(e) for e in h.events()] == [WorkerLost]


def test_busy_worker_is_not_expired_for_silence() -> None:
    h = Harness(heartbeat_interval=1.0, heartbeat_liveness=3)
    h.ready(b"w1")
    h.request(b"c1")
    h.drain()
    for t in range(1, 100):
        h.at(float(t))
    assert h.events() == []
    assert sent_to(h.out(), b"w1") == [Heartbeat()] * 99  # the broker keeps heartbeating
    h.reply(b"w1", b"c1")
    assert h.events() == [RequestDelivered(b"c1", b"echo", b"w1")]


def test_busy_worker_heartbeats_are_accepted() -> None:
    h = Harness()
    h.ready(b"w1")
    h.request(b"c1")
    h.heartbeat(b"w1")
    h.reply(b"w1", b"c1", final=False)
    h.heartbeat(b"w1")
    h.reply(b"w1", b"c1")
    assert [type(e) for e in h.events()] == [WorkerReady, RequestDelivered]


def test_sending_a_request_postpones_the_broker_heartbeat() -> None:
    h = Harness(heartbeat_interval=2.5)
    h.ready(b"w1")
    h.now = 2.0
    h.request(b"c1")
    h.drain()
    h.at(2.5)  # the old timer pops, finds nothing due
    assert h.out() == []
    assert h.b.next_deadline() == 4.5
    h.at(4.5)
    assert h.out() == [(b"w1", Heartbeat())]


def test_tick_may_be_called_late_and_early() -> None:
    h = Harness(heartbeat_interval=2.5)
    h.ready(b"w1")
    h.at(1.0)  # early: nothing
    assert h.out() == []
    h.heartbeat(b"w1")
    h.now = 9.0
    h.heartbeat(b"w1")
    h.at(9.1)  # late: one heartbeat, not a burst
    assert h.out() == [(b"w1", Heartbeat())]
    assert h.b.next_deadline() == pytest.approx(11.6)


# ------------------------------------------------------- busy worker death


def test_busy_worker_killed_mid_job_reply_comes_from_second_worker() -> None:
    h = Harness()
    h.ready(b"w1")
    h.ready(b"w2")
    h.request(b"c1", body=(b"job",))
    assert sent_to(h.out(), b"w1") == [WorkerRequest(b"c1", (b"job",))]
    h.drain()
    h.b.connection_lost(b"w1", h.now)
    assert h.events() == [WorkerLost(b"w1", b"echo", "connection lost"),
                          RequestRequeued(b"c1", b"echo", b"w1", 1),
                          RequestRedispatched(b"c1", b"echo", b"w2", 2, 0.0)]
    assert h.out() == [(b"w2", WorkerRequest(b"c1", (b"job",)))]
    h.reply(b"w2", b"c1", (b"done",))
    assert h.out() == [(b"c1", ClientReply(b"echo", (b"done",)))]
    assert h.events() == [RequestDelivered(b"c1", b"echo", b"w2")]


def test_request_of_lost_worker_goes_back_to_head_of_its_queue() -> None:
    h = Harness()
    h.ready(b"w1")
    h.request(b"c1")
    h.request(b"c2")
    h.drain()
    h.b.connection_lost(b"w1", 0.0)
    assert h.out() == []
    assert [type(e) for e in h.events()] == [WorkerLost, RequestRequeued]
    h.ready(b"w2")
    assert h.out() == [(b"w2", WorkerRequest(b"c1", (b"hi",)))]


def test_request_expires_after_max_attempts() -> None:
    h = Harness(max_attempts=2)
    h.request(b"c1")
    h.ready(b"w1")
    h.b.connection_lost(b"w1", 0.0)
    h.ready(b"w2")
    h.drain()
    h.b.connection_lost(b"w2", 0.0)
    assert h.events() == [
        WorkerLost(b"w2", b"echo", "connection lost"),
        RequestExpired(b"c1", b"echo", "worker lost on attempt 2 of max_attempts=2"),
    ]
    h.ready(b"w3")
    assert sent_to(h.out(), b"w3") == []
    assert h.b._clients == {}


def test_requeued_request_expires_at_its_original_request_timeout() -> None:
    h = Harness(request_timeout=10.0, heartbeat_interval=100.0)
    h.request(b"c1")
    h.ready(b"w1")
    h.now = 3.0
    h.b.connection_lost(b"w1", 3.0)
    h.drain()
    assert h.b.next_deadline() == 10.0
    h.at(9.9)
    assert h.events() == []
    h.at(10.0)
    assert h.events() == [RequestExpired(
        b"c1", b"echo", "request_timeout (10s) passed with no worker to take it")]
    assert h.b.next_deadline() is None


def test_worker_lost_after_request_timeout_expires_its_request_at_once() -> None:
    h = Harness(request_timeout=10.0, heartbeat_interval=100.0)
    h.ready(b"w1")
    h.request(b"c1")
    h.drain()
    h.now = 50.0
    h.b.connection_lost(b"w1", 50.0)
    assert h.events() == [
        WorkerLost(b"w1", b"echo", "connection lost"),
        RequestRequeued(b"c1", b"echo", b"w1", 1),
        RequestExpired(b"c1", b"echo", "worker lost and request_timeout (10s) already passed"),
    ]


def test_worker_lost_after_request_timeout_still_redispatches_to_idle_worker() -> None:
    h = Harness(request_timeout=10.0, heartbeat_interval=100.0)
    h.ready(b"w1")
    h.request(b"c1")
    h.ready(b"w2")
    h.drain()
    h.b.connection_lost(b"w1", 50.0)
    assert h.out() == [(b"w2", WorkerRequest(b"c1", (b"hi",)))]


def test_busy_worker_that_sends_disconnect_has_its_request_redispatched() -> None:
    h = Harness()
    h.ready(b"w1")
    h.ready(b"w2")
    h.request(b"c1")
    h.drain()
    h.disconnect(b"w1")
    assert h.events() == [WorkerLost(b"w1", b"echo", "worker sent DISCONNECT"),
                          RequestRequeued(b"c1", b"echo", b"w1", 1),
                          RequestRedispatched(b"c1", b"echo", b"w2", 2, 0.0)]
    assert h.out() == [(b"w2", WorkerRequest(b"c1", (b"hi",)))]


def test_processing_timeout_disconnects_worker_and_redispatches() -> None:
    h = Harness(processing_timeout=4.0, heartbeat_interval=10.0)
    h.ready(b"w1")
    h.ready(b"w2")
    h.now = 1.0
    h.request(b"c1")
    h.drain()
    assert h.b.next_deadline() == 5.0
    h.at(4.99)
    assert h.out() == []
    h.at(5.0)
    assert h.events() == [WorkerLost(b"w1", b"echo", "processing timeout (4s) passed"),
                          RequestRequeued(b"c1", b"echo", b"w1", 1),
                          RequestRedispatched(b"c1", b"echo", b"w2", 2, 0.0)]
    assert h.out() == [(b"w1", Disconnect()), (b"w2", WorkerRequest(b"c1", (b"hi",)))]
    h.reply(b"w1", b"c1")  # its late reply is dropped and answered with DISCONNECT
    assert h.out() == [(b"w1", Disconnect())]
    (err,) = h.events()
    assert isinstance(err, ProtocolError) and err.peer == b"w1"


def test_processing_deadline_is_cleared_when_the_worker_replies() -> None:
    h = Harness(processing_timeout=4.0, heartbeat_interval=10.0)
    h.ready(b"w1")
    h.request(b"c1")
    h.now = 1.0
    h.reply(b"w1", b"c1")
    h.drain()
    h.at(4.0)
    assert h.events() == []
    assert h.b.next_deadline() == 10.0


def test_service_processing_timeout_overrides_the_default() -> None:
    h = Harness(processing_timeout=4.0, heartbeat_interval=100.0,
                service_processing_timeouts={b"slow": 50.0, b"free": None})
    for w, s in ((b"w1", b"slow"), (b"w2", b"free"), (b"w3", b"echo")):
        h.ready(w, s)
        h.request(b"c" + w, s)
    h.drain()
    h.at(60.0)
    lost = [e for e in h.events() if isinstance(e, WorkerLost)]
    assert lost == [WorkerLost(b"w3", b"echo", "processing timeout (4s) passed"),
                    WorkerLost(b"w1", b"slow", "processing timeout (50s) passed")]


# ---------------------------------------------------------- late replies


def test_late_reply_from_a_lost_worker_is_dropped_and_sender_disconnected() -> None:
    h = Harness()
    h.ready(b"w1")
    h.ready(b"w2")
    h.request(b"c1")
    h.b.connection_lost(b"w1", 0.0)
    h.drain()
    h.reply(b"w1", b"c1", (b"late",))
    assert h.out() == [(b"w1", Disconnect())]
    (err,) = h.events()
    assert isinstance(err, ProtocolError) and "no worker session" in err.reason
    h.reply(b"w2", b"c1", (b"real",))
    assert h.out() == [(b"c1", ClientReply(b"echo", (b"real",)))]


def test_reply_for_a_client_the_worker_does_not_serve_disconnects_it() -> None:
    h = Harness()
    h.ready(b"w1")
    h.ready(b"w2")
    h.request(b"c1")
    h.drain()
    h.reply(b"w1", b"intruder", (b"x",))
    out = h.out()
    assert out == [(b"w1", Disconnect()), (b"w2", WorkerRequest(b"c1", (b"hi",)))]
    events = h.events()
    assert isinstance(events[0], ProtocolError) and b"intruder" in events[0].reason.encode()
    assert isinstance(events[1], WorkerLost) and events[1].reason.startswith("protocol violation")
    assert events[2] == RequestRequeued(b"c1", b"echo", b"w1", 1)


def test_reply_from_an_idle_worker_is_unexpected() -> None:
    h = Harness()
    h.ready(b"w1")
    h.drain()
    h.reply(b"w1", b"c1")
    assert h.out() == [(b"w1", Disconnect())]
    err, lost = h.events()
    assert isinstance(err, ProtocolError) and "in state idle" in err.reason
    assert isinstance(lost, WorkerLost)


def test_a_reply_never_reaches_the_client_twice() -> None:
    h = Harness()
    h.ready(b"w1")
    h.request(b"c1")
    h.reply(b"w1", b"c1")
    h.drain()
    h.reply(b"w1", b"c1")
    assert sent_to(h.out(), b"c1") == []


# ---------------------------------------------------------------- queueing


def test_request_for_unknown_service_expires_at_request_timeout() -> None:
    h = Harness(request_timeout=30.0)
    h.request(b"c1", b"nobody")
    assert h.b.next_deadline() == 30.0
    h.at(29.99)
    assert h.events() == []
    h.at(30.0)
    assert h.events() == [RequestExpired(
        b"c1", b"nobody", "request_timeout (30s) passed with no worker to take it")]
    assert h.out() == []
    assert h.b.next_deadline() is None


def test_requests_beyond_max_queue_are_refused() -> None:
    h = Harness(max_queue=2)
    for i in range(3):
        h.request(b"c%d" % i)
    assert h.events() == [RequestRefused(b"c2", b"echo", "service queue is full (max_queue=2)")]
    h.ready(b"w1")
    assert sent_to(h.out(), b"w1") == [WorkerRequest(b"c0", (b"hi",))]


def test_max_queue_zero_refuses_unless_a_worker_is_idle() -> None:
    h = Harness(max_queue=0)
    h.request(b"c1")
    assert [type(e) for e in h.events()] == [RequestRefused]
    assert h.b._services == {}
    h.ready(b"w1")
    h.request(b"c2")
    assert sent_to(h.out(), b"w1") == [WorkerRequest(b"c2", (b"hi",))]
    h.request(b"c3")
    assert [type(e) for e in h.events()] == [WorkerReady, RequestRefused]


# -------------------------------------------------------------- client gone


def test_client_gone_abandons_its_queued_requests() -> None:
    h = Harness()
    h.request(b"c1")
    h.request(b"c1")
    h.request(b"c2")
    h.b.connection_lost(b"c1", 0.0)
    assert h.events() == [RequestAbandoned(b"c1", b"echo")] * 2
    h.ready(b"w1")
    assert sent_to(h.out(), b"w1") == [WorkerRequest(b"c2", (b"hi",))]
    h.at(100.0)
    assert not [e for e in h.events() if isinstance(e, RequestExpired)]


def test_client_gone_abandons_dispatched_request_and_drops_the_late_reply() -> None:
    h = Harness()
    h.ready(b"w1")
    h.request(b"c1")
    h.request(b"c2")
    h.drain()
    h.b.connection_lost(b"c1", 0.0)
    assert h.events() == [RequestAbandoned(b"c1", b"echo")]
    h.reply(b"w1", b"c1", final=False)
    h.reply(b"w1", b"c1")
    assert h.out() == [(b"w1", WorkerRequest(b"c2", (b"hi",)))]  # back to work, nothing to c1
    assert h.events() == []


def test_client_gone_with_only_its_queued_request_drops_the_service() -> None:
    h = Harness()
    h.request(b"c1", b"lonely")
    h.b.connection_lost(b"c1", 0.0)
    assert h.b._services == {}
    assert h.b.next_deadline() is None


def test_worker_lost_while_holding_an_abandoned_request_does_not_requeue_it() -> None:
    h = Harness()
    h.ready(b"w1")
    h.request(b"c1")
    h.b.connection_lost(b"c1", 0.0)
    h.drain()
    h.b.connection_lost(b"w1", 0.0)
    assert h.events() == [WorkerLost(b"w1", b"echo", "connection lost")]


def test_connection_lost_for_unknown_peer_is_ignored() -> None:
    h = Harness()
    h.b.connection_lost(b"nobody", 0.0)
    assert h.events() == [] and h.out() == []


# ------------------------------------------------------------------ RFC rules


def test_second_ready_is_unexpected_and_disconnects() -> None:
    h = Harness()
    h.ready(b"w1")
    h.drain()
    h.ready(b"w1", b"other")
    assert h.out() == [(b"w1", Disconnect())]
    err, lost = h.events()
    assert isinstance(err, ProtocolError) and "second READY" in err.reason
    assert lost == WorkerLost(b"w1", b"echo",
                              "protocol violation: unexpected READY (a worker MUST NOT send "
                              "a second READY) in state idle")


def test_ready_for_an_mmi_service_is_refused_with_disconnect() -> None:
    h = Harness()
    h.ready(b"w1", b"mmi.service", D1)
    assert h.raw() == [(b"w1", [b"", b"MDPW01", b"\x05"])]
    (err,) = h.events()
    assert isinstance(err, ProtocolError) and "mmi." in err.reason
    assert h.b._workers == {}


def test_heartbeat_before_ready_is_answered_with_disconnect() -> None:
    h = Harness()
    h.heartbeat(b"w1", DM)
    assert h.raw() == [(b"w1", [b"", b"MDPW02", b"\x06"])]
    assert [type(e) for e in h.events()] == [ProtocolError]


def test_disconnect_before_ready_is_accepted_silently() -> None:
    h = Harness()
    h.disconnect(b"w1")
    assert h.out() == [] and h.events() == []


def test_a_worker_that_sends_request_is_disconnected() -> None:
    h = Harness()
    h.b.receive(b"x", encode(WorkerRequest(b"c", (b"b",)), D2), 0.0)
    assert h.out() == [(b"x", Disconnect())]
    h.ready(b"w1")
    h.drain()
    h.b.receive(b"w1", encode(WorkerRequest(b"c", (b"b",)), D2), 0.0)
    assert h.out() == [(b"w1", Disconnect())]
    assert [type(e) for e in h.events()] == [ProtocolError, WorkerLost]


def test_a_client_that_sends_a_reply_command_is_reported_and_dropped() -> None:
    h = Harness()
    h.b.receive(b"c1", [b"MDPC02", b"\x03", b"echo", b"x"], 0.0)
    assert h.out() == []
    (err,) = h.events()
    assert isinstance(err, ProtocolError) and err.peer == b"c1"


@pytest.mark.parametrize(
    "frames",
    [
        [],
        [b""],
        [b"junk"],
        [b"MDPC02"],
        [b"MDPC02", b"\x01", b""],
        [b"MDPC02", b"\x01", b"", b"body"],
        [b"MDPC02", b"\x09", b"echo", b"x"],
        [b"MDPW02", b"\x04", b"", b"", b"x"],
        [b"MDPW02", b"\x04", b"c", b"notempty", b"x"],
        [b"MDPW02", b"\x05", b"extra"],
        [b"", b"MDPW01", b"\x01"],
    ],
)
def test_malformed_messages_are_dropped_and_reported(frames: list[bytes]) -> None:
    h = Harness()
    h.ready(b"w1")
    h.request(b"c1")
    h.drain()
    h.b.receive(b"w1", frames, 0.0)
    assert h.out() == []
    (err,) = h.events()
    assert isinstance(err, ProtocolError) and err.reason.startswith("malformed message dropped")
    h.reply(b"w1", b"c1")  # the session is intact
    assert [type(e) for e in h.events()] == [RequestDelivered]


def test_nothing_is_sent_to_a_worker_after_it_sent_disconnect() -> None:
    h = Harness(heartbeat_interval=1.0)
    h.ready(b"w1")
    h.disconnect(b"w1")
    h.request(b"c1")
    for t in range(1, 20):
        h.at(float(t))
    assert sent_to(h.out(), b"w1") == []


def test_nothing_is_sent_to_a_worker_after_its_connection_is_lost() -> None:
    h = Harness(heartbeat_interval=1.0)
    h.ready(b"w1")
    h.b.connection_lost(b"w1", 0.0)
    h.request(b"c1")
    for t in range(1, 20):
        h.at(float(t))
    assert sent_to(h.out(), b"w1") == []


def test_a_worker_may_register_again_after_its_session_ended() -> None:
    h = Harness()
    h.ready(b"w1")
    h.disconnect(b"w1")
    h.ready(b"w1", b"other")
    assert [type(e) for e in h.events()] == [WorkerReady, WorkerLost, WorkerReady]
    assert h.b._workers[b"w1"].service.name == b"other"


# --------------------------------------------------------------------- MMI


def test_mmi_service_answers_200_iff_a_live_worker_serves_it() -> None:
    h = Harness()
    h.request(b"c1", b"mmi.service", (b"echo",))
    h.ready(b"w1")
    h.request(b"c1", b"mmi.service", (b"echo",))
    h.request(b"c1", b"mmi.service", (b"nope",))
    h.request(b"c2")  # make w1 busy: still counts
    h.request(b"c1", b"mmi.service", (b"echo",))
    replies = [c for p, c in h.out() if p == b"c1"]
    assert replies == [ClientReply(b"mmi.service", (code,))
                       for code in (b"404", b"200", b"404", b"200")]
    assert RequestDelivered(b"c1", b"mmi.service", b"") in h.events()


def test_mmi_services_lists_services_with_workers_sorted() -> None:
    h = Harness()
    h.request(b"c1", b"mmi.services")
    h.ready(b"w1", b"zeta")
    h.ready(b"w2", b"alpha")
    h.ready(b"w3", b"alpha")
    h.request(b"c9", b"queued-only")
    h.request(b"c1", b"mmi.services")
    replies = [c for p, c in h.out() if p == b"c1"]
    assert replies == [ClientReply(b"mmi.services", (b"",)),
                       ClientReply(b"mmi.services", (b"alpha", b"zeta"))]


def test_mmi_workers_lists_service_and_state_of_each_worker() -> None:
    h = Harness()
    h.request(b"c1", b"mmi.workers")
    h.ready(b"w1", b"b")
    h.ready(b"w2", b"a")
    h.request(b"c2", b"b")
    h.request(b"c1", b"mmi.workers")
    replies = [c for p, c in h.out() if p == b"c1"]
    assert replies == [ClientReply(b"mmi.workers", (b"",)),
                       ClientReply(b"mmi.workers", (b"a idle", b"b busy"))]


def test_other_mmi_services_answer_501() -> None:
    h = Harness()
    h.request(b"c1", b"mmi.frobnicate", dialect=D1)
    assert h.raw() == [(b"c1", [b"", b"MDPC01", b"mmi.frobnicate", b"501"])]


def test_mmi_reply_to_majortomo_client_has_no_service_frame() -> None:
    h = Harness()
    h.request(b"c1", b"mmi.service", (b"x",), dialect=DM)
    assert h.raw() == [(b"c1", [b"", b"MDPC02", b"\x04", b"404"])]


# ---------------------------------------------------------------- dialects


def test_01_client_with_02_worker_gets_partials_gathered_into_one_reply() -> None:
    h = Harness()
    h.ready(b"w1", dialect=D2)
    h.request(b"c1", body=(b"q",), dialect=D1)
    assert h.raw() == [(b"w1", [b"MDPW02", b"\x02", b"c1", b"", b"q"])]
    h.reply(b"w1", b"c1", (b"p1",), final=False)
    h.reply(b"w1", b"c1", (b"p2", b"p3"), final=False)
    assert h.out() == []
    h.reply(b"w1", b"c1", (b"f",))
    assert h.raw() == [(b"c1", [b"", b"MDPC01", b"echo", b"p1", b"p2", b"p3", b"f"])]


def test_01_client_reply_holds_only_the_partials_of_the_attempt_that_finished() -> None:
    h = Harness(max_gathered_bytes=6)
    h.ready(b"w1")
    h.request(b"c1", body=(b"q",), dialect=D1)
    h.drain()
    h.reply(b"w1", b"c1", (b"dead.",), final=False)  # 5 of 6 bytes, then w1 dies
    h.b.connection_lost(b"w1", h.now)
    h.ready(b"w2")
    h.drain()
    h.reply(b"w2", b"c1", (b"p2",), final=False)  # would pass the cap if 'dead.' counted
    h.reply(b"w2", b"c1", (b"f",))
    assert h.raw() == [(b"c1", [b"", b"MDPC01", b"echo", b"p2", b"f"])]


def test_gathered_partials_beyond_max_gathered_bytes_expire_the_request() -> None:
    h = Harness(max_gathered_bytes=5)
    h.ready(b"w1")
    h.request(b"c1", dialect=D1)
    h.request(b"c2", dialect=D1)
    h.drain()
    h.reply(b"w1", b"c1", (b"12345",), final=False)
    assert h.events() == []
    h.reply(b"w1", b"c1", (b"6",), final=False)
    assert h.events() == [RequestExpired(
        b"c1", b"echo", "MDP/0.1 client: PARTIAL replies gathered for one REPLY exceed "
        "max_gathered_bytes=5; rest of the reply dropped")]
    h.reply(b"w1", b"c1", (b"7",), final=False)
    h.reply(b"w1", b"c1", (b"end",))
    assert h.out() == [(b"w1", WorkerRequest(b"c2", (b"hi",)))]  # nothing to c1
    assert h.events() == []


def test_02_client_with_01_worker_gets_a_final() -> None:
    h = Harness()
    h.ready(b"w1", dialect=D1)
    h.request(b"c1", dialect=D2)
    assert h.raw() == [(b"w1", [b"", b"MDPW01", b"\x02", b"c1", b"", b"hi"])]
    h.reply(b"w1", b"c1", (b"r",), dialect=D1)
    assert h.raw() == [(b"c1", [b"MDPC02", b"\x03", b"echo", b"r"])]


def test_01_client_with_01_worker() -> None:
    h = Harness()
    h.ready(b"w1", dialect=D1)
    h.request(b"c1", dialect=D1)
    h.drain()
    h.reply(b"w1", b"c1", (b"r",), dialect=D1)
    assert h.raw() == [(b"c1", [b"", b"MDPC01", b"echo", b"r"])]


def test_02_client_gets_partials_streamed_then_final() -> None:
    h = Harness()
    h.ready(b"w1")
    h.request(b"c1")
    h.drain()
    h.reply(b"w1", b"c1", (b"p",), final=False)
    h.reply(b"w1", b"c1", (b"f",))
    assert h.raw() == [(b"c1", [b"MDPC02", b"\x02", b"echo", b"p"]),
                       (b"c1", [b"MDPC02", b"\x03", b"echo", b"f"])]


def test_majortomo_client_and_worker_are_answered_in_their_dialect() -> None:
    h = Harness()
    h.ready(b"w1", dialect=DM)
    h.request(b"c1", body=(b"q",), dialect=DM)
    assert h.raw() == [(b"w1", [b"", b"MDPW02", b"\x02", b"c1", b"", b"q"])]
    h.reply(b"w1", b"c1", (b"p",), final=False, dialect=DM)
    h.reply(b"w1", b"c1", (b"f",), dialect=DM)
    assert h.raw() == [(b"c1", [b"", b"MDPC02", b"\x03", b"p"]),
                       (b"c1", [b"", b"MDPC02", b"\x04", b"f"])]
    h.at(2.5)
    assert h.raw() == [(b"w1", [b"", b"MDPW02", b"\x05"])]


@pytest.mark.parametrize("dialect", [D1, D2, DM])
@pytest.mark.parametrize("final", [True, False])
def test_reply_frames_are_what_the_codec_builds(dialect: Dialect, final: bool) -> None:
    from mdp_core._broker_parts import _reply_frames

    if dialect is D1 and not final:
        return  # MDP/0.1 has no PARTIAL; gathered instead (tested above)
    service = None if dialect is DM else b"svc"
    expected = encode(ClientReply(service, (b"a", b"b"), final), dialect)
    assert _reply_frames(dialect, b"svc", None, (b"a", b"b"), final) == expected


# -------------------------------------------------------------------- close


def test_close_disconnects_workers_and_expires_pending_requests() -> None:
    h = Harness()
    h.ready(b"w1")
    h.ready(b"w2", dialect=D1)
    h.request(b"c1")
    h.request(b"c2", b"queued")
    h.drain()
    h.b.close(1.0)
    assert h.raw() == [(b"w1", [b"MDPW02", b"\x06"]), (b"w2", [b"", b"MDPW01", b"\x05"])]
    assert h.events() == [
        WorkerLost(b"w1", b"echo", "broker closed"),
        WorkerLost(b"w2", b"echo", "broker closed"),
        RequestExpired(b"c1", b"echo", "broker closed"),
        RequestExpired(b"c2", b"queued", "broker closed"),
    ]
    assert h.b.next_deadline() is None


def test_input_after_close_is_ignored() -> None:
    h = Harness()
    h.ready(b"w1")
    h.b.close(0.0)
    h.b.close(0.0)
    h.drain()
    h.ready(b"w2")
    h.request(b"c1")
    h.b.connection_lost(b"w1", 1.0)
    h.at(100.0)
    assert h.out() == [] and h.events() == []
    assert h.b.next_deadline() is None


# ------------------------------------------------------- timer bookkeeping


def test_requeued_request_taken_again_leaves_no_timer_behind() -> None:
    h = Harness(request_timeout=10.0, heartbeat_interval=100.0)
    h.request(b"c1")
    h.ready(b"w1")
    h.b.connection_lost(b"w1", 1.0)  # back to the queue, with a deadline of 10
    h.ready(b"w2")  # takes it at once
    h.drain()
    assert h.b.next_deadline() == 100.0  # only w2's heartbeat is left
    h.b.connection_lost(b"w2", 2.0)  # requeued once more
    h.ready(b"w3")
    h.drain()
    h.at(10.0)  # the stale queue deadline pops without expiring the dispatched request
    assert h.events() == []
    h.reply(b"w3", b"c1")
    assert [type(e) for e in h.events()] == [RequestDelivered]


def test_processing_deadline_later_than_next_heartbeat_is_checked_after_it() -> None:
    h = Harness(processing_timeout=15.0, heartbeat_interval=10.0, heartbeat_liveness=3)
    h.ready(b"w1")
    h.request(b"c1")
    h.drain()
    assert h.b.next_deadline() == 10.0
    h.at(10.0)
    assert h.out() == [(b"w1", Heartbeat())]
    assert h.b.next_deadline() == 15.0
    h.at(15.0)
    assert [type(e) for e in h.events()] == [WorkerLost, RequestRequeued]


def test_request_requeued_after_its_first_queue_entry_was_cleaned_still_expires() -> None:
    h = Harness(request_timeout=10.0, heartbeat_interval=100.0)
    h.request(b"c1")
    h.ready(b"w1")
    assert h.b.next_deadline() == 100.0  # the dispatched request's queue entry is gone
    h.b.connection_lost(b"w1", 1.0)
    h.drain()
    assert h.b.next_deadline() == 10.0
    h.at(10.0)
    assert h.events() == [RequestExpired(
        b"c1", b"echo", "request_timeout (10s) passed with no worker to take it")]


@settings(max_examples=200, deadline=None)
@given(
    messages=st.lists(
        st.tuples(st.sampled_from([b"w1", b"c1", b""]),
                  st.lists(st.binary(max_size=8) | st.sampled_from(
                      [b"", b"MDPC01", b"MDPC02", b"MDPW01", b"MDPW02", b"\x01", b"\x02",
                       b"\x03", b"\x04", b"\x05", b"\x06", b"echo", b"mmi.service"]),
                      max_size=7)),
        max_size=20))
def test_receive_never_raises_on_arbitrary_frames(
    messages: list[tuple[bytes, list[bytes]]]
) -> None:
    b = Broker()
    for i, (peer, frames) in enumerate(messages):
        b.receive(peer, frames, float(i))
        b.tick(float(i))
    for _peer, frames in b.outgoing():
        decode(frames, from_broker=True)  # whatever it sends is well-formed
