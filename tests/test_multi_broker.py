"""Several brokers, real sockets, every driver: workers serve them all, clients fail over.

Uses the behaviour suite's :class:`~test_drivers.Driver` (brokers, workers
and clients of one driver; processes for what a test kills). Loopback only;
every wait is bounded and waits for a condition; nothing asserts on timing.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import threading
import time
from collections.abc import Callable

import mdp_zmq
import pytest
from load_support import one_outcome_each, requests_with_a_kill
from test_drivers import DRIVERS, Driver, make, portals  # noqa: F401  (fixtures)
from zmq_support import ProcSet, free_tcp_endpoint, mdp_cli

from mdp_core import ClientConfig, RequestDelivered, WorkerConfig, WorkerLost, WorkerReady

FAST_RECONNECT = WorkerConfig(reconnect_delay=0.1, reconnect_delay_max=0.5)


def wait_until(pred: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def registered(endpoint: str, service: bytes = b"echo") -> int:
    """How many workers for ``service`` the broker at ``endpoint`` lists (0 if it is down)."""
    with mdp_zmq.Client(endpoint, ClientConfig(timeout=1.0, retries=0)) as client:
        try:
            lines = client.request("mmi.workers", b"")
        except mdp_zmq.RequestTimeout:
            return 0
    return sum(line.split(b" ")[0] == service for line in lines)


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_worker_registers_with_every_broker_and_serves_each(
    driver: str, make: Callable[[str], Driver],  # noqa: F811
) -> None:
    brokers = [make(driver).broker() for _ in range(2)]
    peers = make(driver)
    peers.worker([b.endpoint for b in brokers], "echo")
    for n, broker in enumerate(brokers):
        broker.log.wait_count(WorkerReady, 1)
        client = peers.client(broker.endpoint, ClientConfig(timeout=5, retries=0))
        assert client.request("echo", b"via %d" % n) == [b"via %d" % n]
        broker.log.wait_count(RequestDelivered, 1)


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_client_whose_first_broker_is_down_is_served_by_the_second(
    driver: str, make: Callable[[str], Driver],  # noqa: F811
) -> None:
    down = free_tcp_endpoint()
    live = make(driver).broker()
    peers = make(driver)
    peers.worker([down, live.endpoint], "echo")  # a broker that is down stops nothing
    live.log.wait_count(WorkerReady, 1)
    # The first attempt goes to the broker that is down and times out; the
    # one resend goes to the second.
    client = peers.client([down, live.endpoint], ClientConfig(timeout=1.0, retries=1), spread=0)
    assert client.request("echo", b"x") == [b"x"]
    # The first broker is in cool-off now: the next request goes straight
    # to the second, with no resend.
    assert client.request("echo", b"y", retries=0) == [b"y"]
    # A client whose home is the second broker never tries the first.
    other = peers.client([down, live.endpoint], ClientConfig(timeout=5.0, retries=0), spread=1)
    assert other.request("echo", b"z") == [b"z"]
    live.log.wait_count(RequestDelivered, 3)


def test_blocking_worker_concurrency_handles_requests_at_once(
    make: Callable[[str], Driver],  # noqa: F811
) -> None:
    broker = make("zmq").broker()
    both = threading.Barrier(2)

    def meet(frames: list[bytes]) -> list[bytes]:
        both.wait(10)  # only passes if two jobs run at the same time
        return frames

    worker = mdp_zmq.Worker(broker.endpoint, "meet", meet, concurrency=2)
    thread = worker.start()
    try:
        broker.log.wait_count(WorkerReady, 2)
        results: list[list[bytes]] = []
        clients = make("zmq").clients(broker.endpoint, 2, ClientConfig(timeout=20, retries=0))
        callers = [threading.Thread(target=lambda c=c, n=n: results.append(
            c.request("meet", b"%d" % n))) for n, c in enumerate(clients)]
        for t in callers:
            t.start()
        for t in callers:
            t.join(30)
        assert sorted(results) == [[b"0"], [b"1"]]
        assert worker.handled == 2
    finally:
        worker.close()
        thread.join(10)


class Stop(BaseException):
    """Not an Exception: a handler that raises it is not abandoned, it stops the worker."""


def test_a_failed_lane_stops_every_lane_of_the_blocking_worker_and_run_raises(
    make: Callable[[str], Driver],  # noqa: F811
) -> None:
    broker = make("zmq").broker()

    def handler(frames: list[bytes]) -> list[bytes]:
        if threading.current_thread().name.startswith("mdp-worker-lane"):
            raise Stop  # only in a lane's own thread, not in the one running run()
        return frames

    worker = mdp_zmq.Worker(broker.endpoint, "x", handler, concurrency=2)
    raised: list[BaseException] = []

    def serve() -> None:
        try:
            worker.run(handle_signals=False)
        except Stop as exc:
            raised.append(exc)

    thread = threading.Thread(target=serve)
    thread.start()
    broker.log.wait_count(WorkerReady, 2)
    client = make("zmq").client(broker.endpoint, ClientConfig(timeout=0.5, retries=0))
    for _ in range(20):  # the broker picks the lane; the one in a thread of its own fails
        if not thread.is_alive():
            break
        with contextlib.suppress(mdp_zmq.RequestTimeout):  # the lane that failed had it
            client.request("x", b"job")
    thread.join(10)
    assert not thread.is_alive() and len(raised) == 1
    broker.log.wait_count(WorkerLost, 2)  # every lane said DISCONNECT on the way out


@pytest.mark.slow
@pytest.mark.parametrize("driver", DRIVERS)
def test_a_broker_killed_during_1000_requests_loses_none_and_is_served_again_on_restart(
    driver: str, make: Callable[[str], Driver], procs: ProcSet,  # noqa: F811
) -> None:
    d = make(driver)
    a, b = free_tcp_endpoint(), free_tcp_endpoint()
    broker_a = procs.start(d.broker_argv(a))
    broker_b = procs.start(d.broker_argv(b))
    for proc in (broker_a, broker_b):
        proc.wait_line("mdp broker listening")
    for _ in range(2):
        d.worker([a, b], "echo", config=FAST_RECONNECT)
    wait_until(lambda: registered(a) == 2 and registered(b) == 2, "workers not on both brokers")

    n_clients, per_client = 4, 250
    # Spread 0..3: two clients (sockets) start on each broker.
    clients = d.clients([a, b], n_clients, ClientConfig(timeout=5, retries=3), spread=0)
    outcomes = requests_with_a_kill(clients, per_client, lambda: broker_a.signal(signal.SIGKILL))
    # None failed: what A held was resent to B and answered there.
    assert one_outcome_each(outcomes, n_clients, per_client) == []

    broker_a.stop()
    broker_a = procs.start(d.broker_argv(a))  # the same port
    broker_a.wait_line("mdp broker listening")
    wait_until(lambda: registered(a) == 2, "the workers did not register with A again")
    only_a = d.client(a, ClientConfig(timeout=5, retries=0))
    assert only_a.request("echo", b"back") == [b"back"]


def test_mdp_commands_take_several_brokers_and_merge_their_mmi_answers(
    make: Callable[[str], Driver], procs: ProcSet,  # noqa: F811
) -> None:
    d = make("zmq")
    x_broker, y_broker = d.broker(), d.broker()
    d.worker(x_broker.endpoint, "x")
    x_broker.log.wait_count(WorkerReady, 1)
    worker = procs.start(mdp_cli("worker", "y", "--echo", "--announce", "--connect",
                                 f"{x_broker.endpoint},{y_broker.endpoint}"))
    worker.wait_line("ready")
    y_broker.log.wait_count(WorkerReady, 1)
    x_broker.log.wait_count(WorkerReady, 2)  # the command's worker serves both brokers

    down = free_tcp_endpoint()
    services = subprocess.run(
        mdp_cli("services", "--connect", f"{y_broker.endpoint},{down},{x_broker.endpoint}",
                "--timeout", "0.5"), capture_output=True, text=True, timeout=30, check=False)
    assert (services.returncode, services.stdout) == (0, "x\ny\n"), services.stderr
    assert services.stderr.count("left out") == 1 and down in services.stderr

    found = subprocess.run(
        mdp_cli("call", "mmi.service", "x", "--connect",
                f"{y_broker.endpoint},{x_broker.endpoint}"),
        capture_output=True, text=True, timeout=30, check=False)
    assert (found.returncode, found.stdout) == (0, "200\n"), found.stderr
