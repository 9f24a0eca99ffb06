"""Helpers for the real-socket tests of mdp_zmq (loopback only, bounded time).

* :class:`BrokerThread`: an ``mdp_zmq.Broker`` in a thread that records its
  events with monotonic timestamps.
* :class:`ProcSet`: subprocesses the test started (``mdp`` CLI workers and
  brokers), their stdout lines, and teardown that kills only them.
* :class:`ThreadWorkers`: in-process ``mdp_zmq.Worker`` threads, closed at
  teardown.
"""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import mdp_zmq

from mdp_core import Event

E = TypeVar("E", bound=Event)


class BrokerThread:
    """A broker in a daemon thread; ``events`` holds ``(monotonic, event)``.

    With ``start=False`` the broker is bound but not served until
    :meth:`start` (a test may prepare its state race-free meanwhile).
    """

    def __init__(self, endpoint: str, config: Any = None, transport: Any = None,
                 *, start: bool = True, metrics: Any = None) -> None:
        self.events: list[tuple[float, Event]] = []
        self.cond = threading.Condition()
        self.broker = mdp_zmq.Broker(endpoint, config, transport=transport, on_event=self._on,
                                     metrics=metrics)
        self.endpoint = self.broker.endpoint
        self.thread: threading.Thread | None = None
        if start:
            self.start()

    def start(self) -> None:
        """Serve in a daemon thread."""
        self.thread = self.broker.start()

    def _on(self, event: Event) -> None:
        with self.cond:
            self.events.append((time.monotonic(), event))
            self.cond.notify_all()

    def of(self, kind: type[E]) -> list[tuple[float, E]]:
        """Recorded events of one type, with their times."""
        with self.cond:
            return [(t, e) for t, e in self.events if isinstance(e, kind)]

    def wait(self, pred: Callable[[], bool], timeout: float = 10.0) -> bool:
        """Wait until ``pred()`` (evaluated under the lock) holds."""
        with self.cond:
            return self.cond.wait_for(pred, timeout)

    def wait_count(self, kind: type[Event], n: int, timeout: float = 10.0) -> bool:
        """Wait for at least ``n`` events of type ``kind``."""
        return self.wait(lambda: sum(isinstance(e, kind) for _, e in self.events) >= n, timeout)

    def close(self) -> None:
        """Stop the broker and join its thread."""
        self.broker.close()
        if self.thread is not None:
            self.thread.join(10)


def free_tcp_endpoint() -> str:
    """A loopback endpoint on a port free right now (for tests that restart a
    broker on the same endpoint, where ``tcp://127.0.0.1:*`` cannot serve)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return f"tcp://127.0.0.1:{port}"


def mdp_cli(*args: str) -> list[str]:
    """argv running the ``mdp`` command with this interpreter."""
    return [sys.executable, "-m", "mdp_zmq.cli", *args]


class Proc:
    """A started subprocess with its stdout lines in a queue."""

    def __init__(self, argv: Sequence[str]) -> None:
        self.popen = subprocess.Popen(
            list(argv), stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.pid = self.popen.pid
        self.lines: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for raw in self.popen.stdout:
            self.lines.put(raw.decode(errors="replace").strip())

    def wait_line(self, prefix: str, timeout: float = 10.0) -> str:
        """Return the next stdout line starting with ``prefix``; raise on timeout."""
        end = time.monotonic() + timeout
        while (left := end - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                break
            if line.startswith(prefix):
                return line
        raise TimeoutError(f"pid {self.pid}: no line starting with {prefix!r}")

    def signal(self, sig: int) -> None:
        """Send ``sig`` to this process (only if it is still ours and alive)."""
        if self.popen.poll() is None:
            os.kill(self.pid, sig)

    def stop(self) -> None:
        """Kill and reap the process; close its pipe."""
        if self.popen.poll() is None:
            os.kill(self.pid, signal.SIGCONT)
            os.kill(self.pid, signal.SIGKILL)
        self.popen.wait(10)
        self._reader.join(5)
        assert self.popen.stdout is not None
        self.popen.stdout.close()


class ProcSet:
    """Processes started by one test; ``stop_all`` kills exactly those."""

    def __init__(self) -> None:
        self.procs: list[Proc] = []

    def start(self, argv: Sequence[str]) -> Proc:
        """Start ``argv`` and remember it."""
        proc = Proc(argv)
        self.procs.append(proc)
        return proc

    def worker(self, endpoint: str, service: str, *extra: str) -> Proc:
        """An ``mdp worker SERVICE --echo --announce`` process."""
        proc = self.start(mdp_cli("worker", service, "--echo", "--announce",
                                  "--connect", endpoint, *extra))
        proc.wait_line("ready")
        return proc

    def stop_all(self) -> None:
        """Kill and reap every process started here."""
        for proc in self.procs:
            proc.stop()


class ThreadWorkers:
    """In-process workers, each in its own thread."""

    def __init__(self) -> None:
        self.workers: list[mdp_zmq.Worker] = []
        self.threads: list[threading.Thread] = []

    def start(self, *args: Any, **kwargs: Any) -> mdp_zmq.Worker:
        """Create ``mdp_zmq.Worker(*args, **kwargs)`` and run it in a thread."""
        worker = mdp_zmq.Worker(*args, **kwargs)
        self.workers.append(worker)
        self.threads.append(worker.start())
        return worker

    def close(self) -> None:
        """Close every worker and join its thread."""
        for worker in self.workers:
            worker.close()
        for thread in self.threads:
            thread.join(10)
