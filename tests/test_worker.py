"""Unit tests of the sans-IO Worker: fake time, frames built with mdp_core.encode."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mdp_core import (
    AlreadyConnected,
    AlreadyReplied,
    BrokerLost,
    ClientReply,
    ClientRequest,
    Dialect,
    Disconnect,
    Disconnected,
    EmptyBody,
    Heartbeat,
    LocalProtocolError,
    NotCurrentRequest,
    PartialNotSupported,
    ProtocolError,
    Ready,
    RequestReceived,
    StaleRequest,
    Worker,
    WorkerConfig,
    WorkerReply,
    WorkerRequest,
    WorkerState,
    encode,
)
from mdp_core._state import SESSION_TRANSITIONS, SessionInput

SERVICE = b"echo"
CLIENT = b"\x00client-1"
CFG = WorkerConfig(heartbeat_interval=1.0, heartbeat_liveness=3, reconnect_delay=0.5,
                   reconnect_delay_max=3.0, reconnect_backoff=2.0)
ALL = [Dialect.MDP01, Dialect.MDP02, Dialect.MAJORTOMO]
V02 = Dialect.MDP02


def hb(version: Dialect = V02) -> list[bytes]:
    return encode(Heartbeat(), version)


def dc(version: Dialect = V02) -> list[bytes]:
    return encode(Disconnect(), version)


def req(body: bytes = b"job", client: bytes = CLIENT, version: Dialect = V02) -> list[bytes]:
    return encode(WorkerRequest(client, (body,)), version)


def connected(version: Dialect = V02, now: float = 0.0) -> Worker:
    w = Worker(SERVICE, CFG, version)
    w.connect(now)
    w.outgoing()
    return w


def busy(version: Dialect = V02, now: float = 0.0) -> tuple[Worker, RequestReceived]:
    w = connected(version, now)
    w.receive(req(version=version), now)
    (event,) = w.events()
    assert isinstance(event, RequestReceived)
    return w, event


# ------------------------------------------------------------ construction


def test_empty_service_name_is_refused() -> None:
    with pytest.raises(ValueError):
        Worker(b"")


@pytest.mark.parametrize("kwargs", [
    {"heartbeat_interval": 0},
    {"heartbeat_liveness": 0},
    {"reconnect_delay": -1},
    {"reconnect_delay": 5, "reconnect_delay_max": 1},
    {"reconnect_backoff": 0.5},
])
def test_bad_worker_config_is_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        WorkerConfig(**kwargs)


def test_default_config_and_version() -> None:
    w = Worker(SERVICE)
    assert w.config == WorkerConfig()
    assert w.version is Dialect.MDP02
    assert w.state is WorkerState.NEW
    assert w.next_deadline() is None


@pytest.mark.parametrize(("kwargs", "words"), [
    ({"heartbeat_interval": "2.5"}, "heartbeat_interval must be a number, not str"),
    ({"heartbeat_liveness": 3.0}, "heartbeat_liveness must be an int, not float"),
    ({"heartbeat_liveness": True}, "heartbeat_liveness must be an int, not bool"),
    ({"reconnect_delay": None}, "reconnect_delay must be a number, not NoneType"),
    ({"reconnect_delay_max": "30"}, "reconnect_delay_max must be a number, not str"),
    ({"reconnect_backoff": [2]}, "reconnect_backoff must be a number, not list"),
])
def test_worker_config_of_the_wrong_type_is_refused(kwargs: dict[str, object], words: str
                                                    ) -> None:
    with pytest.raises(TypeError, match=words):
        WorkerConfig(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(("service", "name"), [
    ("upper", b"upper"),
    ("\u00fcber", "\u00fcber".encode()),
    (bytearray(b"upper"), b"upper"),
    (memoryview(b"upper"), b"upper"),
])
def test_service_names_may_be_str_or_bytes_like(service: object, name: bytes) -> None:
    w = Worker(service, CFG)  # type: ignore[arg-type]
    assert w.service == name
    w.connect(0.0)
    assert w.outgoing() == [encode(Ready(name), V02)]


@pytest.mark.parametrize(("kwargs", "exc", "words"), [
    ({"service": 123}, TypeError, "service must be bytes-like or str, not int"),
    ({"service": [b"echo"]}, TypeError, "service must be bytes-like or str, not list"),
    ({"service": ""}, ValueError, "empty service name"),
    ({"service": b"mmi.service"}, ValueError, "may not register b'mmi.service'"),
    ({"service": "mmi.x"}, ValueError, "mmi.* is the broker's own"),
    ({"service": SERVICE, "version": "0.1"}, TypeError, "version must be a mdp_core.Dialect"),
    ({"service": SERVICE, "config": 2.5}, TypeError, "config must be a WorkerConfig, not float"),
])
def test_bad_worker_arguments_raise_at_construction(kwargs: dict[str, object],
                                                    exc: type[Exception], words: str) -> None:
    with pytest.raises(exc, match=words):
        Worker(**kwargs)  # type: ignore[arg-type]


def test_a_service_that_merely_contains_mmi_is_fine() -> None:
    assert Worker(b"my.mmi.x").service == b"my.mmi.x"
    assert Worker(b"mmi").service == b"mmi"


# ------------------------------------------------------------ connect, READY


@pytest.mark.parametrize("version", ALL)
def test_connect_queues_ready_in_the_workers_dialect(version: Dialect) -> None:
    w = Worker(SERVICE, CFG, version)
    w.connect(0.0)
    assert w.outgoing() == [encode(Ready(SERVICE), version)]
    assert w.state is WorkerState.IDLE
    assert w.events() == []


def test_connect_while_connected_raises_and_sends_nothing() -> None:
    w = connected()
    with pytest.raises(AlreadyConnected):
        w.connect(0.5)
    assert w.outgoing() == []
    assert w.state is WorkerState.IDLE
    w.receive(req(), 0.5)
    w.events()
    with pytest.raises(AlreadyConnected):
        w.connect(0.6)
    assert w.state is WorkerState.BUSY


# ------------------------------------------------------------ heartbeats


def test_idle_worker_heartbeats_every_interval() -> None:
    w = connected()
    assert w.next_deadline() == 1.0
    w.tick(0.99)
    assert w.outgoing() == []
    w.tick(1.0)
    assert w.outgoing() == [hb()]
    assert w.next_deadline() == 2.0


def test_late_tick_sends_one_heartbeat_and_reschedules_from_now() -> None:
    w = connected()
    w.receive(hb(), 2.4)  # keep the broker alive
    w.tick(2.5)
    assert w.outgoing() == [hb()]
    assert w.next_deadline() == 3.5


def test_sending_a_reply_postpones_the_heartbeat() -> None:
    w, r = busy()
    w.reply(r, b"done", 0.8)
    w.outgoing()
    w.tick(1.0)
    assert w.outgoing() == []
    assert w.next_deadline() == pytest.approx(1.8)


def test_busy_worker_keeps_scheduling_heartbeats() -> None:
    w, _ = busy()
    assert w.next_deadline() == 1.0
    w.tick(1.0)
    assert w.outgoing() == [hb()]
    w.tick(2.0)
    assert w.outgoing() == [hb()]


# ------------------------------------------------------------ broker liveness


def test_idle_worker_declares_a_silent_broker_lost() -> None:
    w = connected()
    for t in (1.0, 2.0):
        w.tick(t)
    assert w.next_deadline() == 3.0
    w.outgoing()
    w.tick(2.999)
    assert w.events() == []
    w.tick(3.0)
    assert w.outgoing() == [dc()]
    assert w.events() == [BrokerLost("heartbeat expired", 0.5)]
    assert w.state is WorkerState.GONE
    assert w.next_deadline() is None


def test_broker_heartbeat_keeps_the_conversation_alive() -> None:
    w = connected()
    w.receive(hb(), 2.0)
    w.tick(3.0)
    assert w.events() == []
    assert w.state is WorkerState.IDLE
    w.tick(5.0)
    assert isinstance(w.events()[0], BrokerLost)


def test_busy_worker_does_not_judge_broker_silence() -> None:
    w, _ = busy()
    w.tick(100.0)
    assert w.events() == []
    assert w.state is WorkerState.BUSY
    assert w.next_deadline() == 101.0  # only the heartbeat is scheduled


def test_liveness_restarts_when_the_job_ends() -> None:
    w, r = busy()
    w.reply(r, b"done", 50.0)
    assert w.next_deadline() == 51.0
    w.tick(52.9)
    assert w.events() == []
    w.tick(53.0)
    assert w.events() == [BrokerLost("heartbeat expired", 0.5)]


def test_tick_without_a_conversation_does_nothing() -> None:
    w = Worker(SERVICE, CFG)
    w.tick(100.0)
    assert (w.outgoing(), w.events()) == ([], [])
    w.connect(0.0)
    w.connection_lost(0.1)
    w.outgoing()
    w.events()
    w.tick(100.0)
    assert (w.outgoing(), w.events()) == ([], [])


# ------------------------------------------------------------ requests and replies


@pytest.mark.parametrize("version", ALL)
def test_request_is_handed_to_the_application(version: Dialect) -> None:
    w = connected(version)
    w.receive(encode(WorkerRequest(CLIENT, (b"a", b"b")), version), 0.1)
    assert w.events() == [RequestReceived(CLIENT, (b"a", b"b"), 1)]
    assert w.state is WorkerState.BUSY
    assert w.current == RequestReceived(CLIENT, (b"a", b"b"), 1)


@pytest.mark.parametrize("version", ALL)
def test_reply_sends_final_and_returns_to_idle(version: Dialect) -> None:
    w, r = busy(version)
    w.reply(r, [b"x", b"y"], 0.2)
    assert w.outgoing() == [encode(WorkerReply(CLIENT, (b"x", b"y")), version)]
    assert w.state is WorkerState.IDLE
    assert w.current is None


def test_reply_accepts_a_single_bytes_body_and_an_empty_frame() -> None:
    w, r = busy()
    w.reply(r, b"", 0.2)
    assert w.outgoing() == [encode(WorkerReply(CLIENT, (b"",)), V02)]


def test_handles_tell_successive_requests_apart() -> None:
    w, r1 = busy()
    w.reply(r1, b"1", 0.1)
    w.receive(req(b"second"), 0.2)
    (r2,) = w.events()
    assert isinstance(r2, RequestReceived)
    assert (r1.handle, r2.handle) == (1, 2)


@pytest.mark.parametrize("version", [Dialect.MDP02, Dialect.MAJORTOMO])
def test_partial_replies_stream_then_final(version: Dialect) -> None:
    w, r = busy(version)
    w.partial(r, b"p1", 0.1)
    w.partial(r, [b"p2", b"more"], 0.2)
    assert w.state is WorkerState.BUSY
    w.reply(r, b"end", 0.3)
    assert w.outgoing() == [
        encode(WorkerReply(CLIENT, (b"p1",), final=False), version),
        encode(WorkerReply(CLIENT, (b"p2", b"more"), final=False), version),
        encode(WorkerReply(CLIENT, (b"end",)), version),
    ]


def test_partial_on_mdp01_raises_a_clear_error() -> None:
    w, r = busy(Dialect.MDP01)
    with pytest.raises(PartialNotSupported, match=r"MDP/0\.1"):
        w.partial(r, b"p", 0.1)
    assert w.outgoing() == []
    assert w.state is WorkerState.BUSY
    assert issubclass(PartialNotSupported, LocalProtocolError)


def test_second_reply_raises_already_replied_and_sends_nothing() -> None:
    w, r = busy()
    w.reply(r, b"once", 0.1)
    w.outgoing()
    with pytest.raises(AlreadyReplied):
        w.reply(r, b"twice", 0.2)
    with pytest.raises(AlreadyReplied):
        w.partial(r, b"late", 0.2)
    assert w.outgoing() == []
    assert w.state is WorkerState.IDLE


def test_reply_to_another_request_raises_and_leaves_state_unchanged() -> None:
    w, r = busy()
    other = RequestReceived(b"someone-else", (b"job",), r.handle)
    for call in (w.reply, w.partial):
        with pytest.raises(NotCurrentRequest) as info:
            call(other, b"x", 0.1)
        assert type(info.value) is NotCurrentRequest
    with pytest.raises(NotCurrentRequest):
        w.abandon(other, 0.1)
    assert w.outgoing() == []
    assert w.state is WorkerState.BUSY
    assert w.current == r


def test_reply_while_idle_to_an_unknown_request_raises() -> None:
    w = connected()
    with pytest.raises(NotCurrentRequest):
        w.reply(RequestReceived(CLIENT, (b"x",), 7), b"x", 0.1)
    assert w.state is WorkerState.IDLE


def test_reply_after_broker_lost_raises_stale_request() -> None:
    w, r = busy()
    w.connection_lost(1.0)
    assert w.events() == [BrokerLost("connection lost", 0.5)]
    with pytest.raises(StaleRequest):
        w.reply(r, b"too late", 1.1)
    assert w.outgoing() == []


@pytest.mark.parametrize("empty", [[], ()])
def test_empty_body_raises_and_leaves_the_job_open(empty: list[bytes]) -> None:
    w, r = busy()
    with pytest.raises(EmptyBody):
        w.reply(r, empty, 0.1)
    with pytest.raises(EmptyBody):
        w.partial(r, empty, 0.1)
    assert w.outgoing() == []
    assert w.state is WorkerState.BUSY
    w.reply(r, b"ok", 0.2)  # still the current request


@pytest.mark.parametrize(("body", "words"), [
    (123, "body must be bytes-like or a sequence of bytes-like frames, not int"),
    ("done", "body must be bytes-like or a sequence of bytes-like frames, not str"),
    (["done"], "body frame 0 must be bytes, bytearray or memoryview, not str"),
    ([b"a", 2], "body frame 1 must be bytes, bytearray or memoryview, not int"),
])
@pytest.mark.parametrize("method", ["reply", "partial"])
def test_a_body_of_the_wrong_type_raises_and_leaves_the_job_open(
        method: str, body: object, words: str) -> None:
    w, r = busy()
    with pytest.raises(TypeError, match=words):
        getattr(w, method)(r, body, 0.5)
    assert (w.outgoing(), w.events(), w.state, w.current) == ([], [], WorkerState.BUSY, r)
    w.reply(r, [bytearray(b"a"), memoryview(b"b")], 0.6)
    assert w.outgoing() == [encode(WorkerReply(CLIENT, (b"a", b"b")), V02)]


# ------------------------------------------------------------ broker commands


def test_disconnect_from_broker_ends_the_conversation_and_sends_nothing() -> None:
    w, r = busy()
    w.receive(dc(), 0.5)
    assert w.events() == [BrokerLost("DISCONNECT from broker", 0.5)]
    assert w.outgoing() == []
    assert w.state is WorkerState.GONE
    w.tick(10.0)
    assert w.outgoing() == []
    with pytest.raises(StaleRequest):
        w.reply(r, b"x", 0.6)


def test_request_while_busy_is_a_broker_violation() -> None:
    w, r = busy()
    w.receive(req(b"second"), 0.5)
    events = w.events()
    assert isinstance(events[0], ProtocolError)
    assert "unexpected REQUEST while busy" in events[0].reason
    assert events[1] == BrokerLost("protocol violation: unexpected REQUEST", 0.5)
    assert w.outgoing() == [dc()]
    assert w.state is WorkerState.GONE
    with pytest.raises(StaleRequest):
        w.reply(r, b"x", 0.6)


@pytest.mark.parametrize(("command", "name"), [
    (Ready(b"svc"), "READY"),
    (WorkerReply(CLIENT, (b"x",)), "FINAL"),
    (WorkerReply(CLIENT, (b"x",), final=False), "PARTIAL"),
    (ClientRequest(b"svc", (b"x",)), "client REQUEST"),
    (ClientReply(b"svc", (b"x",)), "client reply"),
])
def test_valid_but_unexpected_commands_are_violations(command: object, name: str) -> None:
    w = connected()
    w.receive(encode(command, V02), 0.5)  # type: ignore[arg-type]
    events = w.events()
    assert isinstance(events[0], ProtocolError)
    assert events[1] == BrokerLost(f"protocol violation: unexpected {name}", 0.5)
    assert w.outgoing() == [dc()]


@pytest.mark.parametrize("state", [WorkerState.IDLE, WorkerState.BUSY])
@pytest.mark.parametrize("command", [SessionInput.REQUEST, SessionInput.HEARTBEAT,
                                     SessionInput.DISCONNECT])
def test_every_received_command_follows_the_session_table(
    state: WorkerState, command: SessionInput
) -> None:
    w = connected() if state is WorkerState.IDLE else busy()[0]
    frames = {SessionInput.REQUEST: req(), SessionInput.HEARTBEAT: hb(),
              SessionInput.DISCONNECT: dc()}[command]
    w.receive(frames, 0.5)
    expected = SESSION_TRANSITIONS.get((state, command))
    events = w.events()
    if expected is None:
        assert isinstance(events[0], ProtocolError)
        assert w.state is WorkerState.GONE
    else:
        assert w.state is expected
        assert not any(isinstance(e, ProtocolError) for e in events)


def test_malformed_message_is_dropped_without_refreshing_liveness() -> None:
    w = connected()
    w.receive([b"MDPW02", b"\x09"], 2.0)
    (event,) = w.events()
    assert isinstance(event, ProtocolError)
    assert event.peer == b""
    assert "malformed" in event.reason
    assert w.state is WorkerState.IDLE
    w.tick(3.0)
    assert isinstance(w.events()[0], BrokerLost)


def test_message_in_another_dialect_is_dropped() -> None:
    w = connected(Dialect.MDP02)
    w.receive(hb(Dialect.MDP01), 2.0)
    (event,) = w.events()
    assert isinstance(event, ProtocolError)
    assert "MDP/0.1" in event.reason
    w.tick(3.0)
    assert isinstance(w.events()[0], BrokerLost)


def test_message_without_a_conversation_is_dropped() -> None:
    w = Worker(SERVICE, CFG)
    w.receive(req(), 0.0)
    (event,) = w.events()
    assert isinstance(event, ProtocolError)
    assert "not connected" in event.reason
    assert w.state is WorkerState.NEW


# ------------------------------------------------------------ transport


def test_connection_lost_ends_the_conversation_at_once() -> None:
    w = connected()
    w.connection_lost(0.2)
    assert w.events() == [BrokerLost("connection lost", 0.5)]
    assert w.outgoing() == []
    assert w.state is WorkerState.GONE


def test_connection_lost_without_a_conversation_does_nothing() -> None:
    w = Worker(SERVICE, CFG)
    w.connection_lost(0.0)
    assert w.events() == []
    w.connect(0.0)
    w.connection_lost(0.1)
    w.events()
    w.connection_lost(0.2)
    assert w.events() == []


# ------------------------------------------------------------ failed sends

SEND_FAILED = "send failed: the queue to the broker is full"


def test_a_failed_ready_ends_the_conversation() -> None:
    w = Worker(SERVICE, CFG)
    w.connect(0.0)
    (ready,) = w.outgoing()
    w.send_failed(ready, 0.0)
    assert w.events() == [BrokerLost(SEND_FAILED, 0.5)]
    assert (w.state, w.next_deadline(), w.outgoing()) == (WorkerState.GONE, None, [])
    w.connect(1.0)  # a new socket, a new conversation
    assert w.outgoing() == [encode(Ready(SERVICE), V02)]


def test_a_failed_reply_ends_the_conversation_so_the_broker_redispatches() -> None:
    w, r = busy()
    w.reply(r, b"done", 0.5)
    (final,) = w.outgoing()
    w.send_failed(final, 0.5)
    assert w.events() == [BrokerLost(SEND_FAILED, 0.5)]
    assert w.state is WorkerState.GONE


def test_a_failed_partial_makes_the_request_stale() -> None:
    w, r = busy()
    w.partial(r, b"25%", 0.5)
    (message,) = w.outgoing()
    w.send_failed(tuple(message), 0.5)  # a copy of the frames is recognised too
    assert w.events() == [BrokerLost(SEND_FAILED, 0.5)]
    with pytest.raises(StaleRequest):
        w.reply(r, b"done", 0.6)


def test_a_failed_disconnect_of_an_abandon_ends_the_new_conversation() -> None:
    w, r = busy()
    w.abandon(r, 0.5)
    disconnect, ready = w.outgoing()
    w.send_failed(disconnect, 0.5)  # the broker still thinks we are busy with r
    assert w.events() == [BrokerLost(SEND_FAILED, 0.5)]
    assert w.state is WorkerState.GONE
    w.send_failed(ready, 0.5)  # the rest of the batch no longer counts
    assert w.events() == []


def test_a_failed_heartbeat_is_ignored() -> None:
    w = connected()
    w.tick(1.0)
    (heartbeat,) = w.outgoing()
    assert heartbeat == hb()
    w.send_failed(heartbeat, 1.0)
    assert (w.events(), w.outgoing(), w.state, w.next_deadline()) == (
        [], [], WorkerState.IDLE, 2.0)


def test_reports_of_frames_the_worker_did_not_queue_are_ignored() -> None:
    w = Worker(SERVICE, CFG)
    w.send_failed([b"x"], 0.0)  # no conversation
    w.connect(0.0)
    (ready,) = w.outgoing()
    w.send_failed(encode(Ready(b"other"), V02), 0.1)  # not ours
    assert w.outgoing() == []  # the latest batch is now empty
    w.send_failed(ready, 0.2)  # from an earlier batch
    w.receive(req(), 0.3)
    w.events()
    w.reply(w.current, b"x", 0.4)  # type: ignore[arg-type]
    w.send_failed(w.outgoing()[0] + [b"extra"], 0.5)  # not exactly what was queued
    assert (w.events(), w.state) == ([], WorkerState.IDLE)


@pytest.mark.parametrize("end", ["disconnect", "expired", "violation"])
def test_a_failed_send_after_the_conversation_ended_is_ignored(end: str) -> None:
    w = connected()
    if end == "disconnect":
        w.disconnect(0.5)
    elif end == "expired":
        w.tick(3.0)
    else:
        w.receive(encode(Ready(b"x"), V02), 0.5)
    out = w.outgoing()
    assert out and out[-1] == dc()
    before = w.events()
    w.send_failed(out[-1], 3.0)
    assert w.events() == []
    assert len([e for e in before if isinstance(e, (BrokerLost, Disconnected))]) == 1


def test_a_failed_send_counts_as_a_failed_conversation_for_the_backoff() -> None:
    w = Worker(SERVICE, CFG)
    delays = []
    for i in range(3):
        w.connect(float(i))
        (ready,) = w.outgoing()
        w.send_failed(ready, float(i))
        (lost,) = w.events()
        assert isinstance(lost, BrokerLost)
        delays.append(lost.reconnect_delay)
    assert delays == [0.5, 1.0, 2.0]


# ------------------------------------------------------------ backoff


def _lose_by_silence(w: Worker, now: float) -> BrokerLost:
    w.connect(now)
    w.tick(now + 3.0)
    w.outgoing()
    events = [e for e in w.events() if isinstance(e, BrokerLost)]
    return events[0]


def test_reconnect_delay_backs_off_exponentially_up_to_the_cap() -> None:
    w = Worker(SERVICE, CFG)
    delays = [_lose_by_silence(w, 10.0 * i).reconnect_delay for i in range(5)]
    assert delays == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_disconnect_before_any_traffic_counts_as_a_failed_conversation() -> None:
    w = Worker(SERVICE, CFG)
    delays = []
    for i in range(3):
        w.connect(float(i))
        w.receive(dc(), i + 0.1)
        (lost,) = w.events()
        assert isinstance(lost, BrokerLost)
        delays.append(lost.reconnect_delay)
    assert delays == [0.5, 1.0, 2.0]


@pytest.mark.parametrize("proof", [hb(), req()])
def test_backoff_resets_after_a_successful_conversation(proof: list[bytes]) -> None:
    w = Worker(SERVICE, CFG)
    for i in range(3):
        _lose_by_silence(w, 10.0 * i)
    w.connect(100.0)
    w.receive(proof, 100.5)
    w.connection_lost(200.0)
    lost = [e for e in w.events() if isinstance(e, BrokerLost)]
    assert lost == [BrokerLost("connection lost", 0.5)]
    assert _lose_by_silence(w, 300.0).reconnect_delay == 1.0


# ------------------------------------------------------------ abandon, disconnect


def test_abandon_sends_disconnect_then_ready_and_starts_a_new_conversation() -> None:
    w, r = busy()
    w.abandon(r, 0.5)
    assert w.outgoing() == [dc(), encode(Ready(SERVICE), V02)]
    assert w.events() == []
    assert w.state is WorkerState.IDLE
    assert w.current is None
    assert w.next_deadline() == 1.5
    with pytest.raises(StaleRequest):
        w.reply(r, b"x", 0.6)
    w.receive(req(b"next"), 0.7)
    (r2,) = w.events()
    assert isinstance(r2, RequestReceived)
    assert r2.handle == 2


def test_abandon_of_a_finished_request_raises() -> None:
    w, r = busy()
    w.reply(r, b"x", 0.1)
    w.outgoing()
    with pytest.raises(AlreadyReplied):
        w.abandon(r, 0.2)
    assert w.outgoing() == []


def test_disconnect_sends_disconnect_and_reports_it() -> None:
    w, r = busy()
    w.disconnect(0.5)
    assert w.outgoing() == [dc()]
    assert w.events() == [Disconnected()]
    assert w.state is WorkerState.GONE
    assert w.next_deadline() is None
    with pytest.raises(StaleRequest):
        w.reply(r, b"x", 0.6)
    w.connect(1.0)
    assert w.outgoing() == [encode(Ready(SERVICE), V02)]


def test_disconnect_without_a_conversation_does_nothing() -> None:
    w = Worker(SERVICE, CFG)
    w.disconnect(0.0)
    assert (w.outgoing(), w.events()) == ([], [])


# ------------------------------------------------------------ fuzz

frames_strategy = st.lists(
    st.one_of(
        st.sampled_from([b"", b"MDPW01", b"MDPW02", b"MDPC01", b"MDPC02", b"\x01", b"\x02",
                         b"\x03", b"\x04", b"\x05", b"\x06", b"svc", CLIENT]),
        st.binary(max_size=8),
    ),
    max_size=7,
)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(ALL), st.integers(0, 2), st.lists(frames_strategy, max_size=4))
def test_arbitrary_frames_never_raise_out_of_receive(
    version: Dialect, start: int, messages: list[list[bytes]]
) -> None:
    w = Worker(SERVICE, CFG, version)
    if start >= 1:
        w.connect(0.0)
    if start == 2:
        w.receive(req(version=version), 0.0)
    for i, frames in enumerate(messages):
        w.receive(frames, 0.1 * i)
        w.tick(0.1 * i)
    w.outgoing()
    for event in w.events():
        assert isinstance(event, (ProtocolError, BrokerLost, RequestReceived))


def test_default_heartbeat_settings_match_the_brokers() -> None:
    """RFC 7/18 Known Weaknesses: heartbeat rates must be alike at both ends."""
    from mdp_core import BrokerConfig

    broker, worker = BrokerConfig(), WorkerConfig()
    assert (worker.heartbeat_interval, worker.heartbeat_liveness) == (
        broker.heartbeat_interval, broker.heartbeat_liveness)
