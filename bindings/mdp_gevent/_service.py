"""The lifecycle the gevent Broker and Worker share: serve, start, close, ``with``.

``serve()`` runs in the calling greenlet until :meth:`Service.close`;
``start()`` spawns a greenlet that serves and returns it; ``with obj:``
serves in the background until the block ends. ``close()`` may come from
any greenlet, another thread or a signal handler: it only sets a flag and
wakes the serving greenlet (``run_callback_threadsafe``), which shuts
down cleanly in its own hub. A subclass supplies ``_serve`` (until
``_closing``), ``_wake`` (run in the hub when close() is called) and
``_shutdown`` (idempotent; closes the sockets).
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, TypeVar

import gevent
from gevent.hub import get_hub

__all__ = ["Service"]

_S = TypeVar("_S", bound="Service")


class Service:
    """serve/start/close plumbing; ``_name`` names the object in messages."""

    _name = "service"

    def __init__(self) -> None:
        self._closing = False
        self._state = "new"  # "serving", "closed"
        self._loop: Any = None  # the serving hub's loop
        self._greenlet: gevent.Greenlet[..., None] | None = None

    def serve(self) -> None:
        """Serve in the calling greenlet until :meth:`close`, then shut down cleanly.

        An exception thrown into the greenlet (``Greenlet.kill``, a Ctrl-C's
        KeyboardInterrupt) shuts down the same way and comes out. Raises
        RuntimeError if this object is closed or already serving.
        """
        self._begin()
        self._run()

    def start(self) -> gevent.Greenlet[..., None]:
        """Serve in a new greenlet of this thread's hub; return it.

        Raises RuntimeError if this object is closed or already serving.
        """
        self._begin()  # now, so that a close() right after start() is not lost
        self._greenlet = gevent.spawn(self._run)
        return self._greenlet

    def close(self) -> None:
        """Stop serving; idempotent, from any greenlet or thread, or a signal handler.

        ``serve()`` returns (the greenlet of ``start()`` ends) after the clean
        shutdown; an object that never served closes its sockets here.
        """
        self._closing = True
        if self._state == "serving":
            self._loop.run_callback_threadsafe(self._wake)
        elif self._state == "new":
            self._state = "closed"
            self._shutdown()

    def __enter__(self: _S) -> _S:
        """Serve in the background (:meth:`start`) until the block ends."""
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close and wait for the clean shutdown; an error it raised comes out."""
        self.close()
        if self._greenlet is not None:
            self._greenlet.get()

    # ------------------------------------------------------------ for subclasses

    def _serve(self) -> None:
        raise NotImplementedError

    def _wake(self) -> None:
        raise NotImplementedError

    def _shutdown(self) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------ internals

    def _begin(self) -> None:
        if self._state != "new":
            raise RuntimeError(f"this {self._name} is closed or already serving")
        self._state = "serving"
        self._loop = get_hub().loop

    def _run(self) -> None:
        try:
            if not self._closing:
                self._serve()
        finally:
            self._state = "closed"
            self._shutdown()
