"""The pump every mdp_gevent driver runs its turns in (real sockets, gevent unpatched).

A *turn* is a driver's synchronous read/feed/tick/send step; the pump calls
it when the socket may be readable, its deadline passed or someone woke it.
These tests drive a pump with hand-written turns over a loopback PAIR from
a ``zmq.green`` context, in pytest's own thread (its hub runs while the
test's greenlet waits).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import gevent
import gevent.event
import pytest
import zmq
import zmq.green
from mdp_gevent._pump import Pump, plain
from pump_turns import ConsumedEdge, MessageDeadlineWake, Undrained, raise_what_is_read, readable

Pair = tuple[zmq.Socket[bytes], zmq.Socket[bytes]]


@pytest.fixture
def pair() -> Iterator[Pair]:
    """``(a, b)``: plain views of two connected green PAIR sockets; the pump reads ``a``."""
    ctx = zmq.green.Context()
    a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    a.bind("tcp://127.0.0.1:*")
    b.connect(a.getsockopt_string(zmq.LAST_ENDPOINT))
    yield plain(a), plain(b)
    a.close(0)
    b.close(0)
    ctx.term()


def test_a_message_whose_edge_was_consumed_is_not_waited_for(pair: Pair) -> None:
    a, b = pair
    b.send(b"hello")
    with gevent.Timeout(5):
        while not readable(a):  # this consumes the fd's edge: it will not fire for it
            gevent.sleep(0.001)
    pump = Pump(a)
    turn = ConsumedEdge(a, pump)
    with gevent.Timeout(5):  # waiting on the fd would never return
        assert pump.run(turn) == "read"
    assert turn.turns == [None, b"hello"]


def test_the_turn_runs_again_when_a_message_arrives_at_its_deadline_and_on_wake(
    pair: Pair,
) -> None:
    a, b = pair
    pump = Pump(a)
    turn = MessageDeadlineWake(a, b, pump)

    def wake_later() -> None:
        while not turn.waits_for_wake:
            gevent.sleep(0.01)
        turn.wake()

    waker = gevent.spawn(wake_later)
    with gevent.Timeout(5):
        assert pump.run(turn) == 4
    waker.join()
    assert turn.seen == ["first", "message: x", "deadline passed", "woken"]


def test_a_turn_that_did_not_drain_lets_other_greenlets_in_before_the_next(
    pair: Pair,
) -> None:
    a, _ = pair
    pump = Pump(a)
    turn = Undrained(pump)

    def other() -> None:
        while True:
            turn.ticks += 1
            gevent.sleep(0)

    runner = gevent.spawn(other)
    gevent.sleep(0)
    with gevent.Timeout(5):
        pump.run(turn)
    runner.kill()
    seen = turn.seen
    assert seen[-1] - seen[0] >= 2, seen  # the other greenlet ran while the turns went on


def test_an_exception_in_the_turn_ends_run_with_it(pair: Pair) -> None:
    a, b = pair
    pump = Pump(a)
    b.send(b"bad")
    with gevent.Timeout(5), pytest.raises(ValueError, match="bad"):
        pump.run(raise_what_is_read(a))


def test_a_wake_from_another_thread_and_a_kill_end_the_wait_and_it_runs_again(
    pair: Pair,
) -> None:
    a, _ = pair
    pump = Pump(a)
    turns = 0
    first = gevent.event.Event()

    def turn(now: float) -> tuple[bool, float | None]:
        nonlocal turns
        turns += 1
        first.set()
        return True, None  # no deadline: only a wake or the fd ends the wait

    run = gevent.spawn(pump.run, turn)
    with gevent.Timeout(5):
        first.wait()
        before = turns
        threading.Thread(target=pump.wake_threadsafe).start()  # e.g. close() from a thread
        while turns == before:
            gevent.sleep(0.01)
        run.kill()  # GreenletExit thrown into the waiting run
    assert run.dead and isinstance(run.value, gevent.GreenletExit)  # killed, not failed

    def stop_at_once(now: float) -> tuple[bool, float | None]:
        pump.stop("again")
        return True, None

    with gevent.Timeout(5):
        assert gevent.spawn(pump.run, stop_at_once).get() == "again"

