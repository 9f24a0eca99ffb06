"""mdp_async in one event loop, on trio and on asyncio: loopback sockets, bounded waits.

Broker, workers and clients of the async driver run as tasks of the test's
own loop (``@pytest.mark.anyio`` runs each test on both backends). Raw RFC
peers (tests/rfc_peers.py) stand in where a test must see the wire; their
blocking calls run in a worker thread so the loop keeps serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import anyio.to_thread
import mdp_async
import pytest
import zmq
from async_support import Recorder, rebind, serving
from mdp_async import Broker, Client, Worker
from rfc_peers import RawWorker
from zmq_support import free_tcp_endpoint

from mdp_core import (
    BrokerConfig,
    ClientConfig,
    Dialect,
    RequestAbandoned,
    RequestDelivered,
    RequestRequeued,
    WorkerConfig,
    WorkerLost,
    WorkerReady,
)

pytestmark = pytest.mark.anyio

ONE_SHOT = ClientConfig(timeout=5.0, retries=0)


async def echo(frames: list[bytes]) -> list[bytes]:
    return frames


# ------------------------------------------------------------------ round trips


@pytest.mark.parametrize("worker_version", [Dialect.MDP01, Dialect.MDP02])
@pytest.mark.parametrize("client_version", [Dialect.MDP01, Dialect.MDP02])
async def test_echo_between_any_client_and_worker_version(
    client_version: Dialect, worker_version: Dialect
) -> None:
    rec = Recorder()
    broker = Broker("tcp://127.0.0.1:*", on_event=rec)
    async with serving(broker, Worker(broker.endpoint, "echo", echo, version=worker_version)):
        await rec.wait_count(WorkerReady, 1)
        async with Client(broker.endpoint, ONE_SHOT, client_version) as client:
            for i in range(3):
                assert await client.request("echo", b"hello", b"%d" % i) == [b"hello", b"%d" % i]


async def test_async_generator_handler_streams_partials_and_its_last_item_is_the_final() -> None:
    async def count(frames: list[bytes]) -> AsyncIterator[bytes]:
        for i in range(3):
            await anyio.sleep(0)
            yield b"part %d" % i
        yield b"done " + frames[0]

    broker = Broker("tcp://127.0.0.1:*")
    async with serving(broker, Worker(broker.endpoint, "count", count)), \
            Client(broker.endpoint, ONE_SHOT) as client:
        got = [body async for body in client.stream("count", b"x")]
        assert got == [[b"part 0"], [b"part 1"], [b"part 2"], [b"done x"]]
        assert await client.request("count", b"y") == [b"done y"]  # PARTIALs skipped


async def test_plain_functions_run_in_a_thread_when_asked_generators_included() -> None:
    import threading

    loop_thread = threading.get_ident()
    seen: list[bool] = []

    def upper(frames: list[bytes]) -> list[bytes]:
        seen.append(threading.get_ident() != loop_thread)
        return [f.upper() for f in frames]

    def progress(frames: list[bytes]) -> Iterator[bytes]:
        seen.append(threading.get_ident() != loop_thread)
        yield b"half"
        return b"all " + frames[0]  # type: ignore[return-value]

    broker = Broker("tcp://127.0.0.1:*")
    async with serving(broker, Worker(broker.endpoint, "upper", upper, threaded=True),
                       Worker(broker.endpoint, "progress", progress, threaded=True)), \
            Client(broker.endpoint, ONE_SHOT) as client:
        assert await client.request("upper", b"abc", b"d") == [b"ABC", b"D"]
        assert [b async for b in client.stream("progress", b"x")] == [[b"half"], [b"all x"]]
    assert seen == [True, True]


async def test_a_plain_function_without_threaded_runs_in_the_loop() -> None:
    broker = Broker("tcp://127.0.0.1:*")
    async with serving(broker, Worker(broker.endpoint, "echo", lambda f: [b"sync", *f])), \
            Client(broker.endpoint, ONE_SHOT) as client:
        assert await client.request("echo", b"x") == [b"sync", b"x"]


async def test_mmi_service_exists_and_services() -> None:
    rec = Recorder()
    broker = Broker("tcp://127.0.0.1:*", on_event=rec)
    async with serving(broker, Worker(broker.endpoint, "echo", echo)), \
            Client(broker.endpoint, ONE_SHOT) as client:
        await rec.wait_count(WorkerReady, 1)
        assert await client.service_exists("echo") is True
        assert await client.service_exists("nobody") is False
        assert await client.request("mmi.services", b"") == [b"echo"]


async def test_request_to_an_absent_broker_raises_request_timeout() -> None:
    async with Client(free_tcp_endpoint(), ClientConfig(timeout=0.2, retries=1)) as client:
        with pytest.raises(mdp_async.RequestTimeout) as info:
            await client.request("echo", b"x")
    assert "2 attempts" in info.value.reason


# ------------------------------------------------------------------ handlers that fail


@pytest.mark.parametrize("failure", ["raises", "int", "empty", "nothing-yielded"])
async def test_failing_handler_is_logged_once_abandoned_and_the_retry_answered(
    failure: str, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[bytes] = []

    async def bad(frames: list[bytes]) -> Any:
        calls.append(frames[0])
        if len(calls) > 1:
            return frames
        if failure == "raises":
            raise RuntimeError("boom (expected by the test)")
        return {"int": 42, "empty": []}.get(failure)

    async def bad_stream(frames: list[bytes]) -> AsyncIterator[bytes]:
        calls.append(frames[0])
        if len(calls) > 1:
            yield frames[0]

    rec = Recorder()
    broker = Broker("tcp://127.0.0.1:*", on_event=rec)
    handler = bad_stream if failure == "nothing-yielded" else bad
    with caplog.at_level(logging.ERROR, "mdp_async.worker"):
        async with serving(broker, Worker(broker.endpoint, "flaky", handler)), \
                Client(broker.endpoint, ONE_SHOT) as client:
            assert await client.request("flaky", b"x") == [b"x"]
    assert calls == [b"x", b"x"]  # abandoned, re-dispatched to the same worker, answered
    assert [e.attempt for e in rec.of(RequestRequeued)] == [1]
    assert len([r for r in caplog.records if "request abandoned" in r.message]) == 1


async def test_a_partial_on_mdp01_abandons_the_request() -> None:
    async def stream(frames: list[bytes]) -> AsyncIterator[bytes]:
        yield b"partial"
        yield b"final"

    rec = Recorder()
    broker = Broker("tcp://127.0.0.1:*", BrokerConfig(max_attempts=2), on_event=rec)
    async with serving(broker, Worker(broker.endpoint, "s", stream, version=Dialect.MDP01)), \
            Client(broker.endpoint, ClientConfig(timeout=0.5, retries=0)) as client:
        with pytest.raises(mdp_async.RequestTimeout):
            await client.request("s", b"x")
        await rec.wait_count(RequestRequeued, 1)


# ------------------------------------------------------------------ concurrency


async def test_concurrency_n_handles_n_requests_at_once_on_n_sockets() -> None:
    running = 0
    peak = 0
    all_in = anyio.Event()

    async def slow(frames: list[bytes]) -> list[bytes]:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        if running == 3:
            all_in.set()
        with anyio.fail_after(10):
            await all_in.wait()  # only returns once three jobs run together
        running -= 1
        return frames

    rec = Recorder()
    broker = Broker("tcp://127.0.0.1:*", on_event=rec)
    async with serving(broker, Worker(broker.endpoint, "slow", slow, concurrency=3)), \
            Client(broker.endpoint, ONE_SHOT, pool_size=3) as client:
        await rec.wait_count(WorkerReady, 3)
        results: dict[int, list[bytes]] = {}

        async def call(i: int) -> None:
            results[i] = await client.request("slow", b"%d" % i)

        async with anyio.create_task_group() as tg:
            for i in range(3):
                tg.start_soon(call, i)
    assert results == {i: [b"%d" % i] for i in range(3)}
    assert peak == 3
    assert len({e.worker for e in rec.of(RequestDelivered)}) == 3


async def test_many_concurrent_requests_share_a_bounded_pool_of_sockets() -> None:
    broker = Broker("tcp://127.0.0.1:*")
    async with serving(broker, Worker(broker.endpoint, "echo", echo, concurrency=2)), \
            Client(broker.endpoint, ONE_SHOT, pool_size=4) as client:
        answers: dict[int, list[bytes]] = {}

        async def call(i: int) -> None:
            answers[i] = await client.request("echo", b"%d" % i)

        async with anyio.create_task_group() as tg:
            for i in range(40):
                tg.start_soon(call, i)
        assert answers == {i: [b"%d" % i] for i in range(40)}
        assert len(client._pairs) == 4  # never more sockets than the pool allows


async def test_a_cancelled_request_leaves_nothing_a_later_request_could_read() -> None:
    release = anyio.Event()

    async def gated(frames: list[bytes]) -> list[bytes]:
        if frames[0] == b"first":
            await release.wait()
        return frames

    rec = Recorder()
    broker = Broker("tcp://127.0.0.1:*", on_event=rec)
    async with serving(broker, Worker(broker.endpoint, "gated", gated, concurrency=2)), \
            Client(broker.endpoint, ONE_SHOT, pool_size=1) as client:
        await rec.wait_count(WorkerReady, 2)
        with anyio.move_on_after(0.5):
            await client.request("gated", b"first")
            pytest.fail("the first request cannot be answered before it is cancelled")
        # The client closed that socket: the broker drops the request's reply.
        await rec.wait_count(RequestAbandoned, 1)
        release.set()
        assert await client.request("gated", b"second") == [b"second"]
        assert await client.request("gated", b"third") == [b"third"]


async def test_leaving_a_stream_early_cancels_the_request() -> None:
    async def endless(frames: list[bytes]) -> AsyncIterator[bytes]:
        i = 0
        while True:
            yield b"%d" % i
            i += 1
            await anyio.sleep(0.01)

    broker = Broker("tcp://127.0.0.1:*")
    async with serving(broker, Worker(broker.endpoint, "endless", endless),
                       Worker(broker.endpoint, "echo", echo)), \
            Client(broker.endpoint, ONE_SHOT, pool_size=1) as client:
        async with contextlib.aclosing(client.stream("endless", b"x")) as parts:
            async for body in parts:
                assert body == [b"0"]
                break
        assert await client.request("echo", b"next") == [b"next"]


# ------------------------------------------------------------------ lifecycle


async def test_broker_shutdown_sends_disconnect_to_its_workers() -> None:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    rec = Recorder()
    broker = Broker("tcp://127.0.0.1:*", on_event=rec)
    raw = RawWorker(ctx, broker.endpoint, b"svc", "0.2")
    try:
        async with broker:
            raw.open()
            await rec.wait_count(WorkerReady, 1)
        await anyio.to_thread.run_sync(raw.expect_disconnect, 5.0)
        assert [e.reason for e in rec.of(WorkerLost)] == ["broker closed"]
    finally:
        raw.close()
        ctx.destroy(linger=0)


async def test_worker_sends_disconnect_when_its_serve_is_cancelled() -> None:
    rec = Recorder()
    broker = Broker("tcp://127.0.0.1:*", on_event=rec)
    async with broker:
        async with Worker(broker.endpoint, "echo", echo):
            await rec.wait_count(WorkerReady, 1)
        await rec.wait_count(WorkerLost, 1)
    assert rec.of(WorkerLost)[0].reason == "worker sent DISCONNECT"


async def test_worker_reregisters_with_a_new_broker_on_the_same_endpoint() -> None:
    endpoint = free_tcp_endpoint()
    fast = WorkerConfig(reconnect_delay=0.05, reconnect_delay_max=0.5)
    async with Worker(endpoint, "echo", echo, fast):
        for _ in range(2):  # the first broker's DISCONNECT ends the first conversation
            rec = Recorder()
            async with await rebind(endpoint, on_event=rec):
                await rec.wait_count(WorkerReady, 1)
                async with Client(endpoint, ONE_SHOT) as client:
                    assert await client.request("echo", b"x") == [b"x"]


async def test_misuse_raises_at_once() -> None:
    broker = Broker("tcp://127.0.0.1:*")
    async with broker:
        with pytest.raises(RuntimeError, match="already served"):
            await broker.serve()
    with pytest.raises(ValueError, match="concurrency"):
        Worker(broker.endpoint, "echo", echo, concurrency=0)
    with pytest.raises(ValueError, match="pool_size"):
        Client(broker.endpoint, pool_size=0)
    client = Client(broker.endpoint)
    with pytest.raises(RuntimeError, match="async with"):
        await client.request("echo", b"x")


# ------------------------------------------------------------------ how apps and the CLI run it
# (not async tests: each runs its own loop, as an application would)

SERVE_UNTIL_CTRL_C = """
import sys, anyio, mdp_async
broker = mdp_async.Broker("tcp://127.0.0.1:*")
print(broker.endpoint, flush=True)
try:
    anyio.run(broker.serve, backend=sys.argv[1])
except KeyboardInterrupt:  # a plain one, not inside an exception group
    sys.exit(130)
"""


@pytest.mark.parametrize("backend", ["trio", "asyncio"])
def test_ctrl_c_stops_anyio_run_of_serve_cleanly_with_a_plain_keyboard_interrupt(
    backend: str,
) -> None:
    proc = subprocess.Popen([sys.executable, "-c", SERVE_UNTIL_CTRL_C, backend],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        assert proc.stdout is not None
        raw = RawWorker(ctx, proc.stdout.readline().strip(), b"svc", "0.2")
        raw.open()
        raw.send("HEARTBEAT")
        time.sleep(0.3)  # the broker registers it (nothing to observe from outside)
        proc.send_signal(signal.SIGINT)
        raw.expect_disconnect(10.0)  # workers still get DISCONNECT
        _, err = proc.communicate(timeout=10)
        if backend == "asyncio" and sys.version_info < (3, 11):
            # anyio.run's asyncio runner on 3.10 (no Task.uncancel there) ends
            # any Ctrl-C with CancelledError; the clean shutdown happened.
            assert err.rstrip().endswith("CancelledError"), err
        else:
            assert proc.returncode == 130, err
        raw.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        ctx.destroy(linger=0)


def test_it_runs_under_plain_asyncio_run_without_anyio_run() -> None:
    async def main() -> list[bytes]:
        rec = Recorder()
        async with Broker("tcp://127.0.0.1:*", on_event=rec) as broker, \
                Worker(broker.endpoint, "echo", echo), Client(broker.endpoint, ONE_SHOT) as c:
            return await c.request("echo", b"plain asyncio")

    assert asyncio.run(main()) == [b"plain asyncio"]


async def test_a_drop_seen_while_idle_does_not_cost_the_next_request_an_attempt() -> None:
    # The broker restarts between two requests: the client's socket saw its
    # connection drop while nothing was outstanding, then reconnected. The
    # next request, sent after that, was never lost with a connection.
    endpoint = free_tcp_endpoint()
    async with Client(endpoint, ClientConfig(timeout=5.0, retries=0), pool_size=1) as client:
        for n in range(2):
            rec = Recorder()
            async with await rebind(endpoint, on_event=rec) as broker, \
                    Worker(broker.endpoint, "echo", echo):
                await rec.wait_count(WorkerReady, 1)
                assert await client.request("echo", b"%d" % n) == [b"%d" % n]
            with anyio.fail_after(10):  # the client's monitor has seen the drop
                while not ((engine := client._pairs[0].engine) and engine.dropped):
                    await anyio.sleep(0.01)
