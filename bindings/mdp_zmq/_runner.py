"""The lifecycle the blocking Broker and Worker drivers share.

``run()`` in the caller's thread (with SIGINT/SIGTERM handling when that is
the main thread) or ``start()`` in a daemon thread; ``close()`` from any
thread, or a context manager. A subclass supplies ``_prepare`` (before the
loop), ``_loop`` (until ``_closing``) and ``_shutdown`` (idempotent, runs
once: ``_closed`` guards it).
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType, TracebackType
from typing import Any, TypeVar

from .glue import Waker

__all__ = ["Runner"]

_Handlers = dict[int, Any]
_R = TypeVar("_R", bound="Runner")


class Runner:
    """Start/stop plumbing; ``_name`` names the thread and the log lines."""

    _name = "runner"
    _log = logging.getLogger("mdp_zmq")

    def __init__(self) -> None:
        self._waker = Waker()
        self._lock = threading.Lock()
        self._closing = False
        self._running = False
        self._closed = False

    def run(self, *, handle_signals: bool = True) -> None:
        """Serve until :meth:`close` or, run from the main thread with
        ``handle_signals``, SIGINT/SIGTERM; then shut down cleanly.

        Signal handlers and the signal wakeup fd (``signal.set_wakeup_fd``,
        which this sets to its own wake-up socket while serving) are
        restored on return. Raises RuntimeError if this
        object is closed or already running.
        """
        self._begin()
        self._serve(handle_signals)

    def start(self) -> threading.Thread:
        """Run in a daemon thread (no signal handling); return the thread.

        Raises RuntimeError if this object is closed or already running.
        """
        self._begin()  # now, so that a close() right after start() is not lost
        thread = threading.Thread(
            target=self._serve, args=(False,), name=f"mdp-{self._name}", daemon=True
        )
        thread.start()
        return thread

    def close(self) -> None:
        """Stop; thread-safe and idempotent.

        If ``run()`` is active it returns after its clean shutdown;
        otherwise the sockets are closed here.
        """
        with self._lock:
            self._closing = True
            running = self._running
        if running:
            self._waker.wake()
        else:
            self._shutdown()

    def __enter__(self: _R) -> _R:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------ for subclasses

    def _prepare(self) -> None:
        """Called in the serving thread before the loop (unless closing)."""

    def _loop(self) -> None:
        raise NotImplementedError

    def _shutdown(self) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------ internals

    def _begin(self) -> None:
        with self._lock:
            if self._closed or self._running:
                raise RuntimeError(f"{self._name} is closed or already running")
            self._running = True

    def _finish(self) -> bool:
        """Mark the end of serving; True only the first time (then shut down)."""
        with self._lock:
            if self._closed:
                return False
            self._closed = True
            self._running = False
            return True

    def _serve(self, handle_signals: bool) -> None:
        restore = self._install_signals() if handle_signals else None
        try:
            if not self._closing:
                self._prepare()
            self._loop()
        finally:
            if restore is not None:
                old_fd, handlers = restore
                # Before _shutdown closes the waker: no signal may write to a
                # closed (or reused) fd.
                signal.set_wakeup_fd(old_fd)
                for sig, old in handlers.items():
                    signal.signal(sig, old)
            self._shutdown()

    def _install_signals(self) -> tuple[int, _Handlers] | None:
        if threading.current_thread() is not threading.main_thread():
            return None
        old: _Handlers = {}

        def handler(signum: int, frame: FrameType | None) -> None:
            if self._closing:
                raise KeyboardInterrupt
            self._log.info("signal %s: stopping the %s", signal.Signals(signum).name, self._name)
            # No lock here: the signal may land while this thread holds it.
            self._closing = True
            self._waker.wake()

        for sig in (signal.SIGINT, signal.SIGTERM):
            old[sig] = signal.getsignal(sig)
            signal.signal(sig, handler)
        # Python runs ``handler`` between bytecodes; a signal that lands after
        # the last one and before the C-level poll starts would wait for the
        # poll to return, i.e. forever. The C-level handler writes to the
        # wakeup fd at once, so the poll returns and ``handler`` runs.
        return signal.set_wakeup_fd(self._waker.write_fd(), warn_on_full_buffer=False), old
