"""The hand-written turns that ``tests/test_async_pump.py`` and
``tests/test_gevent_pump.py`` drive their pumps with.

The pumps differ in how they wait (an event loop, the gevent hub); what a
turn sees and does is the same, so each is written once here and each
test module runs it in its own pump, with its own waits and assertions.
The socket ``a`` is the one the pump reads; ``b`` its loopback peer.
"""

from __future__ import annotations

from typing import Any, Protocol

import zmq


class Stoppable(Protocol):
    """What a turn needs of the pump it runs in."""

    def stop(self, result: Any = None) -> None:
        """End the run after this turn, returning ``result``."""

    def wake(self) -> None:
        """Have the turn called again soon."""


def readable(sock: zmq.Socket[bytes]) -> bool:
    """Whether ``sock`` holds a message (a call that may consume its fd's edge)."""
    return bool(sock.get(zmq.EVENTS) & zmq.POLLIN)  # type: ignore[operator]


class ConsumedEdge:
    """A turn for a message whose fd edge was consumed before the run: the first
    call reads nothing, the second reads the message and stops with ``"read"``.
    :attr:`turns` is what each call read (None: nothing)."""

    def __init__(self, a: zmq.Socket[bytes], pump: Stoppable) -> None:
        self.a, self.pump = a, pump
        self.turns: list[bytes | None] = []

    def __call__(self, now: float) -> tuple[bool, float | None]:
        if not self.turns:
            self.turns.append(None)  # a turn whose last call into the socket was not a read
            return True, None
        self.turns.append(self.a.recv(zmq.NOBLOCK))
        self.pump.stop("read")
        return True, None


class MessageDeadlineWake:
    """A turn that sends from ``b``, then waits for that message, then for a
    deadline 50 ms later, then for :meth:`wake`; it stops with 4. :attr:`seen`
    names each cause in order.

    The fd also fires for libzmq's own commands, so a turn may come for
    nothing: each step waits for its cause and ignores the others.
    """

    def __init__(self, a: zmq.Socket[bytes], b: zmq.Socket[bytes], pump: Stoppable) -> None:
        self.a, self.b, self.pump = a, b, pump
        self.seen: list[str] = []
        self.woken = False
        self.deadline = 0.0

    def __call__(self, now: float) -> tuple[bool, float | None]:
        seen = self.seen
        if not seen:
            seen.append("first")
            self.b.send(b"x")
        elif len(seen) == 1 and readable(self.a):
            seen.append("message: " + self.a.recv(zmq.NOBLOCK).decode())
            self.deadline = now + 0.05
        elif len(seen) == 2 and now >= self.deadline:
            seen.append("deadline passed")
        elif len(seen) == 3 and self.woken:
            seen.append("woken")
            self.pump.stop(len(seen))
        return True, self.deadline if len(seen) == 2 else None

    @property
    def waits_for_wake(self) -> bool:
        """The deadline has passed: the next cause is a wake."""
        return len(self.seen) >= 3

    def wake(self) -> None:
        """Wake the pump, as another task (greenlet) would."""
        self.woken = True
        self.pump.wake()


class Undrained:
    """A turn that never drains: it records :attr:`ticks` (which another task
    or greenlet counts up) at each call and stops the pump at the fourth."""

    def __init__(self, pump: Stoppable) -> None:
        self.pump = pump
        self.ticks = 0
        self.seen: list[int] = []

    def __call__(self, now: float) -> tuple[bool, float | None]:
        self.seen.append(self.ticks)
        if len(self.seen) == 4:
            self.pump.stop()
        return False, None


def raise_what_is_read(a: zmq.Socket[bytes]) -> Any:
    """A turn that raises ValueError with the message it reads from ``a``."""

    def turn(now: float) -> tuple[bool, float | None]:
        if readable(a):
            raise ValueError(a.recv(zmq.NOBLOCK))
        return True, None

    return turn
