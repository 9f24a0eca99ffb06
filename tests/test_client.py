"""Unit tests of the sans-IO Client (Lazy Pirate): fake time, frames built with encode."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mdp_core import (
    Client,
    ClientConfig,
    ClientReply,
    ClientRequest,
    Dialect,
    EmptyBody,
    FinalReply,
    Heartbeat,
    LocalProtocolError,
    PartialReply,
    ProtocolError,
    RequestFailed,
    RequestInProgress,
    ResetConnection,
    encode,
    mmi_service_found,
)

SVC = b"echo"
CFG = ClientConfig(timeout=1.0, retries=2)
ALL = [Dialect.MDP01, Dialect.MDP02, Dialect.MAJORTOMO]
V02 = Dialect.MDP02


def final(body: bytes = b"ok", service: bytes | None = SVC, version: Dialect = V02
          ) -> list[bytes]:
    return encode(ClientReply(service, (body,)), version)


def partial(body: bytes, service: bytes = SVC, version: Dialect = V02) -> list[bytes]:
    return encode(ClientReply(service, (body,), final=False), version)


def sent(version: Dialect = V02, now: float = 0.0, **kw: float) -> tuple[Client, int]:
    c = Client(CFG, version)
    rid = c.request(SVC, b"hello", now, **kw)  # type: ignore[arg-type]
    c.outgoing()
    return c, rid


# ------------------------------------------------------------ construction and request


@pytest.mark.parametrize("kwargs", [{"timeout": 0}, {"timeout": -1.0}, {"retries": -1}])
def test_bad_client_config_is_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        ClientConfig(**kwargs)  # type: ignore[arg-type]


def test_default_config_never_hangs() -> None:
    c = Client()
    assert c.config == ClientConfig(timeout=2.5, retries=3)
    assert c.version is Dialect.MDP02
    rid = c.request(SVC, b"x", 0.0)
    t = 0.0
    events = []
    while (deadline := c.next_deadline()) is not None:
        assert deadline > t
        t = deadline
        c.tick(t)
        events += c.events()
    assert t == 10.0
    assert events[-1] == RequestFailed(rid, SVC, "no reply after 4 attempts")


@pytest.mark.parametrize("version", ALL)
def test_request_queues_the_request_in_the_clients_dialect(version: Dialect) -> None:
    c = Client(CFG, version)
    rid = c.request(SVC, [b"a", b"b"], 0.0)
    assert rid == 1
    assert c.outgoing() == [encode(ClientRequest(SVC, (b"a", b"b")), version)]
    assert c.outstanding == 1
    assert c.next_deadline() == 1.0
    assert c.events() == []


def test_second_request_while_one_is_outstanding_raises() -> None:
    c, rid = sent()
    with pytest.raises(RequestInProgress):
        c.request(b"other", b"x", 0.1)
    assert issubclass(RequestInProgress, LocalProtocolError)
    assert c.outgoing() == []
    assert c.outstanding == rid
    assert c.next_deadline() == 1.0


def test_request_ids_increase_per_request() -> None:
    c, r1 = sent()
    c.receive(final(), 0.1)
    r2 = c.request(SVC, b"again", 0.2)
    assert (r1, r2) == (1, 2)


@pytest.mark.parametrize(("args", "exc"), [
    ((SVC, []), EmptyBody),
    ((b"", b"x"), ValueError),
])
def test_bad_request_arguments_raise_and_queue_nothing(args: tuple[bytes, bytes],
                                                      exc: type[Exception]) -> None:
    c = Client(CFG)
    with pytest.raises(exc):
        c.request(args[0], args[1], 0.0)
    assert c.outgoing() == []
    assert c.outstanding is None
    assert c.request(SVC, b"fine", 0.0) == 1


@pytest.mark.parametrize("kw", [{"timeout": 0.0}, {"retries": -1}])
def test_bad_per_request_overrides_raise(kw: dict[str, float]) -> None:
    c = Client(CFG)
    with pytest.raises(ValueError):
        c.request(SVC, b"x", 0.0, **kw)  # type: ignore[arg-type]
    assert c.outstanding is None


# ------------------------------------------------------------ replies


@pytest.mark.parametrize("version", ALL)
def test_final_reply_completes_the_request(version: Dialect) -> None:
    c, rid = sent(version)
    service = None if version is Dialect.MAJORTOMO else SVC
    c.receive(final(b"done", service, version), 0.5)
    assert c.events() == [FinalReply(rid, SVC, (b"done",))]
    assert c.outstanding is None
    assert c.next_deadline() is None


@pytest.mark.parametrize("version", [Dialect.MDP02, Dialect.MAJORTOMO])
def test_partial_replies_then_final(version: Dialect) -> None:
    c, rid = sent(version)
    c.receive(partial(b"p1", version=version), 0.5)
    c.receive(partial(b"p2", version=version), 0.9)
    assert c.next_deadline() == pytest.approx(1.9)  # each PARTIAL re-arms the timeout
    c.receive(final(b"end", version=version), 1.5)
    assert c.events() == [PartialReply(rid, SVC, (b"p1",)), PartialReply(rid, SVC, (b"p2",)),
                          FinalReply(rid, SVC, (b"end",))]
    c.tick(5.0)
    assert c.events() == []


def test_reply_from_another_service_is_dropped() -> None:
    c, rid = sent()
    c.receive(final(b"wrong", b"other"), 0.5)
    (event,) = c.events()
    assert isinstance(event, ProtocolError)
    assert "other" in event.reason
    assert c.outstanding == rid
    c.receive(final(b"right"), 0.6)
    assert c.events() == [FinalReply(rid, SVC, (b"right",))]


def test_reply_with_no_request_outstanding_is_dropped() -> None:
    c = Client(CFG)
    c.receive(final(), 0.0)
    (event,) = c.events()
    assert isinstance(event, ProtocolError)
    assert "no request outstanding" in event.reason


@pytest.mark.parametrize(("frames", "words"), [
    ([b"MDPC02", b"\x07", SVC, b"x"], "malformed"),
    (final(version=Dialect.MDP01), "MDP/0.1"),
    (encode(Heartbeat(), V02), "unexpected Heartbeat"),
    (encode(ClientRequest(SVC, (b"x",)), V02), "unexpected ClientRequest"),
])
def test_anything_but_a_reply_is_dropped(frames: list[bytes], words: str) -> None:
    c, rid = sent()
    c.receive(frames, 0.5)
    (event,) = c.events()
    assert isinstance(event, ProtocolError)
    assert words in event.reason
    assert c.outstanding == rid
    assert c.next_deadline() == 1.0


# ------------------------------------------------------------ Lazy Pirate


def test_timeout_resets_the_connection_and_resends() -> None:
    c, rid = sent()
    c.tick(0.999)
    assert (c.events(), c.outgoing()) == ([], [])
    c.tick(1.0)
    assert c.events() == [ResetConnection()]
    assert c.outgoing() == [encode(ClientRequest(SVC, (b"hello",)), V02)]
    assert c.next_deadline() == 2.0
    c.receive(final(), 1.5)
    assert c.events() == [FinalReply(rid, SVC, (b"ok",))]


def test_request_fails_after_its_retries() -> None:
    c, rid = sent()
    sends = 1
    for t in (1.0, 2.0):
        c.tick(t)
        assert c.events() == [ResetConnection()]
        sends += len(c.outgoing())
    c.tick(3.0)
    assert c.events() == [ResetConnection(), RequestFailed(rid, SVC, "no reply after 3 attempts")]
    assert c.outgoing() == []
    assert sends == 3  # 1 + retries
    assert c.outstanding is None
    assert c.next_deadline() is None


def test_per_request_timeout_and_retries_override_the_config() -> None:
    c, rid = sent(timeout=5.0, retries=0)
    assert c.next_deadline() == 5.0
    c.tick(5.0)
    assert c.events() == [ResetConnection(), RequestFailed(rid, SVC, "no reply after 1 attempt")]


def test_late_tick_fires_once_and_rearms_from_now() -> None:
    c, _ = sent()
    c.tick(7.5)
    assert c.events() == [ResetConnection()]
    assert len(c.outgoing()) == 1
    assert c.next_deadline() == 8.5


def test_resend_replaces_an_unsent_copy() -> None:
    c = Client(CFG)
    c.request(SVC, b"x", 0.0)
    c.tick(1.0)  # driver never flushed the first copy
    assert c.outgoing() == [encode(ClientRequest(SVC, (b"x",)), V02)]


def test_connection_lost_retries_at_once() -> None:
    c, rid = sent(retries=1)
    c.connection_lost(0.3)
    assert c.events() == [ResetConnection()]
    assert len(c.outgoing()) == 1
    assert c.next_deadline() == pytest.approx(1.3)
    c.connection_lost(0.4)
    assert c.events() == [ResetConnection(),
                          RequestFailed(rid, SVC, "connection lost after 2 attempts")]


def test_connection_lost_with_nothing_outstanding_does_nothing() -> None:
    c = Client(CFG)
    c.connection_lost(0.0)
    assert (c.events(), c.outgoing()) == ([], [])


# ------------------------------------------------------------ MMI


def test_service_exists_builds_an_mmi_service_request() -> None:
    c = Client(CFG)
    rid = c.service_exists(b"echo", 0.0)
    assert c.outgoing() == [encode(ClientRequest(b"mmi.service", (b"echo",)), V02)]
    c.receive(final(b"200", b"mmi.service"), 0.1)
    (reply,) = c.events()
    assert reply == FinalReply(rid, b"mmi.service", (b"200",))
    assert isinstance(reply, FinalReply)
    assert mmi_service_found(reply) is True


def test_service_exists_refuses_an_empty_name() -> None:
    with pytest.raises(ValueError):
        Client(CFG).service_exists(b"", 0.0)


@pytest.mark.parametrize(("body", "found"), [((b"200",), True), ((b"404",), False)])
def test_mmi_answer_is_interpreted(body: tuple[bytes, ...], found: bool) -> None:
    assert mmi_service_found(FinalReply(1, b"mmi.service", body)) is found


@pytest.mark.parametrize("body", [(b"501",), (b"200", b"extra")])
def test_unknown_mmi_answer_raises(body: tuple[bytes, ...]) -> None:
    with pytest.raises(ValueError):
        mmi_service_found(FinalReply(1, b"mmi.service", body))


# ------------------------------------------------------------ fuzz

frames_strategy = st.lists(
    st.one_of(
        st.sampled_from([b"", b"MDPC01", b"MDPC02", b"MDPW02", b"\x01", b"\x02", b"\x03",
                         b"\x04", SVC]),
        st.binary(max_size=8),
    ),
    max_size=6,
)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(ALL), st.booleans(), st.lists(frames_strategy, max_size=4))
def test_arbitrary_frames_never_raise_out_of_receive(
    version: Dialect, outstanding: bool, messages: list[list[bytes]]
) -> None:
    c = Client(CFG, version)
    if outstanding:
        c.request(SVC, b"x", 0.0)
    for i, frames in enumerate(messages):
        c.receive(frames, 0.1 * i)
    for event in c.events():
        assert isinstance(event, (ProtocolError, PartialReply, FinalReply))
