"""Authenticated identities and the policy in the sans-IO Broker (fake time, no sockets).

Identities are plain names here, as a driver would pass them from each
message's ``User-Id``: ``Broker.receive(peer, frames, now, identity=...)``.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mdp_core import (
    Broker,
    BrokerConfig,
    Client,
    ClientConfig,
    ClientRequest,
    Dialect,
    Disconnect,
    Event,
    FailureCause,
    FinalReply,
    Heartbeat,
    Policy,
    ProtocolError,
    Ready,
    RequestDelivered,
    RequestFailed,
    RequestRefused,
    WorkerLost,
    WorkerReady,
    WorkerRefused,
    WorkerReply,
    decode,
    encode,
    parse_mmi_stats,
)
from mdp_core._broker_parts import _disconnect_frames

D1, D2 = Dialect.MDP01, Dialect.MDP02

POLICY = Policy(
    serve={"payments": ["pay-worker"], "payments.*": ["pay-worker", "refunds"],
           "echo": ["*"]},
    call={"payments": ["shop"], "payments.*": ["shop", "auditor"], "echo": ["*"],
          "*": ["admin"]},
)


class Harness:
    """A broker whose peers each send under one identity."""

    def __init__(self, policy: Policy | None = POLICY, **config: object) -> None:
        self.b = Broker(BrokerConfig(policy=policy, **config))  # type: ignore[arg-type]
        self.now = 0.0

    def send(self, peer: bytes, frames: Sequence[bytes], identity: str | None) -> None:
        self.b.receive(peer, list(frames), self.now, identity=identity)

    def ready(self, peer: bytes, service: bytes, identity: str | None, d: Dialect = D2) -> None:
        self.send(peer, encode(Ready(service), d), identity)

    def request(self, peer: bytes, service: bytes, identity: str | None,
                body: bytes = b"hi", d: Dialect = D2) -> None:
        self.send(peer, encode(ClientRequest(service, (body,)), d), identity)

    def reply(self, peer: bytes, client: bytes, identity: str | None, body: bytes = b"ok"
              ) -> None:
        self.send(peer, encode(WorkerReply(client, (body,)), D2), identity)

    def out(self) -> list[tuple[bytes, list[bytes]]]:
        return self.b.outgoing()

    def events(self) -> list[Event]:
        return self.b.events()

    def drain(self) -> None:
        self.out()
        self.events()

    def mmi(self, peer: bytes, service: bytes, identity: str | None, body: bytes = b""
            ) -> tuple[bytes, ...]:
        self.send(peer, encode(ClientRequest(service, (body or b"x",)), D2), identity)
        ((to, frames),) = self.out()
        self.events()
        assert to == peer
        return tuple(frames[3:])


# ------------------------------------------------------------------ the Policy value

SERVICES = [b"payments", b"payments.refund", b"payments.eu.refund", b"paymentsx", b"echo",
            b"other"]
IDENTITIES: list[str | None] = ["pay-worker", "refunds", "shop", "auditor", "admin", "mallory",
                                None]
# Who may serve / call each service under POLICY: every allow/deny pair below.
MAY_SERVE = {
    b"payments": {"pay-worker"},
    b"payments.refund": {"pay-worker", "refunds"},
    b"payments.eu.refund": {"pay-worker", "refunds"},
    b"paymentsx": set(),
    b"echo": set(IDENTITIES),
    b"other": set(),
}
MAY_CALL = {
    b"payments": {"shop", "admin"},
    b"payments.refund": {"shop", "auditor", "admin"},
    b"payments.eu.refund": {"shop", "auditor", "admin"},
    b"paymentsx": {"admin"},
    b"echo": set(IDENTITIES),
    b"other": {"admin"},
}
PAIRS = list(itertools.product(IDENTITIES, SERVICES))


@pytest.mark.parametrize(("identity", "service"), PAIRS)
def test_policy_answers_every_identity_and_service(identity: str | None, service: bytes
                                                    ) -> None:
    assert POLICY.may_serve(identity, service) is (identity in MAY_SERVE[service])
    assert POLICY.may_call(identity, service) is (identity in MAY_CALL[service])


def test_a_policy_grants_nothing_it_does_not_name_and_mmi_is_always_callable() -> None:
    empty = Policy()
    assert not empty.may_serve("a", "x") and not empty.may_call("a", "x")
    assert empty.may_call(None, "mmi.service") and empty.may_call("a", b"mmi.x")
    assert not empty.may_serve("a", "mmi.service")


def test_a_prefix_needs_a_dot_and_any_identity_includes_the_unauthenticated() -> None:
    p = Policy(serve={"a.b.*": ["w"]}, call={"*": ["*"]})
    assert p.may_serve("w", "a.b.c") and p.may_serve("w", "a.b.") and p.may_serve("w", "a.b.c.d")
    assert not p.may_serve("w", "a.b") and not p.may_serve("w", "a.bc") and not p.may_serve(
        "w", ".a.b.c")
    assert p.may_call(None, "anything") and p.may_call("x", "y")


def test_an_exact_name_ending_in_a_dot_is_not_a_prefix() -> None:
    p = Policy(call={"x.": ["a"], "x.*": ["b"]})
    assert p.may_call("a", "x.") and not p.may_call("a", "x.y")
    assert p.may_call("b", "x.") and p.may_call("b", "x.y")


@pytest.mark.parametrize(("kwargs", "error"), [
    ({"serve": ["payments"]}, TypeError),
    ({"call": {"payments": "shop"}}, TypeError),  # a bare str where a list belongs
    ({"call": {"payments": ["shop", 3]}}, TypeError),
    ({"call": {"payments": [""]}}, TypeError),
    ({"call": {b"payments": ["shop"]}}, TypeError),
    ({"call": {"pay*": ["shop"]}}, ValueError),
    ({"call": {".*": ["shop"]}}, ValueError),
    ({"call": {"": ["shop"]}}, ValueError),
    ({"call": {"a.*.b": ["shop"]}}, ValueError),
    ({"serve": {"mmi.service": ["w"]}}, ValueError),
    ({"call": {"mmi.*": ["w"]}}, ValueError),
])
def test_a_malformed_policy_is_refused_at_once(kwargs: dict[str, object], error: type) -> None:
    with pytest.raises(error):
        Policy(**kwargs)  # type: ignore[arg-type]


def test_a_policy_is_a_value() -> None:
    a = Policy(call={"x": ["a"]})
    assert a == Policy(call={"x": ["a"]}) and a != Policy(call={"x": ["b"]})
    assert hash(a) == hash(Policy(call={"x": ["a"]}))
    with pytest.raises(TypeError):
        Policy(call={"x": ["a"]}).may_call("a", 3)  # type: ignore[arg-type]


def test_broker_config_takes_only_a_policy() -> None:
    with pytest.raises(TypeError, match=r"mdp_core\.Policy"):
        BrokerConfig(policy={"call": {}})  # type: ignore[arg-type]
    assert BrokerConfig().policy is None


# ------------------------------------------------------------------ READY and REQUEST


@pytest.mark.parametrize(("identity", "service"), PAIRS)
def test_a_worker_registers_only_where_the_policy_lets_it(identity: str | None, service: bytes
                                                          ) -> None:
    h = Harness()
    h.ready(b"w", service, identity)
    out, events = h.out(), h.events()
    if identity in MAY_SERVE[service]:
        assert (out, events) == ([], [WorkerReady(b"w", service)])
        return
    assert out == [(b"w", _disconnect_frames(D2))]
    assert events == [WorkerRefused(
        b"w", service, f"not allowed: identity {identity!r} may not serve {service!r}; "
        "sent DISCONNECT" if identity is not None else
        f"not allowed: identity (unauthenticated) may not serve {service!r}; sent DISCONNECT")]
    assert h.b._services == {} and h.b._workers == {}  # no session, no service


@pytest.mark.parametrize(("identity", "service"), PAIRS)
def test_a_client_is_served_only_where_the_policy_lets_it(identity: str | None, service: bytes
                                                          ) -> None:
    h = Harness(policy=Policy(serve={"*": ["w"]}, call=POLICY.call))
    h.ready(b"w", service, "w")
    h.drain()
    h.request(b"c", service, identity)
    out, events = h.out(), h.events()
    if identity in MAY_CALL[service]:
        assert [peer for peer, _ in out] == [b"w"] and events == []
        return
    assert out == []
    (refused,) = events
    assert isinstance(refused, RequestRefused) and refused.client == b"c"
    assert refused.reason.startswith("not allowed: identity ")
    assert f"may not call {service!r}" in refused.reason
    assert h.b._clients == {}


def test_a_refused_request_creates_no_service() -> None:
    h = Harness()
    h.request(b"c", b"payments", "mallory")
    assert h.b._services == {} and isinstance(h.events()[0], RequestRefused)


def test_a_refused_worker_never_sees_a_request_and_the_allowed_one_serves_them_all() -> None:
    h = Harness()
    h.ready(b"intruder", b"payments", "refunds")  # may serve payments.* only
    h.ready(b"good", b"payments", "pay-worker")
    h.drain()
    for i in range(5):
        h.request(b"c%d" % i, b"payments", "shop", b"pay %d" % i)
        ((to, _),) = h.out()
        assert to == b"good"
        h.reply(b"good", b"c%d" % i, "pay-worker", b"paid %d" % i)
        assert h.out() == [(b"c%d" % i, [b"MDPC02", b"\x03", b"payments", b"paid %d" % i])]
    # The refused worker's later commands come from a peer with no session.
    h.send(b"intruder", encode(Heartbeat(), D2), "refunds")
    assert h.out() == [(b"intruder", _disconnect_frames(D2))]


def test_without_a_policy_every_identity_may_do_everything() -> None:
    h = Harness(policy=None)
    h.ready(b"w", b"payments", "anyone")
    h.request(b"c", b"payments", "someone")
    assert [peer for peer, _ in h.out()] == [b"w"]
    assert h.mmi(b"c2", b"mmi.allowed", "x", b"payments") == (b"200",)


# ------------------------------------------------------------------ MMI respects the policy


def registered() -> Harness:
    h = Harness(policy=Policy(serve={"*": ["w"]}, call=POLICY.call))
    for i, service in enumerate(SERVICES):
        h.ready(b"w%d" % i, service, "w")
    h.drain()
    return h


@pytest.mark.parametrize(("identity", "service"), PAIRS)
def test_mmi_service_and_allowed_only_show_what_a_client_may_call(
    identity: str | None, service: bytes
) -> None:
    h = registered()
    allowed = identity in MAY_CALL[service]
    assert h.mmi(b"c", b"mmi.service", identity, service) == ((b"200",) if allowed
                                                               else (b"404",))
    assert h.mmi(b"c", b"mmi.allowed", identity, service) == ((b"200",) if allowed
                                                               else (b"403",))


@pytest.mark.parametrize("identity", IDENTITIES)
def test_mmi_lists_only_the_services_a_client_may_call(identity: str | None) -> None:
    h = registered()
    visible = sorted(s for s in SERVICES if identity in MAY_CALL[s])
    assert h.mmi(b"c", b"mmi.services", identity) == tuple(visible)
    assert h.mmi(b"c", b"mmi.workers", identity) == tuple(s + b" idle" for s in visible)
    assert h.mmi(b"c", b"mmi.allowed", identity, b"mmi.services") == (b"200",)


@pytest.mark.parametrize("identity", IDENTITIES)
def test_mmi_stats_has_a_line_only_for_the_services_a_client_may_call(
        identity: str | None) -> None:
    h = registered()
    visible = sorted(s for s in SERVICES if identity in MAY_CALL[s])
    totals, *lines = h.mmi(b"c", b"mmi.stats", identity)
    assert [line.split(b" ")[0] for line in lines] == visible
    # The totals stay the broker's: they name no service.
    assert parse_mmi_stats([totals]).service_count == len(SERVICES)


def test_mmi_allowed_for_a_service_nobody_registered_is_about_the_policy_alone() -> None:
    h = Harness()
    assert h.mmi(b"c", b"mmi.allowed", "shop", b"payments") == (b"200",)
    assert h.mmi(b"c", b"mmi.allowed", "mallory", b"payments") == (b"403",)
    assert h.mmi(b"c", b"mmi.service", "shop", b"payments") == (b"404",)


# ------------------------------------------------------------------ identities are bound


def busy_worker(policy: Policy | None = None) -> Harness:
    """A worker 'w' (identity alice) busy with client 'c' (identity bob)'s request."""
    h = Harness(policy=policy)
    h.ready(b"w", b"echo", "alice")
    h.request(b"c", b"echo", "bob")
    h.drain()
    return h


@pytest.mark.parametrize("frames", [
    encode(WorkerReply(b"c", (b"forged",)), D2),
    encode(WorkerReply(b"c", (b"forged",), final=False), D2),
    encode(WorkerReply(b"c", (b"forged",)), D1),
    encode(Heartbeat(), D2),
    encode(Disconnect(), D2),
    encode(Ready(b"echo"), D2),
    [b"MDPW02", b"\x04", b"c", b"", *[b"x"] * 2000],  # over max_frames
    [b"garbage"],
], ids=["final", "partial", "mdp01-reply", "heartbeat", "disconnect", "ready", "oversized",
        "malformed"])
def test_a_worker_routing_id_under_another_identity_is_dropped_and_the_session_kept(
    frames: list[bytes],
) -> None:
    h = busy_worker()
    h.send(b"w", frames, "mallory")
    assert h.out() == []
    (error,) = h.events()
    assert error == ProtocolError(
        b"w", "identity 'mallory' is not 'alice', whose worker session this routing id "
        "holds; dropped")
    h.reply(b"w", b"c", "alice", b"real")
    assert h.out() == [(b"c", [b"MDPC02", b"\x03", b"echo", b"real"])]
    assert h.events() == [RequestDelivered(b"c", b"echo", b"w")]


def test_a_client_routing_id_under_another_identity_is_dropped_and_its_reply_kept() -> None:
    h = busy_worker()
    h.request(b"c", b"echo", "mallory", b"mine now")
    assert h.out() == []
    assert h.events() == [ProtocolError(
        b"c", "identity 'mallory' is not 'bob', whose requests this routing id holds; dropped")]
    h.reply(b"w", b"c", "alice")
    assert h.out() == [(b"c", [b"MDPC02", b"\x03", b"echo", b"ok"])]
    h.request(b"c", b"echo", "mallory")  # the requests are over: the routing id is free
    assert [peer for peer, _ in h.out()] == [b"w"]


def test_once_identities_come_a_message_without_one_is_judged_too() -> None:
    h = busy_worker()
    h.send(b"w", encode(Heartbeat(), D2), None)  # e.g. a driver bug: not alice
    assert isinstance(h.events()[0], ProtocolError) and h.b._workers[b"w"].identity == "alice"


def test_a_new_session_after_the_old_one_ended_takes_the_new_identity() -> None:
    h = busy_worker()
    h.b.connection_lost(b"w", h.now)
    h.drain()
    h.ready(b"w", b"echo", "carol")
    assert h.events()[0] == WorkerReady(b"w", b"echo")
    assert h.b._workers[b"w"].identity == "carol"


def test_the_same_identity_keeps_its_session_and_may_pipeline() -> None:
    h = busy_worker(POLICY)
    h.send(b"w", encode(Heartbeat(), D2), "alice")
    h.request(b"c", b"echo", "bob", b"second")  # queued behind the first
    h.reply(b"w", b"c", "alice")
    assert [(peer, frames[-1]) for peer, frames in h.out()] == [(b"c", b"ok"), (b"w", b"second")]
    assert [type(e) for e in h.events()] == [RequestDelivered]


def test_without_identities_nor_policy_nothing_is_bound() -> None:
    h = Harness(policy=None)
    h.ready(b"w", b"echo", None)
    h.request(b"c", b"echo", None)
    h.reply(b"w", b"c", None)
    assert h.b._guarded is False  # the fast path was never left
    assert [type(e) for e in h.events()] == [WorkerReady, RequestDelivered]


# ------------------------------------------------------------------ the client learns why


def test_a_refused_client_learns_it_from_its_diagnosis() -> None:
    """Client core <-> broker core, the client authenticated as 'mallory'."""
    broker = Broker(BrokerConfig(policy=POLICY))
    broker.receive(b"w", encode(Ready(b"payments"), D2), 0.0, identity="pay-worker")
    client = Client(ClientConfig(timeout=1.0, retries=1, diagnose_timeout=1.0))
    client.connected(0.0)
    rid = client.request(b"payments", b"pay 100 to MALLORY", 0.0)
    refused: list[Event] = []
    now = 0.0
    done: list[Event] = []
    while not done and now < 10:
        moved = True
        while moved:  # deliver until quiet, then let time pass
            moved = False
            for frames in client.outgoing():
                broker.receive(b"c", frames, now, identity="mallory")
                moved = True
            for peer, frames in broker.outgoing():
                assert peer == b"c"  # nothing ever reaches the worker
                client.receive(frames, now)
            refused += [e for e in broker.events() if isinstance(e, RequestRefused)]
            done += [e for e in client.events() if isinstance(e, (RequestFailed, FinalReply))]
        now += 1.0
        client.tick(now)
    assert done == [RequestFailed(
        rid, b"payments", "no reply after 2 attempts: the broker does not allow this client to "
        "call 'payments'", FailureCause.REFUSED)]
    assert len(refused) == 2 and all(e.reason.startswith("not allowed") for e in refused)


# ------------------------------------------------------------------ never raises


frames_st = st.lists(st.one_of(
    st.sampled_from([b"", b"MDPC01", b"MDPC02", b"MDPW01", b"MDPW02", b"\x01", b"\x02",
                     b"\x03", b"\x04", b"\x05", b"\x06", b"echo", b"payments", b"mmi.allowed",
                     b"mmi.service", b"c", b"w"]),
    st.binary(max_size=8)), max_size=8)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([b"c", b"w", b"x"]), frames_st,
                          st.sampled_from(IDENTITIES)), max_size=20))
def test_any_message_under_any_identity_never_raises(
    messages: list[tuple[bytes, list[bytes], str | None]],
) -> None:
    b = Broker(BrokerConfig(policy=POLICY))
    for now, (peer, frames, identity) in enumerate(messages):
        b.receive(peer, frames, float(now), identity=identity)
        for to, out in b.outgoing():
            decode(out, from_broker=True)  # only well-formed frames go out
            assert to in (b"c", b"w", b"x")
        for e in b.events():
            if isinstance(e, WorkerLost):
                assert e.worker in (b"c", b"w", b"x")


def test_an_oversized_message_is_judged_by_its_header_also_when_guarded() -> None:
    h = Harness()
    h.send(b"c", [b"MDPC02", b"\x01", b"echo", *[b"x"] * 2000], "shop")
    (refused,) = h.events()
    assert isinstance(refused, RequestRefused) and "max_frames" in refused.reason


def test_a_routing_id_given_as_a_bytes_like_is_bound_as_bytes() -> None:
    h = busy_worker()
    h.b.receive(bytearray(b"w"), encode(Heartbeat(), D2), h.now, identity="mallory")
    assert [type(e) for e in h.events()] == [ProtocolError]
    h.b.receive(memoryview(b"w"), encode(WorkerReply(b"c", (b"ok",)), D2), h.now,
                identity="alice")
    assert h.out() == [(b"c", [b"MDPC02", b"\x03", b"echo", b"ok"])]


def test_an_identity_that_is_not_a_str_is_the_drivers_mistake() -> None:
    h = busy_worker()
    with pytest.raises(TypeError, match="identity must be a str"):
        h.b.receive(b"w", encode(Heartbeat(), D2), h.now, identity=b"alice")  # type: ignore[arg-type]
    assert (h.out(), h.events()) == ([], [])
    fresh = Broker()
    with pytest.raises(TypeError):
        fresh.receive(b"w", encode(Ready(b"echo"), D2), 0.0, identity=1)  # type: ignore[arg-type]
    assert fresh._guarded is False and fresh.events() == []
