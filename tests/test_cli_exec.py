"""``mdp worker --exec`` logging and ``mdp broker``'s endpoint from the environment.

The workers are ``mdp`` processes whose stderr (their log) goes to a file
the test reads; the broker is a thread that records its events.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import zmq
from mdp_zmq import Client
from zmq_support import BrokerThread, ProcSet, free_tcp_endpoint, mdp_cli

import mdp_core
from mdp_core import BrokerConfig, ClientConfig, RequestExpired, WorkerReady

LogWorker = Callable[..., tuple[subprocess.Popen[bytes], Path]]


@pytest.fixture(scope="module")
def broker() -> Iterator[BrokerThread]:
    """A broker that gives each request two attempts."""
    b = BrokerThread("tcp://127.0.0.1:*", BrokerConfig(max_attempts=2))
    yield b
    b.close()


@pytest.fixture
def log_worker(broker: BrokerThread, tmp_path: Path) -> Iterator[LogWorker]:
    """Start ``mdp worker SERVICE --exec CMD`` with its stderr in a file;
    return (process, log path) once the broker has its READY."""
    started: list[subprocess.Popen[bytes]] = []

    def start(service: str, command: str) -> tuple[subprocess.Popen[bytes], Path]:
        log = tmp_path / f"{service}.log"
        ready = len(broker.of(WorkerReady))
        with log.open("wb") as err:
            proc = subprocess.Popen(
                mdp_cli("worker", service, "--exec", command, "--connect", broker.endpoint),
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        started.append(proc)
        assert broker.wait_count(WorkerReady, ready + 1)
        return proc, log

    yield start
    for proc in started:  # only what this test started
        proc.kill()
        proc.wait(10)


def wait_for_lines(log: Path, needle: str, n: int, timeout: float = 10.0) -> list[str]:
    """The log's lines containing ``needle``, once there are at least ``n``."""
    deadline = time.monotonic() + timeout
    while True:
        lines = [line for line in log.read_text().splitlines() if needle in line]
        if len(lines) >= n or time.monotonic() > deadline:
            return lines
        time.sleep(0.02)


def test_exec_stderr_goes_to_the_worker_log(broker: BrokerThread,
                                            log_worker: LogWorker) -> None:
    _, log = log_worker("up", "sh -c 'echo note on stderr >&2; tr a-z A-Z'")
    with Client(broker.endpoint, ClientConfig(timeout=10, retries=0)) as client:
        assert client.request("up", b"shout") == [b"SHOUT"]
    assert wait_for_lines(log, "sh: note on stderr", 1) != []


def test_failing_command_is_one_log_line_per_attempt(broker: BrokerThread,
                                                     log_worker: LogWorker) -> None:
    proc, log = log_worker("fail", "sh -c 'echo first >&2; echo last words >&2; exit 3'")
    client = mdp_core.Client()
    client.request(b"fail", b"x", 0.0)
    expired = len(broker.of(RequestExpired))
    with zmq.Context.instance().socket(zmq.DEALER) as sock:
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(broker.endpoint)
        for frames in client.outgoing():
            sock.send_multipart(frames)
        # Attempt 1 fails, the worker registers again, attempt 2 fails: expired.
        assert broker.wait_count(RequestExpired, expired + 1, timeout=20)
    failures = wait_for_lines(log, "failed", 2)
    assert proc.poll() is None  # the worker lives on
    proc.kill()
    proc.wait(10)
    text = log.read_text()
    assert "Traceback" not in text and "first" not in text, text
    assert len(failures) == 2, text
    assert all(line.endswith("sh exited with status 3: last words") for line in failures), text


def test_broker_binds_mdp_bind_else_mdp_endpoint(procs: ProcSet,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    bind, endpoint, flag = free_tcp_endpoint(), free_tcp_endpoint(), free_tcp_endpoint()
    monkeypatch.setenv("MDP_BIND", bind)
    monkeypatch.setenv("MDP_ENDPOINT", endpoint)
    from_bind = procs.start(mdp_cli("broker"))
    from_flag = procs.start(mdp_cli("broker", "--bind", flag))
    monkeypatch.delenv("MDP_BIND")
    from_endpoint = procs.start(mdp_cli("broker"))
    assert from_bind.wait_line("mdp broker listening") == f"mdp broker listening on {bind}"
    assert from_flag.wait_line("mdp broker listening") == f"mdp broker listening on {flag}"
    assert (from_endpoint.wait_line("mdp broker listening")
            == f"mdp broker listening on {endpoint}")
