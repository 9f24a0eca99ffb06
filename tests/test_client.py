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
    FailureCause,
    FinalReply,
    Heartbeat,
    LocalProtocolError,
    PartialReply,
    ProtocolError,
    RequestFailed,
    RequestInProgress,
    ResetConnection,
    encode,
    mmi_list,
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
    assert c.config == ClientConfig(timeout=2.5, retries=3, diagnose_timeout=1.0)
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
    assert events[-1] == RequestFailed(rid, SVC, "no reply after 4 attempts: no broker reachable",
                                       FailureCause.UNREACHABLE)


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
    assert c.events() == [ResetConnection(), RequestFailed(
        rid, SVC, "no reply after 3 attempts: no broker reachable", FailureCause.UNREACHABLE)]
    assert c.outgoing() == []
    assert sends == 3  # 1 + retries
    assert c.outstanding is None
    assert c.next_deadline() is None


def test_per_request_timeout_and_retries_override_the_config() -> None:
    c, rid = sent(timeout=5.0, retries=0)
    assert c.next_deadline() == 5.0
    c.tick(5.0)
    assert c.events() == [ResetConnection(), RequestFailed(
        rid, SVC, "no reply after 1 attempt: no broker reachable", FailureCause.UNREACHABLE)]


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
    assert c.events() == [ResetConnection(), RequestFailed(
        rid, SVC, "connection lost after 2 attempts: no broker reachable",
        FailureCause.UNREACHABLE)]


def test_a_key_refused_at_the_handshake_fails_the_request_as_refused() -> None:
    c, rid = sent(retries=1)
    c.handshake_refused(0.1)
    assert (c.events(), c.outgoing(), c.next_deadline()) == ([], [], 1.0)  # only noted
    c.connection_lost(0.1)  # the drop that follows: the attempt ends
    assert c.events() == [ResetConnection()]
    assert len(c.outgoing()) == 1
    c.tick(1.1)  # the resend's socket got nowhere: the refusal still counts
    assert c.events() == [ResetConnection(), RequestFailed(
        rid, SVC, "no reply after 2 attempts: the broker refused this client's key at the "
        "handshake", FailureCause.REFUSED)]


def test_a_refusal_does_not_hide_a_broker_that_was_reached() -> None:
    c, _ = sent(retries=1)
    c.handshake_refused(0.1)
    c.connection_lost(0.1)
    c.events()
    c.outgoing()
    c.connected(0.2)  # the resend's handshake succeeded (a key added meanwhile)
    c.tick(1.1)
    assert c.events() == [ResetConnection()]  # and the diagnosis asks the broker
    assert c.outgoing() == [encode(ClientRequest(b"mmi.service", (SVC,)), V02)]


def test_a_refusal_with_nothing_outstanding_counts_for_the_next_request_on_that_socket() -> None:
    # libzmq retries the refused handshake on its own: a request made
    # meanwhile reaches no broker because of the refusal (its send may even
    # fail at once: the socket has no connection then).
    c = Client(CFG)
    c.connected(0.0)
    c.handshake_refused(0.5)
    assert (c.events(), c.outgoing()) == ([], [])
    rid = c.request(SVC, b"x", 1.0, retries=0)
    c.outgoing()
    c.tick(2.0)
    assert c.events() == [ResetConnection(), RequestFailed(
        rid, SVC, "no reply after 1 attempt: the broker refused this client's key at the "
        "handshake", FailureCause.REFUSED)]


@pytest.mark.parametrize("after", ["connected", "reset"])
def test_a_refusal_no_longer_counts_once_a_handshake_succeeds_or_the_socket_is_new(
    after: str,
) -> None:
    c = Client(CFG)
    c.handshake_refused(0.5)
    if after == "connected":
        c.connected(0.6)
        c.connection_lost(0.7)  # and then the link went down for another reason
    else:  # a request that failed on the refused socket: the next one has a new socket
        c.request(SVC, b"x", 0.6, retries=0)
        c.outgoing()
        c.tick(1.6)
        assert [type(e) for e in c.events()] == [ResetConnection, RequestFailed]
    rid = c.request(SVC, b"x", 2.0, retries=0)
    c.outgoing()
    c.tick(3.0)
    assert c.events() == [ResetConnection(), RequestFailed(
        rid, SVC, "no reply after 1 attempt: no broker reachable", FailureCause.UNREACHABLE)]


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


# ------------------------------------------------------------ argument types


@pytest.mark.parametrize(("kwargs", "exc", "words"), [
    ({"timeout": "1"}, TypeError, "timeout must be a number, not str"),
    ({"timeout": True}, TypeError, "timeout must be a number, not bool"),
    ({"retries": 1.5}, TypeError, "retries must be an int, not float"),
    ({"retries": "3"}, TypeError, "retries must be an int, not str"),
    ({"diagnose_timeout": "1"}, TypeError, "diagnose_timeout must be a number"),
    ({"diagnose_timeout": 0.0}, ValueError, "diagnose_timeout must be > 0"),
    ({"diagnose_timeout": -1}, ValueError, "diagnose_timeout must be > 0"),
])
def test_client_config_of_the_wrong_type_or_value_is_refused(
        kwargs: dict[str, object], exc: type[Exception], words: str) -> None:
    with pytest.raises(exc, match=words):
        ClientConfig(**kwargs)  # type: ignore[arg-type]


def test_client_config_accepts_ints_and_no_diagnosis() -> None:
    config = ClientConfig(timeout=2, retries=0, diagnose_timeout=None)
    assert (config.timeout, config.diagnose_timeout) == (2, None)


@pytest.mark.parametrize(("kwargs", "words"), [
    ({"version": "0.1"}, "version must be a mdp_core.Dialect"),
    ({"version": None}, "version must be a mdp_core.Dialect"),
    ({"config": {"timeout": 1.0}}, "config must be a ClientConfig, not dict"),
])
def test_client_of_the_wrong_version_or_config_type_is_refused(
        kwargs: dict[str, object], words: str) -> None:
    with pytest.raises(TypeError, match=words):
        Client(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(("service", "wire"), [
    ("upper", b"upper"),
    ("\u00e9t\u00e9", "\u00e9t\u00e9".encode()),
    (bytearray(b"upper"), b"upper"),
    (memoryview(b"upper"), b"upper"),
])
def test_service_names_may_be_str_or_bytes_like(service: object, wire: bytes) -> None:
    c = Client(CFG)
    c.request(service, b"x", 0.0)  # type: ignore[arg-type]
    assert c.outgoing() == [encode(ClientRequest(wire, (b"x",)), V02)]
    c.receive(final(service=wire), 0.1)
    (reply,) = c.events()
    assert reply == FinalReply(1, wire, (b"ok",))


def test_body_frames_may_be_bytes_like() -> None:
    c = Client(CFG)
    c.request(SVC, [b"a", bytearray(b"b"), memoryview(b"c")], 0.0)
    assert c.outgoing() == [encode(ClientRequest(SVC, (b"a", b"b", b"c")), V02)]
    c2 = Client(CFG)
    c2.request(SVC, bytearray(b"one"), 0.0)
    assert c2.outgoing() == [encode(ClientRequest(SVC, (b"one",)), V02)]


@pytest.mark.parametrize(("service", "body", "words"), [
    (123, b"x", "service must be bytes-like or str, not int"),
    (None, b"x", "service must be bytes-like or str, not NoneType"),
    ([b"svc"], b"x", "service must be bytes-like or str, not list"),
    (SVC, 123, "body must be bytes-like or a sequence of bytes-like frames, not int"),
    (SVC, "text", "body must be bytes-like or a sequence of bytes-like frames, not str"),
    (SVC, [b"a", 123], "body frame 1 must be bytes, bytearray or memoryview, not int"),
    (SVC, ["a"], "body frame 0 must be bytes, bytearray or memoryview, not str"),
    (SVC, (b"a", b"b", None), "body frame 2 must be bytes, bytearray or memoryview, "
                              "not NoneType"),
])
def test_arguments_of_the_wrong_type_raise_type_error_and_queue_nothing(
        service: object, body: object, words: str) -> None:
    c = Client(CFG)
    with pytest.raises(TypeError, match=words):
        c.request(service, body, 0.0)  # type: ignore[arg-type]
    assert (c.outgoing(), c.events(), c.outstanding) == ([], [], None)
    assert c.request(SVC, b"fine", 0.0) == 1


@pytest.mark.parametrize("kw", [{"timeout": "1"}, {"retries": 1.0}])
def test_per_request_overrides_of_the_wrong_type_raise_type_error(kw: dict[str, object]
                                                                  ) -> None:
    c = Client(CFG)
    with pytest.raises(TypeError):
        c.request(SVC, b"x", 0.0, **kw)  # type: ignore[arg-type]
    assert c.outstanding is None


def test_service_exists_takes_a_str_name_and_refuses_other_types() -> None:
    c = Client(CFG)
    with pytest.raises(TypeError, match="name must be bytes-like or str, not int"):
        c.service_exists(5, 0.0)  # type: ignore[arg-type]
    c.service_exists("echo", 0.0)
    assert c.outgoing() == [encode(ClientRequest(b"mmi.service", (b"echo",)), V02)]


def test_mmi_list_reads_one_empty_frame_as_none() -> None:
    assert mmi_list(FinalReply(1, b"mmi.services", (b"",))) == []
    assert mmi_list(FinalReply(1, b"mmi.services", (b"a.svc", b"b.svc"))) == [b"a.svc", b"b.svc"]
    assert mmi_list(FinalReply(1, b"mmi.workers", (b"echo idle",))) == [b"echo idle"]


# ------------------------------------------------------------ why a request failed


def mmi_question(service: bytes = SVC, version: Dialect = V02, mmi: bytes = b"mmi.service"
                 ) -> list[bytes]:
    return encode(ClientRequest(mmi, (service,)), version)


def allowed_question(service: bytes = SVC, version: Dialect = V02) -> list[bytes]:
    return mmi_question(service, version, b"mmi.allowed")


def answer_404_then(c: Client, body: bytes | None, now: float, service: bytes = SVC,
                    version: Dialect = V02) -> None:
    """Answer the mmi.service question 404, then the mmi.allowed one with ``body``."""
    named = version is not Dialect.MAJORTOMO
    c.receive(final(b"404", b"mmi.service" if named else None, version), now)
    assert c.outgoing() == [allowed_question(service, version)]
    assert c.events() == []
    if body is not None:
        c.receive(final(body, b"mmi.allowed" if named else None, version), now + 0.1)


def failing(version: Dialect = V02, config: ClientConfig = CFG, service: bytes = SVC
            ) -> tuple[Client, int]:
    """A client whose request reached the broker and is now past its last attempt."""
    c = Client(config, version)
    c.connected(0.0)
    rid = c.request(service, b"hello", 0.0)
    c.outgoing()
    for t in range(1, config.retries + 2):
        c.tick(float(t))
        assert c.events() == [ResetConnection()]
        if t <= config.retries:
            c.outgoing()
    return c, rid


def test_the_last_failure_asks_the_broker_about_the_service() -> None:
    c, rid = failing()
    assert c.outgoing() == [mmi_question()]
    assert c.outstanding == rid  # the request is not over yet
    assert c.next_deadline() == 4.0  # 3.0 + diagnose_timeout
    with pytest.raises(RequestInProgress):
        c.request(b"other", b"x", 3.1)
    with pytest.raises(RequestInProgress):
        c.service_exists(b"other", 3.1)
    assert (c.outgoing(), c.events()) == ([], [])


@pytest.mark.parametrize("version", ALL)
def test_a_404_answer_fails_the_request_with_no_worker(version: Dialect) -> None:
    c, rid = failing(version)
    assert c.outgoing() == [mmi_question(version=version)]
    answer_404_then(c, b"200", 3.2, version=version)
    assert c.events() == [RequestFailed(
        rid, SVC, "no reply after 3 attempts: no worker registered for 'echo'",
        FailureCause.NO_WORKER)]
    assert (c.outstanding, c.next_deadline(), c.outgoing()) == (None, None, [])
    assert c.request(SVC, b"next", 3.3) == rid + 1


@pytest.mark.parametrize("version", ALL)
def test_a_403_to_the_second_question_fails_the_request_as_refused(version: Dialect) -> None:
    c, rid = failing(version)
    assert c.outgoing() == [mmi_question(version=version)]
    answer_404_then(c, b"403", 3.2, version=version)
    assert c.events() == [RequestFailed(
        rid, SVC, "no reply after 3 attempts: the broker does not allow this client to call "
        "'echo'", FailureCause.REFUSED)]
    assert (c.outstanding, c.next_deadline(), c.outgoing()) == (None, None, [])


def test_the_second_question_has_its_own_deadline() -> None:
    c, rid = failing()
    c.outgoing()
    answer_404_then(c, None, 3.5)
    assert c.next_deadline() == 4.5  # 3.5 + diagnose_timeout
    c.receive(partial(b"403", b"mmi.allowed"), 3.6)  # MMI answers are one FINAL
    (dropped,) = c.events()
    assert isinstance(dropped, ProtocolError) and "mmi.allowed" in dropped.reason
    c.receive(final(b"403", b"mmi.service"), 3.7)  # not the question asked now
    assert [type(e) for e in c.events()] == [ProtocolError]
    assert c.outstanding == rid


@pytest.mark.parametrize("body", [b"200", b"501", b"junk"])
def test_anything_but_403_to_the_second_question_leaves_no_worker(body: bytes) -> None:
    c, rid = failing()
    c.outgoing()
    answer_404_then(c, body, 3.2)
    (failed,) = c.events()
    assert failed == RequestFailed(rid, SVC, "no reply after 3 attempts: no worker registered "
                                   "for 'echo'", FailureCause.NO_WORKER)


def test_no_answer_to_the_second_question_leaves_no_worker() -> None:
    c, rid = failing()
    c.outgoing()
    answer_404_then(c, None, 3.2)
    c.tick(4.2)
    assert c.events() == [ResetConnection(), RequestFailed(
        rid, SVC, "no reply after 3 attempts: no worker registered for 'echo'",
        FailureCause.NO_WORKER)]
    c2, _ = failing()
    c2.outgoing()
    answer_404_then(c2, None, 3.2)
    c2.connection_lost(3.3)
    failed = c2.events()[-1]
    assert isinstance(failed, RequestFailed) and failed.cause is FailureCause.NO_WORKER


@pytest.mark.parametrize("body", [(b"200",), (b"501",), (b"404", b"extra"), (b"",), (b"403",)])
def test_any_other_answer_fails_the_request_with_no_reply(body: tuple[bytes, ...]) -> None:
    c, rid = failing()
    c.outgoing()
    c.receive(encode(ClientReply(b"mmi.service", body), V02), 3.2)
    assert c.events() == [RequestFailed(rid, SVC, "no reply after 3 attempts",
                                        FailureCause.NO_REPLY)]
    assert c.outstanding is None


def test_an_unanswered_question_fails_the_request_with_no_reply_at_its_deadline() -> None:
    c, rid = failing()
    c.outgoing()
    c.tick(3.999)
    assert c.events() == []
    c.tick(4.0)
    assert c.events() == [ResetConnection(), RequestFailed(rid, SVC, "no reply after 3 attempts",
                                                           FailureCause.NO_REPLY)]
    assert (c.outstanding, c.next_deadline(), c.outgoing()) == (None, None, [])


def test_a_lost_connection_during_the_question_fails_the_request_with_no_reply() -> None:
    c, rid = failing()
    c.outgoing()
    c.connection_lost(3.5)
    assert c.events() == [ResetConnection(), RequestFailed(rid, SVC, "no reply after 3 attempts",
                                                           FailureCause.NO_REPLY)]
    assert c.outgoing() == []


def test_a_failed_send_of_the_question_fails_the_request_with_no_reply() -> None:
    c, rid = failing()
    (question,) = c.outgoing()
    c.send_failed(question, 3.0)
    assert c.events() == [ResetConnection(), RequestFailed(rid, SVC, "no reply after 3 attempts",
                                                           FailureCause.NO_REPLY)]


def test_the_answer_to_the_question_is_never_a_reply_to_the_request() -> None:
    c, rid = failing()
    c.outgoing()
    c.receive(final(b"late", SVC), 3.1)  # not what was asked on this socket
    c.receive(partial(b"200", b"mmi.service"), 3.2)  # MMI answers are one FINAL
    errors = c.events()
    assert [type(e) for e in errors] == [ProtocolError, ProtocolError]
    assert "'echo'" in errors[0].reason and "PARTIAL" in errors[1].reason  # type: ignore[attr-defined]
    assert c.outstanding == rid and c.next_deadline() == 4.0
    answer_404_then(c, b"200", 3.3)
    (failed,) = c.events()
    assert isinstance(failed, RequestFailed) and failed.cause is FailureCause.NO_WORKER
    c.receive(final(b"200", b"mmi.allowed"), 3.5)  # a duplicate answer is no reply either
    (dropped,) = c.events()
    assert isinstance(dropped, ProtocolError)


def test_the_question_is_not_asked_without_a_connection() -> None:
    c = Client(CFG)
    rid = c.request(SVC, b"x", 0.0)
    for t in (1.0, 2.0, 3.0):
        c.tick(t)
    assert c.events()[-1] == RequestFailed(
        rid, SVC, "no reply after 3 attempts: no broker reachable", FailureCause.UNREACHABLE)
    assert c.outgoing() == []  # only the 3rd attempt's resend, superseded: nothing asked
    assert c.outstanding is None


def test_a_connection_in_any_attempt_counts() -> None:
    c = Client(CFG)
    rid = c.request(SVC, b"x", 0.0)
    c.tick(1.0)
    c.connected(1.1)  # the second socket's handshake succeeded
    c.tick(2.0)
    c.tick(3.0)
    c.events()
    assert c.outgoing() == [mmi_question()]
    assert c.outstanding == rid


def test_a_message_from_the_broker_proves_the_connection() -> None:
    c = Client(CFG)
    rid = c.request(SVC, b"x", 0.0)
    c.receive([b"junk"], 0.5)  # dropped, but something answered on this socket
    for t in (1.0, 2.0, 3.0):
        c.tick(t)
    c.events()
    assert c.outgoing() == [mmi_question()]
    assert c.outstanding == rid


def test_a_socket_connected_before_the_request_counts() -> None:
    c = Client(CFG)
    c.connected(0.0)
    c.request(SVC, b"x", 1.0)
    c.tick(2.0)  # retries=2: the first reset; the new sockets never connect
    c.tick(3.0)
    c.tick(4.0)
    c.events()
    assert c.outgoing() == [mmi_question()]


@pytest.mark.parametrize("how", ["reset", "lost", "cancel"])
def test_the_link_is_down_after_a_reset_or_a_lost_connection(how: str) -> None:
    c = Client(CFG)
    c.connected(0.0)
    if how == "reset":  # a request that failed: its last reset replaced the socket
        c.request(SVC, b"x", 0.0, retries=0)
        c.tick(1.0)
        c.receive(final(b"200", b"mmi.service"), 1.1)  # this answer proves the new socket
        c.connection_lost(1.2)
    elif how == "lost":
        c.connection_lost(0.5)
    else:
        c.request(SVC, b"x", 0.0)
        c.cancel(0.5)
    c.events()
    rid = c.request(SVC, b"y", 2.0, retries=0)
    c.outgoing()
    c.tick(3.0)
    assert c.events() == [ResetConnection(), RequestFailed(
        rid, SVC, "no reply after 1 attempt: no broker reachable", FailureCause.UNREACHABLE)]


@pytest.mark.parametrize("service", [b"mmi.service", b"mmi.services", b"mmi.x"])
def test_a_failed_mmi_request_is_not_diagnosed(service: bytes) -> None:
    c = Client(CFG)
    c.connected(0.0)
    rid = c.request(service, b"echo", 0.0, retries=0)
    c.tick(1.0)
    assert c.events() == [ResetConnection(), RequestFailed(rid, service, "no reply after 1 attempt",
                                                           FailureCause.NO_REPLY)]
    assert c.outgoing() == []


def test_diagnosis_can_be_turned_off() -> None:
    c = Client(ClientConfig(timeout=1.0, retries=0, diagnose_timeout=None))
    c.connected(0.0)
    rid = c.request(SVC, b"x", 0.0)
    c.tick(1.0)
    assert c.events() == [ResetConnection(), RequestFailed(rid, SVC, "no reply after 1 attempt",
                                                           FailureCause.NO_REPLY)]
    assert (c.outgoing(), c.outstanding) == ([], None)


def test_the_reason_says_how_the_last_attempt_ended() -> None:
    c = Client(ClientConfig(timeout=1.0, retries=1))
    c.connected(0.0)
    rid = c.request(SVC, b"x", 0.0)
    c.connection_lost(0.2)
    c.connected(0.3)
    c.outgoing()
    c.connection_lost(0.4)
    c.events()
    assert c.outgoing() == [mmi_question()]
    answer_404_then(c, b"200", 0.5)
    assert c.events() == [RequestFailed(
        rid, SVC, "connection lost after 2 attempts: no worker registered for 'echo'",
        FailureCause.NO_WORKER)]


def test_a_service_name_that_is_not_utf8_is_shown_escaped() -> None:
    c, rid = failing(service=b"\xff\xfe")
    c.outgoing()
    answer_404_then(c, b"200", 3.1, service=b"\xff\xfe")
    (failed,) = c.events()
    assert failed == RequestFailed(rid, b"\xff\xfe",
                                   "no reply after 3 attempts: no worker registered for "
                                   "'\\xff\\xfe'", FailureCause.NO_WORKER)


def test_the_failure_cause_values_are_stable() -> None:
    assert {cause.name: cause.value for cause in FailureCause} == {
        "UNREACHABLE": "unreachable", "NO_WORKER": "no worker", "NO_REPLY": "no reply",
        "REFUSED": "refused"}


# ------------------------------------------------------------ cancel


def test_cancel_with_nothing_outstanding_does_nothing() -> None:
    c = Client(CFG)
    c.cancel(0.0)
    assert (c.events(), c.outgoing(), c.outstanding) == ([], [], None)


def test_cancel_drops_the_request_with_only_a_reset() -> None:
    c = Client(CFG)
    c.request(SVC, b"x", 0.0)  # not even flushed: the copy is dropped too
    c.cancel(0.5)
    assert c.events() == [ResetConnection()]
    assert (c.outgoing(), c.outstanding, c.next_deadline()) == ([], None, None)
    c.tick(10.0)
    assert c.events() == []
    c.receive(final(b"late"), 10.1)  # a late reply to the cancelled request
    (event,) = c.events()
    assert isinstance(event, ProtocolError)
    rid = c.request(SVC, b"y", 11.0)
    assert rid == 2 and c.next_deadline() == 12.0


def test_cancel_during_the_diagnosis_ends_it_without_a_failure() -> None:
    c, _ = failing()
    c.outgoing()
    c.cancel(3.5)
    assert c.events() == [ResetConnection()]
    assert (c.outstanding, c.next_deadline()) == (None, None)
    c.receive(final(b"404", b"mmi.service"), 3.6)
    assert [type(e) for e in c.events()] == [ProtocolError]


# ------------------------------------------------------------ failed sends


def test_a_failed_send_retries_on_a_new_socket_at_once() -> None:
    c = Client(CFG)
    rid = c.request(SVC, b"x", 0.0)
    (frames,) = c.outgoing()
    c.send_failed(frames, 0.1)
    assert c.events() == [ResetConnection()]
    assert c.outgoing() == [frames]
    assert c.next_deadline() == pytest.approx(1.1)
    c.receive(final(), 0.5)
    assert c.events() == [FinalReply(rid, SVC, (b"ok",))]


def test_failed_sends_count_as_attempts() -> None:
    c = Client(CFG)
    c.connected(0.0)
    rid = c.request(SVC, b"x", 0.0)
    for t in (0.1, 0.2, 0.3):
        (frames,) = c.outgoing()
        c.send_failed(tuple(frames), t)  # a copy of the frames is recognised too
    assert c.events() == [ResetConnection()] * 3
    assert c.outgoing() == [mmi_question()]
    answer_404_then(c, b"200", 0.4)
    assert c.events() == [RequestFailed(
        rid, SVC, "send failed after 3 attempts: no worker registered for 'echo'",
        FailureCause.NO_WORKER)]


def test_reports_of_frames_the_client_did_not_queue_are_ignored() -> None:
    c = Client(CFG)
    c.send_failed([b"x"], 0.0)  # nothing outstanding
    rid = c.request(SVC, b"x", 0.0)
    (frames,) = c.outgoing()
    c.send_failed(encode(ClientRequest(SVC, (b"other",)), V02), 0.1)  # not ours
    assert (c.events(), c.outgoing()) == ([], [])
    c.connection_lost(0.3)  # a new attempt: the first copy is history
    assert c.events() == [ResetConnection()]
    c.send_failed(frames, 0.4)  # the resend is queued, not handed out yet: ignored
    assert c.events() == []
    (resend,) = c.outgoing()
    c.send_failed(resend, 0.5)
    c.send_failed(resend, 0.5)  # the same failure twice counts once
    assert c.events() == [ResetConnection()]
    c.outgoing()
    c.receive(final(), 0.6)
    assert c.events() == [FinalReply(rid, SVC, (b"ok",))]
    c.send_failed(resend, 0.7)  # after the request ended
    assert (c.events(), c.outgoing()) == ([], [])


def test_a_reply_before_the_resend_went_out_drops_the_resend() -> None:
    c, rid = sent()
    c.tick(1.0)  # a resend is queued...
    c.receive(final(), 1.0)  # ...but the reply is here first
    assert c.events() == [ResetConnection(), FinalReply(rid, SVC, (b"ok",))]
    assert c.outgoing() == []  # no duplicate whose reply could answer the next request


def test_a_report_after_an_empty_outgoing_is_ignored() -> None:
    c = Client(CFG)
    c.request(SVC, b"x", 0.0)
    (frames,) = c.outgoing()
    assert c.outgoing() == []  # the latest batch is now empty
    c.send_failed(frames, 0.1)
    assert (c.events(), c.outstanding) == ([], 1)


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


def test_mmi_list_leaves_out_the_mark_of_a_cut_list() -> None:
    assert mmi_list(FinalReply(1, b"mmi.services", (b"a.svc", b""))) == [b"a.svc"]
