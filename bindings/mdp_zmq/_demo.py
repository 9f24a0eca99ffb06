"""``mdp demo``: a busy worker is SIGKILLed mid-job and the request survives.

An in-process broker (its own thread, free port), two ``mdp worker``
processes running a slow echo, and a client. The client's job goes to one
worker; the demo kills that process with SIGKILL part-way through, and
prints when the broker noticed (its ``WorkerLost``), that it re-dispatched
the request, and when the client got the reply from the other worker.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import IO

import mdp_core
from mdp_core import Event, RequestRequeued, WorkerLost, WorkerReady

from . import _drivers

__all__ = ["run_demo"]

SERVICE = "demo.slow"


@dataclass
class _Seen:
    """What the broker thread saw, with monotonic timestamps."""

    ready: int = 0
    lost: list[tuple[float, WorkerLost]] = field(default_factory=list)
    requeued: list[RequestRequeued] = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)

    def on_event(self, event: Event) -> None:
        with self.cond:
            if isinstance(event, WorkerReady):
                self.ready += 1
            elif isinstance(event, WorkerLost):
                self.lost.append((time.monotonic(), event))
            elif isinstance(event, RequestRequeued):
                self.requeued.append(event)
            self.cond.notify_all()

    def wait(self, pred: object, timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(pred, timeout)  # type: ignore[arg-type]


def _reader(name: int, stream: IO[bytes], out: queue.Queue[tuple[int, str]]) -> None:
    for raw in stream:
        out.put((name, raw.decode(errors="replace").strip()))


def _say(who: str, text: str) -> None:
    print(f"{who:<9}{text}", flush=True)


def run_demo(job_seconds: float = 2.0, kill_after: float = 0.5, timeout: float = 20.0,
             driver: str = "zmq") -> int:
    """Run the demo with ``driver`` (broker, workers and client alike); print
    what happens; return 0 if the client got its reply. Raises
    :class:`~mdp_zmq._drivers.DriverMissing` if the driver is not installed."""
    seen = _Seen()
    hb = mdp_core.BrokerConfig().heartbeat_interval
    liveness = mdp_core.BrokerConfig().heartbeat_liveness
    module = _drivers.load(driver)
    broker = _drivers.BrokerInThread(driver, "tcp://127.0.0.1:*", seen.on_event)
    endpoint = broker.endpoint
    which = "" if driver == "zmq" else f", {driver} driver"
    _say("broker", f"listening on {endpoint} (MDP heartbeat {hb:g} s x {liveness}{which})")
    lines: queue.Queue[tuple[int, str]] = queue.Queue()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for i in (1, 2):
            proc = subprocess.Popen(
                [sys.executable, "-m", "mdp_zmq.cli", "worker", SERVICE, "--echo",
                 "--delay", str(job_seconds), "--announce", "--connect", endpoint,
                 "--driver", driver],
                stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
            )
            procs.append(proc)
            assert proc.stdout is not None
            threading.Thread(target=_reader, args=(i, proc.stdout, lines), daemon=True).start()
        if not seen.wait(lambda: seen.ready >= 2, timeout):
            _say("demo", "workers did not register in time")
            return 1
        _say("workers", f"2 ready for {SERVICE!r}: worker 1 pid {procs[0].pid}, "
             f"worker 2 pid {procs[1].pid}, each takes {job_seconds:g} s per job")

        result: dict[str, object] = {}

        def call() -> None:
            client = module.Client(endpoint, mdp_core.ClientConfig(timeout=timeout, retries=0))
            try:
                _drivers.call(driver, client, SERVICE, [b"long job"], False,
                              lambda frames: result.setdefault("reply", frames))
            except Exception as exc:  # reported below
                result["error"] = exc
            result["t"] = time.monotonic()

        t_sent = time.monotonic()
        client_thread = threading.Thread(target=call, daemon=True)
        client_thread.start()
        _say("client", f"sent a {job_seconds:g} s job to {SERVICE!r}")

        busy = _wait_started(lines, timeout)
        if busy is None:
            _say("demo", "no worker started the job")
            return 1
        victim = procs[busy - 1]
        _say(f"worker {busy}", f"(pid {victim.pid}) is busy with it")
        time.sleep(kill_after)
        t_kill = time.monotonic()
        os.kill(victim.pid, signal.SIGKILL)
        _say("kill", f"SIGKILL -> worker {busy} (pid {victim.pid}), {kill_after:g} s into the job")
        if not seen.wait(lambda: seen.lost, timeout):
            _say("demo", "the broker never noticed")
            return 1
        t_lost, lost = seen.lost[0]
        _say("broker", f"noticed after {(t_lost - t_kill) * 1000:.1f} ms ({lost.reason}); "
             f"MDP heartbeats alone would take ~{hb * liveness:g} s")
        other = _wait_started(lines, timeout)
        seen.wait(lambda: seen.requeued, 1.0)
        attempt = f" (attempt {seen.requeued[0].attempt + 1})" if seen.requeued else ""
        if other is not None:
            _say("broker", f"re-dispatched the request{attempt} to worker {other} "
                 f"(pid {procs[other - 1].pid})")
        client_thread.join(timeout)
        if "reply" not in result:
            _say("client", f"no reply: {result.get('error', 'timed out')}")
            return 1
        reply = result["reply"]
        took = float(result["t"]) - t_sent  # type: ignore[arg-type]
        _say("client", f"answered by worker {other} in {took:.2f} s: {reply!r}")
        return 0
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(3)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        broker.close()


def _wait_started(lines: queue.Queue[tuple[int, str]], timeout: float) -> int | None:
    end = time.monotonic() + timeout
    while (left := end - time.monotonic()) > 0:
        try:
            who, text = lines.get(timeout=left)
        except queue.Empty:
            return None
        if text.startswith("started"):
            return who
    return None
