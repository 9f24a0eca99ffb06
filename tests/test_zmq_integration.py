"""mdp_zmq over real sockets: loopback TCP and ipc, bounded time.

Processes are started with the ``mdp`` CLI and only those are signalled.
Timing checks are generous and one-sided ("well before heartbeat expiry").
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import mdp_zmq
import pytest
import zmq
from zmq_support import BrokerThread, ProcSet, ThreadWorkers, free_tcp_endpoint, mdp_cli

from mdp_core import (
    BrokerConfig,
    ClientConfig,
    Dialect,
    ProtocolError,
    Ready,
    RequestDelivered,
    RequestExpired,
    RequestRequeued,
    WorkerConfig,
    WorkerLost,
    WorkerReady,
    encode,
)

VERSIONS = {"0.1": Dialect.MDP01, "0.2": Dialect.MDP02}
# MDP heartbeats so slow that only the transport can explain a quick loss.
SLOW_HB = BrokerConfig(heartbeat_interval=10.0)


@pytest.fixture(params=["tcp", "ipc"])
def bind_endpoint(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
                  ) -> str:
    if request.param == "tcp":
        return "tcp://127.0.0.1:*"
    return f"ipc://{tmp_path_factory.mktemp('ipc')}/broker.sock"


def echo(frames: list[bytes]) -> list[bytes]:
    return frames


def _client_thread(endpoint: str, service: str, body: bytes, result: dict[str, object],
                   timeout: float = 60.0) -> threading.Thread:
    def run() -> None:
        with mdp_zmq.Client(endpoint, ClientConfig(timeout=timeout, retries=0)) as client:
            try:
                result["reply"] = client.request(service, body)
            except Exception as exc:
                result["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


# ------------------------------------------------------------------ round trips


@pytest.mark.parametrize("worker_version", ["0.1", "0.2"])
@pytest.mark.parametrize("client_version", ["0.1", "0.2"])
def test_echo_round_trip_between_any_client_and_worker_version(
    bind_endpoint: str, workers: ThreadWorkers, client_version: str, worker_version: str
) -> None:
    broker = BrokerThread(bind_endpoint)
    try:
        workers.start(broker.endpoint, "echo", echo, version=VERSIONS[worker_version])
        assert broker.wait_count(WorkerReady, 1)
        with mdp_zmq.Client(broker.endpoint, ClientConfig(timeout=5, retries=0),
                            VERSIONS[client_version]) as client:
            for i in range(3):
                assert client.request("echo", b"hello", b"%d" % i) == [b"hello", b"%d" % i]
    finally:
        broker.close()


def test_02_client_streams_partials_then_final(workers: ThreadWorkers) -> None:
    def count(frames: list[bytes]) -> Iterator[bytes]:
        for i in range(3):
            yield b"part %d" % i
        return b"done " + frames[0]  # type: ignore[return-value]

    broker = BrokerThread("tcp://127.0.0.1:*")
    try:
        workers.start(broker.endpoint, "count", count)
        assert broker.wait_count(WorkerReady, 1)
        with mdp_zmq.Client(broker.endpoint, ClientConfig(timeout=5, retries=0)) as client:
            got = list(client.stream("count", b"x"))
            assert got == [[b"part 0"], [b"part 1"], [b"part 2"], [b"done x"]]
            # request() skips the PARTIALs
            assert client.request("count", b"y") == [b"done y"]
    finally:
        broker.close()


def test_mmi_service_exists_and_services_list(workers: ThreadWorkers) -> None:
    broker = BrokerThread("tcp://127.0.0.1:*")
    try:
        workers.start(broker.endpoint, "echo", echo)
        assert broker.wait_count(WorkerReady, 1)
        with mdp_zmq.Client(broker.endpoint, ClientConfig(timeout=5, retries=0)) as client:
            assert client.service_exists("echo") is True
            assert client.service_exists("nobody") is False
            assert client.request("mmi.services", b"") == [b"echo"]
    finally:
        broker.close()


def test_handler_exception_is_survived_and_the_request_answered_on_retry(
    workers: ThreadWorkers,
) -> None:
    calls: list[bytes] = []

    def flaky(frames: list[bytes]) -> list[bytes]:
        calls.append(frames[0])
        if len(calls) == 1:
            raise RuntimeError("boom (expected by the test)")
        return frames

    broker = BrokerThread("tcp://127.0.0.1:*")
    try:
        workers.start(broker.endpoint, "flaky", flaky)
        assert broker.wait_count(WorkerReady, 1)
        with mdp_zmq.Client(broker.endpoint, ClientConfig(timeout=5, retries=0)) as client:
            assert client.request("flaky", b"x") == [b"x"]
        assert calls == [b"x", b"x"]
        assert broker.wait_count(RequestRequeued, 1)
        assert [e.attempt for _, e in broker.of(RequestRequeued)] == [1]
    finally:
        broker.close()


def test_request_to_absent_broker_raises_request_timeout() -> None:
    with mdp_zmq.Client(free_tcp_endpoint(),
                        ClientConfig(timeout=0.2, retries=1)) as client:
        with pytest.raises(mdp_zmq.RequestTimeout) as info:
            client.request("echo", b"x")
        assert "2 attempts" in info.value.reason


@pytest.mark.slow
def test_busy_worker_not_dropped_by_zmtp_heartbeats(workers: ThreadWorkers) -> None:
    # ZMTP pings are answered by libzmq's I/O thread: a handler busy for
    # many heartbeat timeouts keeps its connection.
    fast = mdp_zmq.TransportConfig(heartbeat_ivl=0.1, heartbeat_timeout=0.3, heartbeat_ttl=0.3)

    def slow(frames: list[bytes]) -> list[bytes]:
        end = time.monotonic() + 1.5
        while time.monotonic() < end:  # pure-Python busy work, holds the GIL
            sum(range(1000))
        return frames

    broker = BrokerThread("tcp://127.0.0.1:*", SLOW_HB, fast)
    try:
        workers.start(broker.endpoint, "slow", slow, transport=fast)
        assert broker.wait_count(WorkerReady, 1)
        with mdp_zmq.Client(broker.endpoint, ClientConfig(timeout=10, retries=0)) as client:
            assert client.request("slow", b"x") == [b"x"]
        assert broker.of(WorkerLost) == []
    finally:
        broker.close()


# ------------------------------------------------------------------ dead workers


@pytest.mark.slow
def test_sigkilled_busy_worker_is_noticed_at_once_and_its_request_redispatched(
    bind_endpoint: str, procs: ProcSet, workers: ThreadWorkers
) -> None:
    broker = BrokerThread(bind_endpoint, SLOW_HB)
    try:
        busy = procs.worker(broker.endpoint, "job", "--delay", "30", "--heartbeat", "10")
        assert broker.wait_count(WorkerReady, 1)
        result: dict[str, object] = {}
        client = _client_thread(broker.endpoint, "job", b"payload", result)
        busy.wait_line("started")
        workers.start(broker.endpoint, "job", echo)  # the second worker, idle
        assert broker.wait_count(WorkerReady, 2)

        t_kill = time.monotonic()
        busy.signal(signal.SIGKILL)
        assert broker.wait_count(WorkerLost, 1)
        (t_lost, lost), = broker.of(WorkerLost)
        assert lost.reason == "connection lost"
        # MDP heartbeats would need 30 s (10 s x 3): only the transport explains this.
        assert t_lost - t_kill < 3.0
        client.join(20)
        assert result == {"reply": [b"payload"]}
        assert broker.wait_count(RequestRequeued, 1)
        (_, requeued), = broker.of(RequestRequeued)
        assert requeued.worker == lost.worker
        assert broker.wait_count(RequestDelivered, 1)
        (_, delivered), = broker.of(RequestDelivered)
        assert delivered.worker != lost.worker
    finally:
        broker.close()


@pytest.mark.slow
def test_sigstopped_worker_is_dropped_after_zmtp_timeout_and_request_redispatched(
    procs: ProcSet, workers: ThreadWorkers
) -> None:
    zmtp = mdp_zmq.TransportConfig(heartbeat_ivl=0.2, heartbeat_timeout=0.5, heartbeat_ttl=0.5)
    broker = BrokerThread("tcp://127.0.0.1:*", SLOW_HB, zmtp)
    try:
        frozen = procs.worker(broker.endpoint, "job", "--delay", "30", "--heartbeat", "10",
                              "--zmtp-heartbeat", "0.2", "--zmtp-timeout", "0.5")
        assert broker.wait_count(WorkerReady, 1)
        result: dict[str, object] = {}
        client = _client_thread(broker.endpoint, "job", b"payload", result)
        frozen.wait_line("started")
        workers.start(broker.endpoint, "job", echo)
        assert broker.wait_count(WorkerReady, 2)

        t_stop = time.monotonic()
        frozen.signal(signal.SIGSTOP)
        assert broker.wait_count(WorkerLost, 1)
        (t_lost, lost), = broker.of(WorkerLost)
        assert lost.reason == "connection lost"
        assert 0.3 < t_lost - t_stop < 5.0  # ZMTP timeout (0.5 s) .. well before 30 s
        client.join(20)
        assert result == {"reply": [b"payload"]}
    finally:
        broker.close()


@pytest.mark.slow
def test_broker_restart_on_same_endpoint_workers_reregister_and_client_retries(
    procs: ProcSet, workers: ThreadWorkers
) -> None:
    endpoint = free_tcp_endpoint()
    broker = procs.start(mdp_cli("broker", "--bind", endpoint))
    broker.wait_line("mdp broker listening")
    fast = WorkerConfig(reconnect_delay=0.1, reconnect_delay_max=1.0)
    w1 = workers.start(endpoint, "echo", echo, fast)
    w2 = workers.start(endpoint, "echo", echo, fast)
    config = ClientConfig(timeout=1.0, retries=10)
    with mdp_zmq.Client(endpoint, config) as client:
        assert client.request("echo", b"before") == [b"before"]
        broker.signal(signal.SIGKILL)
        broker.stop()
        broker = procs.start(mdp_cli("broker", "--bind", endpoint))
        broker.wait_line("mdp broker listening")
        # The workers saw their connection drop and re-register with the new
        # broker at once, well before MDP heartbeat silence (2.5 s x 3) would
        # have told them.
        restarted = time.monotonic()
        while not client.service_exists("echo"):
            assert time.monotonic() - restarted < 5.0
            time.sleep(0.05)
        assert client.request("echo", b"after") == [b"after"]
    assert w1.core.state.value in ("idle", "busy") and w2.core.state.value in ("idle", "busy")


@pytest.mark.slow
def test_1000_requests_4_clients_3_workers_one_killed_all_answered_exactly_once(
    procs: ProcSet,
) -> None:
    broker = BrokerThread("tcp://127.0.0.1:*", SLOW_HB)
    try:
        ws = [procs.worker(broker.endpoint, "echo", "--delay", "0.002") for _ in range(3)]
        assert broker.wait_count(WorkerReady, 3)
        per_client = 250
        answers: dict[int, list[bytes]] = {c: [] for c in range(4)}
        errors: list[BaseException] = []
        progress = threading.Semaphore(0)

        def run(c: int) -> None:
            try:
                with mdp_zmq.Client(broker.endpoint,
                                    ClientConfig(timeout=15, retries=0)) as client:
                    for n in range(per_client):
                        body = b"%d-%d" % (c, n)
                        (reply,) = client.request("echo", body)
                        answers[c].append(reply)
                        progress.release()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(c,), daemon=True) for c in range(4)]
        for t in threads:
            t.start()
        for _ in range(300):
            assert progress.acquire(timeout=20)
        ws[1].signal(signal.SIGKILL)
        for t in threads:
            t.join(60)
        assert errors == []
        for c in range(4):
            assert answers[c] == [b"%d-%d" % (c, n) for n in range(per_client)]
        assert broker.wait_count(RequestDelivered, 4 * per_client)
        assert len(broker.of(RequestDelivered)) == 4 * per_client
        assert broker.of(RequestExpired) == []
        assert broker.wait_count(WorkerLost, 1)
        print(f"re-dispatched after the kill: {len(broker.of(RequestRequeued))}")
    finally:
        broker.close()


# ------------------------------------------------------------------ the demo


@pytest.mark.slow
def test_mdp_demo_shows_the_request_redispatched_and_answered() -> None:
    done = subprocess.run(mdp_cli("demo", "--job", "1", "--kill-after", "0.3"),
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "SIGKILL" in out
    assert "noticed after" in out
    assert "re-dispatched" in out
    assert "answered by worker" in out


def test_ipc_endpoint_file_is_used(tmp_path_factory: pytest.TempPathFactory,
                                   workers: ThreadWorkers) -> None:
    path = Path(tmp_path_factory.mktemp("ipc")) / "b.sock"
    broker = BrokerThread(f"ipc://{path}")
    try:
        assert path.exists()
        workers.start(broker.endpoint, "echo", echo)
        with mdp_zmq.Client(str(path), ClientConfig(timeout=5, retries=0)) as client:
            assert client.request("echo", b"via path") == [b"via path"]
    finally:
        broker.close()


def test_short_lived_clients_on_reused_fds_are_tracked_without_leaks(
    workers: ThreadWorkers,
) -> None:
    # Each client connects, asks once and closes, so the kernel hands the
    # next one the same fd: the tracker must keep them apart and forget them.
    broker = BrokerThread("tcp://127.0.0.1:*")
    try:
        workers.start(broker.endpoint, "echo", echo)
        assert broker.wait_count(WorkerReady, 1)
        for i in range(100):
            with mdp_zmq.Client(broker.endpoint, ClientConfig(timeout=5, retries=0)) as client:
                assert client.request("echo", b"%d" % i) == [b"%d" % i]
        deadline = time.monotonic() + 10
        while len(broker.broker.tracker) != 1:  # just the worker is left
            assert time.monotonic() < deadline, len(broker.broker.tracker)
            time.sleep(0.01)
        assert broker.of(WorkerLost) == []
    finally:
        broker.close()


@pytest.mark.slow
def test_broker_restart_during_a_job_drops_the_stale_reply_and_client_retry_succeeds(
    procs: ProcSet, workers: ThreadWorkers
) -> None:
    endpoint = free_tcp_endpoint()
    broker = procs.start(mdp_cli("broker", "--bind", endpoint))
    broker.wait_line("mdp broker listening")
    started = threading.Event()
    calls: list[bytes] = []

    def slow(frames: list[bytes]) -> list[bytes]:
        calls.append(frames[0])
        started.set()
        time.sleep(1.0)
        return frames

    worker = workers.start(endpoint, "slow", slow,
                           WorkerConfig(reconnect_delay=0.1, reconnect_delay_max=1.0))
    result: dict[str, object] = {}

    def call() -> None:
        with mdp_zmq.Client(endpoint, ClientConfig(timeout=5.0, retries=2)) as client:
            result["reply"] = client.request("slow", b"job")

    client = threading.Thread(target=call, daemon=True)
    client.start()
    assert started.wait(10)
    broker.signal(signal.SIGKILL)
    broker.stop()
    broker = procs.start(mdp_cli("broker", "--bind", endpoint))
    broker.wait_line("mdp broker listening")
    client.join(20)
    assert result == {"reply": [b"job"]}
    assert calls == [b"job", b"job"]  # the first reply died with the old broker
    assert worker.handled == 1  # the stale reply was dropped, not sent


def test_worker_with_its_own_routing_id_reconnecting_starts_a_new_session() -> None:
    # Other MDP libraries may set ZMQ_ROUTING_ID. With router_handover on (an
    # opt-in: off, libzmq ignores the second connection, see
    # test_hardening_zmq.py), a reconnect while the old connection is still
    # open is handed over and the old session ends as a lost connection, so
    # the new READY is not a violation.
    broker = BrokerThread("tcp://127.0.0.1:*", transport=mdp_zmq.TransportConfig(
        router_handover=True))
    ctx = zmq.Context.instance()
    socks = []
    try:
        for _ in range(2):
            d = ctx.socket(zmq.DEALER)
            socks.append(d)
            d.setsockopt(zmq.ROUTING_ID, b"my-worker")
            d.connect(broker.endpoint)
            d.send_multipart(encode(Ready(b"svc"), Dialect.MDP02))
            assert broker.wait_count(WorkerReady, len(socks))
        assert [e.reason for _, e in broker.of(WorkerLost)] == ["connection lost"]
        assert broker.of(ProtocolError) == []
        socks[0].close(0)  # the old connection closing ends nothing more
        with mdp_zmq.Client(broker.endpoint, ClientConfig(timeout=5, retries=0)) as client:
            assert client.service_exists("svc")
        assert len(broker.of(WorkerLost)) == 1
        socks[1].close(0)
        assert broker.wait_count(WorkerLost, 2)
    finally:
        for d in socks:
            d.close(0)
        broker.close()
