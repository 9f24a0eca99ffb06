"""A thread- and signal-safe wake-up for blocking loops (re-exported by ``glue``)."""

from __future__ import annotations

import contextlib
import socket

__all__ = ["Waker"]


class Waker:
    """A thread- and signal-safe way to wake a loop blocked in ``zmq.Poller``.

    ``fileno()`` goes into the poller; ``wake()`` may be called from any
    thread or a signal handler; ``clear()`` empties it. ``write_fd()`` is
    the other end, non-blocking, for ``signal.set_wakeup_fd``: then the
    C-level signal handler itself wakes the loop, even when the signal
    lands just before the poll starts.
    """

    def __init__(self) -> None:
        self._r, self._w = socket.socketpair()
        self._r.setblocking(False)
        self._w.setblocking(False)

    def fileno(self) -> int:
        """The fd to register for POLLIN."""
        return self._r.fileno()

    def write_fd(self) -> int:
        """The fd whose writes make :meth:`fileno` readable (non-blocking)."""
        return self._w.fileno()

    def wake(self) -> None:
        """Make the fd readable (never blocks, never raises on a full pipe)."""
        with contextlib.suppress(OSError):
            self._w.send(b"\0")

    def clear(self) -> None:
        """Consume pending wake-ups."""
        try:
            while self._r.recv(4096):
                pass
        except OSError:
            pass

    def close(self) -> None:
        """Release both ends."""
        self._r.close()
        self._w.close()
