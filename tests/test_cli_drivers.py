"""``mdp ... --driver``: the command runs each driver's Broker, Worker and Client.

Real processes on loopback: a broker of one driver, workers and calls of
the others, SIGTERM to stop; the demo on the async driver; and one clear
line when a driver's packages are missing.
"""

from __future__ import annotations

import signal
import subprocess

import pytest
from mdp_zmq import _drivers
from mdp_zmq.cli import main
from zmq_support import ProcSet, free_tcp_endpoint, mdp_cli

pytestmark = pytest.mark.slow


def run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(mdp_cli(*args), capture_output=True, text=True, timeout=timeout,
                          check=False)


@pytest.mark.parametrize(("broker", "worker", "client"), [
    ("trio", "asyncio", "zmq"),
    ("asyncio", "gevent", "trio"),
    ("zmq", "trio", "asyncio"),
])
def test_every_subcommand_runs_on_the_driver_it_is_given(
    procs: ProcSet, broker: str, worker: str, client: str
) -> None:
    endpoint = free_tcp_endpoint()
    b = procs.start(mdp_cli("broker", "--bind", endpoint, "--driver", broker))
    b.wait_line("mdp broker listening")
    w = procs.worker(endpoint, "echo", "--driver", worker)
    done = run("call", "echo", "a b", "c", "--connect", endpoint, "--driver", client,
               "--timeout", "10", "--retries", "0")
    assert (done.returncode, done.stdout, done.stderr) == (0, "a b\nc\n", "")
    done = run("services", "--connect", endpoint, "--driver", client, "--timeout", "10")
    assert (done.returncode, done.stdout) == (0, "echo\n")
    # SIGTERM: each stops cleanly (the broker DISCONNECTs the worker first).
    for proc in (w, b):
        proc.popen.send_signal(signal.SIGTERM)
        assert proc.popen.wait(15) == 0


@pytest.mark.parametrize("driver", ["trio", "asyncio", "gevent"])
def test_a_call_that_gets_no_reply_is_one_line_on_every_driver(procs: ProcSet, driver: str
                                                               ) -> None:
    endpoint = free_tcp_endpoint()
    procs.start(mdp_cli("broker", "--bind", endpoint)).wait_line("mdp broker listening")
    done = run("call", "nobody", "x", "--connect", endpoint, "--driver", driver,
               "--timeout", "0.3", "--retries", "0")
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == ("mdp call: nobody: no reply after 1 attempt: no worker registered "
                           "for 'nobody'\n")


def test_demo_shows_the_recovery_on_the_async_driver() -> None:
    done = run("demo", "--driver", "trio", "--job", "1", "--kill-after", "0.3", timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "trio driver" in done.stdout and "re-dispatched the request" in done.stdout
    assert "client   answered by worker" in done.stdout


def test_a_driver_whose_packages_are_missing_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(_drivers._NEEDS, "gevent", ("no_such_package_here",))
    assert main(["call", "echo", "--driver", "gevent", "--connect", free_tcp_endpoint()]) == 1
    err = capsys.readouterr().err
    assert err == ("mdp call: the gevent driver needs no_such_package_here: "
                   "pip install 'mdp-core[gevent]'\n")
