"""Hypothesis: random call sequences on a Worker / Client keep their promises.

Worker: a call that raises leaves state, timers, outgoing and events
unchanged; nothing is sent while no conversation is open, nor in answer to
the broker's DISCONNECT; each conversation starts with READY; no request
gets two FINALs.
Client: ``request`` raises exactly when a request is outstanding; every
request ends exactly once, within ``(1 + retries) * timeout``.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mdp_core import (
    BrokerLost,
    Client,
    ClientConfig,
    ClientReply,
    Dialect,
    Disconnect,
    Disconnected,
    FinalReply,
    Heartbeat,
    LocalProtocolError,
    Ready,
    RequestFailed,
    RequestInProgress,
    RequestReceived,
    Worker,
    WorkerConfig,
    WorkerReply,
    WorkerRequest,
    WorkerState,
    decode,
    encode,
)

WCFG = WorkerConfig(heartbeat_interval=1.0, heartbeat_liveness=3)
CCFG = ClientConfig(timeout=1.0, retries=2)
LIVE = (WorkerState.IDLE, WorkerState.BUSY)

worker_ops = st.lists(st.one_of(
    st.tuples(st.just("connect")),
    st.tuples(st.just("recv"), st.sampled_from(["request", "heartbeat", "disconnect", "ready",
                                                "junk"])),
    st.tuples(st.sampled_from(["reply", "partial", "abandon"]),
              st.sampled_from(["current", "last", "foreign"]), st.booleans()),
    st.tuples(st.sampled_from(["disconnect", "lost"])),
    st.tuples(st.just("tick"), st.sampled_from([0.0, 0.5, 1.0, 3.5])),
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
    for op in ops:
        kind = op[0]
        before = (w.state, w.current, w.next_deadline())
        was_live = w.state in LIVE
        try:
            if kind == "connect":
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
            continue
        out = w.outgoing()
        events = w.events()
        seen += [e for e in events if isinstance(e, RequestReceived)]
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
    st.tuples(st.just("request"), st.sampled_from([b"a", b"b"])),
    st.tuples(st.just("reply"), st.sampled_from([b"a", b"b"]), st.booleans()),
    st.tuples(st.just("tick"), st.sampled_from([0.0, 0.3, 1.0, 2.0])),
    st.tuples(st.just("lost")),
), max_size=30)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from([Dialect.MDP02, Dialect.MAJORTOMO]), client_ops)
def test_client_ends_every_request_exactly_once_under_random_calls(
    version: Dialect, ops: list[tuple[object, ...]]
) -> None:
    c = Client(CCFG, version)
    now = 0.0
    issued: list[int] = []
    ended: dict[int, int] = {}

    def drain() -> None:
        for e in c.events():
            if isinstance(e, (FinalReply, RequestFailed)):
                ended[e.request_id] = ended.get(e.request_id, 0) + 1
        c.outgoing()

    for op in ops:
        kind = op[0]
        if kind == "request":
            outstanding = c.outstanding
            try:
                issued.append(c.request(bytes(op[1]), b"x", now))  # type: ignore[arg-type]
            except RequestInProgress:
                assert outstanding is not None
                assert c.outstanding == outstanding
            else:
                assert outstanding is None
        elif kind == "reply":
            service = None if version is Dialect.MAJORTOMO else bytes(op[1])  # type: ignore[arg-type]
            c.receive(encode(ClientReply(service, (b"r",), final=bool(op[2])), version), now)
        elif kind == "tick":
            now += float(op[1])  # type: ignore[arg-type]
            c.tick(now)
        else:
            c.connection_lost(now)
        drain()
        assert all(count == 1 for count in ended.values())
    limit = now + CCFG.timeout * (CCFG.retries + 1)  # no request outlives this
    while (deadline := c.next_deadline()) is not None:
        assert deadline <= limit
        c.tick(deadline)
        drain()
    assert c.outstanding is None
    assert sorted(ended) == issued
    assert all(count == 1 for count in ended.values())
