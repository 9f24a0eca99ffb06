"""One behaviour suite for every driver: ``mdp_zmq`` (blocking), ``mdp_async`` on trio and
on asyncio, ``mdp_gevent``.

Each test takes a *broker driver* and a *peer driver* (the workers' and
clients'), so it runs for every driver alone and for mixed pairs. Light
tests (echo on MDP/0.1 and 0.2, streaming, MMI) run for all sixteen pairs on
one broker per driver shared by the module; the heavy ones (SIGKILL of a
busy worker process, SIGSTOP caught by ZMTP heartbeats, a broker restart,
1,000 requests with a worker killed in the middle) run for each driver
alone and for a ring of mixed pairs in which every driver is once the
broker and once the peer.

The test body is synchronous and the same for every driver: a
:class:`Driver` makes brokers, workers and clients and hides how they run
(threads for ``mdp_zmq``; one event loop per async backend, in a thread,
reached through an anyio blocking portal; a gevent hub in a thread,
unpatched, reached through ``tests/gevent_support.py``). Processes are the
``mdp`` command for ``mdp_zmq``, ``tests/async_peer.py`` for the async
driver and ``tests/gevent_peer.py`` (monkey-patched) for gevent; they
print the same lines. Loopback only; waits are bounded; no timing
assertions (a loss is shown to come from the transport by its reason, not
by how fast it came).
"""

from __future__ import annotations

import functools
import itertools
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any, TypeVar

import mdp_async
import mdp_gevent
import mdp_zmq
import pytest
import zmq
from anyio.from_thread import BlockingPortal, start_blocking_portal
from gevent_support import GeventHub
from load_support import one_outcome_each, requests_with_a_kill
from zmq_support import Proc, ProcSet, free_tcp_endpoint, mdp_cli

from mdp_core import (
    BrokerConfig,
    ClientConfig,
    Dialect,
    Event,
    RequestDelivered,
    RequestExpired,
    RequestRequeued,
    WorkerConfig,
    WorkerLost,
    WorkerReady,
)

E = TypeVar("E", bound=Event)
DRIVERS = ["zmq", "trio", "asyncio", "gevent"]
ALL_PAIRS = [(b, p) for b in DRIVERS for p in DRIVERS]
# Each driver alone, then a ring: each driver once the broker, once the peer.
HEAVY_PAIRS = [("zmq", "zmq"), ("trio", "trio"), ("asyncio", "asyncio"), ("gevent", "gevent"),
               ("zmq", "trio"), ("trio", "asyncio"), ("asyncio", "gevent"), ("gevent", "zmq")]
VERSIONS = {"0.1": Dialect.MDP01, "0.2": Dialect.MDP02}
# MDP heartbeats so slow that only the transport can explain a quick loss.
SLOW_HB = BrokerConfig(heartbeat_interval=10.0)
ASYNC_PEER = str(Path(__file__).with_name("async_peer.py"))
GEVENT_PEER = str(Path(__file__).with_name("gevent_peer.py"))
_names = itertools.count(1)


def pair_id(pair: tuple[str, str]) -> str:
    return f"broker={pair[0]}-peers={pair[1]}"


def unique(prefix: str) -> str:
    """A service name no other test uses (brokers are shared)."""
    return f"{prefix}-{next(_names)}"


# ------------------------------------------------------------------ what a test sees


class EventLog:
    """A broker's ``on_event`` from any thread: the events, and bounded waits for them."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.cond = threading.Condition()

    def __call__(self, event: Event) -> None:
        with self.cond:
            self.events.append(event)
            self.cond.notify_all()

    def of(self, kind: type[E], **fields: object) -> list[E]:
        with self.cond:
            return [e for e in self.events if isinstance(e, kind)
                    and all(getattr(e, k) == v for k, v in fields.items())]

    def wait_count(self, kind: type[Event], n: int, timeout: float = 10.0, **fields: object
                   ) -> None:
        with self.cond:
            ok = self.cond.wait_for(lambda: len(self.of(kind, **fields)) >= n, timeout)
        assert ok, f"fewer than {n} {kind.__name__} {fields}: {self.events[-10:]}"


class BrokerHandle:
    """A running broker of some driver: its endpoint, its events, ``close()`` (once)."""

    def __init__(self, endpoint: str, log: EventLog, close: Callable[[], None]) -> None:
        self.endpoint = endpoint
        self.log = log
        self._close: Callable[[], None] | None = close

    def close(self) -> None:
        close, self._close = self._close, None
        if close is not None:
            close()


class SyncClient:
    """The blocking client's calls, for any driver's client."""

    def __init__(self, request: Callable[..., list[bytes]],
                 stream: Callable[..., list[list[bytes]]],
                 service_exists: Callable[[str], bool]) -> None:
        self.request = request
        self.stream = stream
        self.service_exists = service_exists


class Driver:
    """Brokers, workers, clients and processes of one driver; ``close()`` stops them."""

    def __init__(self, name: str, portal: BlockingPortal | GeventHub | None) -> None:
        self.name = name
        self.portal = portal if isinstance(portal, BlockingPortal) else None
        self.hub = portal if isinstance(portal, GeventHub) else None
        self.stack = ExitStack()

    def _enter(self, cm: Any) -> Any:
        """Enter an async context manager in the driver's loop, until close()."""
        assert self.portal is not None
        return self.stack.enter_context(self.portal.wrap_async_context_manager(cm))

    def close(self) -> None:
        self.stack.close()

    # -- brokers
    def broker(self, endpoint: str = "tcp://127.0.0.1:*", config: BrokerConfig | None = None,
               transport: mdp_zmq.TransportConfig | None = None) -> BrokerHandle:
        log = EventLog()
        if self.name == "zmq":
            b = mdp_zmq.Broker(endpoint, config, transport=transport, on_event=log)
            thread = b.start()

            def close() -> None:
                b.close()
                thread.join(10)

            handle = BrokerHandle(b.endpoint, log, close)
        elif self.hub is not None:
            gb = self.hub.call(mdp_gevent.Broker, endpoint, config, transport=transport,
                               on_event=log)
            handle = BrokerHandle(gb.endpoint, log, self._serve_gevent(gb))
        else:
            ab = mdp_async.Broker(endpoint, config, transport=transport, on_event=log)
            assert self.portal is not None
            cm = self.portal.wrap_async_context_manager(ab)
            cm.__enter__()
            handle = BrokerHandle(ab.endpoint, log, lambda: cm.__exit__(None, None, None))
        self.stack.callback(handle.close)
        return handle

    def _serve_gevent(self, served: mdp_gevent.Broker | mdp_gevent.Worker
                      ) -> Callable[[], None]:
        """Serve in the hub's thread; return what stops it (and waits for that)."""
        hub = self.hub
        assert hub is not None
        greenlet = hub.call(served.start)

        def close() -> None:
            served.close()
            hub.call(greenlet.get, timeout=15)

        return close

    def broker_argv(self, endpoint: str) -> list[str]:
        if self.name == "zmq":
            return mdp_cli("broker", "--bind", endpoint)
        if self.name == "gevent":
            return [sys.executable, GEVENT_PEER, "broker", "--bind", endpoint]
        return [sys.executable, ASYNC_PEER, "--backend", self.name, "broker", "--bind", endpoint]

    # -- workers
    def worker(self, endpoint: str | list[str], service: str, kind: str = "echo",
               config: WorkerConfig | None = None, version: Dialect = Dialect.MDP02,
               **kw: Any) -> Any:
        """A worker in this process: ``kind`` "echo", or "stream" (3 PARTIALs, a FINAL);
        ``kw`` goes to the driver's Worker (e.g. ``concurrency``)."""
        if self.name == "zmq":
            handler: Any = _echo if kind == "echo" else _stream
            w = mdp_zmq.Worker(endpoint, service, handler, config, version, **kw)
            thread = w.start()
            self.stack.callback(thread.join, 10)
            self.stack.callback(w.close)
            return w
        if self.hub is not None:
            gw = self.hub.call(mdp_gevent.Worker, endpoint, service,
                               _echo if kind == "echo" else _stream, config, version, **kw)
            self.stack.callback(self._serve_gevent(gw))
            return gw
        handler = _aecho if kind == "echo" else _astream
        return self._enter(mdp_async.Worker(endpoint, service, handler, config, version, **kw))

    def worker_proc(self, procs: ProcSet, endpoint: str, service: str, *extra: str) -> Proc:
        """An echo worker process (``--delay S``: a slow job); returns once it runs."""
        if self.name == "zmq":
            argv = mdp_cli("worker", service, "--echo", "--announce", "--connect", endpoint,
                           *extra)
        elif self.name == "gevent":
            argv = [sys.executable, GEVENT_PEER, "worker", service, "--connect", endpoint, *extra]
        else:
            argv = [sys.executable, ASYNC_PEER, "--backend", self.name, "worker", service,
                    "--connect", endpoint, *extra]
        proc = procs.start(argv)
        proc.wait_line("ready")
        return proc

    # -- clients
    def clients(self, endpoint: str | list[str], n: int = 1, config: ClientConfig | None = None,
                version: Dialect = Dialect.MDP02, spread: int | None = None
                ) -> list[SyncClient]:
        """``n`` clients that may be used from ``n`` threads at once.

        The blocking driver needs a Client per thread; the async and gevent
        drivers serve them all from one Client with a pool of ``n`` sockets.
        With ``spread``, the ``i``-th client (or socket) has the home broker
        ``spread + i`` (see the drivers' Client).
        """
        if self.name == "zmq":
            out = []
            for i in range(n):
                c = self.stack.enter_context(mdp_zmq.Client(
                    endpoint, config, version, spread=None if spread is None else spread + i))
                out.append(SyncClient(c.request, lambda *a, c=c, **k: list(c.stream(*a, **k)),
                                      c.service_exists))
            return out
        if self.hub is not None:
            return [self._gevent_client(endpoint, n, config, version, spread)] * n
        ac = self._enter(mdp_async.Client(endpoint, config, version, pool_size=n,
                                          spread=spread))
        portal = self.portal
        assert portal is not None

        def request(*args: Any, **kw: Any) -> list[bytes]:
            result: list[bytes] = portal.call(functools.partial(ac.request, *args, **kw))
            return result

        def stream(*args: Any, **kw: Any) -> list[list[bytes]]:
            async def collect() -> list[list[bytes]]:
                return [body async for body in ac.stream(*args, **kw)]
            return portal.call(collect)

        def service_exists(name: str) -> bool:
            found: bool = portal.call(ac.service_exists, name)
            return found

        return [SyncClient(request, stream, service_exists)] * n

    def _gevent_client(self, endpoint: str | list[str], n: int, config: ClientConfig | None,
                       version: Dialect, spread: int | None) -> SyncClient:
        """One mdp_gevent.Client in the hub, each call in a greenlet of its own."""
        hub = self.hub
        assert hub is not None
        gc = hub.call(mdp_gevent.Client, endpoint, config, version, pool_size=n, spread=spread)
        self.stack.callback(hub.call, gc.close)
        return SyncClient(lambda *a, **k: hub.call(gc.request, *a, **k),
                          lambda *a, **k: hub.call(lambda: list(gc.stream(*a, **k))),
                          lambda name: hub.call(gc.service_exists, name))

    def client(self, endpoint: str | list[str], config: ClientConfig | None = None,
               version: Dialect = Dialect.MDP02, spread: int | None = None) -> SyncClient:
        return self.clients(endpoint, 1, config, version, spread)[0]


def _echo(frames: list[bytes]) -> list[bytes]:
    return frames


def _stream(frames: list[bytes]) -> Iterator[bytes]:
    for i in range(3):
        yield b"part %d" % i
    return b"done " + frames[0]  # type: ignore[return-value]


async def _aecho(frames: list[bytes]) -> list[bytes]:
    return frames


async def _astream(frames: list[bytes]) -> AsyncIterator[bytes]:
    for i in range(3):
        yield b"part %d" % i
    yield b"done " + frames[0]


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def portals() -> Iterator[dict[str, BlockingPortal | GeventHub]]:
    """One event loop per async backend and a gevent hub, each in a thread, for the
    whole module."""
    with ExitStack() as stack:
        out: dict[str, BlockingPortal | GeventHub] = {
            b: stack.enter_context(start_blocking_portal(b)) for b in ("trio", "asyncio")}
        hub = out["gevent"] = GeventHub()
        stack.callback(hub.close)
        yield out


@pytest.fixture(scope="module")
def shared(portals: dict[str, BlockingPortal | GeventHub]
           ) -> Iterator[dict[str, BrokerHandle]]:
    """One broker per driver for the light tests (each test uses its own services)."""
    drivers = [Driver(name, portals.get(name)) for name in DRIVERS]
    try:
        yield {d.name: d.broker() for d in drivers}
    finally:
        for d in drivers:
            d.close()


@pytest.fixture
def make(portals: dict[str, BlockingPortal | GeventHub]) -> Iterator[Callable[[str], Driver]]:
    """``make(name)``: the driver ``name``; what the test made with it is closed after."""
    made: list[Driver] = []

    def get(name: str) -> Driver:
        d = Driver(name, portals.get(name))
        made.append(d)
        return d

    yield get
    for d in reversed(made):
        d.close()


# ------------------------------------------------------------------ light: every pair


@pytest.mark.parametrize(("client_version", "worker_version"),
                         [("0.1", "0.1"), ("0.2", "0.2"), ("0.1", "0.2"), ("0.2", "0.1")])
@pytest.mark.parametrize("pair", ALL_PAIRS, ids=pair_id)
def test_echo_on_mdp01_and_mdp02(
    pair: tuple[str, str], client_version: str, worker_version: str,
    shared: dict[str, BrokerHandle], make: Callable[[str], Driver],
) -> None:
    broker, peers = shared[pair[0]], make(pair[1])
    service = unique("echo")
    peers.worker(broker.endpoint, service, version=VERSIONS[worker_version])
    broker.log.wait_count(WorkerReady, 1, service=service.encode())
    client = peers.client(broker.endpoint, ClientConfig(timeout=5, retries=0),
                          VERSIONS[client_version])
    for i in range(2):
        assert client.request(service, b"hello", b"%d" % i) == [b"hello", b"%d" % i]


@pytest.mark.parametrize("pair", ALL_PAIRS, ids=pair_id)
def test_streaming_partials_then_final(
    pair: tuple[str, str], shared: dict[str, BrokerHandle], make: Callable[[str], Driver],
) -> None:
    broker, peers = shared[pair[0]], make(pair[1])
    service = unique("count")
    peers.worker(broker.endpoint, service, "stream")
    broker.log.wait_count(WorkerReady, 1, service=service.encode())
    client = peers.client(broker.endpoint, ClientConfig(timeout=5, retries=0))
    assert client.stream(service, b"x") == [[b"part 0"], [b"part 1"], [b"part 2"], [b"done x"]]
    assert client.request(service, b"y") == [b"done y"]  # PARTIALs skipped
    old = peers.client(broker.endpoint, ClientConfig(timeout=5, retries=0), Dialect.MDP01)
    assert old.request(service, b"z") == [b"part 0", b"part 1", b"part 2", b"done z"]


@pytest.mark.parametrize("pair", ALL_PAIRS, ids=pair_id)
def test_mmi_service_exists_and_services(
    pair: tuple[str, str], shared: dict[str, BrokerHandle], make: Callable[[str], Driver],
) -> None:
    broker, peers = shared[pair[0]], make(pair[1])
    service = unique("mmi")
    peers.worker(broker.endpoint, service)
    broker.log.wait_count(WorkerReady, 1, service=service.encode())
    client = peers.client(broker.endpoint, ClientConfig(timeout=5, retries=0))
    assert client.service_exists(service) is True
    assert client.service_exists(unique("nobody")) is False
    assert service.encode() in client.request("mmi.services", b"")


@pytest.mark.parametrize("name", DRIVERS)
def test_requests_sent_back_to_back_on_open_connections_are_all_answered(
    name: str, shared: dict[str, BrokerHandle],
) -> None:
    # A broker's turn may read one message and leave the next unread, and
    # zmq.FD will not fire for a message queued behind one already seen:
    # each of these must be found by the broker's check before it waits.
    broker = shared[name]
    ctx = zmq.Context.instance()
    socks = [ctx.socket(zmq.DEALER) for _ in range(2)]
    try:
        for sock in socks:
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.RCVTIMEO, 10_000)
            sock.connect(broker.endpoint)
        for _ in range(3):
            for sock in socks:
                for _ in range(3):  # pipelined: no reply awaited in between
                    sock.send_multipart([b"MDPC02", b"\x01", b"mmi.service", b"nobody"])
            for sock in socks:  # zmq.Again after 10 s: a request was never read
                replies = [sock.recv_multipart() for _ in range(3)]
                assert replies == [[b"MDPC02", b"\x03", b"mmi.service", b"404"]] * 3
    finally:
        for sock in socks:
            sock.close(0)


# ------------------------------------------------------------------ heavy: dead workers


def _call_in_thread(client: SyncClient, service: str, body: bytes,
                    result: dict[str, object]) -> threading.Thread:
    def run() -> None:
        try:
            result["reply"] = client.request(service, body)
        except Exception as exc:
            result["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.mark.slow
@pytest.mark.parametrize("pair", HEAVY_PAIRS, ids=pair_id)
def test_sigkilled_busy_worker_is_noticed_by_the_transport_and_its_request_redispatched(
    pair: tuple[str, str], make: Callable[[str], Driver], procs: ProcSet,
) -> None:
    broker = make(pair[0]).broker(config=SLOW_HB)
    peers = make(pair[1])
    busy = peers.worker_proc(procs, broker.endpoint, "job", "--delay", "30",
                             "--heartbeat", "10")
    broker.log.wait_count(WorkerReady, 1)
    result: dict[str, object] = {}
    caller = _call_in_thread(peers.client(broker.endpoint, ClientConfig(timeout=60, retries=0)),
                             "job", b"payload", result)
    busy.wait_line("started")
    peers.worker(broker.endpoint, "job")  # the second worker, idle
    broker.log.wait_count(WorkerReady, 2)
    busy.signal(signal.SIGKILL)
    broker.log.wait_count(WorkerLost, 1)
    (lost,) = broker.log.of(WorkerLost)
    assert lost.reason == "connection lost"  # MDP heartbeats would say "heartbeat expired"
    caller.join(30)
    assert result == {"reply": [b"payload"]}
    (requeued,) = broker.log.of(RequestRequeued)
    assert requeued.worker == lost.worker
    broker.log.wait_count(RequestDelivered, 1)
    assert broker.log.of(RequestDelivered)[0].worker != lost.worker


@pytest.mark.slow
@pytest.mark.parametrize("pair", HEAVY_PAIRS, ids=pair_id)
def test_sigstopped_worker_is_dropped_by_zmtp_heartbeats_and_its_request_redispatched(
    pair: tuple[str, str], make: Callable[[str], Driver], procs: ProcSet,
) -> None:
    zmtp = mdp_zmq.TransportConfig(heartbeat_ivl=0.2, heartbeat_timeout=0.5, heartbeat_ttl=0.5)
    broker = make(pair[0]).broker(config=SLOW_HB, transport=zmtp)
    peers = make(pair[1])
    frozen = peers.worker_proc(procs, broker.endpoint, "job", "--delay", "30",
                               "--heartbeat", "10", "--zmtp-heartbeat", "0.2",
                               "--zmtp-timeout", "0.5")
    broker.log.wait_count(WorkerReady, 1)
    result: dict[str, object] = {}
    caller = _call_in_thread(peers.client(broker.endpoint, ClientConfig(timeout=60, retries=0)),
                             "job", b"payload", result)
    frozen.wait_line("started")
    peers.worker(broker.endpoint, "job")
    broker.log.wait_count(WorkerReady, 2)
    frozen.signal(signal.SIGSTOP)  # alive, but its I/O thread no longer answers pings
    broker.log.wait_count(WorkerLost, 1)
    assert broker.log.of(WorkerLost)[0].reason == "connection lost"
    caller.join(30)
    assert result == {"reply": [b"payload"]}


@pytest.mark.slow
@pytest.mark.parametrize("pair", HEAVY_PAIRS, ids=pair_id)
def test_broker_restart_workers_reregister_and_the_client_retries(
    pair: tuple[str, str], make: Callable[[str], Driver], procs: ProcSet,
) -> None:
    endpoint = free_tcp_endpoint()
    brokers, peers = make(pair[0]), make(pair[1])
    broker = procs.start(brokers.broker_argv(endpoint))
    broker.wait_line("mdp broker listening")
    fast = WorkerConfig(reconnect_delay=0.1, reconnect_delay_max=1.0)
    for _ in range(2):
        peers.worker(endpoint, "echo", config=fast)
    client = peers.client(endpoint, ClientConfig(timeout=1.0, retries=10))
    assert client.request("echo", b"before") == [b"before"]
    broker.signal(signal.SIGKILL)
    broker.stop()
    broker = procs.start(brokers.broker_argv(endpoint))
    broker.wait_line("mdp broker listening")
    # The workers saw their connection drop and register with the new
    # broker; the client's resend on a new socket reaches it too.
    deadline = time.monotonic() + 10
    while not client.service_exists("echo"):
        assert time.monotonic() < deadline, "the workers did not register again"
        time.sleep(0.05)
    assert client.request("echo", b"after") == [b"after"]


@pytest.mark.slow
@pytest.mark.parametrize("pair", HEAVY_PAIRS, ids=pair_id)
def test_1000_requests_with_a_worker_killed_midway_each_has_exactly_one_outcome(
    pair: tuple[str, str], make: Callable[[str], Driver], procs: ProcSet,
) -> None:
    broker = make(pair[0]).broker(config=SLOW_HB)
    peers = make(pair[1])
    ws = [peers.worker_proc(procs, broker.endpoint, "echo", "--delay", "0.002")
          for _ in range(3)]
    broker.log.wait_count(WorkerReady, 3)
    n_clients, per_client = 4, 250
    clients = peers.clients(broker.endpoint, n_clients, ClientConfig(timeout=15, retries=0))
    outcomes = requests_with_a_kill(clients, per_client, lambda: ws[1].signal(signal.SIGKILL))
    # None failed: the broker re-dispatched what the dead worker held.
    assert one_outcome_each(outcomes, n_clients, per_client) == []
    expected = n_clients * per_client
    broker.log.wait_count(RequestDelivered, expected)
    assert len(broker.log.of(RequestDelivered)) == expected
    assert broker.log.of(RequestExpired) == []
    broker.log.wait_count(WorkerLost, 1)


# ------------------------------------------------------------------ the drivers share a process


def test_one_loop_serves_an_async_broker_while_blocking_peers_use_it(
    make: Callable[[str], Driver],
) -> None:
    # The suite's own plumbing, checked once: an async broker in a portal's
    # loop thread answers the blocking driver's worker and client.
    broker = make("trio").broker()
    peers = make("zmq")
    peers.worker(broker.endpoint, "echo")
    broker.log.wait_count(WorkerReady, 1)
    assert peers.client(broker.endpoint).request("echo", b"x") == [b"x"]
    broker.close()
    broker.log.wait_count(WorkerLost, 1)
    assert broker.log.of(WorkerLost)[0].reason == "broker closed"

