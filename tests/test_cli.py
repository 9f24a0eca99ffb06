"""The ``mdp`` command: in-process ``main()``, its parser, and process runs.

One broker thread with an echo worker serves the module's in-process calls
(they leave nothing behind on it); tests that need an empty broker or a
broker process start their own.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import io
import logging
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
from mdp_zmq import Client, TransportConfig
from mdp_zmq.cli import (
    bind_endpoint,
    broker_config,
    build_parser,
    connect_endpoint,
    log_level,
    main,
    transport_config,
)
from zmq_support import BrokerThread, ProcSet, ThreadWorkers, free_tcp_endpoint, mdp_cli

from mdp_core import BrokerConfig, BrokerLost, ClientConfig, Event, WorkerReady


@pytest.fixture(scope="module")
def echo_broker() -> Iterator[BrokerThread]:
    """A broker with one ``echo`` worker, shared by the module."""
    broker = BrokerThread("tcp://127.0.0.1:*")
    workers = ThreadWorkers()
    workers.start(broker.endpoint, "echo", lambda frames: frames)
    assert broker.wait_count(WorkerReady, 1)
    yield broker
    workers.close()
    broker.close()


@pytest.fixture
def broker() -> Iterator[BrokerThread]:
    b = BrokerThread("tcp://127.0.0.1:*")
    yield b
    b.close()


def call(endpoint: str, *args: str) -> int:
    return main(["call", *args, "--connect", endpoint, "--timeout", "10", "--retries", "0"])


def test_call_prints_one_frame_per_line(echo_broker: BrokerThread,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert call(echo_broker.endpoint, "echo", "a b", "c") == 0
    assert capsys.readouterr().out == "a b\nc\n"
    assert call(echo_broker.endpoint, "echo", "a", "b", "c") == 0
    assert capsys.readouterr().out == "a\nb\nc\n"


def test_call_body_is_optional(echo_broker: BrokerThread,
                               capsys: pytest.CaptureFixture[str]) -> None:
    assert call(echo_broker.endpoint, "echo") == 0
    assert capsys.readouterr().out == "\n"  # one empty frame went, one came back
    assert call(echo_broker.endpoint, "mmi.services") == 0
    assert capsys.readouterr().out == "echo\n"


def test_call_dash_sends_stdin_as_one_frame(echo_broker: BrokerThread,
                                            capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"one two\nthree\n")))
    assert call(echo_broker.endpoint, "echo", "-", "x") == 0  # with others, "-" is a frame
    assert capsys.readouterr().out == "-\nx\n"
    assert call(echo_broker.endpoint, "echo", "-") == 0
    assert capsys.readouterr().out == "one two\nthree\n\n"


def test_call_stream_prints_each_partial(broker: BrokerThread, workers: ThreadWorkers,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    def parts(frames: list[bytes]) -> Iterator[bytes]:
        yield b"one"
        yield b"two"
        return b"three"  # type: ignore[return-value]

    workers.start(broker.endpoint, "parts", parts)
    assert broker.wait_count(WorkerReady, 1)
    assert main(["call", "parts", "--stream", "--connect", broker.endpoint]) == 0
    assert capsys.readouterr().out == "one\ntwo\nthree\n"


def test_services_lists_services_with_workers(broker: BrokerThread, workers: ThreadWorkers,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["services", "--connect", broker.endpoint]) == 0
    assert capsys.readouterr().out == ""
    workers.start(broker.endpoint, "b.svc", lambda frames: frames)
    workers.start(broker.endpoint, "a.svc", lambda frames: frames)
    assert broker.wait_count(WorkerReady, 2)
    assert main(["services", "--connect", broker.endpoint]) == 0
    assert capsys.readouterr().out == "a.svc\nb.svc\n"


def test_call_without_broker_exits_1_after_its_retries(capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    endpoint = free_tcp_endpoint()
    assert main(["call", "echo", "x", "--connect", endpoint, "--timeout", "0.1",
                 "--retries", "1"]) == 1
    err = capsys.readouterr().err
    assert err == f"mdp call: echo: no reply after 2 attempts: no broker reachable at {endpoint}\n"
    assert main(["services", "--connect", endpoint, "--timeout", "0.1"]) == 1
    assert capsys.readouterr().err.count("\n") == 1


def test_call_says_when_no_worker_is_registered(echo_broker: BrokerThread,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["call", "nobody", "x", "--connect", echo_broker.endpoint, "--timeout", "0.2",
                 "--retries", "0"]) == 1
    err = capsys.readouterr().err
    assert err == "mdp call: nobody: no reply after 1 attempt: no worker registered for 'nobody'\n"


def test_call_too_short_timeout_gets_a_hint(broker: BrokerThread, workers: ThreadWorkers,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    release = threading.Event()
    workers.start(broker.endpoint, "slow", lambda frames: [b"late"] if release.wait(10) else [])
    assert broker.wait_count(WorkerReady, 1)
    try:
        assert main(["call", "slow", "x", "--connect", broker.endpoint, "--timeout", "0.2",
                     "--retries", "0"]) == 1
    finally:
        release.set()
    err = capsys.readouterr().err
    assert err == ("mdp call: slow: no reply after 1 attempt (a job that takes longer than "
                   "--timeout 0.2 s needs a larger one)\n")


def test_worker_needs_echo_or_exec() -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["worker", "svc"])
    args = build_parser().parse_args(["worker", "svc", "--exec", "cat -n"])
    assert args.exec == ["cat", "-n"] and not args.echo


def test_version_is_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"mdp {importlib.metadata.version('mdp-core')}\n"


@pytest.mark.parametrize(("argv", "level"), [
    (["broker"], logging.WARNING),
    (["broker", "-v"], logging.INFO),
    (["-v", "broker"], logging.INFO),
    (["-v", "call", "svc", "-v"], logging.DEBUG),
    (["worker", "svc", "--echo", "-vv"], logging.DEBUG),
    (["services", "--verbose"], logging.INFO),
    (["demo", "-v"], logging.INFO),
])
def test_verbose_counts_before_and_after_the_subcommand(argv: list[str], level: int) -> None:
    assert log_level(build_parser().parse_args(argv)) == level


def test_broker_flags_set_the_broker_config() -> None:
    args = build_parser().parse_args([
        "broker", "--heartbeat", "1.5", "--request-timeout", "7", "--processing-timeout", "60",
        "--max-attempts", "5", "--max-queue", "0"])
    assert broker_config(args) == BrokerConfig(
        heartbeat_interval=1.5, request_timeout=7.0, processing_timeout=60.0, max_attempts=5,
        max_queue=0)
    assert broker_config(build_parser().parse_args(["broker"])) == BrokerConfig()


def test_broker_max_queued_bytes_flag_sets_the_byte_budget() -> None:
    # BrokerConfig.max_queued_bytes comes from another branch (issue 9, item 3).
    args = build_parser().parse_args(["broker", "--max-queued-bytes", "1000"])
    assert broker_config(args).max_queued_bytes == 1000


def test_broker_max_message_bytes_flag_sets_maxmsgsize() -> None:
    # TransportConfig.max_message_bytes comes from another branch (issue 9, item 3).
    args = build_parser().parse_args(["broker", "--max-message-bytes", "4096"])
    assert transport_config(args).max_message_bytes == 4096
    args = build_parser().parse_args(["broker", "--max-message-bytes", "4096",
                                      "--zmtp-heartbeat", "0"])
    assert transport_config(args).max_message_bytes == 4096


def test_zmtp_flags_set_the_transport() -> None:
    parse = build_parser().parse_args
    assert transport_config(parse(["call", "x", "--zmtp-heartbeat", "0"])) == TransportConfig(
        heartbeat_ivl=None, heartbeat_timeout=None, heartbeat_ttl=None)
    assert transport_config(parse(["call", "x", "--zmtp-heartbeat", "2"])) == TransportConfig(
        heartbeat_ivl=2.0, heartbeat_timeout=6.0, heartbeat_ttl=None)
    assert transport_config(parse(["call", "x", "--zmtp-timeout", "4"])) == TransportConfig(
        heartbeat_ivl=5.0, heartbeat_timeout=4.0, heartbeat_ttl=None)
    # No flag: TransportConfig's own defaults (which scale to 10,000 workers).
    assert transport_config(parse(["broker"])) == TransportConfig() == TransportConfig(
        heartbeat_ivl=5.0, heartbeat_timeout=15.0, heartbeat_ttl=None)


def test_endpoints_are_normalized_and_checked() -> None:
    assert bind_endpoint("5555") == connect_endpoint("5555") == "tcp://127.0.0.1:5555"
    assert bind_endpoint("tcp://*:*") == "tcp://*:*"
    assert connect_endpoint("[::1]:65535") == "tcp://[::1]:65535"
    assert connect_endpoint("ipc:///tmp/mdp.sock") == "ipc:///tmp/mdp.sock"
    with pytest.raises(argparse.ArgumentTypeError, match=r"1-65535$"):
        connect_endpoint("tcp://127.0.0.1:*")
    for bad in ("tcp://127.0.0.1:0", "tcp://127.0.0.1:65536", "tcp://127.0.0.1:x",
                "tcp://127.0.0.1", "tcp://:5555", "ipc://", "  "):
        with pytest.raises(argparse.ArgumentTypeError):
            bind_endpoint(bad)


def test_broker_worker_exec_and_call_as_processes(procs: ProcSet) -> None:
    endpoint = free_tcp_endpoint()
    broker = procs.start(mdp_cli("broker", "-v", "--bind", endpoint))
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
