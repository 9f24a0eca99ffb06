"""A client with several brokers (fake time, no sockets): which broker each attempt
goes to (home, rotation, cool-off, round robin), the diagnosis of a failure, and
the merge of MMI answers from several brokers."""

from __future__ import annotations

import pytest

from mdp_core import (
    Client,
    ClientConfig,
    ClientReply,
    ClientRequest,
    Dialect,
    FailureCause,
    FinalReply,
    RequestFailed,
    ResetConnection,
    decode,
    encode,
    mmi_list,
    mmi_merge,
)

SVC = b"echo"
V02 = Dialect.MDP02


def config(**kw: object) -> ClientConfig:
    return ClientConfig(**{"timeout": 1.0, "retries": 5, "cool_off": 30.0, **kw})  # type: ignore[arg-type]


def final(body: bytes = b"ok", service: bytes = SVC) -> list[bytes]:
    return encode(ClientReply(service, (body,)), V02)


def fail_attempt(c: Client, how: str, now: float) -> None:
    """End the current attempt the way ``how`` says."""
    if how == "timeout":
        c.tick(now)
    elif how == "lost":
        c.connection_lost(now)
    else:
        (frames,) = c.outgoing()
        c.send_failed(frames, now)


def attempts(c: Client, n: int, now: float = 1.0) -> list[int]:
    """The brokers of the next ``n`` attempts of the outstanding request, each
    ending at its deadline (each resend's ResetConnection names one)."""
    out = []
    for _ in range(n):
        c.outgoing()
        deadline = c.next_deadline()
        assert deadline is not None
        c.tick(deadline)
        resets = [e for e in c.events() if isinstance(e, ResetConnection)]
        assert len(resets) == 1
        assert resets[0].broker == c.broker
        out.append(c.broker)
    return out


def answer(c: Client, now: float, body: bytes = b"ok") -> None:
    c.outgoing()
    c.receive(final(body), now)
    assert [type(e) for e in c.events()] == [FinalReply]


# ------------------------------------------------------------ one broker: as before


def test_with_one_broker_every_socket_is_for_broker_0() -> None:
    c = Client(config(round_robin=True, cool_off=0.0), spread=7)
    assert (c.brokers, c.broker) == (1, 0)
    c.request(SVC, b"x", 0.0)
    assert c.events() == []  # no reset for a request: there is nowhere else to go
    assert attempts(c, 3) == [0, 0, 0]
    assert ResetConnection() == ResetConnection(0)


# ------------------------------------------------------------ home and rotation


@pytest.mark.parametrize(("brokers", "spread", "home"),
                         [(3, 0, 0), (3, 4, 1), (3, -1, 2), (2, 2**70 + 1, 1)])
def test_the_home_broker_is_spread_modulo_the_number_of_brokers(
    brokers: int, spread: int, home: int,
) -> None:
    c = Client(config(), brokers=brokers, spread=spread)
    assert c.broker == home
    c.request(SVC, b"x", 0.0)
    assert c.events() == []  # the first socket is opened to c.broker
    assert c.broker == home


@pytest.mark.parametrize("how", ["timeout", "lost", "send_failed"])
def test_a_failed_attempt_moves_the_resend_to_the_next_broker(how: str) -> None:
    c = Client(config(), brokers=3, spread=1)
    c.request(SVC, b"x", 0.0)
    if how != "send_failed":
        c.outgoing()
    fail_attempt(c, how, 1.0)
    assert c.events() == [ResetConnection(2)]
    assert c.broker == 2
    assert [decode(m, from_broker=False)[1] for m in c.outgoing()] == [
        ClientRequest(SVC, (b"x",))]


def test_refused_by_one_broker_and_the_other_unreachable_is_refused() -> None:
    c = Client(config(retries=1), brokers=2)
    rid = c.request(SVC, b"x", 0.0)
    c.outgoing()
    c.handshake_refused(0.1)  # broker 0's ZAP handler refused the key
    c.connection_lost(0.1)
    assert c.events() == [ResetConnection(1)]
    c.outgoing()
    c.tick(1.1)  # broker 1 never answered the handshake
    assert c.events() == [ResetConnection(0), RequestFailed(
        rid, SVC, "no reply after 2 attempts: the broker refused this client's key at the "
        "handshake", FailureCause.REFUSED)]


def test_a_connection_lost_between_requests_moves_to_the_next_broker() -> None:
    c = Client(config(cool_off=10.0), brokers=2)
    c.request(SVC, b"x", 0.0)
    answer(c, 0.1)
    c.connection_lost(1.0)
    assert (c.events(), c.broker, c.outgoing()) == ([ResetConnection(1)], 1, [])
    c.request(SVC, b"y", 2.0)  # home is in cool-off until 11
    assert (c.events(), c.broker) == ([], 1)


def test_with_one_broker_a_connection_lost_between_requests_only_marks_the_link_down() -> None:
    c = Client(config(retries=0))
    c.connected(0.0)
    c.connection_lost(1.0)
    assert c.events() == []
    rid = c.request(SVC, b"x", 2.0)
    c.outgoing()
    c.tick(3.0)
    assert c.events() == [ResetConnection(0), RequestFailed(
        rid, SVC, "no reply after 1 attempt: no broker reachable", FailureCause.UNREACHABLE)]


def test_attempts_go_round_the_brokers_and_never_stop() -> None:
    c = Client(config(), brokers=3, spread=1)
    c.request(SVC, b"x", 0.0)
    # Every broker tried is in cool-off; past the last, the one whose
    # cool-off ends first (the first one tried) is tried again.
    assert attempts(c, 5) == [2, 0, 1, 2, 0]


def test_without_cool_off_attempts_still_rotate() -> None:
    c = Client(config(cool_off=0.0), brokers=2)
    c.request(SVC, b"x", 0.0)
    assert attempts(c, 3) == [1, 0, 1]


def test_a_reply_keeps_the_next_request_on_the_same_broker() -> None:
    c = Client(config(), brokers=2)
    for t in (0.0, 0.5):
        c.request(SVC, b"x", t)
        assert c.events() == []
        answer(c, t + 0.1)
        assert c.broker == 0


# ------------------------------------------------------------ cool-off and going home


def test_the_client_stays_away_from_a_failed_home_broker_for_its_cool_off() -> None:
    c = Client(config(cool_off=10.0), brokers=2)
    c.request(SVC, b"x", 0.0)
    assert attempts(c, 1) == [1]  # broker 0 failed at t=1: in cool-off until 11
    answer(c, 1.5)
    c.request(SVC, b"y", 10.9)
    assert c.events() == []  # still on broker 1
    assert c.broker == 1
    answer(c, 11.0)
    c.request(SVC, b"z", 11.0)  # the cool-off is over: home again
    assert c.events() == [ResetConnection(0)]
    assert c.broker == 0
    (message,) = c.outgoing()
    assert decode(message, from_broker=False)[1] == ClientRequest(SVC, (b"z",))


def test_a_home_broker_that_fails_again_starts_a_new_cool_off() -> None:
    c = Client(config(cool_off=10.0), brokers=2)
    c.request(SVC, b"x", 0.0)
    assert attempts(c, 1) == [1]
    answer(c, 1.5)
    c.request(SVC, b"y", 12.0)
    assert c.events() == [ResetConnection(0)]
    assert attempts(c, 1) == [1]  # failed at t=13: home again at 23
    answer(c, 13.5)
    c.request(SVC, b"z", 22.0)
    assert (c.events(), c.broker) == ([], 1)


# ------------------------------------------------------------ round robin


def test_round_robin_spreads_requests_and_skips_brokers_in_cool_off() -> None:
    c = Client(config(round_robin=True), brokers=3)
    c.request(SVC, b"1", 0.0)
    assert c.events() == []  # the first request goes home
    answer(c, 0.1)
    c.request(SVC, b"2", 1.0)
    assert c.events() == [ResetConnection(1)]
    assert attempts(c, 1) == [2]  # broker 1 failed at t=2: in cool-off until 32
    answer(c, 2.5)
    resets = []
    for t in (3.0, 4.0, 5.0):
        c.request(SVC, b"n", t)
        resets += c.events()
        answer(c, t + 0.1)
    assert resets == [ResetConnection(0), ResetConnection(2), ResetConnection(0)]
    c.request(SVC, b"n", 33.0)  # broker 1's cool-off is over
    assert c.events() == [ResetConnection(1)]


def test_a_reply_ends_a_cool_off() -> None:
    c = Client(config(round_robin=True, retries=1), brokers=2, spread=1)
    c.request(SVC, b"x", 0.0)
    c.outgoing()
    c.tick(1.0)  # broker 1: never connected, cool-off until 31
    assert c.events() == [ResetConnection(0)]
    c.connected(1.2)
    c.outgoing()
    c.tick(2.0)  # broker 0: connected, no reply; cool-off until 32
    assert c.events() == [ResetConnection(0)]  # the question goes where a connection was made
    c.outgoing()
    c.receive(final(b"200", b"mmi.service"), 2.1)
    assert [e.cause for e in c.events() if isinstance(e, RequestFailed)] == [
        FailureCause.NO_REPLY]
    # Broker 0 answered, so it is live; broker 1's cool-off (ending first) does not win.
    c.request(SVC, b"y", 3.0)
    assert (c.events(), c.broker) == ([], 0)


# ------------------------------------------------------------ diagnosis


def test_unreachable_only_when_no_broker_was_reached() -> None:
    c = Client(config(retries=2), brokers=3)
    rid = c.request(SVC, b"x", 0.0)
    assert attempts(c, 2) == [1, 2]
    c.outgoing()
    c.tick(10.0)
    assert c.events() == [ResetConnection(0), RequestFailed(
        rid, SVC, "no reply after 3 attempts: no broker reachable", FailureCause.UNREACHABLE)]


@pytest.mark.parametrize(("reached", "answer_body", "cause"), [
    (0, b"404", FailureCause.NO_WORKER),
    (1, b"404", FailureCause.NO_WORKER),
    (1, b"200", FailureCause.NO_REPLY),
])
def test_the_question_goes_to_the_last_broker_reached(
    reached: int, answer_body: bytes, cause: FailureCause,
) -> None:
    c = Client(config(retries=2), brokers=3)
    rid = c.request(SVC, b"x", 0.0)
    now = 0.0
    for attempt in range(3):  # on brokers 0, 1, 2
        if attempt == reached:
            c.connected(now + 0.5)
        c.outgoing()
        now += 1.0
        c.tick(now)
        c.events()
    assert c.broker == reached
    (question,) = c.outgoing()
    assert decode(question, from_broker=False)[1] == ClientRequest(b"mmi.service", (SVC,))
    c.receive(final(answer_body, b"mmi.service"), now + 0.1)
    if answer_body == b"404":  # the second question goes to the same broker
        assert c.events() == [] and c.broker == reached
        (question,) = c.outgoing()
        assert decode(question, from_broker=False)[1] == ClientRequest(b"mmi.allowed", (SVC,))
        c.receive(final(b"200", b"mmi.allowed"), now + 0.2)
    (failed,) = c.events()
    assert isinstance(failed, RequestFailed)
    assert (failed.request_id, failed.cause) == (rid, cause)


def test_a_socket_connected_before_the_request_counts_for_its_broker() -> None:
    c = Client(config(retries=1), brokers=2)
    c.connected(0.0)
    c.request(SVC, b"x", 0.0)
    assert attempts(c, 1) == [1]  # broker 1 is never reached
    c.outgoing()
    c.tick(5.0)
    assert c.events() == [ResetConnection(0)]  # asked on broker 0, reached at the start
    assert c.next_deadline() is not None


# ------------------------------------------------------------ arguments


@pytest.mark.parametrize(("kwargs", "error"), [
    ({"brokers": 0}, ValueError),
    ({"brokers": -1}, ValueError),
    ({"brokers": 2.0}, TypeError),
    ({"brokers": True}, TypeError),
    ({"spread": "1"}, TypeError),
    ({"spread": 1.5}, TypeError),
])
def test_bad_broker_arguments_are_refused(kwargs: dict[str, object],
                                          error: type[Exception]) -> None:
    with pytest.raises(error):
        Client(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(("kwargs", "error"), [
    ({"cool_off": -0.1}, ValueError),
    ({"cool_off": "1"}, TypeError),
    ({"round_robin": 1}, TypeError),
])
def test_bad_multi_broker_config_is_refused(kwargs: dict[str, object],
                                            error: type[Exception]) -> None:
    with pytest.raises(error):
        ClientConfig(**kwargs)  # type: ignore[arg-type]


# ------------------------------------------------------------ merged MMI answers


@pytest.mark.parametrize(("bodies", "merged"), [
    ([(b"404",), (b"200",)], (b"200",)),
    ([(b"200",), (b"404",)], (b"200",)),
    ([(b"404",), (b"404",)], (b"404",)),
    ([(b"501",), (b"404",)], (b"404",)),
    ([(b"501",), (b"junk", b"x")], (b"501",)),
])
def test_a_service_is_present_if_any_broker_has_a_worker_for_it(
    bodies: list[tuple[bytes, ...]], merged: tuple[bytes, ...],
) -> None:
    assert mmi_merge(b"mmi.service", bodies) == merged


def test_service_lists_merge_into_one_sorted_list_without_repeats() -> None:
    merged = mmi_merge(b"mmi.services", [(b"echo", b"upper"), (b"",), (b"echo", b"add")])
    assert merged == (b"add", b"echo", b"upper")
    assert mmi_merge(b"mmi.services", [(b"",), (b"",)]) == (b"",)


def test_worker_lists_keep_every_brokers_workers() -> None:
    merged = mmi_merge(b"mmi.workers", [[b"echo idle", b"echo busy"], [b"echo idle"]])
    assert merged == (b"echo busy", b"echo idle", b"echo idle")


def test_a_list_any_broker_cut_stays_marked_as_cut() -> None:
    merged = mmi_merge(b"mmi.services", [(b"b", b""), (b"a",)])
    assert merged == (b"a", b"b", b"")
    assert mmi_list(FinalReply(1, b"mmi.services", merged)) == [b"a", b"b"]


@pytest.mark.parametrize(("service", "bodies"), [
    (b"mmi.services", []),
    (b"mmi.service", []),
    (b"mmi.discovery", [(b"x",)]),
    (b"echo", [(b"x",)]),
])
def test_what_cannot_be_merged_raises(service: bytes, bodies: list[tuple[bytes, ...]]) -> None:
    with pytest.raises(ValueError):
        mmi_merge(service, bodies)
