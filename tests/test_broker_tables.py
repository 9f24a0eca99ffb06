"""Every (state, input) pair of the state tables, as the Broker sees them.

A legal pair must produce the table's next state; a missing pair must get
the broker's violation handling (a received worker command: DISCONNECT and
a ProtocolError; a timer or transport input: nothing happens). The tables
in ``mdp_core._state`` are the single source: removing an entry makes the
broker treat that pair as a violation.
"""

from __future__ import annotations

import itertools

import pytest

from mdp_core import (
    Broker,
    BrokerConfig,
    ClientRequest,
    Dialect,
    Disconnect,
    Heartbeat,
    ProtocolError,
    Ready,
    RequestAbandoned,
    RequestDelivered,
    RequestExpired,
    RequestRequeued,
    WorkerLost,
    WorkerReply,
    WorkerRequest,
    decode,
    encode,
)
from mdp_core._state import (
    REQUEST_TRANSITIONS,
    SESSION_TRANSITIONS,
    RequestInput,
    RequestState,
    SessionInput,
    WorkerState,
)

D2 = Dialect.MDP02
W = b"w1"


def make_broker(processing_timeout: float | None = 10.0) -> Broker:
    return Broker(BrokerConfig(heartbeat_interval=1.0, heartbeat_liveness=3,
                               processing_timeout=processing_timeout, request_timeout=100.0))


def send(b: Broker, peer: bytes, cmd: object, now: float = 0.0) -> None:
    b.receive(peer, encode(cmd, D2), now)  # type: ignore[arg-type]


def reach_session(state: WorkerState) -> Broker:
    """A broker where peer W is in ``state`` (GONE: it was, then sent DISCONNECT)."""
    b = make_broker()
    if state is not WorkerState.NEW:
        send(b, W, Ready(b"echo"))
    if state is WorkerState.BUSY:
        send(b, b"c1", ClientRequest(b"echo", (b"x",)))
    if state is WorkerState.GONE:
        send(b, W, Disconnect())
    b.outgoing()
    b.events()
    return b


def observed_state(b: Broker) -> WorkerState:
    """W's session state; the broker forgets ended sessions, so GONE reads as NEW."""
    w = b._workers.get(W)
    return WorkerState.NEW if w is None else w.state


def forgotten(state: WorkerState) -> WorkerState:
    return WorkerState.NEW if state is WorkerState.GONE else state


def apply_session_input(b: Broker, inp: SessionInput) -> None:
    if inp is SessionInput.READY:
        send(b, W, Ready(b"echo"))
    elif inp is SessionInput.REQUEST:  # the broker sends REQUEST when a client asks
        send(b, b"c2", ClientRequest(b"echo", (b"y",)))
    elif inp is SessionInput.PARTIAL:
        send(b, W, WorkerReply(b"c1", (b"p",), final=False))
    elif inp is SessionInput.FINAL:
        send(b, W, WorkerReply(b"c1", (b"f",)))
    elif inp is SessionInput.HEARTBEAT:
        send(b, W, Heartbeat())
    elif inp is SessionInput.DISCONNECT:
        send(b, W, Disconnect())
    elif inp is SessionInput.CONNECTION_LOST:
        b.connection_lost(W, 0.0)
    elif inp is SessionInput.EXPIRED:  # silence past liveness * interval
        b.tick(3.0)
    else:  # TIMEOUT: past the processing timeout, a live worker heartbeating all along
        for t in range(1, 11):
            if W in b._workers:
                send(b, W, Heartbeat(), float(t))
            b.tick(float(t))


RECEIVED = {SessionInput.READY, SessionInput.PARTIAL, SessionInput.FINAL,
            SessionInput.HEARTBEAT, SessionInput.DISCONNECT}


@pytest.mark.parametrize(
    ("state", "inp"), list(itertools.product(WorkerState, SessionInput)),
    ids=lambda v: v.name,
)
def test_every_session_pair_is_a_transition_or_a_violation(
    state: WorkerState, inp: SessionInput
) -> None:
    b = reach_session(state)
    # The broker forgets ended sessions: a GONE peer is judged as a NEW one.
    effective = WorkerState.NEW if state is WorkerState.GONE else state
    expected = SESSION_TRANSITIONS.get((effective, inp))
    apply_session_input(b, inp)
    out = [(p, decode(f, from_broker=True)[1]) for p, f in b.outgoing()]
    events = b.events()
    to_w = [cmd for p, cmd in out if p == W]
    if expected is not None:
        assert observed_state(b) is forgotten(expected)
        assert not [e for e in events if isinstance(e, ProtocolError)]
        if inp is SessionInput.REQUEST:
            assert to_w == [WorkerRequest(b"c2", (b"y",))]
        if expected is WorkerState.GONE and effective is not WorkerState.NEW:
            assert [e for e in events if isinstance(e, WorkerLost)]
    elif inp in RECEIVED:
        assert Disconnect() in to_w
        assert [e for e in events if isinstance(e, ProtocolError)]
        assert W not in b._workers
    else:  # a broker-side input the table does not allow: nothing happens to W
        assert observed_state(b) is effective
        assert not [e for e in events if isinstance(e, (ProtocolError, WorkerLost))]
        assert not [c for c in to_w if not isinstance(c, Heartbeat)]


def test_received_request_is_a_violation_in_every_state() -> None:
    for state in WorkerState:
        b = reach_session(state)
        send(b, W, WorkerRequest(b"c", (b"x",)))
        assert (W, [b"MDPW02", b"\x06"]) in b.outgoing()
        assert [e for e in b.events() if isinstance(e, ProtocolError)]


@pytest.mark.parametrize(
    ("pair", "message"),
    [
        ((WorkerState.IDLE, SessionInput.HEARTBEAT), Heartbeat()),
        ((WorkerState.NEW, SessionInput.DISCONNECT), Disconnect()),
        ((WorkerState.NEW, SessionInput.READY), Ready(b"echo")),
        ((WorkerState.IDLE, SessionInput.DISCONNECT), Disconnect()),
    ],
    ids=str,
)
def test_removing_a_table_entry_makes_the_broker_treat_it_as_violation(
    monkeypatch: pytest.MonkeyPatch, pair: tuple[WorkerState, SessionInput], message: object
) -> None:
    monkeypatch.delitem(SESSION_TRANSITIONS, pair)
    b = reach_session(pair[0])
    send(b, W, message)
    assert (W, [b"MDPW02", b"\x06"]) in b.outgoing()
    assert [e for e in b.events() if isinstance(e, ProtocolError)]
    assert W not in b._workers


def test_removing_the_idle_expiry_entry_keeps_silent_idle_workers() -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.delitem(SESSION_TRANSITIONS, (WorkerState.IDLE, SessionInput.EXPIRED))
        b = reach_session(WorkerState.IDLE)
        b.tick(100.0)
        assert W in b._workers


# ------------------------------------------------------------------ requests

C = b"c1"


def reach_request(state: RequestState) -> tuple[Broker, object]:
    """A broker with one request from C in ``state``.

    QUEUED: no worker yet. DISPATCHED: held by W. DONE: W replied.
    EXPIRED: its client's connection was lost while W held it.
    """
    b = make_broker(processing_timeout=None)
    send(b, C, ClientRequest(b"echo", (b"x",)))
    (req,) = b._clients[C].values()
    if state is not RequestState.QUEUED:
        send(b, W, Ready(b"echo"))
    if state is RequestState.DONE:
        send(b, W, WorkerReply(C, (b"r",)))
    if state is RequestState.EXPIRED:
        b.connection_lost(C, 0.0)
    b.outgoing()
    b.events()
    return b, req


def apply_request_input(b: Broker, inp: RequestInput) -> None:
    if inp is RequestInput.DISPATCH:  # a (further) worker becomes ready
        send(b, b"w2", Ready(b"echo"))
    elif inp is RequestInput.REQUEUE:  # W's connection is lost
        b.connection_lost(W, 0.0)
    elif inp is RequestInput.DELIVER:  # W sends FINAL for C
        send(b, W, WorkerReply(C, (b"r",)))
    else:  # EXPIRE: request_timeout passes, then C's connection is lost
        b.tick(100.0)
        b.connection_lost(C, 100.0)


@pytest.mark.parametrize(
    ("state", "inp"), list(itertools.product(RequestState, RequestInput)),
    ids=lambda v: v.name,
)
def test_every_request_pair_is_a_transition_or_is_refused(
    state: RequestState, inp: RequestInput
) -> None:
    b, req = reach_request(state)
    assert req.state is state  # type: ignore[attr-defined]
    apply_request_input(b, inp)
    expected = REQUEST_TRANSITIONS.get((state, inp))
    out = b.outgoing()
    events = b.events()
    to_client = [f for p, f in out if p == C]
    to_w2 = [f for p, f in out if p == b"w2"]
    ends = [e for e in events
            if isinstance(e, (RequestDelivered, RequestExpired, RequestAbandoned))]
    if expected is None:
        # no delivery, no second end event, no dispatch of a dead request
        assert to_client == []
        assert ends == []
        assert to_w2 == []
        assert req.state is state  # type: ignore[attr-defined]
        return
    assert req.state is expected  # type: ignore[attr-defined]
    if expected is RequestState.DISPATCHED:
        assert to_w2 == [[b"MDPW02", b"\x02", C, b"", b"x"]]
    elif expected is RequestState.DONE:
        assert ends == [RequestDelivered(C, b"echo", W)]
    elif expected is RequestState.QUEUED:
        assert [e for e in events if isinstance(e, RequestRequeued)]
    else:
        assert len(ends) == 1
