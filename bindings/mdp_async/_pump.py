"""What every async pump shares: running a core on a ZeroMQ socket, waking, closing.

The pump shape (DESIGN.md): one task per socket waits for readability,
then feeds every waiting message to the core and sends what it queued
with non-blocking calls; other tasks talk to the core and wake the pump.
Here a driver writes its *turn* (read what is waiting, feed the core,
tick it, send what it queued, act on its events: all synchronous, so no
cancellation can fall between a ``recv`` and the core) and
:meth:`Pump.run` calls it whenever there may be something to do.

``zmq.FD`` is edge-triggered and any call into the socket (even
``getsockopt(EVENTS)``) may consume the edge, so the pump asks ``EVENTS``
after every turn and never waits while the socket says it is readable
(a driver whose turn keeps state about it asks its own way, ``pending``).
Only the pump waits on its socket's fd. A socket is closed with
:func:`close_socket`: the pump lets go of the fd and
``anyio.notify_closing`` is called, with no checkpoint before the close.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import math
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio
import zmq
from mdp_zmq.glue import MonitorEvent, close_monitor, drain_monitor

if TYPE_CHECKING:
    import trio

__all__ = ["Pump", "Turn", "close_monitor_socket", "close_socket", "make_pump", "watch_monitor",
           "watch_readable"]

#: A driver's turn: ``turn(now) -> (drained, deadline)``. ``drained`` is
#: False if it stopped reading with messages left (it is called again
#: soon, after other tasks had a go); ``deadline`` is when it must next be
#: called at the latest (loop time; None: only when something happens).
Turn = Callable[[float], tuple[bool, float | None]]

#: Plain ints: pyzmq's flag enums cost a Python-level call per use.
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)
_INF = math.inf
_NAN = math.nan


class Pump:
    """Runs a driver's :data:`Turn` for one socket until :meth:`stop` or cancellation.

    Make it with :func:`make_pump` inside the event loop. :meth:`wake` and
    :meth:`stop` may be called from the turn or any task of the same loop
    (not from another thread). ``clock`` is the loop's clock (what
    ``anyio.current_time`` returns), which deadlines are in. ``pending``
    says whether a message waits on the socket, leaving its fd truthful
    (default: one ``getsockopt(EVENTS)``); the pump asks it after every
    turn that drained the socket, before it waits. Call :meth:`close`
    before the socket closes.

    The turn is the hot path of every driver (a broker runs it twice per
    round trip), so the subclasses wait with the running loop's own
    primitives rather than anyio's wrappers of them; both are cancelled by
    anyio's cancellation like any other wait.
    """

    __slots__ = ("_result", "_stopped", "_woken", "clock", "fd", "pending", "sock")

    def __init__(self, sock: zmq.Socket[bytes], clock: Callable[[], float],
                 pending: Callable[[], bool] | None = None) -> None:
        self.sock = sock
        self.fd: int = sock.get(zmq.FD)  # type: ignore[assignment]
        self.clock = clock
        self.pending = pending if pending is not None else functools.partial(_readable, sock)
        self._woken = False
        self._stopped = False
        self._result: Any = None

    async def run(self, turn: Turn) -> Any:
        """Call ``turn`` now and whenever the socket may be readable, its
        deadline passed or :meth:`wake` was called; return the value given
        to :meth:`stop`. An exception ``turn`` raises ends the run with it."""
        raise NotImplementedError

    def wake(self) -> None:
        """Have the turn called again soon (another task changed the core)."""
        self._woken = True

    def stop(self, result: Any = None) -> None:
        """End :meth:`run` after the current turn, returning ``result``."""
        self._stopped = True
        self._result = result
        self.wake()

    def _begin(self) -> None:
        self._stopped = False
        self._result = None

    def close(self) -> None:
        """Let go of the fd (call before the socket closes)."""


class _TrioPump(Pump):
    """A task loop: the turn, then ``trio.lowlevel.wait_readable`` in a trio
    cancel scope whose deadline is the turn's; :meth:`wake` cancels it.

    One scope serves every wait until it is cancelled (by its deadline or
    a wake), and only then is a new one entered: entering a scope costs
    more than the rest of a wait, and in a busy broker neither happens
    often. Turns are synchronous, so a cancellation can only land in the
    wait or the checkpoint, never inside a turn.
    """

    __slots__ = ("_scope", "_trio")

    def __init__(self, sock: zmq.Socket[bytes], lib: Any,
                 pending: Callable[[], bool] | None = None) -> None:
        super().__init__(sock, lib.current_time, pending)
        self._trio = lib
        self._scope: trio.CancelScope | None = None

    async def run(self, turn: Turn) -> Any:
        """See :meth:`Pump.run`."""
        self._begin()
        lib, clock, fd, pending = self._trio, self.clock, self.fd, self.pending
        wait_readable, checkpoint = lib.lowlevel.wait_readable, lib.lowlevel.checkpoint
        while True:
            with lib.CancelScope() as scope:
                self._scope = scope
                armed = _INF
                while True:
                    drained, deadline = turn(clock())
                    if self._stopped:
                        self._scope = None
                        return self._result
                    if not drained:
                        await checkpoint()  # messages left: let the others in first
                        continue
                    if self._woken:
                        break
                    if pending():
                        continue  # never wait while the socket says it is readable
                    if deadline is None:
                        deadline = _INF
                    if deadline != armed:
                        scope.deadline = armed = deadline
                    await wait_readable(fd)
            self._scope = None
            self._woken = False

    def wake(self) -> None:
        """See :meth:`Pump.wake`."""
        self._woken = True
        if self._scope is not None:
            self._scope.cancel()


class _AsyncioPump(Pump):
    """Loop callbacks: the fd's reader, a timer and :meth:`wake` call the turn.

    On asyncio a task that waits for a future costs two loop iterations
    per wake-up; the turn is synchronous, so it runs right in the reader's
    callback instead (as a Protocol's ``data_received`` would) and the
    task in :meth:`run` only waits for the end. The reader stays
    registered between turns (``add_reader``/``remove_reader`` cost more
    than a broker's turn); the loop checks readiness level-triggered, so
    a readiness that comes while no run is active unregisters it and an
    fd nobody reads cannot keep the loop spinning. The timer is kept while
    the deadline stays the same.

    The turn runs in a copy of :meth:`run`'s context in which sniffio (if
    installed) names asyncio, as ``anyio.run`` has it: outside a task
    sniffio could not tell, and a turn may call anyio (a worker's turn
    starts its jobs' tasks) even in an app started with ``asyncio.run``.
    """

    __slots__ = ("_ctx", "_done", "_loop", "_reading", "_soon", "_timer", "_timer_at",
                 "_turn")

    def __init__(self, sock: zmq.Socket[bytes], loop: asyncio.AbstractEventLoop,
                 pending: Callable[[], bool] | None = None) -> None:
        super().__init__(sock, loop.time, pending)
        self._loop = loop
        self._turn: Turn | None = None
        self._done: asyncio.Future[Any] | None = None
        self._reading = False
        self._soon = False  # a _step is scheduled with call_soon
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = _NAN  # NaN equals nothing: the first turn arms
        self._ctx = contextvars.copy_context()

    async def run(self, turn: Turn) -> Any:
        """See :meth:`Pump.run`."""
        self._begin()
        loop = self._loop
        self._ctx = ctx = contextvars.copy_context()
        sniffio = sys.modules.get("sniffio")
        if sniffio is not None:
            ctx.run(sniffio.current_async_library_cvar.set, "asyncio")
        done = self._done = loop.create_future()
        self._turn = turn
        if not self._reading:
            loop.add_reader(self.fd, self._on_readable)
            self._reading = True
        try:
            self._step()
            return await done
        finally:
            self._turn = self._done = None

    def wake(self) -> None:
        """See :meth:`Pump.wake`."""
        if self._turn is not None and not self._soon:
            self._soon = True
            self._loop.call_soon(self._on_soon)

    def _step(self) -> None:
        turn, done = self._turn, self._done
        if turn is None or done is None or done.done():
            return
        try:
            drained, deadline = self._ctx.run(turn, self._loop.time())
        except Exception as exc:  # ends run() with it, in the waiting task
            done.set_exception(exc)
            return
        if self._stopped:
            done.set_result(self._result)
            return
        if not drained or self.pending():
            self.wake()  # never wait while the socket says it is readable
        elif deadline != self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = (None if deadline is None
                           else self._loop.call_at(deadline, self._on_timer))
            self._timer_at = deadline

    def _on_readable(self) -> None:
        if self._turn is None:
            self._loop.remove_reader(self.fd)
            self._reading = False
        else:
            self._step()

    def _on_soon(self) -> None:
        self._soon = False
        self._step()

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = _NAN
        self._step()

    def close(self) -> None:
        """Let go of the fd and the timer (call before the socket closes)."""
        if self._reading:
            self._loop.remove_reader(self.fd)
            self._reading = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def make_pump(sock: zmq.Socket[bytes], pending: Callable[[], bool] | None = None) -> Pump:
    """The pump for ``sock`` on the running loop (trio's or asyncio's);
    ``pending``: see :class:`Pump`."""
    # anyio runs on trio or asyncio; trio is imported only by trio apps.
    lib = sys.modules.get("trio")
    if lib is not None and lib.lowlevel.in_trio_run():
        return _TrioPump(sock, lib, pending)
    return _AsyncioPump(sock, asyncio.get_running_loop(), pending)


def _readable(sock: zmq.Socket[bytes]) -> bool:
    """Whether a message waits on ``sock`` (a Pump's default ``pending``)."""
    return bool(int(sock.get(_EVENTS)) & _POLLIN)


async def watch_monitor(
    mon: zmq.Socket[bytes], on_events: Callable[[list[MonitorEvent]], None]
) -> None:
    """Hand every batch of monitor events on ``mon`` to ``on_events``, forever.

    The only task waiting on ``mon``'s fd. Returns when ``mon`` is closed
    (by :func:`close_monitor_socket` from another task), also before this
    task first ran (a client that reset its socket at once).
    """
    if mon.closed:
        return
    fd: int = mon.get(zmq.FD)  # type: ignore[assignment]
    while not mon.closed:
        if int(mon.get(_EVENTS)) & _POLLIN:
            # Read to the end: anyone else who reads this monitor (the
            # broker, before it binds a new peer to an fd) reads to the end
            # too, so no message is left behind an edge already consumed.
            events = drain_monitor(mon)
            if events:
                on_events(events)
            continue
        try:
            await anyio.wait_readable(fd)
        except anyio.ClosedResourceError:
            return


async def watch_readable(sock: zmq.Socket[bytes], on_readable: Callable[[], object]) -> None:
    """Call ``on_readable()`` whenever ``sock`` has messages, forever.

    ``on_readable`` reads what is waiting (a batch at most: this asks
    ``EVENTS`` again before it waits). The only task waiting on ``sock``'s
    fd; returns when ``sock`` is closed (by :func:`close_socket` from
    another task).
    """
    fd: int = sock.get(zmq.FD)  # type: ignore[assignment]
    while not sock.closed:
        if int(sock.get(_EVENTS)) & _POLLIN:
            on_readable()
            await anyio.lowlevel.checkpoint()  # a flood of handshakes must not starve the pump
            continue
        try:
            await anyio.wait_readable(fd)
        except anyio.ClosedResourceError:
            return


def close_socket(sock: zmq.Socket[bytes], pump: Pump | None, linger: float | None) -> None:
    """Stop ``pump``, wake any task waiting on ``sock``'s fd, then close it
    (``linger`` s, None: 0)."""
    if sock.closed:
        return
    if pump is not None:
        pump.close()
    anyio.notify_closing(sock.get(zmq.FD))  # type: ignore[arg-type]
    sock.close(0 if linger is None else max(0, round(linger * 1000)))


def close_monitor_socket(sock: zmq.Socket[bytes], mon: zmq.Socket[bytes]) -> None:
    """Stop monitoring ``sock`` and close ``mon``, waking its watcher first."""
    if not mon.closed:
        anyio.notify_closing(mon.get(zmq.FD))  # type: ignore[arg-type]
    close_monitor(sock, mon)
