"""Every (state, input) pair of the worker-session and request tables.

The expected tables are written out here from the theory of operation in
``mdp_core/_state.py`` (and RFC 7/18 for the worker session), not copied
from the code: a pair missing below must be a violation (None).
"""

from __future__ import annotations

import itertools

import pytest

from mdp_core._state import (
    REQUEST_TRANSITIONS,
    SESSION_TRANSITIONS,
    RequestInput,
    RequestState,
    SessionInput,
    WorkerState,
    next_request_state,
    next_session_state,
)

W = WorkerState
S = SessionInput
R = RequestState
I = RequestInput  # noqa: E741

EXPECTED_SESSION: dict[tuple[WorkerState, SessionInput], WorkerState] = {
    # RFC: the worker opens with READY; it MAY send DISCONNECT before READY.
    (W.NEW, S.READY): W.IDLE,
    (W.NEW, S.DISCONNECT): W.GONE,
    (W.NEW, S.CONNECTION_LOST): W.GONE,
    # idle: takes a request, heartbeats, may leave or be expired by silence
    (W.IDLE, S.REQUEST): W.BUSY,
    (W.IDLE, S.HEARTBEAT): W.IDLE,
    (W.IDLE, S.DISCONNECT): W.GONE,
    (W.IDLE, S.CONNECTION_LOST): W.GONE,
    (W.IDLE, S.EXPIRED): W.GONE,
    # busy: PARTIALs and heartbeats keep it busy, FINAL frees it; it ends by
    # transport loss or the processing deadline, never by heartbeat silence
    (W.BUSY, S.PARTIAL): W.BUSY,
    (W.BUSY, S.FINAL): W.IDLE,
    (W.BUSY, S.HEARTBEAT): W.BUSY,
    (W.BUSY, S.DISCONNECT): W.GONE,
    (W.BUSY, S.CONNECTION_LOST): W.GONE,
    (W.BUSY, S.TIMEOUT): W.GONE,
}

EXPECTED_REQUEST: dict[tuple[RequestState, RequestInput], RequestState] = {
    (R.QUEUED, I.DISPATCH): R.DISPATCHED,
    (R.QUEUED, I.EXPIRE): R.EXPIRED,
    (R.DISPATCHED, I.REQUEUE): R.QUEUED,
    (R.DISPATCHED, I.DELIVER): R.DONE,
    (R.DISPATCHED, I.EXPIRE): R.EXPIRED,
}

_SESSION_PAIRS = list(itertools.product(WorkerState, SessionInput))
_REQUEST_PAIRS = list(itertools.product(RequestState, RequestInput))


def _id(pair: tuple[object, object]) -> str:
    state, event = pair
    return f"{state.name}-{event.name}"  # type: ignore[attr-defined]


@pytest.mark.parametrize("pair", _SESSION_PAIRS, ids=[_id(p) for p in _SESSION_PAIRS])
def test_every_worker_session_pair_is_the_documented_transition_or_a_violation(
    pair: tuple[WorkerState, SessionInput],
) -> None:
    state, event = pair
    expected = EXPECTED_SESSION.get(pair)
    assert next_session_state(state, event) is expected
    assert SESSION_TRANSITIONS.get(pair) is expected


@pytest.mark.parametrize("pair", _REQUEST_PAIRS, ids=[_id(p) for p in _REQUEST_PAIRS])
def test_every_request_pair_is_the_documented_transition_or_a_violation(
    pair: tuple[RequestState, RequestInput],
) -> None:
    state, event = pair
    expected = EXPECTED_REQUEST.get(pair)
    assert next_request_state(state, event) is expected
    assert REQUEST_TRANSITIONS.get(pair) is expected


def test_tables_hold_exactly_the_documented_transitions() -> None:
    assert SESSION_TRANSITIONS == EXPECTED_SESSION
    assert REQUEST_TRANSITIONS == EXPECTED_REQUEST


def test_the_enums_are_the_documented_ones() -> None:
    # A new state or input must come with rows in the tables above.
    assert [s.name for s in WorkerState] == ["NEW", "IDLE", "BUSY", "GONE"]
    assert [i.name for i in SessionInput] == [
        "READY", "REQUEST", "PARTIAL", "FINAL", "HEARTBEAT", "DISCONNECT",
        "CONNECTION_LOST", "EXPIRED", "TIMEOUT"]
    assert [s.name for s in RequestState] == ["QUEUED", "DISPATCHED", "DONE", "EXPIRED"]
    assert [i.name for i in RequestInput] == ["DISPATCH", "REQUEUE", "DELIVER", "EXPIRE"]


@pytest.mark.parametrize("event", list(SessionInput), ids=lambda e: e.name)
def test_gone_is_absorbing_every_input_after_it_is_a_violation(event: SessionInput) -> None:
    assert next_session_state(W.GONE, event) is None


def test_gone_is_reachable_from_every_live_state_and_never_left() -> None:
    for state in (W.NEW, W.IDLE, W.BUSY):
        assert W.GONE in {next_session_state(state, e) for e in SessionInput}
    assert all(next_state is not None and key[0] is not W.GONE
               for key, next_state in SESSION_TRANSITIONS.items())


def test_no_transition_leads_back_to_new() -> None:
    # A session starts NEW once; a worker that reconnects is a new session.
    assert W.NEW not in SESSION_TRANSITIONS.values()


def test_heartbeat_silence_only_expires_an_idle_worker() -> None:
    assert next_session_state(W.IDLE, S.EXPIRED) is W.GONE
    assert next_session_state(W.BUSY, S.EXPIRED) is None
    assert next_session_state(W.NEW, S.EXPIRED) is None


def test_processing_timeout_only_ends_a_busy_worker() -> None:
    assert next_session_state(W.BUSY, S.TIMEOUT) is W.GONE
    assert next_session_state(W.IDLE, S.TIMEOUT) is None


def test_second_ready_is_a_violation() -> None:
    # RFC 7/18: "The worker MUST NOT send a further READY."
    assert next_session_state(W.IDLE, S.READY) is None
    assert next_session_state(W.BUSY, S.READY) is None


def test_heartbeat_before_ready_is_a_violation() -> None:
    # RFC 7/18: "HEARTBEAT commands are valid at any time, after a READY command."
    assert next_session_state(W.NEW, S.HEARTBEAT) is None


def test_a_reply_without_a_request_is_a_violation() -> None:
    for event in (S.PARTIAL, S.FINAL):
        assert next_session_state(W.IDLE, event) is None
        assert next_session_state(W.NEW, event) is None


def test_a_busy_worker_cannot_take_a_second_request() -> None:
    # RFC: workers handle at most one request at a time.
    assert next_session_state(W.BUSY, S.REQUEST) is None


@pytest.mark.parametrize("state", [R.DONE, R.EXPIRED], ids=lambda s: s.name)
@pytest.mark.parametrize("event", list(RequestInput), ids=lambda e: e.name)
def test_done_and_expired_requests_are_terminal(state: RequestState, event: RequestInput) -> None:
    assert next_request_state(state, event) is None


def test_a_queued_request_cannot_be_delivered_or_requeued() -> None:
    assert next_request_state(R.QUEUED, I.DELIVER) is None
    assert next_request_state(R.QUEUED, I.REQUEUE) is None


def test_a_dispatched_request_cannot_be_dispatched_again() -> None:
    assert next_request_state(R.DISPATCHED, I.DISPATCH) is None
