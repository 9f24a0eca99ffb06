"""The Broker's bounds and failed sends, with fake time and no sockets.

* ``send_failed``: what a send the transport refused means for a REQUEST,
  a reply, a PARTIAL, an MMI answer, a HEARTBEAT or DISCONNECT;
* memory bounded by bytes (``max_queued_bytes``) and by the sizes peers
  choose (``max_frames``, ``max_service_name``, ``max_services``,
  ``max_mmi_reply_bytes``);
* reasons that quote a peer's bytes stay short.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

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
    RequestUndelivered,
    WorkerLost,
    WorkerReady,
    WorkerReply,
    WorkerRequest,
    decode,
    encode,
)
from mdp_core._broker_parts import _shown

D1, D2, DM = Dialect.MDP01, Dialect.MDP02, Dialect.MAJORTOMO
MB = 1024 * 1024


class Harness:
    """A broker, a clock, and helpers that speak in commands."""

    def __init__(self, **config: object) -> None:
        self.b = Broker(BrokerConfig(**config))  # type: ignore[arg-type]
        self.now = 0.0

    def send(self, peer: bytes, command: Command, dialect: Dialect = D2) -> None:
        self.b.receive(peer, encode(command, dialect), self.now)

    def ready(self, worker: bytes, service: bytes = b"echo", dialect: Dialect = D2) -> None:
        self.send(worker, Ready(service), dialect)

    def request(
        self, client: bytes, service: bytes = b"echo", body: Sequence[bytes] = (b"hi",),
        dialect: Dialect = D2,
    ) -> None:
        self.send(client, ClientRequest(service, tuple(body)), dialect)

    def reply(
        self, worker: bytes, client: bytes, body: Sequence[bytes] = (b"ok",), final: bool = True,
        dialect: Dialect = D2,
    ) -> None:
        self.send(worker, WorkerReply(client, tuple(body), final), dialect)

    def raw(self) -> list[tuple[bytes, list[bytes]]]:
        return self.b.outgoing()

    def out(self) -> list[tuple[bytes, Command]]:
        return [(p, decode(f, from_broker=True)[1]) for p, f in self.b.outgoing()]

    def events(self) -> list[Event]:
        return self.b.events()

    def drain(self) -> None:
        self.b.outgoing()
        self.b.events()

    def fail(self, out: list[tuple[bytes, list[bytes]]], *peers: bytes) -> None:
        """Report as failed every message of ``out`` sent to one of ``peers``."""
        for peer, frames in out:
            if peer in peers:
                self.b.send_failed(peer, frames, self.now)


def kinds(events: list[Event]) -> list[type]:
    return [type(e) for e in events]


# ------------------------------------------------------------ send_failed: REQUEST


def test_request_that_did_not_reach_its_worker_goes_back_to_the_head_of_its_queue() -> None:
    h = Harness(max_attempts=1)
    h.ready(b"w1")
    h.drain()
    h.request(b"c1", body=(b"first",))
    h.request(b"c2", body=(b"second",))
    out = h.raw()
    h.fail(out, b"w1")
    events = h.events()
    assert kinds(events) == [WorkerLost, RequestRequeued]
    lost, requeued = events
    assert isinstance(lost, WorkerLost) and lost.worker == b"w1"
    assert lost.reason.startswith("send failed")
    assert requeued == RequestRequeued(b"c1", b"echo", b"w1", 0)  # the attempt did not count
    assert h.out() == [(b"w1", Disconnect())]
    h.ready(b"w2")
    # c1's request comes first, and max_attempts=1 still lets it run once
    assert h.out() == [(b"w2", WorkerRequest(b"c1", (b"first",)))]
    h.reply(b"w2", b"c1")
    assert h.events()[-1] == RequestDelivered(b"c1", b"echo", b"w2")


def test_request_that_did_not_reach_its_worker_goes_at_once_to_an_idle_one() -> None:
    h = Harness()
    h.ready(b"w1")
    h.ready(b"w2")
    h.drain()
    h.request(b"c1")  # LRU: w1
    out = h.raw()
    assert [p for p, _ in out] == [b"w1"]
    h.fail(out, b"w1")
    assert h.out() == [(b"w1", Disconnect()), (b"w2", WorkerRequest(b"c1", (b"hi",)))]
    assert h.events()[1:] == [RequestRequeued(b"c1", b"echo", b"w1", 0),
                              RequestRedispatched(b"c1", b"echo", b"w2", 1, 0.0)]
    h.reply(b"w2", b"c1")
    assert h.events() == [RequestDelivered(b"c1", b"echo", b"w2")]


def test_failed_request_for_a_gone_client_ends_the_worker_session_without_requeue() -> None:
    h = Harness()
    h.ready(b"w1")
    h.drain()
    h.request(b"c1")
    out = h.raw()
    h.b.connection_lost(b"c1", h.now)
    h.fail(out, b"w1")
    assert kinds(h.events()) == [RequestAbandoned, WorkerLost]
    assert h.out() == [(b"w1", Disconnect())]
    h.ready(b"w1")  # a new session, idle: nothing was left for it
    assert kinds(h.events()) == [WorkerReady]
    assert h.out() == []


def test_report_for_a_request_counts_while_its_worker_still_holds_it() -> None:
    h = Harness()
    h.ready(b"w1")
    h.drain()
    h.request(b"c1")
    out = h.raw()
    h.events()
    h.fail(out, b"w1")
    assert kinds(h.events()) == [WorkerLost, RequestRequeued]


def test_report_for_a_request_its_worker_finished_is_ignored() -> None:
    h = Harness()
    h.ready(b"w1")
    h.drain()
    h.request(b"c1")
    out = h.raw()
    h.reply(b"w1", b"c1")
    h.drain()
    h.fail(out, b"w1")
    assert h.events() == [] and h.raw() == []
    h.request(b"c2")  # w1 is idle and serves on
    assert [p for p, _ in h.raw()] == [b"w1"]


# ------------------------------------------------------------ send_failed: replies


def test_final_that_did_not_reach_its_client_ends_the_request_undelivered_in_place() -> None:
    h = Harness()
    h.ready(b"w1")
    h.drain()
    h.request(b"c1")
    h.request(b"c2")
    h.raw()
    h.reply(b"w1", b"c1")  # FINAL to c1, then c2's REQUEST to w1
    out = h.raw()
    assert [p for p, _ in out] == [b"c1", b"w1"]
    h.fail(out, b"c1")
    events = h.events()
    assert kinds(events) == [RequestUndelivered]
    ev = events[0]
    assert isinstance(ev, RequestUndelivered)
    assert (ev.client, ev.service, ev.worker) == (b"c1", b"echo", b"w1")
    assert "send failed" in ev.reason
    h.reply(b"w1", b"c2")  # the worker went idle normally and serves on
    assert h.events() == [RequestDelivered(b"c2", b"echo", b"w1")]


def test_undelivered_keeps_the_order_of_the_events_around_it() -> None:
    h = Harness()
    h.ready(b"w1")
    h.ready(b"w2")
    h.drain()
    h.request(b"c1")
    h.request(b"c2")
    h.raw()
    h.reply(b"w1", b"c1")
    h.ready(b"w3")
    h.reply(b"w2", b"c2")
    h.fail(h.raw(), b"c1")
    assert h.events() == [
        RequestUndelivered(b"c1", b"echo", b"w1",
                           "send failed: the transport refused the reply (the client's send "
                           "queue is full)"),
        WorkerReady(b"w3", b"echo"),
        RequestDelivered(b"c2", b"echo", b"w2"),
    ]


def test_mmi_answer_that_did_not_reach_its_client_is_undelivered() -> None:
    h = Harness()
    h.request(b"c1", b"mmi.service", (b"echo",))
    h.fail(h.raw(), b"c1")
    events = h.events()
    assert kinds(events) == [RequestUndelivered]
    assert isinstance(events[0], RequestUndelivered)
    assert (events[0].client, events[0].service, events[0].worker) == (b"c1", b"mmi.service", b"")


@pytest.mark.parametrize("dialect", [D2, DM])
def test_lost_partial_ends_the_request_and_the_rest_of_the_reply_is_dropped(
    dialect: Dialect,
) -> None:
    h = Harness()
    h.ready(b"w1")
    h.drain()
    h.request(b"c1", dialect=dialect)
    h.request(b"c2", dialect=dialect)
    h.raw()
    h.reply(b"w1", b"c1", (b"p1",), final=False)
    h.fail(h.raw(), b"c1")
    events = h.events()
    assert kinds(events) == [RequestUndelivered]
    assert isinstance(events[0], RequestUndelivered) and "PARTIAL" in events[0].reason
    assert events[0].worker == b"w1"
    h.reply(b"w1", b"c1", (b"p2",), final=False)
    h.reply(b"w1", b"c1", (b"last",))
    out = h.out()
    assert sent_to(out, b"c1") == []  # the stream with a hole is not continued
    assert sent_to(out, b"w1") == [WorkerRequest(b"c2", (b"hi",))]  # idle again on its FINAL
    assert h.events() == []


def test_lost_partial_after_its_final_was_queued_replaces_the_delivered_event() -> None:
    h = Harness()
    h.ready(b"w1")
    h.drain()
    h.request(b"c1")
    h.raw()
    h.reply(b"w1", b"c1", (b"p1",), final=False)
    h.reply(b"w1", b"c1", (b"last",))
    (c1, partial), (c1_again, _final) = h.raw()
    assert c1 == c1_again == b"c1"
    h.b.send_failed(c1, partial, h.now)  # the FINAL itself went through
    events = h.events()
    assert kinds(events) == [RequestUndelivered]


@pytest.mark.parametrize("order", ["partial first", "final first"])
def test_lost_partial_and_final_of_one_request_give_one_outcome(order: str) -> None:
    h = Harness()
    h.ready(b"w1")
    h.drain()
    h.request(b"c1")
    h.raw()
    h.reply(b"w1", b"c1", (b"p1",), final=False)
    h.reply(b"w1", b"c1", (b"last",))
    out = h.raw()
    for peer, frames in out if order == "partial first" else reversed(out):
        h.b.send_failed(peer, frames, h.now)
        h.b.send_failed(peer, frames, h.now)  # a second report changes nothing
    events = h.events()
    assert kinds(events) == [RequestUndelivered]


def test_lost_partial_of_a_request_that_ended_otherwise_is_ignored() -> None:
    h = Harness()
    h.ready(b"w1")
    h.drain()
    h.request(b"c1")
    h.raw()
    h.reply(b"w1", b"c1", (b"p1",), final=False)
    out = h.raw()
    h.b.connection_lost(b"c1", h.now)
    h.fail(out, b"c1")
    assert h.events() == [RequestAbandoned(b"c1", b"echo")]


def test_reports_after_events_were_drained_change_no_reply_outcome() -> None:
    h = Harness()
    h.ready(b"w1")
    h.drain()
    h.request(b"c1")
    h.raw()
    h.reply(b"w1", b"c1")
    out = h.raw()
    assert h.events() == [RequestDelivered(b"c1", b"echo", b"w1")]
    h.fail(out, b"c1")
    assert h.events() == []


def test_events_drained_before_the_reply_was_handed_out_keep_their_outcome() -> None:
    h = Harness()
    h.ready(b"w1")
    h.drain()
    h.request(b"c1")
    h.raw()
    h.reply(b"w1", b"c1")
    assert h.events() == [RequestDelivered(b"c1", b"echo", b"w1")]  # out of contract
    h.fail(h.raw(), b"c1")
    assert h.events() == []


def test_events_before_outgoing_was_drained_settle_only_what_was_handed_out() -> None:
    h = Harness()
    h.ready(b"w1")
    h.ready(b"w2")
    h.drain()
    h.request(b"c1")
    h.request(b"c2")
    h.raw()
    h.reply(b"w1", b"c1", (b"p",), final=False)
    first = h.raw()
    h.reply(b"w2", b"c2", (b"p",), final=False)
    assert h.events() == []  # c2's PARTIAL is still queued: it is not settled
    second = h.raw()
    h.fail(first + second, b"c1", b"c2")
    events = h.events()
    assert kinds(events) == [RequestUndelivered]
    assert isinstance(events[0], RequestUndelivered) and events[0].client == b"c2"


def test_several_drains_before_events_are_all_settled_by_it() -> None:
    h = Harness()
    h.ready(b"w1")
    h.ready(b"w2")
    h.drain()
    h.request(b"c1")
    h.request(b"c2")
    h.raw()
    h.reply(b"w1", b"c1")
    first = h.raw()
    h.fail(first, b"c1")  # builds the index
    h.reply(b"w2", b"c2")
    second = h.raw()
    h.fail(second, b"c2")  # extends it
    assert kinds(h.events()) == [RequestUndelivered, RequestUndelivered]
    h.fail(first + second, b"c1", b"c2")  # settled: ignored
    assert h.events() == []


def test_failed_heartbeat_disconnect_and_unknown_frames_are_ignored() -> None:
    h = Harness(heartbeat_interval=1.0)
    h.ready(b"w1")
    h.ready(b"w1")  # second READY: DISCONNECT
    h.ready(b"w2")
    h.drain()
    h.now = 1.0
    h.b.tick(h.now)
    out = h.raw()
    assert [cmd for _, cmd in [(p, decode(f, from_broker=True)[1]) for p, f in out]] == [
        Heartbeat()]
    h.fail(out, b"w2")
    h.b.send_failed(b"w2", [b"MDPW02", b"\x05"], h.now)
    h.b.send_failed(b"nobody", [b"x"], h.now)
    assert h.events() == []
    h.request(b"c1")  # w2 is still idle and serves
    assert [p for p, _ in h.raw()] == [b"w2"]


def test_send_failed_after_close_is_ignored() -> None:
    h = Harness()
    h.ready(b"w1")
    h.drain()
    h.request(b"c1")
    out = h.raw()
    h.b.close(h.now)
    h.drain()
    h.fail(out, b"w1")
    assert h.events() == [] and h.raw() == []


def sent_to(out: list[tuple[bytes, Command]], peer: bytes) -> list[Command]:
    return [cmd for p, cmd in out if p == peer]


# ------------------------------------------------------------ byte budget


def test_requests_past_the_byte_budget_are_refused_and_bytes_come_back_when_they_end() -> None:
    h = Harness(request_timeout=10.0)  # default max_queued_bytes: 256 MiB
    big = bytes(100 * MB)
    for i in range(10):
        h.request(b"c%d" % i, b"nobody", (big,))
    events = h.events()
    assert kinds(events) == [RequestRefused] * 8  # 2 x 100 MiB fit, the third would not
    assert all(isinstance(e, RequestRefused) and "max_queued_bytes" in e.reason
               for e in events)
    h.now = 10.0
    h.b.tick(h.now)
    assert kinds(h.events()) == [RequestExpired, RequestExpired]
    h.request(b"c0", b"nobody", (big,))
    assert h.events() == []


def test_dispatched_requests_count_against_the_byte_budget_until_they_end() -> None:
    body = (bytes(1000),)
    one = 1000 + 512 + 64
    h = Harness(max_queued_bytes=2 * one)
    h.ready(b"w1")
    h.drain()
    h.request(b"c1", body=body)  # dispatched at once
    h.request(b"c2", body=body)  # queued
    h.request(b"c3", body=body)
    assert kinds(h.events()) == [RequestRefused]
    h.reply(b"w1", b"c1")  # c1 delivered: its bytes are released; c2 dispatched
    h.request(b"c3", body=body)
    assert kinds(h.events()) == [RequestDelivered]


@pytest.mark.parametrize("end", ["abandoned", "undelivered", "lost on the last attempt"])
def test_bytes_are_released_whatever_ends_the_request(end: str) -> None:
    body = (bytes(1000),)
    h = Harness(max_queued_bytes=1000 + 512 + 64, max_attempts=1)
    h.ready(b"w1")
    h.drain()
    h.request(b"c1", body=body)
    h.raw()
    if end == "abandoned":
        h.b.connection_lost(b"c1", h.now)
    elif end == "undelivered":
        h.reply(b"w1", b"c1")
        h.fail(h.raw(), b"c1")
    else:
        h.b.connection_lost(b"w1", h.now)
        h.ready(b"w1")
    h.drain()
    h.request(b"c2", body=body)
    assert h.events() == []


def test_byte_budget_applies_with_an_idle_worker_and_max_queue_zero() -> None:
    h = Harness(max_queued_bytes=1000, max_queue=0)
    h.ready(b"w1")
    h.drain()
    h.request(b"c1", body=(bytes(1000),))
    assert h.raw() == []
    events = h.events()
    assert len(events) == 1 and isinstance(events[0], RequestRefused)
    assert events[0].reason == ("max_queued_bytes=1000 reached: the broker holds 0 bytes of "
                                "requests, this one counts 1576")


def test_each_frame_counts_64_bytes_and_each_request_512() -> None:
    h = Harness(max_queued_bytes=512 + 10 * 64 + 10)
    h.request(b"c1", body=[b""] * 9 + [b"x" * 10])
    assert h.events() == []
    h.b.connection_lost(b"c1", h.now)
    h.drain()
    h.request(b"c1", body=[b""] * 10 + [b"x"])  # one frame more
    assert kinds(h.events()) == [RequestRefused]


def test_refused_request_for_a_new_service_leaves_no_service_behind() -> None:
    h = Harness(max_queued_bytes=100)
    h.request(b"c1", b"fresh")
    assert kinds(h.events()) == [RequestRefused]
    h.request(b"c1", b"mmi.service", (b"fresh",))
    assert h.out() == [(b"c1", ClientReply(b"mmi.service", (b"404",), True))]
    assert b"fresh" not in h.b._services


def test_mdclient2_pipeline_of_100000_requests_is_queued_by_default() -> None:
    h = Harness()
    for _ in range(100_000):
        h.request(b"client", body=(b"Hello world",))
    assert h.events() == []
    assert BrokerConfig().max_queue == 100_000


# ------------------------------------------------------------ frames per message


@pytest.mark.parametrize("dialect", [D1, D2, DM])
def test_client_request_over_max_frames_is_refused_undecoded(dialect: Dialect) -> None:
    h = Harness(max_frames=8)
    h.ready(b"w1")
    h.drain()
    frames = encode(ClientRequest(b"echo", (b"x",) * 20), dialect)
    h.b.receive(b"c1", frames, h.now)
    assert h.raw() == []
    events = h.events()
    assert len(events) == 1 and isinstance(events[0], RequestRefused)
    assert events[0].service == b"echo"
    assert events[0].reason == f"message of {len(frames)} frames, over max_frames=8"


def test_a_message_of_exactly_max_frames_is_served() -> None:
    h = Harness(max_frames=8)
    h.ready(b"w1")
    h.drain()
    h.request(b"c1", body=(b"x",) * 5)  # MDPC02, 0x01, service + 5 = 8 frames
    assert [p for p, _ in h.raw()] == [b"w1"]


def test_busy_worker_over_max_frames_is_disconnected_and_its_request_redispatched() -> None:
    h = Harness(max_frames=8)
    h.ready(b"w1")
    h.ready(b"w2")
    h.drain()
    h.request(b"c1")
    h.raw()
    h.reply(b"w1", b"c1", (b"x",) * 20)
    assert h.out() == [(b"w1", Disconnect()), (b"w2", WorkerRequest(b"c1", (b"hi",)))]
    events = h.events()
    assert kinds(events) == [ProtocolError, WorkerLost, RequestRequeued, RequestRedispatched]
    assert isinstance(events[0], ProtocolError) and "max_frames=8" in events[0].reason


@pytest.mark.parametrize("frames", [
    [b"MDPW02", b"\x04", b"c1", b""] + [b"x"] * 20,  # worker header, no session
    [b"junk"] * 20,
    [b"MDPC02", b"\x09"] + [b"x"] * 20,  # client header, malformed
    [b"MDPC02", b"\x03", b"echo"] + [b"x"] * 20,  # a client sending FINAL
])
def test_other_messages_over_max_frames_are_dropped(frames: list[bytes]) -> None:
    h = Harness(max_frames=8)
    h.b.receive(b"p1", frames, h.now)
    assert h.raw() == []
    events = h.events()
    assert len(events) == 1 and isinstance(events[0], ProtocolError)
    assert events[0].reason == f"message of {len(frames)} frames, over max_frames=8; dropped"


def test_max_frames_is_checked_before_decoding_bytes_likes() -> None:
    h = Harness(max_frames=8)
    h.b.receive(bytearray(b"c1"), [memoryview(b"MDPC02"), bytearray(b"\x01"), b"echo"]
                + [b"x"] * 20, h.now)
    assert h.events() == [RequestRefused(b"c1", b"echo",
                                         "message of 23 frames, over max_frames=8")]


# ------------------------------------------------------------ service names and counts


def test_ready_for_a_name_over_max_service_name_gets_disconnect_and_no_session() -> None:
    h = Harness()
    h.ready(b"w1", b"s" * 256, D1)
    assert h.out() == [(b"w1", Disconnect())]
    events = h.events()
    assert len(events) == 1 and isinstance(events[0], ProtocolError)
    assert "max_service_name=255" in events[0].reason
    h.ready(b"w1", b"s" * 255)
    assert h.events() == [WorkerReady(b"w1", b"s" * 255)]


@pytest.mark.parametrize("service", [b"s" * 256, b"mmi." + b"s" * 252])
def test_request_for_a_name_over_max_service_name_is_refused(service: bytes) -> None:
    h = Harness()
    h.request(b"c1", service)
    assert h.raw() == []
    events = h.events()
    assert len(events) == 1 and isinstance(events[0], RequestRefused)
    assert events[0].reason == "service name of 256 bytes is over max_service_name=255"
    assert h.b._services == {}


def test_100000_distinct_services_stop_at_max_services() -> None:
    h = Harness()
    for i in range(100_000):
        h.request(b"c1", b"svc-%d" % i)
    events = h.events()
    assert len(events) == 90_000
    assert all(isinstance(e, RequestRefused)
               and e.reason == "max_services=10000 services exist already" for e in events)
    assert len(h.b._services) == 10_000


def test_existing_services_are_unaffected_by_max_services() -> None:
    h = Harness(max_services=2)
    h.ready(b"w1", b"a")
    h.request(b"c1", b"b")
    h.drain()
    h.ready(b"w2", b"c")
    h.request(b"c1", b"d")
    out, events = h.out(), h.events()
    assert out == [(b"w2", Disconnect())]
    assert kinds(events) == [ProtocolError, RequestRefused]
    assert isinstance(events[0], ProtocolError) and "max_services=2" in events[0].reason
    h.ready(b"w3", b"a")
    h.ready(b"w4", b"b")  # takes the queued request
    h.request(b"c2", b"a")
    assert kinds(h.events()) == [WorkerReady, WorkerReady]
    assert [p for p, _ in h.raw()] == [b"w4", b"w1"]


# ------------------------------------------------------------ MMI reply size


def test_mmi_lists_of_1000_workers_with_255_byte_names_are_cut_and_marked() -> None:
    h = Harness()
    names = sorted(b"%03d" % i + b"n" * 252 for i in range(1000))
    for i, name in enumerate(names):
        h.ready(b"w%d" % i, name)
    h.drain()
    for service, full in ((b"mmi.services", names),
                          (b"mmi.workers", [n + b" idle" for n in names])):
        h.request(b"c1", service, (b"x",))
        ((peer, reply),) = h.out()
        assert peer == b"c1"
        assert isinstance(reply, ClientReply)
        body = reply.body
        assert body[-1] == b""
        kept = list(body[:-1])
        assert kept == full[:len(kept)]
        size = sum(len(f) + 64 for f in kept)
        assert size <= 64 * 1024 < size + len(full[len(kept)]) + 64


def test_mmi_list_that_fits_is_not_marked() -> None:
    h = Harness(max_mmi_reply_bytes=2 * (1 + 64))
    h.ready(b"w1", b"a")
    h.ready(b"w2", b"b")
    h.drain()
    h.request(b"c1", b"mmi.services", (b"x",))
    assert h.out() == [(b"c1", ClientReply(b"mmi.services", (b"a", b"b"), True))]


def test_mmi_list_keeps_its_first_entry_even_past_the_limit() -> None:
    h = Harness(max_mmi_reply_bytes=0)
    h.ready(b"w1", b"a")
    h.ready(b"w2", b"b")
    h.drain()
    h.request(b"c1", b"mmi.workers", (b"x",))
    assert h.out() == [(b"c1", ClientReply(b"mmi.workers", (b"a idle", b""), True))]
    h.request(b"c1", b"mmi.services", (b"x",))
    h.b.connection_lost(b"w1", h.now)
    h.b.connection_lost(b"w2", h.now)
    h.drain()
    h.request(b"c1", b"mmi.services", (b"x",))  # the empty list stays one empty frame
    assert h.out() == [(b"c1", ClientReply(b"mmi.services", (b"",), True))]


# ------------------------------------------------------------ reasons stay short


def test_ready_for_mmi_plus_20_mb_of_nul_bytes_gives_a_short_reason() -> None:
    h = Harness()
    h.ready(b"w1", b"mmi." + bytes(20_000_000))
    events = h.events()
    assert len(events) == 1 and isinstance(events[0], ProtocolError)
    reason = events[0].reason
    assert len(reason) < 400
    assert "...(20000004 bytes)" in reason


def test_reply_for_a_huge_unknown_client_address_gives_a_short_reason() -> None:
    h = Harness()
    h.ready(b"w1")
    h.request(b"c1")
    h.drain()
    h.reply(b"w1", b"c" * 1_000_000)  # busy with c1, answering someone else
    events = h.events()
    assert kinds(events) == [ProtocolError, WorkerLost, RequestRequeued]
    for e in events[:2]:
        assert isinstance(e, (ProtocolError, WorkerLost))
        assert "...(1000000 bytes)" in e.reason and len(e.reason) < 400


def test_shown_quotes_short_values_whole_and_cuts_long_ones() -> None:
    assert _shown(b"echo") == "b'echo'"
    assert _shown(b"a" * 64) == repr(b"a" * 64)
    assert _shown(b"a" * 65) == repr(b"a" * 64) + "...(65 bytes)"
    assert len(_shown(bytes(10**6))) == len(repr(bytes(64))) + len("...(1000000 bytes)")


# ------------------------------------------------------------ configuration


@pytest.mark.parametrize("bad", [
    {"max_queued_bytes": -1},
    {"max_frames": 5},
    {"max_service_name": 0},
    {"max_services": 0},
    {"max_mmi_reply_bytes": -1},
])
def test_config_rejects_out_of_range_limits(bad: dict[str, int]) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        BrokerConfig(**bad)  # type: ignore[arg-type]


def test_limit_defaults() -> None:
    cfg = BrokerConfig()
    assert (cfg.max_queued_bytes, cfg.max_frames, cfg.max_service_name, cfg.max_services,
            cfg.max_mmi_reply_bytes) == (256 * MB, 1024, 255, 10_000, 64 * 1024)
