"""The ``mdp`` command: in-process ``main()`` and one end-to-end process run."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator

import pytest
from mdp_zmq import Client
from mdp_zmq.cli import build_parser, main
from zmq_support import BrokerThread, ProcSet, ThreadWorkers, free_tcp_endpoint, mdp_cli

from mdp_core import BrokerLost, ClientConfig, Event, WorkerReady


@pytest.fixture
def broker() -> Iterator[BrokerThread]:
    b = BrokerThread("tcp://127.0.0.1:*")
    yield b
    b.close()


def test_call_prints_the_reply_frames(broker: BrokerThread, workers: ThreadWorkers,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    workers.start(broker.endpoint, "echo", lambda frames: frames)
    assert broker.wait_count(WorkerReady, 1)
    assert main(["call", "echo", "hello", "world", "--connect", broker.endpoint]) == 0
    assert capsys.readouterr().out == "hello world\n"


def test_call_stream_prints_each_partial(broker: BrokerThread, workers: ThreadWorkers,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    def parts(frames: list[bytes]) -> Iterator[bytes]:
        yield b"one"
        yield b"two"
        return b"three"  # type: ignore[return-value]

    workers.start(broker.endpoint, "parts", parts)
    assert broker.wait_count(WorkerReady, 1)
    assert main(["call", "parts", "--stream", "--connect", broker.endpoint]) == 0
    assert capsys.readouterr().out.split() == ["one", "two", "three"]


def test_services_lists_services_with_workers(broker: BrokerThread, workers: ThreadWorkers,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["services", "--connect", broker.endpoint]) == 0
    assert capsys.readouterr().out == ""
    workers.start(broker.endpoint, "b.svc", lambda frames: frames)
    workers.start(broker.endpoint, "a.svc", lambda frames: frames)
    assert broker.wait_count(WorkerReady, 2)
    assert main(["services", "--connect", broker.endpoint]) == 0
    assert capsys.readouterr().out == "a.svc\nb.svc\n"


def test_call_without_broker_exits_2_after_its_retries(capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    endpoint = free_tcp_endpoint()
    assert main(["call", "echo", "x", "--connect", endpoint, "--timeout", "0.1",
                 "--retries", "1"]) == 2
    assert "no reply after 2 attempts" in capsys.readouterr().err
    assert main(["services", "--connect", endpoint, "--timeout", "0.1"]) == 2


def test_worker_needs_echo_or_exec() -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["worker", "svc"])
    args = build_parser().parse_args(["worker", "svc", "--exec", "cat"])
    assert args.exec == "cat" and not args.echo


def test_broker_worker_exec_and_call_as_processes(procs: ProcSet) -> None:
    endpoint = free_tcp_endpoint()
    broker = procs.start(mdp_cli("-v", "broker", "--bind", endpoint))
    assert broker.wait_line("mdp broker listening").endswith(endpoint)
    procs.start(mdp_cli("worker", "upper", "--exec", "tr a-z A-Z", "--connect", endpoint))
    done = subprocess.run(mdp_cli("call", "upper", "shout", "--connect", endpoint,
                                  "--timeout", "10", "--retries", "0"),
                          capture_output=True, text=True, timeout=30, check=False)
    assert (done.returncode, done.stdout) == (0, "SHOUT\n"), done.stderr


def test_broker_process_shuts_down_cleanly_on_sigterm(procs: ProcSet,
                                                      workers: ThreadWorkers) -> None:
    endpoint = free_tcp_endpoint()
    broker = procs.start(mdp_cli("broker", "--bind", endpoint))
    broker.wait_line("mdp broker listening")
    lost: list[str] = []
    worker = workers.start(endpoint, "echo", lambda frames: frames)
    original = worker.core.events

    def spy() -> list[Event]:
        events = original()
        lost.extend(e.reason for e in events if isinstance(e, BrokerLost))
        return events

    worker.core.events = spy  # type: ignore[method-assign]
    with Client(endpoint, ClientConfig(timeout=5, retries=0)) as client:
        assert client.request("echo", b"x") == [b"x"]
    broker.signal(signal.SIGTERM)
    assert broker.popen.wait(10) == 0
    deadline = time.monotonic() + 5
    while not lost and time.monotonic() < deadline:
        time.sleep(0.02)
    assert lost[:1] == ["DISCONNECT from broker"]
