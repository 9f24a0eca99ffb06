"""What every gevent driver shares: a pump greenlet per socket, monitor watchers, sockets.

The pump shape (DESIGN.md): one greenlet per socket waits for readability,
then feeds every waiting message to the core and sends what it queued
with non-blocking calls; other greenlets (jobs, callers) talk to the core
and wake the pump. A driver writes its *turn* (read, feed the core, tick
it, send, act on its events: synchronous, so no other greenlet runs
between a ``recv`` and the core) and :meth:`Pump.run` calls it whenever
there may be something to do.

``zmq.FD`` is edge-triggered and any call into the socket (even
``getsockopt(EVENTS)``, which a green socket makes on its own whenever
the fd fires) may consume the edge, so the pump asks ``EVENTS`` after
every turn and never waits while the socket says it is readable: it never
relies on an edge alone (pyzmq's green sockets fall back to an 11.6 s
timeout when they miss one). Only the pump waits on its socket's fd,
which is what green sockets require too: two greenlets blocked on one
raise an AssertionError. The pump waits with the hub's own watchers (an
io watcher on the fd, kept started while the pump runs, and a timer for
the turn's deadline) rather than ``zmq.green.Poller``, which builds a
``select`` per call.

Sockets come from a ``zmq.green`` context (:func:`green_context`), so
that nothing in the process can block the hub on them; the driver's own
calls, all non-blocking, go through a plain view of the same libzmq
socket (:func:`plain`): the green wrappers cost about 4 us per frame
(a ``getsockopt(EVENTS)`` and two gevent events on every send and recv),
more than the broker's whole turn on a small message.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from typing import Any

import gevent
import zmq
import zmq.green
from gevent.hub import get_hub
from greenlet import getcurrent, greenlet
from mdp_zmq.glue import MonitorEvent, drain_monitor

__all__ = ["MonitorWatch", "Pump", "Turn", "Watch", "green_context", "plain"]

#: A driver's turn: ``turn(now) -> (drained, deadline)``. ``drained`` is
#: False if it stopped reading with messages left (it is called again
#: soon, after the other greenlets had a go); ``deadline`` is when it must
#: next be called at the latest (``clock`` time; None: only when something
#: happens).
Turn = Callable[[float], tuple[bool, float | None]]

_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)
_READ = 1  # libev's EV_READ
_NAN = math.nan  # equals nothing: the first wait arms the timer


def green_context(
    context: zmq.Context[zmq.Socket[bytes]] | None,
) -> zmq.Context[zmq.Socket[bytes]]:
    """``context``, or ``zmq.green.Context.instance()`` if None.

    Raises TypeError for a context that is not a ``zmq.green.Context``:
    its sockets' blocking calls would block the whole hub.
    """
    if context is None:
        green: zmq.Context[zmq.Socket[bytes]] = zmq.green.Context.instance()
        return green
    if not isinstance(context, zmq.green.Context):
        raise TypeError(f"context must be a zmq.green.Context, not {type(context).__name__} "
                        "(a plain context's sockets block the hub)")
    return context


def plain(sock: zmq.Socket[bytes]) -> zmq.Socket[bytes]:
    """A plain (not green) view of ``sock``'s libzmq socket, for non-blocking calls.

    It does not own the socket: close ``sock``, and stop using the view first.
    """
    view: zmq.Socket[bytes] = zmq.Socket.shadow(sock.underlying)
    return view


class Pump:
    """Runs a driver's :data:`Turn` for one socket in the greenlet that calls :meth:`run`.

    ``sock`` is the socket the pump waits on (a :func:`plain` view).
    :meth:`wake` and :meth:`stop` may be called from any greenlet of the
    hub's thread, the turn included; :meth:`wake_threadsafe` from another
    thread or a signal handler. ``clock`` is what deadlines are in.
    ``pending`` says whether a message waits on the socket, leaving its fd
    truthful (default: one ``getsockopt(EVENTS)``); the pump asks it after
    every turn that drained the socket, before it waits.
    One :meth:`run` at a time; a pump may run again after it returned.
    """

    __slots__ = ("_armed", "_glet", "_io", "_loop", "_result", "_soon", "_stopped",
                 "_timer", "_waiting", "_woken", "clock", "pending", "sock")

    def __init__(self, sock: zmq.Socket[bytes], clock: Callable[[], float] = time.monotonic,
                 pending: Callable[[], bool] | None = None) -> None:
        self.sock = sock
        self.clock = clock
        self.pending = pending if pending is not None else functools.partial(_readable, sock)
        self._loop = get_hub().loop
        self._io = self._loop.io(sock.get(zmq.FD), _READ)  # type: ignore[arg-type]
        self._timer: Any = None
        self._armed: float | None = _NAN
        self._glet: greenlet | None = None  # the greenlet in run()
        self._waiting = False  # that greenlet is switched out to the hub, waiting
        self._woken = False
        self._soon = False  # a resume is scheduled with run_callback
        self._stopped = False
        self._result: Any = None

    def run(self, turn: Turn) -> Any:
        """Call ``turn`` now and whenever the socket may be readable, its
        deadline passed or :meth:`wake` was called; return the value given
        to :meth:`stop`. An exception ``turn`` raises ends the run with it,
        and so does one thrown into this greenlet (``Greenlet.kill``)."""
        hub, clock, pending = get_hub(), self.clock, self.pending
        self._glet = getcurrent()
        self._io.start(self._resume)  # level-triggered; ignored while not waiting
        try:
            while not self._stopped:
                self._woken = False
                drained, deadline = turn(clock())
                if self._stopped:
                    break
                if not drained:
                    gevent.sleep(0)  # messages left: let the others in first
                    continue
                if self._woken or pending():
                    continue  # never wait while the socket says it is readable
                if deadline != self._armed:
                    self._arm(deadline)
                self._waiting = True
                try:
                    hub.switch()
                finally:
                    self._waiting = False
            return self._result
        finally:
            self._io.stop()
            self._disarm()
            self._glet = None
            self._stopped = False

    def wake(self) -> None:
        """Have the turn called again soon (another greenlet changed the core)."""
        self._woken = True
        if self._waiting and not self._soon:
            self._soon = True
            self._loop.run_callback(self._on_soon)

    def wake_threadsafe(self) -> None:
        """:meth:`wake`, from any thread or a signal handler."""
        self._loop.run_callback_threadsafe(self.wake)

    def stop(self, result: Any = None) -> None:
        """End :meth:`run` after the current turn (at once if it waits), returning
        ``result``; the fd is let go now, so the socket may be closed right after."""
        self._stopped = True
        self._result = result
        self._io.stop()
        self._disarm()
        self.wake()

    # ------------------------------------------------------------ internals

    def _resume(self) -> None:
        """In the hub: switch to the waiting greenlet (spurious calls do nothing)."""
        if self._waiting:
            self._waiting = False
            glet = self._glet
            assert glet is not None
            glet.switch()

    def _on_soon(self) -> None:
        self._soon = False
        self._resume()

    def _on_timer(self) -> None:
        self._timer = None
        self._armed = _NAN
        self._resume()

    def _arm(self, deadline: float | None) -> None:
        self._disarm()
        self._armed = deadline
        if deadline is not None:
            timer = self._loop.timer(max(0.0, deadline - self.clock()))
            timer.start(self._on_timer, update=True)
            self._timer = timer

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        self._armed = _NAN


def _readable(sock: zmq.Socket[bytes]) -> bool:
    """Whether a message waits on ``sock`` (a Pump's default ``pending``)."""
    return bool(int(sock.get(_EVENTS)) & _POLLIN)


class Watch:
    """Calls ``on_ready()`` whenever ``sock`` may be readable, in a greenlet of
    its own, until :meth:`stop`.

    ``sock`` is a :func:`plain` view; this is the only greenlet waiting on
    its fd. ``on_ready`` reads what is waiting without blocking (a batch at
    most: while ``sock`` stays readable the others get a turn between two
    calls, so a flood of CURVE handshakes on a ZAP socket cannot starve a
    broker's pump).
    """

    def __init__(self, sock: zmq.Socket[bytes], on_ready: Callable[[], object]) -> None:
        self.sock = sock
        self.on_ready = on_ready
        self._pump = Pump(sock)
        self.greenlet = gevent.spawn(self._pump.run, self._turn)

    def _turn(self, now: float) -> tuple[bool, float | None]:
        self.on_ready()
        return not int(self.sock.get(_EVENTS)) & _POLLIN, None

    def stop(self) -> None:
        """Stop watching now (the socket may be closed right after)."""
        self._pump.stop()
        self.greenlet.kill(block=False)  # one that has not started never will


class MonitorWatch(Watch):
    """Hands every batch of events on a monitor socket to ``on_events``, in a
    greenlet of its own, until :meth:`stop`.

    ``mon`` is the monitor (a :func:`plain` view). Others may read it too
    (a broker, before it binds a new peer to an fd): each reader reads to
    the end.
    """

    def __init__(self, mon: zmq.Socket[bytes],
                 on_events: Callable[[list[MonitorEvent]], None]) -> None:
        self.mon = mon
        self.on_events = on_events
        super().__init__(mon, self._drain)

    def _drain(self) -> None:
        events = drain_monitor(self.mon)
        if events:
            self.on_events(events)
