"""The pump every mdp_async driver runs its turns in, on trio and asyncio (real sockets).

A *turn* is a driver's synchronous read/feed/tick/send step; the pump calls
it when the socket may be readable, its deadline passed or someone woke it.
These tests drive a pump with hand-written turns over a loopback PAIR.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import pytest
import zmq
from mdp_async._pump import Pump, close_socket, make_pump, watch_monitor
from pump_turns import ConsumedEdge, MessageDeadlineWake, Undrained, raise_what_is_read, readable

pytestmark = pytest.mark.anyio


@pytest.fixture
async def pair() -> AsyncIterator[tuple[zmq.Socket[bytes], zmq.Socket[bytes]]]:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    a.bind("tcp://127.0.0.1:*")
    b.connect(a.getsockopt_string(zmq.LAST_ENDPOINT))
    yield a, b
    a.close(0)
    b.close(0)
    ctx.term()


async def test_a_message_whose_edge_was_consumed_is_not_waited_for(
    pair: tuple[zmq.Socket[bytes], zmq.Socket[bytes]],
) -> None:
    a, b = pair
    b.send(b"hello")
    with anyio.fail_after(5):
        while not readable(a):  # this consumes the fd's edge: it will not fire for it
            await anyio.sleep(0.001)
    pump = make_pump(a)
    turn = ConsumedEdge(a, pump)
    with anyio.fail_after(5):  # waiting on the fd would never return
        assert await pump.run(turn) == "read"
    assert turn.turns == [None, b"hello"]
    pump.close()


async def test_the_turn_runs_again_when_a_message_arrives_at_its_deadline_and_on_wake(
    pair: tuple[zmq.Socket[bytes], zmq.Socket[bytes]],
) -> None:
    a, b = pair
    pump = make_pump(a)
    turn = MessageDeadlineWake(a, b, pump)

    async def wake_later() -> None:
        while not turn.waits_for_wake:
            await anyio.sleep(0.01)
        turn.wake()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(wake_later)
            assert await pump.run(turn) == 4
    assert turn.seen == ["first", "message: x", "deadline passed", "woken"]
    pump.close()


async def test_a_turn_that_did_not_drain_lets_other_tasks_in_before_the_next(
    pair: tuple[zmq.Socket[bytes], zmq.Socket[bytes]],
) -> None:
    a, _ = pair
    pump = make_pump(a)
    turn = Undrained(pump)

    async def other() -> None:
        while True:
            turn.ticks += 1
            await anyio.sleep(0)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(other)
            await anyio.sleep(0)
            await pump.run(turn)
            tg.cancel_scope.cancel()
    seen = turn.seen
    assert seen[-1] - seen[0] >= 2, seen  # the other task ran while the turns went on
    pump.close()


async def test_an_exception_in_the_turn_ends_run_with_it(
    pair: tuple[zmq.Socket[bytes], zmq.Socket[bytes]],
) -> None:
    a, b = pair
    pump = make_pump(a)
    b.send(b"bad")
    with anyio.fail_after(5), pytest.raises(ValueError, match="bad"):
        await pump.run(raise_what_is_read(a))
    pump.close()


async def test_cancelling_the_run_stops_the_turns_and_a_closed_socket_is_let_go(
    pair: tuple[zmq.Socket[bytes], zmq.Socket[bytes]],
) -> None:
    a, b = pair
    pump: Pump = make_pump(a)
    turns = 0

    def turn(now: float) -> tuple[bool, float | None]:
        nonlocal turns
        turns += 1
        while readable(a):
            a.recv(zmq.NOBLOCK)
        return True, None

    with anyio.move_on_after(0.05):
        await pump.run(turn)
    before = turns
    b.send(b"nobody reads this")  # the fd fires while no run is active
    await anyio.sleep(0.05)
    assert turns == before
    close_socket(a, pump, None)
    assert a.closed


async def test_a_monitor_watcher_that_starts_after_its_monitor_closed_just_returns(
    pair: tuple[zmq.Socket[bytes], zmq.Socket[bytes]],
) -> None:
    a, _ = pair
    mon = a.get_monitor_socket()
    seen: list[object] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(watch_monitor, mon, seen.append)
        a.disable_monitor()
        mon.close(0)  # before the watcher's task first ran (a client's quick reset)
    assert seen == []
