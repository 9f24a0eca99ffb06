"""Every user error of the ``mdp`` command is one line on stderr, never a traceback.

Each case is a real ``mdp`` process (so argv bytes, environment variables
and the exit status are the real ones). The cases start all at once in a
module fixture and each test checks one of them.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from zmq_support import BrokerThread, ThreadWorkers, free_tcp_endpoint, mdp_cli

from mdp_core import WorkerReady

USAGE, RUNTIME = 2, 1


@dataclass(frozen=True)
class Case:
    """``mdp ARGV`` with ``env`` added to the environment ends with ``status``."""

    argv: tuple[str | bytes, ...]
    status: int
    env: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Outcome:
    status: int
    stdout: bytes
    stderr: bytes


@pytest.fixture(scope="module")
def broker() -> Iterator[BrokerThread]:
    """A broker with an ``echo`` worker (its endpoint is also 'in use' for bind)."""
    b = BrokerThread("tcp://127.0.0.1:*")
    workers = ThreadWorkers()
    workers.start(b.endpoint, "echo", lambda frames: frames)
    assert b.wait_count(WorkerReady, 1)
    yield b
    workers.close()
    b.close()


def _cases(in_use: str, nobody: str) -> dict[str, Case]:
    return {
        "bind empty": Case(("broker", "--bind", ""), USAGE),
        "connect empty": Case(("call", "--connect", "", "echo"), USAGE),
        "MDP_ENDPOINT empty": Case(("call", "echo", "hi"), USAGE, (("MDP_ENDPOINT", ""),)),
        "MDP_BIND empty": Case(("broker",), USAGE, (("MDP_BIND", ""),)),
        "MDP_BIND bad port": Case(("broker",), USAGE, (("MDP_BIND", "tcp://127.0.0.1:99999"),)),
        "timeout 0": Case(("call", "echo", "hi", "--timeout", "0"), USAGE),
        "timeout -1": Case(("call", "echo", "hi", "--timeout", "-1"), USAGE),
        "timeout nan": Case(("call", "echo", "hi", "--timeout", "nan"), USAGE),
        "retries -1": Case(("call", "echo", "hi", "--retries", "-1"), USAGE),
        "retries 1.5": Case(("call", "echo", "hi", "--retries", "1.5"), USAGE),
        "worker heartbeat 0": Case(("worker", "x", "--echo", "--heartbeat", "0"), USAGE),
        "broker heartbeat 0": Case(("broker", "--heartbeat", "0"), USAGE),
        "broker max-attempts 0": Case(("broker", "--max-attempts", "0"), USAGE),
        "broker max-queue -1": Case(("broker", "--max-queue", "-1"), USAGE),
        "exec unbalanced quote": Case(("worker", "x", "--exec", 'unbalanced "quote'), USAGE),
        "exec empty": Case(("worker", "x", "--exec", ""), USAGE),
        "exec not on PATH": Case(("worker", "x", "--exec", "no-such-program-mdp-test a"), USAGE),
        "bind port 99999": Case(("broker", "--bind", "tcp://127.0.0.1:99999"), USAGE),
        "connect port *": Case(("call", "echo", "--connect", "tcp://127.0.0.1:*"), USAGE),
        "connect not UTF-8": Case(("call", "echo", "--connect", b"ipc:///tmp/\xff"), USAGE),
        "connect list with an empty item": Case(
            ("call", "echo", "--connect", "tcp://127.0.0.1:5,"), USAGE),
        "connect list with a repeat": Case(
            ("services", "--connect", "5,tcp://127.0.0.1:5"), USAGE),
        "MDP_ENDPOINT list bad port": Case(
            ("services",), USAGE, (("MDP_ENDPOINT", "tcp://127.0.0.1:5,tcp://127.0.0.1:0"),)),
        "bind a list": Case(
            ("broker",), USAGE, (("MDP_ENDPOINT", "tcp://127.0.0.1:5,tcp://127.0.0.1:6"),)),
        "worker concurrency 0": Case(("worker", "x", "--echo", "--concurrency", "0"), USAGE),
        "zmtp-heartbeat -1": Case(("broker", "--zmtp-heartbeat", "-1"), USAGE),
        "worker for mmi.x": Case(("worker", "mmi.x", "--echo"), USAGE),
        "empty service": Case(("call", "", "hi"), USAGE),
        "mdp version 0.3": Case(("worker", "x", "--echo", "--mdp", "0.3"), USAGE),
        "no command": Case((), USAGE),
        "unknown flag": Case(("broker", "--nope"), USAGE),
        "bind in use": Case(("broker", "--bind", in_use), RUNTIME),
        "no reply": Case(("call", "echo", "hi", "--connect", nobody, "--timeout", "0.2",
                          "--retries", "0"), RUNTIME),
    }


CASES = _cases("", "")


@pytest.fixture(scope="module")
def outcomes(broker: BrokerThread) -> dict[str, Outcome]:
    """Run every case at once; what still runs after 30 s in all is killed."""
    cases = _cases(broker.endpoint, free_tcp_endpoint())
    started = {}
    for name, case in cases.items():
        started[name] = subprocess.Popen(
            [os.fsencode(a) for a in mdp_cli(*map(os.fsdecode, case.argv))],
            env={**os.environ, **dict(case.env)}, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    results = {}
    deadline = time.monotonic() + 30
    for name, proc in started.items():
        try:
            out, err = proc.communicate(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        results[name] = Outcome(proc.returncode, out, err)
    return results


@pytest.mark.parametrize("name", sorted(CASES))
def test_user_error_is_one_line_and_an_exit_status(name: str,
                                                   outcomes: dict[str, Outcome]) -> None:
    outcome = outcomes[name]
    assert b"Traceback" not in outcome.stderr, outcome.stderr.decode(errors="replace")
    assert outcome.status == CASES[name].status, outcome.stderr
    lines = outcome.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(b"mdp"), outcome.stderr
    assert outcome.stdout == b""


def test_arguments_that_are_not_utf8_travel_as_their_bytes(broker: BrokerThread) -> None:
    argv = [*map(os.fsencode, mdp_cli("call", "echo")), b"\xff\xfe", b"caf\xc3\xa9",
            b"--connect", os.fsencode(broker.endpoint), b"--timeout", b"10"]
    done = subprocess.run(argv, capture_output=True, timeout=30, check=False)
    assert (done.returncode, done.stdout, done.stderr) == (0, b"\xff\xfe\ncaf\xc3\xa9\n", b"")
