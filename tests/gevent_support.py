"""Helpers for the tests of mdp_gevent (gevent unpatched: no ``patch_all()`` here).

* :class:`GeventHub`: a hub in a thread of its own, for tests whose body
  is plain blocking code (the behaviour suite). gevent objects belong to
  the hub of the thread that made them; :meth:`GeventHub.call` runs a
  function there in a greenlet of its own and returns its result to the
  calling thread (like anyio's blocking portal).
* :class:`Recorder`: a broker's ``on_event`` for tests that run as gevent
  programs in pytest's own thread, with a bounded wait for an event.
* :func:`blocking`: run a blocking call (a raw RFC peer) in a real thread
  while the hub keeps serving.
"""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import gevent
import gevent.event

from mdp_core import Event

T = TypeVar("T")


class Recorder:
    """A broker's ``on_event``: keeps the events, lets a greenlet wait for some."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._changed = gevent.event.Event()

    def __call__(self, event: Event) -> None:
        self.events.append(event)
        self._changed.set()

    def of(self, kind: type[Any]) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]

    def wait_count(self, kind: type[Event], n: int, timeout: float = 10.0) -> None:
        with gevent.Timeout(timeout, AssertionError(f"fewer than {n} {kind.__name__}")):
            while len(self.of(kind)) < n:
                self._changed.clear()
                self._changed.wait()


def blocking(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` in a thread of the hub's pool; this greenlet waits,
    the hub serves meanwhile."""
    result: T = gevent.get_hub().threadpool.apply(fn, args, kwargs)
    return result


class GeventHub:
    """A hub serving in a daemon thread until :meth:`close`."""

    def __init__(self) -> None:
        started = threading.Event()
        self._thread = threading.Thread(target=self._main, args=(started,),
                                        name="gevent-hub", daemon=True)
        self._thread.start()
        assert started.wait(10), "the hub thread did not start"

    def _main(self, started: threading.Event) -> None:
        self.loop = gevent.get_hub().loop
        self._stop = gevent.event.Event()
        # A referenced watcher keeps the hub from concluding that nothing can
        # ever wake it (LoopExit) while it waits for calls from other threads.
        keepalive = self.loop.async_()
        keepalive.start(lambda: None)
        started.set()
        self._stop.wait()
        keepalive.stop()

    def call(self, fn: Callable[..., T], *args: Any, timeout: float = 60.0, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` in a new greenlet of the hub; its result or exception."""
        done: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                done.set_result(fn(*args, **kwargs))
            except BaseException as exc:  # handed to the caller, who re-raises it
                done.set_exception(exc)

        self.loop.run_callback_threadsafe(gevent.spawn, run)
        return done.result(timeout)

    def close(self) -> None:
        """Stop the hub's thread (what runs there should be closed first)."""
        self.loop.run_callback_threadsafe(self._stop.set)
        self._thread.join(10)
