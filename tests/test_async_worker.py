"""What only a worker that runs its job concurrently can do (mdp_async), on trio and asyncio.

* Its HEARTBEATs flow during a long job, so a strict RFC broker (one that
  expires any worker silent for its liveness window, busy or not: RFC 7/18
  "MUST send heartbeats at regular and agreed-upon intervals") keeps it;
  the blocking worker, silent while it works, is expired by the same broker.
* A hung async handler is ended by our broker's ``processing_timeout``
  (DISCONNECT): the job's task is cancelled and the worker registers again.
* A broker killed during a job cancels the job's task; the worker
  registers with the broker that comes back.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator

import anyio
import anyio.to_thread
import mdp_async
import mdp_zmq
import pytest
from async_support import Recorder, serving
from rfc_peers import StrictBroker
from zmq_support import ProcSet, ThreadWorkers, free_tcp_endpoint, mdp_cli

from mdp_core import (
    BrokerConfig,
    ClientConfig,
    RequestExpired,
    WorkerConfig,
    WorkerLost,
    WorkerReady,
)

WINDOW = 1.0  # the strict broker's liveness window, s
HEARTBEAT = WorkerConfig(heartbeat_interval=0.25, heartbeat_liveness=4)  # the same 1 s window


@pytest.fixture
def strict() -> Iterator[StrictBroker]:
    b = StrictBroker(WINDOW, HEARTBEAT.heartbeat_interval)
    yield b
    b.close()


@pytest.mark.slow
@pytest.mark.anyio
async def test_a_5_second_job_keeps_its_session_at_a_strict_broker_because_heartbeats_flow(
    strict: StrictBroker,
) -> None:
    async def long_job(frames: list[bytes]) -> list[bytes]:
        await anyio.sleep(5.0)
        return [b"done", *frames]

    async with mdp_async.Worker(strict.endpoint, "job", long_job, HEARTBEAT):
        heard, expired, final = await anyio.to_thread.run_sync(strict.job, b"x", 20.0)
    assert not expired
    assert final == [b"client-1", b"", b"done", b"x"]
    assert heard.count("HEARTBEAT") >= 5 * 2  # every 0.25 s, so about 20


@pytest.mark.slow
def test_the_blocking_worker_is_silent_during_a_job_and_the_strict_broker_expires_it(
    strict: StrictBroker, workers: ThreadWorkers,
) -> None:
    # The control: the same broker and window, a shorter job, the blocking driver.
    def long_job(frames: list[bytes]) -> list[bytes]:
        time.sleep(2.0)
        return frames

    workers.start(strict.endpoint, "job", long_job, HEARTBEAT)
    heard, expired, _ = strict.job(b"x", 20.0)
    assert expired and "HEARTBEAT" not in heard


@pytest.mark.anyio
async def test_a_hung_handler_is_ended_by_the_brokers_processing_timeout() -> None:
    cancelled = anyio.Event()
    started = 0

    async def hang(frames: list[bytes]) -> list[bytes]:
        nonlocal started
        started += 1
        try:
            await anyio.sleep_forever()
        finally:
            cancelled.set()
        raise AssertionError("unreachable")

    rec = Recorder()
    config = BrokerConfig(processing_timeout=0.3, max_attempts=1)
    broker = mdp_async.Broker("tcp://127.0.0.1:*", config, on_event=rec)
    fast = WorkerConfig(reconnect_delay=0.05)
    async with serving(broker, mdp_async.Worker(broker.endpoint, "hang", hang, fast)), \
            mdp_async.Client(broker.endpoint, ClientConfig(timeout=5.0, retries=0)) as client:
        await rec.wait_count(WorkerReady, 1)
        async with anyio.create_task_group() as tg:
            tg.start_soon(client.request, "hang", b"x")  # expires, unanswered
            await rec.wait_count(RequestExpired, 1)
            with anyio.fail_after(10):
                await cancelled.wait()  # the broker's DISCONNECT cancelled the job
            await rec.wait_count(WorkerReady, 2)  # and the worker is back
            tg.cancel_scope.cancel()
    assert rec.of(WorkerLost)[0].reason.startswith("processing timeout")
    assert started == 1


@pytest.mark.slow
@pytest.mark.anyio
async def test_a_broker_killed_during_a_job_cancels_the_job_and_the_worker_comes_back(
    procs: ProcSet,
) -> None:
    endpoint = free_tcp_endpoint()
    broker = procs.start(mdp_cli("broker", "--bind", endpoint))
    broker.wait_line("mdp broker listening")
    started, cancelled = threading.Event(), anyio.Event()

    async def long_job(frames: list[bytes]) -> list[bytes]:
        started.set()
        try:
            await anyio.sleep(60)
        finally:
            cancelled.set()
        return frames

    fast = WorkerConfig(reconnect_delay=0.05, reconnect_delay_max=0.5)
    async with mdp_async.Worker(endpoint, "job", long_job, fast):
        def call() -> None:
            # Its broker dies: a connection lost, and no broker to resend to.
            with mdp_zmq.Client(endpoint, ClientConfig(timeout=30, retries=0)) as client, \
                    contextlib.suppress(mdp_zmq.RequestTimeout):
                client.request("job", b"x")

        caller = threading.Thread(target=call, daemon=True)
        caller.start()
        assert await anyio.to_thread.run_sync(started.wait, 10)
        broker.signal(signal.SIGKILL)
        with anyio.fail_after(10):
            await cancelled.wait()  # the monitor saw the connection drop
        broker.stop()
        broker = procs.start(mdp_cli("broker", "--bind", endpoint))
        broker.wait_line("mdp broker listening")
        async with mdp_async.Client(endpoint, ClientConfig(timeout=1.0, retries=0)) as client:
            with anyio.fail_after(10):
                while not await client.service_exists("job"):
                    await anyio.sleep(0.05)
        caller.join(10)
