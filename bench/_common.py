"""Helpers shared by the bench scripts: statistics, machine facts, processes, charts.

Nothing here is measured; it only keeps the scripts short. Every process a
script starts goes through :class:`Procs`, which kills exactly those
processes (by pid) when the script ends.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import selectors
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PY = sys.executable


# ------------------------------------------------------------------ statistics


def pct(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of ``values``, nearest rank; nan if empty."""
    if not values:
        return math.nan
    s = sorted(values)
    k = max(0, min(len(s) - 1, math.ceil(q / 100 * len(s)) - 1))
    return s[k]


def med(values: Sequence[float]) -> float:
    """The median of ``values`` (nan if empty)."""
    return statistics.median(values) if values else math.nan


def fmt_num(x: float) -> str:
    """``12,345`` for big numbers, 3 significant digits below 100."""
    if x != x:  # nan
        return "n/a"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.3g}"


def md_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        lines.append("| " + " | ".join(str(c) for c in row) + " |")
    return "\n".join(lines)


# ------------------------------------------------------------------ machine


def machine() -> dict[str, Any]:
    """Facts about this machine and the software measured."""
    import zmq

    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        from importlib.metadata import version

        majortomo = version("majortomo")
    except Exception:
        majortomo = "not installed"
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "pyzmq": zmq.__version__,
        "libzmq": zmq.zmq_version(),
        "majortomo": majortomo,
        "platform": platform.platform(),
        "loadavg_at_start": os.getloadavg(),
        "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
    }


def save_json(path: str | None, data: dict[str, Any]) -> None:
    """Write ``data`` (with the machine facts) to ``path`` if one is given."""
    if not path:
        return
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps({"machine": machine(), **data}, indent=2, default=str) + "\n")
    print(f"results written to {p}")


# ------------------------------------------------------------------ processes


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for CLIs that need one)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def env(first: Sequence[str] = ()) -> dict[str, str]:
    """The environment for children: unbuffered, with the repo importable
    (after the directories ``first``, e.g. another checkout to compare with)."""
    e = dict(os.environ)
    e["PYTHONUNBUFFERED"] = "1"
    extra = [*first, str(ROOT), str(ROOT / "bindings"), str(BENCH)]
    if e.get("PYTHONPATH"):
        extra.append(e["PYTHONPATH"])
    e["PYTHONPATH"] = os.pathsep.join(extra)
    return e


class Procs:
    """The subprocesses a script started; ``close()`` kills exactly those."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, argv: Sequence[str], *, stdout: bool = False, stdin: bool = False,
              pythonpath: Sequence[str] = ()) -> subprocess.Popen[bytes]:
        """Start ``argv`` (stdout and stdin piped if asked, stderr discarded;
        ``pythonpath`` imported before this checkout)."""
        p = subprocess.Popen(
            list(argv),
            stdout=subprocess.PIPE if stdout else subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            env=env(pythonpath),
            cwd=str(ROOT),
        )
        self.procs.append(p)
        return p

    def kill(self, p: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to ``p`` (one of ours) and reap it."""
        if p.poll() is None:
            os.kill(p.pid, sig)
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            os.kill(p.pid, signal.SIGKILL)
            p.wait(5)
        for stream in (p.stdin, p.stdout):
            if stream is not None:
                _buffers.pop(stream.fileno(), None)
                stream.close()
        if p in self.procs:
            self.procs.remove(p)

    def close(self) -> None:
        """Terminate every process still running (SIGTERM, then SIGKILL)."""
        for p in list(self.procs):
            if p.stdin is not None:
                with contextlib.suppress(OSError):
                    p.stdin.close()
            if p.poll() is None:
                os.kill(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + 3
        for p in list(self.procs):
            try:
                p.wait(max(0.05, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.kill(p.pid, signal.SIGKILL)
                p.wait(5)
            if p.stdout is not None:
                _buffers.pop(p.stdout.fileno(), None)
                p.stdout.close()
        self.procs.clear()

    def __enter__(self) -> Procs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_buffers: dict[int, bytearray] = {}


def read_line(stream: IO[bytes], timeout: float) -> str | None:
    """One line from a child's stdout, or None after ``timeout`` s (or at EOF).

    Reads the raw fd (``os.read``) with a buffer of its own, so a second
    line that arrived with the first is not hidden from ``select``.
    """
    fd = stream.fileno()
    buf = _buffers.setdefault(fd, bytearray())
    deadline = time.monotonic() + timeout
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        sel = selectors.DefaultSelector()
        sel.register(fd, selectors.EVENT_READ)
        try:
            ready = sel.select(max(0.0, left))
        finally:
            sel.close()
        if not ready:
            return None
        chunk = os.read(fd, 65536)
        if not chunk:
            return None
        buf += chunk
    i = buf.index(b"\n")
    line = bytes(buf[:i])
    del buf[: i + 1]
    return line.decode()


def wait_line(stream: IO[bytes], prefix: str, timeout: float) -> str:
    """Read lines until one starts with ``prefix``; raise RuntimeError on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        line = read_line(stream, max(0.0, left)) if left > 0 else None
        if line is None:
            raise RuntimeError(f"no {prefix!r} line from child within {timeout:g}s")
        if line.startswith(prefix):
            return line


# ------------------------------------------------------------------ charts


def pyplot() -> Any:
    """matplotlib.pyplot with the Agg backend, or None if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install -e .[bench]): no chart written")
        return None
    return plt
