"""Our broker, worker and client against independent RFC 7 / RFC 18 peers.

The peers (tests/rfc_peers.py) are written from the RFC texts alone, on raw
pyzmq REQ, DEALER and ROUTER sockets, and fail on any frame the RFC does
not allow. Our broker (mdp_zmq.Broker) meets raw clients and workers; our
mdp_zmq.Worker and mdp_zmq.Client meet a raw broker, so a codec mistake
shared by our broker and our worker/client cannot cancel itself out.
Loopback TCP on a free port; each test stops only the threads and sockets
it started.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import mdp_zmq
import pytest
import zmq
from rfc_peers import (
    MDPC01,
    MDPC02,
    MDPW01,
    MDPW02,
    W01_COMMANDS,
    W02_COMMANDS,
    RawBroker,
    RawWorker,
    RawWorkerThread,
    Rfc7Client,
    Rfc18Client,
)
from zmq_support import BrokerThread, ThreadWorkers

from mdp_core import (
    BrokerConfig,
    ClientConfig,
    Dialect,
    Event,
    ProtocolError,
    RequestAbandoned,
    RequestRequeued,
    WorkerConfig,
    WorkerLost,
    WorkerReady,
)

VERSIONS = ["0.1", "0.2"]
DIALECTS = {"0.1": Dialect.MDP01, "0.2": Dialect.MDP02}


class Peers:
    """Everything one test opened on its own context; closed at teardown."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], broker: BrokerThread) -> None:
        self.ctx = ctx
        self.broker = broker
        self.endpoint = broker.endpoint
        self.threads: list[RawWorkerThread] = []
        self.closables: list[Any] = []

    def serve(self, service: bytes, version: str, handler: Callable[[list[bytes]],
              list[list[bytes]]], identity: bytes, **kw: Any) -> RawWorkerThread:
        """A raw worker thread; returns once the broker has registered it."""
        t = RawWorkerThread(self.ctx, self.endpoint, service, version, handler,
                            identity=identity, **kw)
        self.threads.append(t)
        wait_for(self.broker, WorkerReady, worker=identity)
        return t

    def worker(self, service: bytes, version: str, identity: bytes, **kw: Any) -> RawWorker:
        """A raw worker driven by the test itself (not yet connected)."""
        w = RawWorker(self.ctx, self.endpoint, service, version, identity=identity, **kw)
        self.closables.append(w)
        return w

    def client7(self, **kw: Any) -> Rfc7Client:
        c = Rfc7Client(self.ctx, self.endpoint, **kw)
        self.closables.append(c)
        return c

    def client18(self, **kw: Any) -> Rfc18Client:
        c = Rfc18Client(self.ctx, self.endpoint, **kw)
        self.closables.append(c)
        return c

    def close(self) -> list[BaseException]:
        errors: list[BaseException] = []
        for t in self.threads:
            t.stop()
            errors.extend(t.errors)
        for c in self.closables:
            c.close()
        return errors


def wait_for(broker: BrokerThread, kind: type[Event], timeout: float = 10.0,
             **fields: object) -> Event:
    """Wait until the broker reported an event of ``kind`` with these field values."""
    found: list[Event] = []

    def pred() -> bool:
        for _, e in broker.events:
            if isinstance(e, kind) and all(getattr(e, k) == v for k, v in fields.items()):
                found.append(e)
                return True
        return False

    assert broker.wait(pred, timeout), f"no {kind.__name__} {fields} in {broker.events}"
    return found[0]


def events_of(broker: BrokerThread, kind: type[Event], **fields: object) -> list[Event]:
    return [e for _, e in broker.of(kind) if all(getattr(e, k) == v for k, v in fields.items())]


@pytest.fixture
def broker_config() -> BrokerConfig:
    return BrokerConfig()


@pytest.fixture
def broker(broker_config: BrokerConfig) -> Iterator[BrokerThread]:
    b = BrokerThread("tcp://127.0.0.1:*", broker_config)
    yield b
    b.close()


@pytest.fixture
def peers(broker: BrokerThread) -> Iterator[Peers]:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    p = Peers(ctx, broker)
    try:
        yield p
    finally:
        errors = p.close()
        ctx.destroy(linger=0)
    assert not errors, f"raw worker threads failed: {errors!r}"


def echo_with(tag: bytes) -> Callable[[list[bytes]], list[list[bytes]]]:
    return lambda body: [[tag, *body]]


# ---------------------------------------------------------------- request/reply


def test_rfc7_req_client_gets_reply_from_rfc7_worker(peers: Peers) -> None:
    worker = peers.serve(b"echo", "0.1", echo_with(b"w01"), identity=b"w01")
    client = peers.client7(identity=b"c01")
    assert client.request(b"echo", b"hello", b"world") == [b"w01", b"hello", b"world"]
    assert client.request(b"echo", b"again") == [b"w01", b"again"]  # REQ lockstep holds
    # REQUEST carried exactly the client's address, then "", then the body
    assert worker.requests == [(b"c01", [b"hello", b"world"]), (b"c01", [b"again"])]


def test_rfc7_dealer_client_writing_its_own_empty_frame_gets_reply(peers: Peers) -> None:
    peers.serve(b"echo", "0.1", echo_with(b"w01"), identity=b"w01")
    client = peers.client7(dealer=True)
    assert client.request(b"echo", b"x", b"") == [b"w01", b"x", b""]  # empty body frames survive


def test_rfc18_client_gets_partials_then_final_from_rfc18_worker(peers: Peers) -> None:
    worker = peers.serve(b"stream", "0.2",
                         lambda body: [[b"p1"], [b"p2", b"two frames"], [b"done", *body]],
                         identity=b"w02")
    client = peers.client18(identity=b"c02")
    assert client.request(b"stream", b"go") == [
        ("PARTIAL", [b"p1"]), ("PARTIAL", [b"p2", b"two frames"]), ("FINAL", [b"done", b"go"]),
    ]
    assert worker.requests == [(b"c02", [b"go"])]


def test_rfc7_client_gets_rfc18_worker_partials_gathered_into_one_reply(peers: Peers) -> None:
    peers.serve(b"stream", "0.2", lambda body: [[b"p1"], [b"p2", b"p3"], [b"final", *body]],
                identity=b"w02")
    client = peers.client7()
    assert client.request(b"stream", b"go") == [b"p1", b"p2", b"p3", b"final", b"go"]


def test_rfc18_client_gets_one_final_from_rfc7_worker(peers: Peers) -> None:
    peers.serve(b"echo", "0.1", echo_with(b"w01"), identity=b"w01")
    client = peers.client18()
    assert client.request(b"echo", b"a", b"b") == [("FINAL", [b"w01", b"a", b"b"])]


def test_rfc7_and_rfc18_workers_share_one_service(peers: Peers) -> None:
    w1 = peers.serve(b"mixed", "0.1", echo_with(b"w01"), identity=b"w01")
    w2 = peers.serve(b"mixed", "0.2", echo_with(b"w02"), identity=b"w02")
    c7, c18 = peers.client7(), peers.client18()
    tags = set()
    for _ in range(3):
        tags.add(c7.request(b"mixed", b"x")[0])
        tags.add(c18.request(b"mixed", b"y")[0][1][0])
    assert tags == {b"w01", b"w02"}
    assert w1.served + w2.served == 6


# Frames that look like envelope or protocol frames, a large one, and many.
ODD_BODY = [b"", b"MDPC01", b"MDPW02", b"\x01", b"", b"\x00" * 3,
            bytes(range(256)) * 4096, *(b"%d" % i for i in range(100))]


@pytest.mark.parametrize(("client_version", "worker_version"),
                         [("0.1", "0.1"), ("0.1", "0.2"), ("0.2", "0.1"), ("0.2", "0.2")])
def test_odd_large_and_many_frame_bodies_pass_unchanged_both_ways(
    peers: Peers, client_version: str, worker_version: str
) -> None:
    worker = peers.serve(b"echo", worker_version, lambda body: [list(body)], identity=b"w")
    if client_version == "0.1":
        assert peers.client7().request(b"echo", *ODD_BODY) == ODD_BODY
    else:
        assert peers.client18().request(b"echo", *ODD_BODY) == [("FINAL", ODD_BODY)]
    assert worker.requests[0][1] == ODD_BODY


# ---------------------------------------------------------------- MMI (RFC 8)


def test_mmi_service_from_rfc7_req_client_answers_200_then_404_after_worker_disconnects(
    peers: Peers, broker: BrokerThread
) -> None:
    client = peers.client7()
    assert client.request(b"mmi.service", b"echo") == [b"404"]
    worker = peers.worker(b"echo", "0.1", identity=b"w01")
    worker.open()
    wait_for(broker, WorkerReady, worker=b"w01")
    assert client.request(b"mmi.service", b"echo") == [b"200"]
    worker.send("DISCONNECT")  # "The worker MAY send DISCONNECT at any time"
    wait_for(broker, WorkerLost, worker=b"w01")
    assert client.request(b"mmi.service", b"echo") == [b"404"]


@pytest.mark.parametrize("version", VERSIONS)
def test_unimplemented_mmi_service_answers_501(peers: Peers, version: str) -> None:
    if version == "0.1":
        assert peers.client7().request(b"mmi.foo", b"x") == [b"501"]
    else:
        assert peers.client18().request(b"mmi.foo", b"x") == [("FINAL", [b"501"])]


@pytest.mark.parametrize("version", VERSIONS)
def test_worker_ready_for_mmi_namespace_gets_disconnect(
    peers: Peers, broker: BrokerThread, version: str
) -> None:
    worker = peers.worker(b"mmi.x", version, identity=b"bad")
    worker.open()
    worker.expect_disconnect()
    assert peers.client7().request(b"mmi.service", b"mmi.x") == [b"404"]  # not registered
    assert not events_of(broker, WorkerReady, worker=b"bad")


# ---------------------------------------------------------------- bad workers


GARBAGE = [
    [b"NOTMDP", b"\x01", b"svc"],                 # unknown protocol header
    [b"", MDPW01, b"\x09"],                       # unknown MDP/0.1 command
    [MDPW02, b"\x01"],                            # READY without a service frame
    [MDPW02, b"\x04", b"someclient", b"x"],       # FINAL without the empty delimiter
    [b"", MDPW01, b"\x04", b"extra"],             # HEARTBEAT with an extra frame
    [b""],                                        # an empty frame and nothing else
]


def test_malformed_worker_messages_are_dropped_and_other_clients_still_served(
    peers: Peers, broker: BrokerThread
) -> None:
    peers.serve(b"echo", "0.2", echo_with(b"good"), identity=b"good")
    bad = peers.worker(b"other", "0.1", identity=b"garbage")
    bad.open(ready=False)
    messages = GARBAGE
    for frames in messages:
        bad.send_raw(frames)
    assert broker.wait(lambda: len(events_of(broker, ProtocolError, peer=b"garbage"))
                       >= len(messages))
    reasons = [e.reason for e in events_of(broker, ProtocolError, peer=b"garbage")]
    assert all("malformed" in r for r in reasons), reasons
    client = peers.client7()
    assert client.request(b"echo", b"still served") == [b"good", b"still served"]
    # Dropped, not answered: an invalid message gets nothing back (RFC: "dropping them").
    with pytest.raises(TimeoutError):
        bad.recv_command(0.2)
    assert not events_of(broker, WorkerReady, worker=b"garbage")


def _unexpected_commands(version: str) -> dict[str, Callable[[RawWorker], None]]:
    codes = W01_COMMANDS if version == "0.1" else W02_COMMANDS
    header = MDPW01 if version == "0.1" else MDPW02
    prefix = [b"", header] if version == "0.1" else [header]
    return {
        "second READY": lambda w: w.send("READY", w.service),
        "REQUEST, which only a broker sends": lambda w: w.send_raw(
            [*prefix, codes["REQUEST"], b"someclient", b"", b"body"]),
        "reply for a client it does not serve": lambda w: w.reply(b"nobody", b"x"),
    }


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("case", ["second READY", "REQUEST, which only a broker sends",
                                  "reply for a client it does not serve",
                                  "HEARTBEAT before READY"])
def test_valid_but_unexpected_worker_command_gets_disconnect_and_others_are_served(
    peers: Peers, broker: BrokerThread, version: str, case: str
) -> None:
    peers.serve(b"echo", "0.2" if version == "0.1" else "0.1", echo_with(b"good"),
                identity=b"good")
    rogue = peers.worker(b"echo", version, identity=b"rogue")
    if case == "HEARTBEAT before READY":
        rogue.open(ready=False)
        rogue.send("HEARTBEAT")
    else:
        rogue.open()
        wait_for(broker, WorkerReady, worker=b"rogue")
        _unexpected_commands(version)[case](rogue)
    rogue.expect_disconnect()
    wait_for(broker, ProtocolError, peer=b"rogue")
    # "... and then no further commands to that worker": requests go to the good one only
    client = peers.client18()
    for _ in range(3):
        assert client.request(b"echo", b"x") == [("FINAL", [b"good", b"x"])]
    with pytest.raises(TimeoutError):
        rogue.recv_command(0.2)


# ---------------------------------------------------------------- heartbeats and loss


@pytest.mark.parametrize("broker_config",
                         [BrokerConfig(heartbeat_interval=0.2, heartbeat_liveness=5)])
@pytest.mark.parametrize("version", VERSIONS)
def test_heartbeating_raw_worker_stays_registered_while_a_silent_one_expires(
    peers: Peers, broker: BrokerThread, version: str
) -> None:
    silent = peers.worker(b"echo", version, identity=b"silent")
    silent.open()  # READY, then never a word: it must expire after 5 x 0.2 s
    wait_for(broker, WorkerReady, worker=b"silent")
    alive = peers.serve(b"echo", version, echo_with(b"alive"), identity=b"alive",
                        heartbeat_interval=0.1)
    lost = wait_for(broker, WorkerLost, worker=b"silent")
    assert "heartbeat" in lost.reason  # type: ignore[attr-defined]
    time.sleep(1.2)  # six broker heartbeat intervals, more than the expiry
    assert alive.worker.heartbeats_received >= 2  # the broker heartbeats in the worker's dialect
    assert not events_of(broker, WorkerLost, worker=b"alive")
    # The silent worker was registered first, so least-recently-used dispatch
    # would pick it if it had not expired.
    assert peers.client7().request(b"echo", b"x") == [b"alive", b"x"]
    # All the silent one ever got: well-formed HEARTBEATs (recv_command checks them).
    received = []
    while True:
        try:
            received.append(silent.recv_command(0.1)[0])
        except TimeoutError:
            break
    assert received and set(received) == {"HEARTBEAT"}


@pytest.mark.parametrize("broker_config",
                         [BrokerConfig(heartbeat_interval=0.1, heartbeat_liveness=3)])
@pytest.mark.parametrize("version", VERSIONS)
def test_busy_raw_worker_silent_past_liveness_keeps_its_job_and_its_reply_is_delivered(
    peers: Peers, broker: BrokerThread, version: str
) -> None:
    # Single-threaded workers of other implementations cannot heartbeat during
    # a job; we do not expire a busy worker for silence (deliberate deviation).
    worker = peers.worker(b"job", version, identity=b"busy")
    worker.open()
    wait_for(broker, WorkerReady, worker=b"busy")
    client = peers.client18()
    client.send(b"job", b"long")
    request = worker.next_request(5.0)
    time.sleep(1.0)  # > 3 x 0.1 s of silence while busy
    worker.reply(request[0], b"done")
    assert client.recv() == ("FINAL", b"job", [b"done"])
    assert not events_of(broker, WorkerLost, worker=b"busy")


@pytest.mark.parametrize("broker_config", [BrokerConfig(heartbeat_interval=10.0)])
def test_raw_worker_dropping_its_connection_mid_request_has_it_redispatched(
    peers: Peers, broker: BrokerThread
) -> None:
    first = peers.worker(b"job", "0.2", identity=b"first")
    first.open()
    wait_for(broker, WorkerReady, worker=b"first")
    client = peers.client7(identity=b"c01")
    client.send(b"job", b"work")
    assert first.next_request(5.0) == (b"c01", [b"work"])
    peers.serve(b"job", "0.1", echo_with(b"second"), identity=b"second")
    first.close()  # the socket goes, mid-job; MDP heartbeats are far too slow to notice
    got_service, body = client.recv(timeout=8.0)
    assert (got_service, body) == (b"job", [b"second", b"work"])
    wait_for(broker, RequestRequeued, worker=b"first")
    assert "connection" in wait_for(broker, WorkerLost, worker=b"first").reason  # type: ignore[attr-defined]


@pytest.mark.parametrize("broker_config", [BrokerConfig(heartbeat_interval=10.0)])
def test_rfc7_client_reply_holds_only_the_partials_of_the_attempt_that_finished(
    peers: Peers, broker: BrokerThread
) -> None:
    # An MDP/0.1 client cannot see attempt boundaries inside its one REPLY, so
    # the PARTIALs a dead worker sent before dying must not be gathered into it.
    first = peers.worker(b"job", "0.2", identity=b"first")
    first.open()
    wait_for(broker, WorkerReady, worker=b"first")
    client = peers.client7(identity=b"c01")
    client.send(b"job", b"work")
    assert first.next_request(5.0) == (b"c01", [b"work"])
    first.partial(b"c01", b"from the dead attempt")
    peers.serve(b"job", "0.2", lambda body: [[b"second part"], [b"second final"]],
                identity=b"second")
    first.close(linger=2.0)  # dies mid-stream, once its PARTIAL is on the wire
    assert client.recv(timeout=8.0) == (b"job", [b"second part", b"second final"])


def test_broker_close_sends_disconnect_to_rfc7_and_rfc18_workers(
    peers: Peers, broker: BrokerThread
) -> None:
    workers = []
    for version in VERSIONS:
        w = peers.worker(b"echo", version, identity=b"w" + version.encode())
        w.open()
        wait_for(broker, WorkerReady, worker=w.identity)
        workers.append(w)
    broker.close()
    for w in workers:
        w.expect_disconnect()


def test_reply_for_a_client_that_went_away_is_dropped_and_the_worker_serves_on(
    peers: Peers, broker: BrokerThread
) -> None:
    worker = peers.worker(b"echo", "0.1", identity=b"w01")
    worker.open()
    wait_for(broker, WorkerReady, worker=b"w01")
    gone = peers.client7(identity=b"gone")
    gone.send(b"echo", b"never mind")
    client, _ = worker.next_request(5.0)
    gone.close()
    wait_for(broker, RequestAbandoned, client=b"gone")
    worker.reply(client, b"too late")  # dropped by the broker, not an error
    second = peers.client18()
    second.send(b"echo", b"next")
    client2, body2 = worker.next_request(5.0)
    worker.reply(client2, *body2)
    assert second.recv() == ("FINAL", b"echo", [b"next"])
    assert not events_of(broker, WorkerLost, worker=b"w01")
    assert not events_of(broker, ProtocolError, peer=b"w01")


# ================================================================ our worker/client, raw broker


@pytest.fixture
def raw_broker() -> Iterator[RawBroker]:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    b = RawBroker(ctx)
    yield b
    b.close()
    ctx.destroy(linger=0)


@pytest.mark.parametrize("version", VERSIONS)
def test_our_worker_speaks_the_rfc_to_a_raw_broker_and_obeys_disconnect(
    raw_broker: RawBroker, workers: ThreadWorkers, version: str
) -> None:
    def handler(frames: list[bytes]) -> Any:
        if version == "0.1":
            return [b"ours", *frames]

        def stream() -> Iterator[bytes]:
            yield b"p1"
            return [b"ours", *frames]  # type: ignore[return-value]
        return stream()

    # No HEARTBEATs during the test, so every message is one we asked for.
    workers.start(raw_broker.endpoint, "echo", handler,
                  WorkerConfig(heartbeat_interval=30.0, reconnect_delay=0.05),
                  DIALECTS[version])
    peer, name, rest = raw_broker.recv_worker(version, skip_heartbeats=False)
    assert (name, rest) == ("READY", [b"echo"])
    raw_broker.send_worker(peer, version, "REQUEST", b"client-1", b"", b"a", b"b")
    got = []
    while not got or got[-1][0] == "PARTIAL":
        p, name, rest = raw_broker.recv_worker(version, skip_heartbeats=False)
        assert p == peer
        got.append((name, rest))
    final = (b"client-1", b"", b"ours", b"a", b"b")
    if version == "0.1":
        assert got == [("REPLY", list(final))]
    else:
        assert got == [("PARTIAL", [b"client-1", b"", b"p1"]), ("FINAL", list(final))]
    # "When the worker receives DISCONNECT it must send no further commands ...
    # it MUST close its socket, and reconnect to the broker on a new socket."
    raw_broker.send_worker(peer, version, "DISCONNECT")
    peer2, name, rest = raw_broker.recv_worker(version, skip_heartbeats=False)
    assert (name, rest) == ("READY", [b"echo"])
    assert peer2 != peer


@pytest.mark.parametrize("version", VERSIONS)
def test_our_worker_heartbeats_a_raw_broker_and_reconnects_when_it_falls_silent(
    raw_broker: RawBroker, workers: ThreadWorkers, version: str
) -> None:
    workers.start(raw_broker.endpoint, "echo", lambda f: f,
                  WorkerConfig(heartbeat_interval=0.2, heartbeat_liveness=5,
                               reconnect_delay=0.05),
                  DIALECTS[version])
    peer, name, _ = raw_broker.recv_worker(version, skip_heartbeats=False)
    assert name == "READY"
    # Phase 1: the raw broker heartbeats too; the conversation goes on.
    heartbeats = 0
    end = time.monotonic() + 1.5
    next_hb = 0.0
    while time.monotonic() < end:
        if time.monotonic() >= next_hb:
            raw_broker.send_worker(peer, version, "HEARTBEAT")
            next_hb = time.monotonic() + 0.1
        try:
            p, name, _ = raw_broker.recv_worker(version, 0.05, skip_heartbeats=False)
        except TimeoutError:
            continue
        assert (p, name) == (peer, "HEARTBEAT")  # no new READY while we heartbeat
        heartbeats += 1
    assert heartbeats >= 2
    # Phase 2: the raw broker falls silent; after 5 x 0.2 s the worker starts
    # over (it MAY say DISCONNECT on the old conversation first, then nothing).
    said_disconnect = False
    while True:
        p, name, _ = raw_broker.recv_worker(version, 5.0, skip_heartbeats=False)
        if name == "READY":
            assert p != peer  # a new conversation on a new socket
            break
        assert p == peer and not said_disconnect, (p, name)
        assert name in ("HEARTBEAT", "DISCONNECT")
        said_disconnect = name == "DISCONNECT"


@pytest.mark.parametrize("version", VERSIONS)
def test_our_client_speaks_the_rfc_to_a_raw_broker_and_resends_on_a_new_socket(
    raw_broker: RawBroker, version: str
) -> None:
    result: dict[str, object] = {}

    def ask() -> None:
        with mdp_zmq.Client(raw_broker.endpoint, ClientConfig(timeout=0.5, retries=1),
                            DIALECTS[version]) as c:
            try:
                result["got"] = list(c.stream("echo", b"x", b"y"))
            except Exception as exc:
                result["got"] = exc

    thread = threading.Thread(target=ask, daemon=True)
    thread.start()
    try:
        expected = ([b"", MDPC01, b"echo", b"x", b"y"] if version == "0.1"
                    else [MDPC02, b"\x01", b"echo", b"x", b"y"])
        first, frames = raw_broker.recv()
        assert frames == expected
        # Unanswered: the client closes that socket and resends on a new one.
        second, frames = raw_broker.recv(5.0)
        assert frames == expected
        assert second != first
        if version == "0.1":
            raw_broker.sock.send_multipart([second, b"", MDPC01, b"echo", b"r1", b"r2"])
        else:
            raw_broker.sock.send_multipart([second, MDPC02, b"\x02", b"echo", b"p"])
            raw_broker.sock.send_multipart([second, MDPC02, b"\x03", b"echo", b"f"])
    finally:
        thread.join(10)
    assert result["got"] == ([[b"r1", b"r2"]] if version == "0.1" else [[b"p"], [b"f"]])


@pytest.mark.parametrize("version", VERSIONS)
def test_our_worker_drops_a_malformed_request_and_disconnects_on_an_unexpected_command(
    raw_broker: RawBroker, workers: ThreadWorkers, version: str
) -> None:
    workers.start(raw_broker.endpoint, "echo", lambda f: [b"ours", *f],
                  WorkerConfig(heartbeat_interval=30.0, reconnect_delay=0.05),
                  DIALECTS[version])
    peer, name, _ = raw_broker.recv_worker(version, skip_heartbeats=False)
    assert name == "READY"
    # Two address frames: not "precisely one client address frame" -> dropped.
    raw_broker.send_worker(peer, version, "REQUEST", b"a", b"b", b"", b"bad")
    raw_broker.send_worker(peer, version, "REQUEST", b"client-1", b"", b"good")
    p, name, rest = raw_broker.recv_worker(version, skip_heartbeats=False)
    assert (p, name, rest) == (peer, "REPLY" if version == "0.1" else "FINAL",
                               [b"client-1", b"", b"ours", b"good"])
    # READY sent to a worker is valid but unexpected: DISCONNECT, then a new conversation.
    raw_broker.send_worker(peer, version, "READY", b"echo")
    p, name, _ = raw_broker.recv_worker(version, skip_heartbeats=False)
    assert (p, name) == (peer, "DISCONNECT")
    p, name, rest = raw_broker.recv_worker(version, skip_heartbeats=False)
    assert (name, rest) == ("READY", [b"echo"])
    assert p != peer


@pytest.mark.parametrize("version", VERSIONS)
def test_our_client_ignores_replies_that_are_not_its_answer(
    raw_broker: RawBroker, version: str
) -> None:
    result: dict[str, object] = {}

    def ask() -> None:
        with mdp_zmq.Client(raw_broker.endpoint, ClientConfig(timeout=5, retries=0),
                            DIALECTS[version]) as c:
            try:
                result["got"] = c.request("echo", b"x")
            except Exception as exc:
                result["got"] = exc

    thread = threading.Thread(target=ask, daemon=True)
    thread.start()
    try:
        peer, _ = raw_broker.recv()
        send = raw_broker.sock.send_multipart
        if version == "0.1":
            send([peer, b"", MDPC01, b"other", b"wrong service"])
            send([peer, MDPC01, b"echo", b"no empty frame"])
            send([peer, b"", MDPC01, b"echo", b"right"])
        else:
            send([peer, MDPC02, b"\x03", b"other", b"wrong service"])
            send([peer, MDPC02, b"\x01", b"echo", b"a REQUEST"])
            send([peer, MDPC02, b"\x03", b"echo", b"right"])
    finally:
        thread.join(10)
    assert result["got"] == [b"right"]
