"""Interoperability with majortomo 0.2.0 (pinned in the test extra), over loopback.

* majortomo's ``Client`` and ``Worker`` against our broker (mdp_zmq.Broker in
  a thread): request/reply, PARTIAL streaming, MMI, heartbeats, a majortomo
  worker SIGKILLed mid-job whose request goes to a second majortomo worker,
  and mixes with our own and RFC 7 peers.
* our ``mdp_zmq.Worker``/``Client`` with ``Dialect.MAJORTOMO`` against
  majortomo's own broker (``python -m majortomo.broker`` in a subprocess).

majortomo workers and the majortomo broker run as subprocesses that the
fixtures kill (by pid) at teardown; majortomo clients run in the test on a
private zmq context.

What majortomo 0.2.0 itself does differently (read from its source and shown
by the tests marked below); we test around it and do not copy it:

* Its broker never notices a busy worker that died: busy workers are only
  purged after ``busy_worker_timeout`` (900 s by default), their
  HEARTBEATs are ignored while busy, and even then the request is dropped,
  never re-dispatched; the client waits until its own timeout
  (test_majortomo_broker_never_redispatches_a_dead_busy_workers_request).
  A Lazy Pirate client (ours) recovers by resending.
* Its broker has no MMI: ``mmi.*`` requests are queued like any other
  service and never answered (test_majortomo_broker_has_no_mmi_service_exists_times_out).
  It never expires queued requests for services that have no worker.
* Its broker heartbeats idle workers only, and only every turn of a receive
  loop that wakes every ``heartbeat_interval``, so HEARTBEATs can come up to
  two intervals apart; its worker computes its poll timeout as
  ``elapsed + interval`` (not ``interval - elapsed``), so its own HEARTBEATs
  can also be two intervals apart (nearly three against a silent broker).
  Give peers a liveness of at least 3 intervals (our default is 3).
* A worker busy past ``busy_worker_timeout`` gets DISCONNECT and is
  forgotten, but its late FINAL is still passed to the client, after which
  the broker logs "Message handling failed" (a StateError)
  (test_our_busy_worker_purged_by_majortomo_busy_timeout_reregisters).
* Its broker sends no DISCONNECT to its workers when it shuts down (from
  its source).
* Its worker, on DISCONNECT, stops (``WorkerRequestsIterator`` ends,
  ``wait_for_request`` raises ``Disconnected``) instead of reconnecting on a
  new socket as RFC 7/18 require; the application must restart it
  (test_majortomo_worker_hung_past_processing_timeout_is_disconnected_and_request_redispatched).
* The majortomo dialect itself (an empty frame before ``MDPC02``/``MDPW02``,
  client commands REQUEST 0x02 / PARTIAL 0x03 / FINAL 0x04 with no service
  frame in replies) is not RFC 18; our broker recognises it per message and
  answers each peer in its own dialect.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import mdp_zmq
import pytest
import zmq
from majortomo import Client as MtClient
from rfc_peers import Rfc7Client
from zmq_support import BrokerThread, ThreadWorkers

from mdp_core import (
    BrokerConfig,
    ClientConfig,
    Dialect,
    RequestDelivered,
    RequestRequeued,
    WorkerConfig,
    WorkerLost,
    WorkerReady,
)

# A majortomo worker (its high-level WorkerRequestsIterator): replies
# [name, *request] after ``delay`` seconds, after ``partials`` PARTIALs
# [b"part<i>"]; prints "ready", "busy", "done", and "stopped" when the
# iterator ends (majortomo ends it on DISCONNECT).
MT_WORKER = r"""
import sys, time
from majortomo import Worker, WorkerRequestsIterator
url, service, name, delay, partials, hb, hb_timeout = sys.argv[1:]
w = Worker(url, service, heartbeat_interval=float(hb), heartbeat_timeout=float(hb_timeout))
w.connect()
print("ready", flush=True)
requests = WorkerRequestsIterator(w)
for body in requests:
    print("busy", flush=True)
    time.sleep(float(delay))
    for i in range(int(partials)):
        requests.send_reply_partial([b"part%d" % i])
    requests.send_reply_final([name.encode()] + body)
    print("done", flush=True)
print("stopped", flush=True)
"""


class Proc:
    """A subprocess this test started; stdout and stderr lines are kept."""

    def __init__(self, argv: list[str]) -> None:
        self.popen = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL)
        self.lines: list[str] = []
        self._new: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for raw in self.popen.stdout:
            line = raw.decode(errors="replace").rstrip()
            self.lines.append(line)
            self._new.put(line)

    def wait_line(self, text: str, timeout: float = 10.0) -> str:
        """The next line containing ``text``; raises TimeoutError (with the output)."""
        end = time.monotonic() + timeout
        while (left := end - time.monotonic()) > 0:
            try:
                line = self._new.get(timeout=left)
            except queue.Empty:
                break
            if text in line:
                return line
        raise TimeoutError(f"no line with {text!r}; output so far: {self.lines!r}")

    def count(self, text: str) -> int:
        return sum(text in line for line in list(self.lines))

    def wait_count(self, text: str, n: int, timeout: float = 10.0) -> None:
        """Wait until ``n`` lines contain ``text`` (does not consume lines)."""
        end = time.monotonic() + timeout
        while self.count(text) < n:
            if time.monotonic() > end:
                raise TimeoutError(f"fewer than {n} lines with {text!r}: {self.lines!r}")
            time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL this process (only while it is alive, so the pid is still ours)."""
        if self.popen.poll() is None:
            os.kill(self.popen.pid, signal.SIGKILL)
        self.popen.wait(10)

    def stop(self) -> None:
        self.kill()
        self._reader.join(5)
        assert self.popen.stdout is not None
        self.popen.stdout.close()


class Procs:
    def __init__(self) -> None:
        self.procs: list[Proc] = []

    def start(self, argv: list[str]) -> Proc:
        p = Proc(argv)
        self.procs.append(p)
        return p

    def mt_worker(self, url: str, service: str, name: str, *, delay: float = 0.0,
                  partials: int = 0, hb: float = 1.0, hb_timeout: float = 30.0) -> Proc:
        p = self.start([sys.executable, "-c", MT_WORKER, url, service, name, str(delay),
                        str(partials), str(hb), str(hb_timeout)])
        p.wait_line("ready")
        return p

    def mt_broker(self, url: str, *args: str) -> Proc:
        p = self.start([sys.executable, "-m", "majortomo.broker", "-b", url, *args])
        p.wait_line("Broker listening on")
        return p

    def stop_all(self) -> None:
        for p in self.procs:
            p.stop()


@pytest.fixture
def procs() -> Iterator[Procs]:
    ps = Procs()
    yield ps
    ps.stop_all()


@pytest.fixture
def ctx() -> Iterator[zmq.Context[zmq.Socket[bytes]]]:
    c: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    yield c
    c.destroy(linger=0)


@pytest.fixture
def mt_client(ctx: zmq.Context[zmq.Socket[bytes]]) -> Iterator[list[MtClient]]:
    """A list to put majortomo clients in; each is closed at teardown."""
    clients: list[MtClient] = []
    yield clients
    for c in clients:
        c.close()


def connect_mt_client(clients: list[MtClient], ctx: zmq.Context[zmq.Socket[bytes]], url: str
                      ) -> MtClient:
    c = MtClient(url, zmq_context=ctx)
    c.connect()
    clients.append(c)
    return c


@pytest.fixture
def broker_config() -> BrokerConfig:
    return BrokerConfig()


@pytest.fixture
def broker(broker_config: BrokerConfig) -> Iterator[BrokerThread]:
    b = BrokerThread("tcp://127.0.0.1:*", broker_config)
    yield b
    b.close()


@pytest.fixture
def ipc_url() -> Iterator[str]:
    """A short ipc:// path (sun_path is ~107 bytes; pytest's tmp_path can be longer)."""
    with tempfile.TemporaryDirectory(prefix="mdp-mt-") as d:
        yield f"ipc://{Path(d) / 'broker.sock'}"


def ready_count(broker: BrokerThread, service: bytes) -> int:
    return sum(e.service == service for _, e in broker.of(WorkerReady))


def wait_ready(broker: BrokerThread, service: bytes, n: int = 1) -> None:
    assert broker.wait(lambda: sum(isinstance(e, WorkerReady) and e.service == service
                                   for _, e in broker.events) >= n), broker.events


def echo(frames: list[bytes]) -> list[bytes]:
    return [b"ours", *frames]


def stream_two(frames: list[bytes]) -> Iterator[bytes]:
    yield b"part0"
    yield b"part1"
    return [b"ours", *frames]  # type: ignore[return-value]


# ================================================================= our broker


def test_majortomo_client_and_worker_exchange_request_and_reply_through_our_broker(
    broker: BrokerThread, procs: Procs, ctx: zmq.Context[zmq.Socket[bytes]],
    mt_client: list[MtClient],
) -> None:
    procs.mt_worker(broker.endpoint, "echo", "mt1")
    wait_ready(broker, b"echo")
    client = connect_mt_client(mt_client, ctx, broker.endpoint)
    for i in range(3):
        client.send(b"echo", b"hello", b"%d" % i)
        assert list(client.recv_all(timeout=5)) == [[b"mt1", b"hello", b"%d" % i]]
    # our MMI answers a majortomo client in its own dialect
    client.send(b"mmi.service", b"echo")
    assert client.recv_all_as_list(timeout=5) == [b"200"]
    client.send(b"mmi.service", b"nobody")
    assert client.recv_all_as_list(timeout=5) == [b"404"]
    # The broker thread records an event after its send: the last reply can
    # reach the client first.
    assert broker.wait_count(RequestDelivered, 5)
    assert len(broker.of(RequestDelivered)) == 5


def test_majortomo_client_streams_majortomo_worker_partials_through_our_broker(
    broker: BrokerThread, procs: Procs, ctx: zmq.Context[zmq.Socket[bytes]],
    mt_client: list[MtClient],
) -> None:
    procs.mt_worker(broker.endpoint, "stream", "mt1", partials=3)
    wait_ready(broker, b"stream")
    client = connect_mt_client(mt_client, ctx, broker.endpoint)
    client.send(b"stream", b"go")
    assert list(client.recv_all(timeout=5)) == [[b"part0"], [b"part1"], [b"part2"],
                                                [b"mt1", b"go"]]


@pytest.mark.parametrize("broker_config", [BrokerConfig(heartbeat_interval=10.0)])
def test_majortomo_worker_killed_mid_job_has_its_request_redispatched_to_another(
    broker: BrokerThread, procs: Procs, ctx: zmq.Context[zmq.Socket[bytes]],
    mt_client: list[MtClient],
) -> None:
    # MDP heartbeats every 10 s (expiry 30 s): only the dropped connection
    # can explain a re-dispatch within the client's 10 s.
    slow = procs.mt_worker(broker.endpoint, "job", "slow", delay=60)
    wait_ready(broker, b"job")
    client = connect_mt_client(mt_client, ctx, broker.endpoint)
    client.send(b"job", b"work")
    slow.wait_line("busy")
    fast = procs.mt_worker(broker.endpoint, "job", "fast")
    wait_ready(broker, b"job", 2)
    slow.kill()
    assert list(client.recv_all(timeout=10)) == [[b"fast", b"work"]]
    assert broker.wait_count(RequestRequeued, 1) and broker.wait_count(WorkerLost, 1)
    (_, requeued), = broker.of(RequestRequeued)
    (_, lost), = broker.of(WorkerLost)
    assert requeued.worker == lost.worker
    assert "connection lost" in lost.reason
    assert fast.count("busy") == 1


@pytest.mark.parametrize("broker_config",
                         [BrokerConfig(heartbeat_interval=10.0, processing_timeout=0.5)])
def test_majortomo_worker_hung_past_processing_timeout_is_disconnected_and_request_redispatched(
    broker: BrokerThread, procs: Procs, ctx: zmq.Context[zmq.Socket[bytes]],
    mt_client: list[MtClient],
) -> None:
    slow = procs.mt_worker(broker.endpoint, "job", "slow", delay=1.5)
    wait_ready(broker, b"job")
    client = connect_mt_client(mt_client, ctx, broker.endpoint)
    client.send(b"job", b"work")
    slow.wait_line("busy")
    procs.mt_worker(broker.endpoint, "job", "fast")
    assert list(client.recv_all(timeout=10)) == [[b"fast", b"work"]]
    assert broker.wait_count(WorkerLost, 1)
    (_, lost), = broker.of(WorkerLost)
    assert "processing timeout" in lost.reason
    # majortomo misbehaviour (documented): on DISCONNECT its worker stops
    # serving instead of reconnecting on a new socket as RFC 7/18 require.
    slow.wait_line("stopped")
    wait_ready(broker, b"job", 2)
    assert ready_count(broker, b"job") == 2


@pytest.mark.parametrize("broker_config",
                         [BrokerConfig(heartbeat_interval=0.2, heartbeat_liveness=5)])
def test_majortomo_worker_and_our_broker_keep_each_other_alive_with_heartbeats(
    broker: BrokerThread, procs: Procs, ctx: zmq.Context[zmq.Socket[bytes]],
    mt_client: list[MtClient],
) -> None:
    # majortomo reconnects (a new READY, a new routing id) after 0.8 s without
    # a word from us; we expire it after 1 s of silence. Idle for 2 s: neither.
    worker = procs.mt_worker(broker.endpoint, "echo", "mt1", hb=0.2, hb_timeout=0.8)
    wait_ready(broker, b"echo")
    time.sleep(2.0)
    assert broker.of(WorkerLost) == []
    assert ready_count(broker, b"echo") == 1
    client = connect_mt_client(mt_client, ctx, broker.endpoint)
    client.send(b"echo", b"x")
    assert client.recv_all_as_list(timeout=5) == [b"mt1", b"x"]
    assert worker.popen.poll() is None


@pytest.mark.parametrize("version", [Dialect.MDP01, Dialect.MDP02, Dialect.MAJORTOMO])
def test_our_client_gets_majortomo_worker_partials_through_our_broker(
    broker: BrokerThread, procs: Procs, version: Dialect
) -> None:
    procs.mt_worker(broker.endpoint, "stream", "mt1", partials=2)
    wait_ready(broker, b"stream")
    with mdp_zmq.Client(broker.endpoint, ClientConfig(timeout=5, retries=0), version) as c:
        got = list(c.stream("stream", b"go"))
    if version is Dialect.MDP01:  # MDP/0.1 has no PARTIAL: the broker gathers them
        assert got == [[b"part0", b"part1", b"mt1", b"go"]]
    else:
        assert got == [[b"part0"], [b"part1"], [b"mt1", b"go"]]


def test_rfc7_req_client_gets_majortomo_worker_reply_through_our_broker(
    broker: BrokerThread, procs: Procs, ctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    procs.mt_worker(broker.endpoint, "stream", "mt1", partials=1)
    wait_ready(broker, b"stream")
    client = Rfc7Client(ctx, broker.endpoint)
    try:
        assert client.request(b"stream", b"go") == [b"part0", b"mt1", b"go"]
    finally:
        client.close()


@pytest.mark.parametrize("version", [Dialect.MDP01, Dialect.MDP02, Dialect.MAJORTOMO])
def test_majortomo_client_gets_our_worker_reply_through_our_broker(
    broker: BrokerThread, workers: ThreadWorkers, ctx: zmq.Context[zmq.Socket[bytes]],
    mt_client: list[MtClient], version: Dialect,
) -> None:
    workers.start(broker.endpoint, "svc", echo if version is Dialect.MDP01 else stream_two,
                  version=version)
    wait_ready(broker, b"svc")
    client = connect_mt_client(mt_client, ctx, broker.endpoint)
    client.send(b"svc", b"x", b"y")
    got = list(client.recv_all(timeout=5))
    if version is Dialect.MDP01:
        assert got == [[b"ours", b"x", b"y"]]
    else:
        assert got == [[b"part0"], [b"part1"], [b"ours", b"x", b"y"]]


# ================================================================= majortomo's broker

# Their broker: HEARTBEAT every 0.5 s to idle workers, expiry after 2 s.
MT_BROKER_ARGS = ("-i", "0.5", "-t", "2.0")
# Ours towards it: HEARTBEAT every 0.5 s; its broker counted gone after 6 silent intervals.
OUR_WORKER = WorkerConfig(heartbeat_interval=0.5, heartbeat_liveness=6)


@pytest.fixture
def mt_broker(procs: Procs, ipc_url: str) -> Proc:
    return procs.mt_broker(ipc_url, *MT_BROKER_ARGS)


def test_our_client_and_worker_in_majortomo_dialect_work_through_majortomo_broker(
    mt_broker: Proc, ipc_url: str, workers: ThreadWorkers
) -> None:
    workers.start(ipc_url, "echo", echo, OUR_WORKER, Dialect.MAJORTOMO)
    workers.start(ipc_url, "stream", stream_two, OUR_WORKER, Dialect.MAJORTOMO)
    mt_broker.wait_line("Got READY")
    mt_broker.wait_line("Got READY")
    with mdp_zmq.Client(ipc_url, ClientConfig(timeout=5, retries=0), Dialect.MAJORTOMO) as c:
        for i in range(3):
            assert c.request("echo", b"hi", b"%d" % i) == [b"ours", b"hi", b"%d" % i]
        assert list(c.stream("stream", b"go")) == [[b"part0"], [b"part1"], [b"ours", b"go"]]


def test_majortomo_client_gets_our_worker_partials_through_majortomo_broker(
    mt_broker: Proc, ipc_url: str, workers: ThreadWorkers,
    ctx: zmq.Context[zmq.Socket[bytes]], mt_client: list[MtClient],
) -> None:
    workers.start(ipc_url, "stream", stream_two, OUR_WORKER, Dialect.MAJORTOMO)
    mt_broker.wait_line("Got READY")
    client = connect_mt_client(mt_client, ctx, ipc_url)
    client.send(b"stream", b"go")
    assert list(client.recv_all(timeout=5)) == [[b"part0"], [b"part1"], [b"ours", b"go"]]


def test_our_majortomo_dialect_client_gets_majortomo_worker_reply_through_majortomo_broker(
    mt_broker: Proc, ipc_url: str, procs: Procs
) -> None:
    procs.mt_worker(ipc_url, "stream", "mt1", partials=1, hb=0.5)
    mt_broker.wait_line("Got READY")
    with mdp_zmq.Client(ipc_url, ClientConfig(timeout=5, retries=0), Dialect.MAJORTOMO) as c:
        assert list(c.stream("stream", b"go")) == [[b"part0"], [b"mt1", b"go"]]


def test_our_worker_stays_registered_with_majortomo_broker_across_its_heartbeat_expiry(
    mt_broker: Proc, ipc_url: str, workers: ThreadWorkers
) -> None:
    # Idle for 1.5 x majortomo's 2 s expiry: our HEARTBEATs keep it registered,
    # its HEARTBEATs keep our worker from reconnecting (a reconnect = a new READY).
    workers.start(ipc_url, "echo", echo, OUR_WORKER, Dialect.MAJORTOMO)
    mt_broker.wait_line("Got READY")
    time.sleep(3.0)
    with mdp_zmq.Client(ipc_url, ClientConfig(timeout=5, retries=0), Dialect.MAJORTOMO) as c:
        assert c.request("echo", b"x") == [b"ours", b"x"]
    assert mt_broker.count("Got READY") == 1
    assert mt_broker.count("unknown worker") == 0


def test_majortomo_broker_has_no_mmi_service_exists_times_out(
    mt_broker: Proc, ipc_url: str, workers: ThreadWorkers
) -> None:
    # majortomo misbehaviour (documented, not copied): no RFC 8 MMI; the
    # request is queued for a service called "mmi.service" and never answered.
    workers.start(ipc_url, "echo", echo, OUR_WORKER, Dialect.MAJORTOMO)
    mt_broker.wait_line("Got READY")
    with mdp_zmq.Client(ipc_url, ClientConfig(timeout=0.5, retries=0),
                        Dialect.MAJORTOMO) as c:
        with pytest.raises(mdp_zmq.RequestTimeout):
            c.service_exists("echo")
        assert c.request("echo", b"x") == [b"ours", b"x"]  # the client is still usable


def test_majortomo_broker_never_redispatches_a_dead_busy_workers_request(
    mt_broker: Proc, ipc_url: str, procs: Procs
) -> None:
    # majortomo misbehaviour (documented, tested around): the request of a
    # busy worker that died is lost although an idle worker waits; it is only
    # purged after busy_worker_timeout (900 s) and even then not re-dispatched.
    # Our client's Lazy Pirate resend (on a new socket) gets it answered.
    result: dict[str, object] = {}

    def ask(service: str, retries: int) -> None:
        with mdp_zmq.Client(ipc_url, ClientConfig(timeout=1.5, retries=retries),
                            Dialect.MAJORTOMO) as c:
            try:
                result[service] = c.request(service, b"work")
            except mdp_zmq.RequestTimeout as exc:
                result[service] = exc

    def kill_busy_worker_while_another_waits(service: str, retries: int) -> Proc:
        slow = procs.mt_worker(ipc_url, service, "slow", delay=60, hb=0.5)
        mt_broker.wait_line("Got READY")
        asking = threading.Thread(target=ask, args=(service, retries), daemon=True)
        asking.start()
        slow.wait_line("busy")
        fast = procs.mt_worker(ipc_url, service, "fast", hb=0.5)
        mt_broker.wait_line("Got READY")
        slow.kill()
        asking.join(15)
        assert not asking.is_alive()
        return fast

    fast = kill_busy_worker_while_another_waits("lost", retries=0)
    assert isinstance(result["lost"], mdp_zmq.RequestTimeout)  # nothing re-dispatched it
    assert fast.count("busy") == 0  # the idle worker never saw it

    fast = kill_busy_worker_while_another_waits("retried", retries=1)
    assert result["retried"] == [b"fast", b"work"]  # the resend reached the idle worker
    assert fast.count("busy") == 1


def test_our_worker_reregisters_with_a_restarted_majortomo_broker(
    mt_broker: Proc, ipc_url: str, procs: Procs, workers: ThreadWorkers
) -> None:
    workers.start(ipc_url, "echo", echo, OUR_WORKER, Dialect.MAJORTOMO)
    mt_broker.wait_line("Got READY")
    mt_broker.kill()
    restarted = procs.mt_broker(ipc_url, *MT_BROKER_ARGS)
    restarted.wait_line("Got READY")  # a new conversation: READY on a new socket
    with mdp_zmq.Client(ipc_url, ClientConfig(timeout=5, retries=0), Dialect.MAJORTOMO) as c:
        assert c.request("echo", b"x") == [b"ours", b"x"]


def test_our_busy_worker_purged_by_majortomo_busy_timeout_reregisters(
    procs: Procs, ipc_url: str, workers: ThreadWorkers
) -> None:
    # majortomo purges a worker busy longer than busy_worker_timeout (here 0.5 s)
    # with DISCONNECT. Its quirk: the FINAL that comes later is still passed to
    # the client (then it logs "Message handling failed" for the unknown worker).
    # Ours finishes the job, reads the DISCONNECT, and registers again.
    broker = procs.mt_broker(ipc_url, *MT_BROKER_ARGS, "-B", "0.5")

    def slow_first(frames: list[bytes]) -> list[bytes]:
        if frames == [b"slow"]:
            time.sleep(1.5)
        return [b"ours", *frames]

    workers.start(ipc_url, "svc", slow_first, OUR_WORKER, Dialect.MAJORTOMO)
    broker.wait_count("Got READY", 1)
    with mdp_zmq.Client(ipc_url, ClientConfig(timeout=5, retries=0), Dialect.MAJORTOMO) as c:
        assert c.request("svc", b"slow") == [b"ours", b"slow"]
        broker.wait_count("Got READY", 2)  # registered again after the DISCONNECT
        broker.wait_count("Message handling failed", 1)  # majortomo, on the late FINAL
        assert c.request("svc", b"fast") == [b"ours", b"fast"]
