"""CURVE, authenticated peers and the policy over real sockets, for every broker driver.

Each test runs against every broker: the blocking one (``mdp_zmq``), the
async one (``mdp_async``) on trio and on asyncio, and the gevent one
(``mdp_gevent``, in a hub of its own thread), each with the blocking and
the gevent driver's workers and clients as peers, and some with the
async driver's (:data:`PAIRS`); the capture of the traffic runs every
broker with every driver's peers. Keys are made with
``mdp_zmq.glue.keygen`` in a temporary directory: ``pay`` may serve
``payments``, ``refunds`` only ``payments.*``; ``shop`` may call
``payments``; everyone allowed may use ``echo``; ``outsider``'s key is
not on the allow-list. Loopback only; waits are bounded; no timing
assertions.
"""

from __future__ import annotations

import functools
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar

import gevent
import mdp_async
import mdp_gevent
import mdp_zmq
import pytest
import zmq
from anyio.from_thread import BlockingPortal, start_blocking_portal
from gevent_support import GeventHub
from mdp_zmq.glue import LogLimiter, Security, TransportConfig, keygen

from mdp_core import (
    BrokerConfig,
    ClientConfig,
    Event,
    FailureCause,
    Policy,
    RequestDelivered,
    RequestRefused,
    WorkerReady,
    WorkerRefused,
)

E = TypeVar("E", bound=Event)
#: The drivers, as brokers and as peers (workers and clients).
DRIVERS = ["zmq", "trio", "asyncio", "gevent"]
BROKERS = DRIVERS
#: (broker, peers): every broker with the blocking and the gevent peers, and
#: the async peers with a blocking and the gevent broker.
PAIRS = [(b, p) for b in BROKERS for p in ("zmq", "gevent")] + [("zmq", "trio"),
                                                                 ("gevent", "asyncio")]
PEOPLE = ["broker", "pay", "refunds", "shop", "mallory", "outsider"]
POLICY = Policy(serve={"payments": ["pay"], "payments.*": ["pay", "refunds"], "echo": ["*"]},
                call={"payments": ["shop"], "echo": ["*"]})
SECRET = b"SECRET-pay 100 to account 0123456789"
QUICK = ClientConfig(timeout=1.0, retries=0, diagnose_timeout=2.0)
REFUSAL_WAIT = ClientConfig(timeout=5.0, retries=0, diagnose_timeout=2.0)


# ------------------------------------------------------------------ keys and helpers


class Keys:
    """Key files of every person in a directory, the allow-list without the outsider."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "keys"
        self.allow = root / "allow"
        self.allow.mkdir()
        for name in PEOPLE:
            public, _ = keygen(name, self.dir)
            if name not in ("broker", "outsider"):
                (self.allow / public.name).write_bytes(public.read_bytes())

    def broker(self) -> TransportConfig:
        return TransportConfig(security=Security.for_broker(
            self.dir / "broker.key_secret", self.allow))

    def peer(self, name: str) -> TransportConfig:
        return TransportConfig(security=Security.for_peer(
            self.dir / f"{name}.key_secret", self.dir / "broker.key"))


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return Keys(tmp_path_factory.mktemp("curve"))


class EventLog:
    """A broker's ``on_event`` from any thread, with bounded waits."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.cond = threading.Condition()

    def __call__(self, event: Event) -> None:
        with self.cond:
            self.events.append(event)
            self.cond.notify_all()

    def of(self, kind: type[E]) -> list[E]:
        with self.cond:
            return [e for e in self.events if isinstance(e, kind)]

    def wait_for(self, pred: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
        with self.cond:
            ok = self.cond.wait_for(pred, timeout)
        assert ok, f"no {what}: {self.events[-10:]}"


Loops = dict[str, Any]  # "trio"/"asyncio": a BlockingPortal; "gevent": a GeventHub


class Running:
    """A running broker of some driver: endpoint, events, engine."""

    def __init__(self, broker: Any, log: EventLog) -> None:
        self.broker = broker
        self.endpoint: str = broker.endpoint
        self.port = int(self.endpoint.rsplit(":", 1)[1])
        self.log = log
        self.engine = broker.engine


@pytest.fixture(scope="module")
def loops() -> Iterator[Loops]:
    """An event loop per async backend and a gevent hub, each in a thread of its own."""
    with ExitStack() as stack:
        out: Loops = {b: stack.enter_context(start_blocking_portal(b)) for b in ("trio", "asyncio")}
        hub = out["gevent"] = GeventHub()
        stack.callback(hub.close)
        yield out


@contextmanager
def running(driver: str, loops: Loops, transport: TransportConfig,
            config: BrokerConfig | None = None) -> Iterator[Running]:
    """A broker of ``driver`` on a free loopback port, closed on exit."""
    log = EventLog()
    if driver == "zmq":
        b = mdp_zmq.Broker("tcp://127.0.0.1:*", config, transport=transport, on_event=log)
        thread = b.start()
        try:
            yield Running(b, log)
        finally:
            b.close()
            thread.join(10)
        return
    if driver == "gevent":
        hub: GeventHub = loops["gevent"]
        gb = hub.call(mdp_gevent.Broker, "tcp://127.0.0.1:*", config, transport=transport,
                      on_event=log)
        serving = hub.call(gb.start)
        try:
            yield Running(gb, log)
        finally:
            gb.close()
            hub.call(serving.get, timeout=15)
        return
    ab = mdp_async.Broker("tcp://127.0.0.1:*", config, transport=transport, on_event=log)
    with loops[driver].wrap_async_context_manager(ab):
        yield Running(ab, log)


class PeerClient:
    """A client of some driver, called from the test's thread; ``with`` closes it."""

    def __init__(self, request: Callable[..., list[bytes]],
                 service_exists: Callable[[str], bool], close: Callable[[], object]) -> None:
        self.request = request
        self.service_exists = service_exists
        self.close = close

    def __enter__(self) -> PeerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Peers:
    """Workers and clients of one driver (``driver``), made and called from the
    test's thread; the workers are closed on exit. A handler is a plain
    function that may block: the async and gevent workers run it in a thread."""

    def __init__(self, driver: str, loops: Loops, stack: ExitStack) -> None:
        self.driver = driver
        self.loop = loops.get(driver)
        self.stack = stack

    def worker(self, endpoint: str, service: str, handler: Callable[[list[bytes]], Any],
               transport: TransportConfig | None = None) -> None:
        if self.driver == "zmq":
            w = mdp_zmq.Worker(endpoint, service, handler, transport=transport)
            thread = w.start()
            self.stack.callback(thread.join, 10)
            self.stack.callback(w.close)
        elif self.driver == "gevent":
            hub: GeventHub = self.loop

            def in_thread(frames: list[bytes]) -> Any:
                return gevent.get_hub().threadpool.apply(handler, (frames,))

            gw = hub.call(mdp_gevent.Worker, endpoint, service, in_thread, transport=transport)
            serving = hub.call(gw.start)
            self.stack.callback(hub.call, serving.get, timeout=15)
            self.stack.callback(gw.close)
        else:
            self.stack.enter_context(self.loop.wrap_async_context_manager(mdp_async.Worker(
                endpoint, service, handler, threaded=True, transport=transport)))

    def client(self, endpoint: str, config: ClientConfig,
               transport: TransportConfig | None = None) -> PeerClient:
        if self.driver == "zmq":
            c = mdp_zmq.Client(endpoint, config, transport=transport)
            return PeerClient(c.request, c.service_exists, c.close)
        if self.driver == "gevent":
            hub: GeventHub = self.loop
            gc = hub.call(mdp_gevent.Client, endpoint, config, transport=transport)
            return PeerClient(lambda *a: hub.call(gc.request, *a),
                              lambda name: hub.call(gc.service_exists, name),
                              lambda: hub.call(gc.close))
        portal: BlockingPortal = self.loop
        cm = portal.wrap_async_context_manager(mdp_async.Client(endpoint, config,
                                                                transport=transport))
        ac = cm.__enter__()
        return PeerClient(lambda *a: portal.call(functools.partial(ac.request, *a)),
                          lambda name: portal.call(ac.service_exists, name),
                          lambda: cm.__exit__(None, None, None))


@contextmanager
def peers_of(driver: str, loops: Loops) -> Iterator[Peers]:
    """:class:`Peers` of ``driver``, their workers closed on exit."""
    with ExitStack() as stack:
        yield Peers(driver, loops, stack)


class CountingLimiter(LogLimiter):
    """A LogLimiter that counts the lines asked for, per kind."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: dict[str, int] = {}

    def allow(self, logger: logging.Logger, level: int, kind: str) -> bool:
        self.calls[kind] = self.calls.get(kind, 0) + 1
        return super().allow(logger, level, kind)


def records(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


def wait_until(pred: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < end, f"no {what} within {timeout:g} s"
        time.sleep(0.02)


# ------------------------------------------------------------------ authentication


@pytest.mark.parametrize(("driver", "peers"), PAIRS)
def test_peers_without_a_key_or_with_an_unknown_one_get_no_service_and_are_logged_once(
    driver: str, peers: str, keys: Keys, loops: Loops, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    with running(driver, loops, keys.broker(), BrokerConfig(policy=POLICY)) as b, \
            peers_of(peers, loops) as p:
        limiter = b.engine.log_limiter = CountingLimiter(burst=1, window=600)
        p.worker(b.endpoint, "echo", lambda f: f, keys.peer("outsider"))
        p.worker(b.endpoint, "echo", lambda f: f)  # no key at all
        # A key refused by ZAP: the DEALER monitor's EVENT_HANDSHAKE_FAILED_AUTH
        # reaches the client's core (engine.DealerEngine); no key: no answer.
        for transport, cause in ((keys.peer("outsider"), FailureCause.REFUSED),
                                 (TransportConfig(), FailureCause.UNREACHABLE)):
            # The refused handshake drops the connection, which ends the
            # attempt at once; the long timeout only bounds a slow ZAP answer.
            with p.client(b.endpoint, REFUSAL_WAIT, transport) as c, \
                    pytest.raises(mdp_zmq.RequestTimeout) as failed:
                c.request("echo", b"hi")
            assert failed.value.cause is cause, failed.value
        # Each kind was refused at least twice (a worker and a client): the
        # first refusal is logged, the others only counted.
        wait_until(lambda: limiter.calls.get("CURVE key refused", 0) >= 2
                   and limiter.calls.get("handshake failed", 0) >= 2,
                   "two refusals of each kind")
        assert len(records(caplog, "refused a CURVE key")) == 1
        assert len(records(caplog, "refused a peer without CURVE")) == 1
        assert b.log.of(WorkerReady) == [] and b.log.events == []
        (line,) = records(caplog, "refused a CURVE key")
        assert "allow-list, from 127.0.0.1" in line
        # The refused worker warns (rate-limited: it keeps retrying); the
        # client's line is INFO, its failure gave the reason.
        wait_until(lambda: bool(records(caplog, "refused this peer's CURVE key")),
                   "the worker's log line of the refusal")
        with p.client(b.endpoint, QUICK, keys.peer("shop")) as c:
            assert not c.service_exists("echo")  # the refused workers never registered
    summaries = records(caplog, "suppressed")
    assert any("CURVE key refused" in s for s in summaries), summaries
    assert any("handshake failed" in s for s in summaries), summaries


@pytest.mark.parametrize("driver", BROKERS)
def test_the_summary_of_held_back_zap_refusals_comes_while_the_broker_is_idle(
    driver: str, keys: Keys, loops: Loops, caplog: pytest.LogCaptureFixture,
) -> None:
    """A key refusal the limiter holds back makes the broker wake for its
    summary, even with no peer left and so no deadline of the core's (the
    same for refused handshakes seen on the monitor:
    ``test_security_glue.py``)."""
    caplog.set_level(logging.WARNING)
    kind, security = "CURVE key refused", keys.peer("outsider").security
    with running(driver, loops, keys.broker()) as b:
        # The broker's own clock (trio's is not time.monotonic's).
        limiter = b.engine.log_limiter = CountingLimiter(
            burst=1, window=1.0, clock=b.engine.log_limiter._clock)
        socks = [raw_dealer(b.endpoint, security, b"refused-%d" % i) for i in range(2)]
        try:
            wait_until(lambda: limiter.calls.get(kind, 0) >= 2, f"two {kind} refusals")
        finally:
            for sock in socks:
                sock.close(0)
        # One line was logged, the rest held back: nothing else happens now.
        wait_until(lambda: any(kind in s for s in records(caplog, "suppressed")),
                   f"the summary of the {kind} lines while serving")


@pytest.mark.parametrize(("driver", "peers"), PAIRS)
def test_a_peer_with_another_broker_key_is_refused_and_logged(
    driver: str, peers: str, keys: Keys, loops: Loops, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    shop = keys.peer("shop").security
    assert shop is not None
    wrong = TransportConfig(security=Security(shop.public_key, shop.secret_key,
                                              broker_key=shop.public_key))
    with running(driver, loops, keys.broker()) as b, peers_of(peers, loops) as p:
        with p.client(b.endpoint, QUICK, wrong) as c, \
                pytest.raises(mdp_zmq.RequestTimeout) as failed:
            c.request("echo", b"hi")
        assert failed.value.cause is FailureCause.UNREACHABLE
        wait_until(lambda: bool(records(caplog, "whose CURVE handshake did not decrypt")),
                   "log line of the refusal")


@pytest.mark.parametrize("peers", DRIVERS)
@pytest.mark.parametrize("driver", BROKERS)
def test_a_client_whose_key_is_refused_at_the_handshake_says_so(
    driver: str, peers: str, keys: Keys, loops: Loops,
) -> None:
    with running(driver, loops, keys.broker()) as b, peers_of(peers, loops) as p, \
            p.client(b.endpoint, REFUSAL_WAIT, keys.peer("outsider")) as c, \
            pytest.raises(mdp_zmq.RequestTimeout) as failed:
        c.request("echo", b"hi")
    assert failed.value.cause is FailureCause.REFUSED
    assert str(failed.value).endswith("the broker refused this client's key at the handshake")


# ------------------------------------------------------------------ authorization


@pytest.mark.parametrize(("driver", "peers"), PAIRS)
def test_a_worker_without_the_right_cannot_register_and_the_allowed_one_serves_all(
    driver: str, peers: str, keys: Keys, loops: Loops,
) -> None:
    seen_by_refunds: list[list[bytes]] = []

    def refunds(frames: list[bytes]) -> list[bytes]:
        seen_by_refunds.append(frames)
        return [b"forged"]

    with running(driver, loops, keys.broker(), BrokerConfig(policy=POLICY)) as b, \
            peers_of(peers, loops) as p:
        p.worker(b.endpoint, "payments", refunds, keys.peer("refunds"))
        b.log.wait_for(lambda: bool(b.log.of(WorkerRefused)), "WorkerRefused")
        (refused, *_) = b.log.of(WorkerRefused)
        assert refused.service == b"payments"
        assert refused.reason == ("not allowed: identity 'refunds' may not serve b'payments'; "
                                  "sent DISCONNECT")
        p.worker(b.endpoint, "payments", lambda f: [b"paid", *f], keys.peer("pay"))
        b.log.wait_for(lambda: bool(b.log.of(WorkerReady)), "WorkerReady")
        with p.client(b.endpoint, QUICK, keys.peer("shop")) as c:
            for i in range(20):
                assert c.request("payments", b"%d" % i) == [b"paid", b"%d" % i]
        b.log.wait_for(lambda: len(b.log.of(RequestDelivered)) == 20, "20 deliveries")
        assert seen_by_refunds == []
        assert {e.worker for e in b.log.of(RequestDelivered)} == {b.log.of(WorkerReady)[0].worker}


@pytest.mark.parametrize(("driver", "peers"), PAIRS)
def test_a_client_not_allowed_is_refused_and_its_client_says_why(
    driver: str, peers: str, keys: Keys, loops: Loops,
) -> None:
    """The diagnosis asks a second question after a 404: every client sends it."""
    with running(driver, loops, keys.broker(), BrokerConfig(policy=POLICY)) as b, \
            peers_of(peers, loops) as p:
        p.worker(b.endpoint, "payments", lambda f: [b"paid"], keys.peer("pay"))
        b.log.wait_for(lambda: bool(b.log.of(WorkerReady)), "WorkerReady")
        with p.client(b.endpoint, QUICK, keys.peer("mallory")) as c:
            assert not c.service_exists("payments")  # it does not learn of it
            with pytest.raises(mdp_zmq.RequestTimeout) as failed:
                c.request("payments", SECRET)
        assert failed.value.cause is FailureCause.REFUSED
        assert "the broker does not allow this client to call 'payments'" in str(failed.value)
        b.log.wait_for(lambda: bool(b.log.of(RequestRefused)), "RequestRefused")
        (refused,) = b.log.of(RequestRefused)
        assert refused.reason == "not allowed: identity 'mallory' may not call b'payments'"
        with p.client(b.endpoint, QUICK, keys.peer("shop")) as c:
            assert c.service_exists("payments")
            assert c.request("payments", b"x") == [b"paid"]


# ------------------------------------------------------------------ routing ids


def raw_dealer(endpoint: str, security: Security | None, routing_id: bytes) -> zmq.Socket[bytes]:
    s: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.ROUTING_ID, routing_id)
    if security is not None:
        s.setsockopt(zmq.CURVE_PUBLICKEY, security.public_key)
        s.setsockopt(zmq.CURVE_SECRETKEY, security.secret_key)
        s.setsockopt(zmq.CURVE_SERVERKEY, security.broker_key or b"")
    s.connect(endpoint)
    return s


@pytest.mark.parametrize(("driver", "peers"), PAIRS)
def test_a_second_connection_claiming_a_routing_id_with_another_key_is_refused(
    driver: str, peers: str, keys: Keys, loops: Loops,
) -> None:
    busy, release = threading.Event(), threading.Event()

    def slow(frames: list[bytes]) -> list[bytes]:
        busy.set()
        release.wait(10)
        return [b"yours", *frames]

    with running(driver, loops, keys.broker(), BrokerConfig(policy=POLICY)) as b, \
            peers_of(peers, loops) as p:
        p.worker(b.endpoint, "payments", slow, keys.peer("pay"))
        b.log.wait_for(lambda: bool(b.log.of(WorkerReady)), "WorkerReady")
        worker_id = b.log.of(WorkerReady)[0].worker
        shop, mallory = keys.peer("shop").security, keys.peer("mallory").security
        victim = raw_dealer(b.endpoint, shop, b"victim")
        socks = [victim]
        try:
            victim.send_multipart([b"MDPC02", b"\x01", b"payments", SECRET])
            assert busy.wait(10), "the worker never got the victim's request"
            # Only now, with both sessions live, do the thieves claim their routing ids.
            thief = raw_dealer(b.endpoint, mallory, b"victim")
            worker_thief = raw_dealer(b.endpoint, mallory, worker_id)
            socks += [thief, worker_thief]
            thief.send_multipart([b"MDPC02", b"\x01", b"echo", b"I am the victim"])
            worker_thief.send_multipart([b"MDPW02", b"\x04", b"victim", b"", b"forged"])
            time.sleep(0.2)  # give the claims their chance before the real reply
            release.set()
            assert victim.poll(10_000), "the victim got no reply"
            assert victim.recv_multipart() == [b"MDPC02", b"\x03", b"payments", b"yours",
                                               SECRET]
            assert not thief.poll(500) and not worker_thief.poll(0)
        finally:
            release.set()
            for sock in socks:
                sock.close(0)
        b.log.wait_for(lambda: bool(b.log.of(RequestDelivered)), "RequestDelivered")
        assert [e.client for e in b.log.of(RequestDelivered)] == [b"victim"]
        assert len(b.log.of(WorkerReady)) == 1 and b.log.of(RequestRefused) == []


# ------------------------------------------------------------------ encryption


class Relay:
    """A pure-Python TCP relay on loopback to ``port`` that records every byte."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"tcp://127.0.0.1:{self.listener.getsockname()[1]}"
        self.lock = threading.Lock()
        self.captured = bytearray()
        self.socks: list[socket.socket] = []
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            with self.lock:
                self.socks += [conn, upstream]
            for a, b in ((conn, upstream), (upstream, conn)):
                t = threading.Thread(target=self._pipe, args=(a, b), daemon=True)
                self.threads.append(t)
                t.start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                with self.lock:
                    self.captured += data
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        with suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        self.listener.close()
        with self.lock:
            for s in self.socks:
                with suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
        for t in self.threads:
            t.join(5)


def round_trip_through(relay: Relay, worker_t: TransportConfig, client_t: TransportConfig,
                       peers: str, loops: Loops) -> list[bytes]:
    """A worker and a client (of ``peers``' driver) talking through ``relay``."""
    with peers_of(peers, loops) as p:
        p.worker(relay.endpoint, "payments", lambda f: [b"done: " + f[0]], worker_t)
        with p.client(relay.endpoint, ClientConfig(timeout=5, retries=1), client_t) as c:
            return c.request("payments", SECRET)


@pytest.mark.parametrize("peers", DRIVERS)
@pytest.mark.parametrize("driver", BROKERS)
def test_the_traffic_is_encrypted(driver: str, peers: str, keys: Keys, loops: Loops) -> None:
    with running(driver, loops, keys.broker(), BrokerConfig(policy=POLICY)) as b:
        relay = Relay(b.port)
        try:
            reply = round_trip_through(relay, keys.peer("pay"), keys.peer("shop"), peers, loops)
        finally:
            relay.close()
    assert reply == [b"done: " + SECRET]
    captured = bytes(relay.captured)
    assert len(captured) > 2 * len(SECRET)  # the messages went through the relay
    for clear in (SECRET, b"done: SECRET", b"payments", b"MDPC02", b"MDPW02"):
        assert clear not in captured


@pytest.mark.parametrize("driver", BROKERS)
def test_the_relay_sees_the_body_in_clear_without_curve(driver: str, loops: Loops) -> None:
    """The control: the same capture shows the body when CURVE is off."""
    with running(driver, loops, TransportConfig()) as b:
        relay = Relay(b.port)
        try:
            reply = round_trip_through(relay, TransportConfig(), TransportConfig(), "zmq", loops)
        finally:
            relay.close()
    assert reply == [b"done: " + SECRET]
    assert SECRET in bytes(relay.captured)
