"""The async driver's timers under ``trio.testing.MockClock``: minutes of protocol time in ms.

The driver reads the loop's clock for every ``now`` it gives the core and
waits with the loop's deadlines, so a virtual clock drives its timers.
The clock jumps ahead only when every task has been blocked for
``autojump_threshold`` of real time; loopback messages arrive well within
that, so only the timers' waits are skipped. The assertions hold even
when a message is delayed past a jump: they count messages that come in
order on one connection, or measure spans that start after the message
that opens them was handled.
"""

from __future__ import annotations

from collections.abc import Iterator

import anyio
import mdp_async
import pytest
import trio
import trio.testing
import zmq
from async_support import Recorder
from rfc_peers import MDPW02, W02_COMMANDS, RawWorker
from zmq_support import free_tcp_endpoint

from mdp_core import BrokerConfig, ClientConfig, FailureCause, WorkerConfig, WorkerLost, WorkerReady

pytestmark = pytest.mark.anyio
NAMES = {code: name for name, code in W02_COMMANDS.items()}


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, object]]:
    return "trio", {"clock": trio.testing.MockClock(autojump_threshold=0.05)}


@pytest.fixture
def ctx() -> Iterator[zmq.Context[zmq.Socket[bytes]]]:
    c: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    yield c
    c.destroy(linger=0)


async def recv(sock: zmq.Socket[bytes]) -> list[bytes]:
    """The next message on ``sock``, waiting in the loop (so the clock can jump)."""
    while True:
        try:
            return sock.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            if not sock.get(zmq.EVENTS) & zmq.POLLIN:  # type: ignore[operator]
                await anyio.wait_readable(sock.get(zmq.FD))  # type: ignore[arg-type]


async def test_worker_heartbeats_every_interval_through_a_long_job(
    ctx: zmq.Context[zmq.Socket[bytes]],
) -> None:
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    router.bind("tcp://127.0.0.1:*")
    endpoint = router.getsockopt_string(zmq.LAST_ENDPOINT)

    async def job(frames: list[bytes]) -> list[bytes]:
        await anyio.sleep(120.0)  # two minutes of virtual time
        return frames

    config = WorkerConfig(heartbeat_interval=5.0)
    try:
        async with mdp_async.Worker(endpoint, "job", job, config):
            peer, *ready = await recv(router)
            assert ready == [MDPW02, W02_COMMANDS["READY"], b"job"]
            router.send_multipart([peer, MDPW02, W02_COMMANDS["REQUEST"], b"c", b"", b"x"])
            heard: list[str] = []
            while True:
                _, _, cmd, *rest = await recv(router)
                heard.append(NAMES[cmd])
                if heard[-1] == "FINAL":
                    break
        assert rest == [b"c", b"", b"x"]
        # One HEARTBEAT per 5 s interval of the 120 s job (24; they all come
        # before the FINAL, whatever the delivery delays), nothing else.
        assert set(heard[:-1]) == {"HEARTBEAT"} and len(heard) - 1 >= 20
    finally:
        router.close(0)


async def test_broker_expires_a_silent_worker_after_its_liveness_window(
    ctx: zmq.Context[zmq.Socket[bytes]],
) -> None:
    rec = Recorder()
    config = BrokerConfig(heartbeat_interval=10.0, heartbeat_liveness=3)
    async with mdp_async.Broker("tcp://127.0.0.1:*", config, on_event=rec) as broker:
        raw = RawWorker(ctx, broker.endpoint, b"svc", "0.2")
        raw.open()  # READY, then silence
        try:
            await rec.wait_count(WorkerReady, 1)
            t_ready = anyio.current_time()
            await rec.wait_count(WorkerLost, 1, timeout=1000.0)
            silent = anyio.current_time() - t_ready
        finally:
            raw.close()
    (lost,) = rec.of(WorkerLost)
    assert lost.reason.startswith("heartbeat expired")
    assert 30.0 <= silent <= 45.0  # 3 x 10 s, then the next heartbeat turn at the latest


async def test_client_gives_up_after_its_attempts_in_virtual_time() -> None:
    config = ClientConfig(timeout=100.0, retries=2)
    async with mdp_async.Client(free_tcp_endpoint(), config) as client:
        t0 = anyio.current_time()
        with pytest.raises(mdp_async.RequestTimeout) as info:
            await client.request("echo", b"x")
        elapsed = anyio.current_time() - t0
    # Nothing listens there: no handshake ever, so no diagnosis either.
    assert info.value.reason == "no reply after 3 attempts: no broker reachable"
    assert info.value.cause is FailureCause.UNREACHABLE
    assert elapsed == pytest.approx(300.0, abs=1.0)
