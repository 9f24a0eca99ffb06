"""A gevent hub in a thread of its own, for tests whose body is plain blocking code.

The tests (and the behaviour suite's other drivers) run in pytest's
threads; gevent objects belong to the hub of the thread that made them.
:class:`GeventHub` runs a hub in a daemon thread and :meth:`GeventHub.call`
runs a function there in a greenlet of its own, returning its result to
the calling thread (like anyio's blocking portal). Nothing is
monkey-patched: this is gevent without ``patch_all()``.
"""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import gevent
import gevent.event

T = TypeVar("T")


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
