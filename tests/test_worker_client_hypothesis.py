"""Hypothesis: random call sequences on a Worker / Client keep their promises.

Worker: a call that raises leaves state, timers, outgoing and events
unchanged; nothing is sent while no conversation is open, nor in answer to
the broker's DISCONNECT; each conversation starts with READY; no request
gets two FINALs; a failed send ends the conversation unless it was a
HEARTBEAT (or not the worker's), and then changes nothing.
Client: ``request`` raises exactly when a request is outstanding; every
request ends exactly once (or is cancelled, with only a reset), within
``(1 + retries) * timeout + diagnose_timeout``; a FINAL event is always a
reply delivered from the service asked, never the broker's answer to the
client's own ``mmi.service`` question; the failure causes are justified;
with one to three brokers, every new socket is for one of them, the latest
for the current one.
"""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

from mdp_core import (
    BrokerLost,
    Client,
    ClientConfig,
    ClientReply,
    ClientRequest,
    Dialect,
    Disconnect,
    Disconnected,
    FailureCause,
    FinalReply,
    Heartbeat,
    LocalProtocolError,
    Ready,
    RequestFailed,
    RequestInProgress,
    RequestReceived,
    ResetConnection,
    Worker,
    WorkerConfig,
    WorkerReply,
    WorkerRequest,
    WorkerState,
    decode,
    encode,
)

WCFG = WorkerConfig(heartbeat_interval=1.0, heartbeat_liveness=3)
CCFG = ClientConfig(timeout=1.0, retries=1, diagnose_timeout=2.0)
LIVE = (WorkerState.IDLE, WorkerState.BUSY)

worker_ops = st.lists(st.one_of(
    st.tuples(st.just("connect")),
    st.tuples(st.just("recv"), st.sampled_from(["request", "heartbeat", "disconnect", "ready",
                                                "junk"])),
    st.tuples(st.sampled_from(["reply", "partial", "abandon"]),
              st.sampled_from(["current", "last", "foreign"]), st.booleans()),
    st.tuples(st.sampled_from(["disconnect", "lost"])),
    st.tuples(st.just("tick"), st.sampled_from([0.0, 0.5, 1.0, 3.5])),
    st.tuples(st.just("send_failed"), st.integers(0, 2), st.booleans()),
), max_size=30)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(list(Dialect)), worker_ops)
def test_worker_keeps_its_promises_under_random_calls(
    version: Dialect, ops: list[tuple[object, ...]]
) -> None:
    w = Worker(b"svc", WCFG, version)
    now = 0.0
    seen: list[RequestReceived] = []
    finals: dict[bytes, int] = {}
    n = 0
    last_out: list[list[bytes]] = []
    for op in ops:
        kind = op[0]
        before = (w.state, w.current, w.next_deadline())
        was_live = w.state in LIVE
        breaks = False  # the op reports a failed send that must end the conversation
        try:
            if kind == "send_failed":
                index, copy = int(op[1]), bool(op[2])  # type: ignore[call-overload]
                frames = last_out[index] if index < len(last_out) else [b"never", b"queued"]
                breaks = was_live and index < len(last_out) and frames != encode(
                    Heartbeat(), version)
                w.send_failed(tuple(frames) if copy else frames, now)
            elif kind == "connect":
                w.connect(now)
            elif kind == "recv":
                n += 1
                command = {
                    "request": WorkerRequest(b"c%d" % n, (b"body",)), "heartbeat": Heartbeat(),
                    "disconnect": Disconnect(), "ready": Ready(b"x"),
                }.get(str(op[1]))
                w.receive([b"junk"] if command is None else encode(command, version), now)
            elif kind in ("reply", "partial", "abandon"):
                which = op[1]
                target = (w.current if which == "current" else seen[-1] if which == "last" and seen
                          else RequestReceived(b"nobody", (b"?",), 99))
                if target is None:
                    target = RequestReceived(b"nobody", (b"?",), 98)
                body: list[bytes] = [] if op[2] else [b"r"]
                if kind == "reply":
                    w.reply(target, body, now)
                elif kind == "partial":
                    w.partial(target, body, now)
                else:
                    w.abandon(target, now)
            elif kind == "disconnect":
                w.disconnect(now)
            elif kind == "lost":
                w.connection_lost(now)
            else:
                now += float(op[1])  # type: ignore[arg-type]
                w.tick(now)
        except LocalProtocolError:
            assert (w.state, w.current, w.next_deadline()) == before
            assert (w.outgoing(), w.events()) == ([], [])
            last_out = []  # that outgoing() call was the latest
            continue
        out = w.outgoing()
        last_out = out
        events = w.events()
        seen += [e for e in events if isinstance(e, RequestReceived)]
        if kind == "send_failed":
            assert out == []
            if breaks:
                (lost,) = events
                assert isinstance(lost, BrokerLost) and lost.reason.startswith("send failed")
            else:  # a HEARTBEAT, a foreign message or no conversation: nothing happens
                assert events == [] and (w.state, w.current, w.next_deadline()) == before
        if not was_live and w.state not in LIVE:
            assert out == []  # nothing is sent without a conversation
        if not was_live and w.state in LIVE:
            assert out and decode(out[0], from_broker=False)[1] == Ready(b"svc")
        if any(isinstance(e, BrokerLost) and e.reason == "DISCONNECT from broker"
               for e in events):
            assert out == []  # nothing more on a socket the broker said DISCONNECT on
        if any(isinstance(e, (BrokerLost, Disconnected)) for e in events):
            assert w.state is WorkerState.GONE
            assert w.next_deadline() is None
        for frames in out:
            _, command = decode(frames)
            if isinstance(command, WorkerReply) and command.final:
                finals[command.client] = finals.get(command.client, 0) + 1
        assert all(count == 1 for count in finals.values())
        assert (w.state is WorkerState.BUSY) == (w.current is not None)


client_ops = st.lists(st.one_of(
    st.tuples(st.just("request"), st.sampled_from([b"a", b"b", b"mmi.service"])),
    st.tuples(st.just("reply"), st.sampled_from([b"a", b"b"]), st.just(b"r"), st.booleans()),
    # what the broker answers to the client's own questions (mmi.service, then mmi.allowed)
    st.tuples(st.just("reply"), st.sampled_from([b"mmi.service", b"mmi.allowed"]),
              st.sampled_from([b"404", b"200", b"403"]), st.booleans()),
    st.tuples(st.just("tick"), st.sampled_from([0.0, 0.3, 0.5, 1.0, 2.0])),
    st.tuples(st.sampled_from(["lost", "connected", "cancel"])),
    st.tuples(st.just("send_failed"), st.booleans(), st.booleans()),
), min_size=5, max_size=40)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(list(Dialect)), client_ops, st.integers(1, 3), st.integers(-3, 3),
       st.booleans())
def test_client_ends_every_request_exactly_once_under_random_calls(
    version: Dialect, ops: list[tuple[object, ...]], brokers: int, spread: int,
    round_robin: bool,
) -> None:
    c = Client(dataclasses.replace(CCFG, round_robin=round_robin), version, brokers=brokers,
               spread=spread)
    assert c.broker == spread % brokers
    now = 0.0
    issued: dict[int, bytes] = {}  # request id -> service
    ended: dict[int, int] = {}
    cancelled: set[int] = set()
    heard: set[int] = set()  # requests during which a connection or a message was reported
    asked_allowed: set[int] = set()  # requests whose diagnosis got a 404, so asked mmi.allowed
    last_out: list[list[bytes]] = []

    for op in ops:
        kind = op[0]
        outstanding = c.outstanding
        if outstanding is not None and kind in ("connected", "reply"):
            heard.add(outstanding)
        delivered: tuple[bytes | None, bytes, bool] | None = None
        if kind == "request":
            try:
                rid = c.request(bytes(op[1]), b"x", now)  # type: ignore[arg-type]
            except RequestInProgress:
                assert outstanding is not None
                assert c.outstanding == outstanding
            else:
                assert outstanding is None
                issued[rid] = bytes(op[1])  # type: ignore[arg-type]
        elif kind == "reply":
            service = None if version is Dialect.MAJORTOMO else bytes(op[1])  # type: ignore[arg-type]
            body = bytes(op[2])  # type: ignore[arg-type]
            final = bool(op[3]) or version is Dialect.MDP01  # 0.1 has no PARTIAL
            delivered = (service, body, final)
            c.receive(encode(ClientReply(service, (body,), final=final), version), now)
        elif kind == "tick":
            now += float(op[1])  # type: ignore[arg-type]
            c.tick(now)
        elif kind == "lost":
            c.connection_lost(now)
        elif kind == "connected":
            c.connected(now)
        elif kind == "cancel":
            c.cancel(now)
            if outstanding is not None:
                cancelled.add(outstanding)
        else:
            ours, copy = bool(op[1]), bool(op[2])
            frames = last_out[0] if ours and last_out else [b"never", b"queued"]
            c.send_failed(tuple(frames) if copy else frames, now)
        events = c.events()
        last_out = c.outgoing()
        if c.outstanding is not None and encode(ClientRequest(
                b"mmi.allowed", (issued[c.outstanding],)), version) in last_out:
            assert delivered is not None and delivered[1:] == (b"404", True)
            asked_allowed.add(c.outstanding)
        if kind == "cancel":  # a cancel is no broker's failure: the socket is for the same one
            assert events == ([] if outstanding is None else [ResetConnection(c.broker)])
        resets = [e.broker for e in events if isinstance(e, ResetConnection)]
        assert all(0 <= b < brokers for b in resets)
        assert resets[-1:] in ([], [c.broker])  # the latest socket is for the current broker
        if c.outstanding is None:
            assert last_out == [] and c.next_deadline() is None
        else:
            assert c.next_deadline() is not None
        for e in events:
            if isinstance(e, (FinalReply, RequestFailed)):
                assert e.request_id not in cancelled
                ended[e.request_id] = ended.get(e.request_id, 0) + 1
                assert e.service == issued[e.request_id]
            if isinstance(e, FinalReply):
                # a reply is only ever the answer delivered now, from the service asked
                # (an mmi.service answer to the client's own question never shows up)
                assert delivered is not None and delivered[2] and e.body == (delivered[1],)
                assert delivered[0] in (None, e.service)
            if isinstance(e, RequestFailed):
                if e.cause is FailureCause.UNREACHABLE:
                    assert e.request_id not in heard
                elif e.cause is FailureCause.NO_WORKER:
                    assert not e.service.startswith(b"mmi.")
                    assert e.request_id in asked_allowed
                elif e.cause is FailureCause.REFUSED:
                    assert e.request_id in asked_allowed
                    assert delivered is not None and delivered[1:] == (b"403", True)
        assert all(count == 1 for count in ended.values())
    diagnose = CCFG.diagnose_timeout
    assert diagnose is not None
    limit = now + CCFG.timeout * (CCFG.retries + 1) + 2 * diagnose  # no request outlives this
    while (deadline := c.next_deadline()) is not None:
        assert deadline <= limit
        c.tick(deadline)
        for e in c.events():
            if isinstance(e, (FinalReply, RequestFailed)):
                ended[e.request_id] = ended.get(e.request_id, 0) + 1
        c.outgoing()
    assert c.outstanding is None
    assert sorted([*ended, *cancelled]) == sorted(issued)
    assert all(count == 1 for count in ended.values())
