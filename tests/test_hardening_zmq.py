"""mdp_zmq against hostile peers and careless callers, over real sockets.

Loopback only, every wait bounded. Attacks: routing-id hijack (silent and
sending), a stolen worker id sending DISCONNECT, a 100 MB frame, a flood of
bad messages; careless callers: wrong argument types, handler results that
cannot be sent, SIGTERM at any moment.
"""

from __future__ import annotations

import logging
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator

import mdp_zmq
import pytest
import zmq
from mdp_zmq.glue import (
    LogLimiter,
    TransportConfig,
    close_monitor,
    drain_monitor,
    open_monitor,
)
from zmq_support import BrokerThread, ProcSet, ThreadWorkers, free_tcp_endpoint, mdp_cli

import mdp_core
from mdp_core import (
    ClientConfig,
    ClientRequest,
    Dialect,
    Disconnect,
    ProtocolError,
    Ready,
    RequestAbandoned,
    RequestDelivered,
    RequestExpired,
    RequestRequeued,
    RequestUndelivered,
    WorkerConfig,
    WorkerLost,
    WorkerReady,
    encode,
)

CTX: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()


def echo(frames: list[bytes]) -> list[bytes]:
    return frames


@pytest.fixture
def broker() -> Iterator[BrokerThread]:
    b = BrokerThread("tcp://127.0.0.1:*")
    yield b
    b.close()


class Raw:
    """Raw DEALER sockets a test opens, with their monitors; closed at teardown."""

    def __init__(self) -> None:
        self.socks: dict[zmq.Socket[bytes], zmq.Socket[bytes]] = {}

    def dealer(self, endpoint: str, routing_id: bytes | None = None) -> zmq.Socket[bytes]:
        """A DEALER connected to ``endpoint``, its handshake done."""
        d: zmq.Socket[bytes] = CTX.socket(zmq.DEALER)
        d.setsockopt(zmq.LINGER, 0)
        if routing_id is not None:
            d.setsockopt(zmq.ROUTING_ID, routing_id)
        self.socks[d] = open_monitor(d, zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED)
        d.connect(endpoint)
        assert self.wait_for(d, zmq.EVENT_HANDSHAKE_SUCCEEDED), "no handshake with the broker"
        return d

    def wait_for(self, d: zmq.Socket[bytes], event: int, timeout: float = 10.0) -> bool:
        """Wait until ``d``'s monitor reports ``event``."""
        mon, deadline = self.socks[d], time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            if mon.poll(max(1, int(left * 1000))) and any(
                    e.event == event for e in drain_monitor(mon)):
                return True
        return False

    def close(self) -> None:
        for d, mon in self.socks.items():
            close_monitor(d, mon)
            d.close(0)


@pytest.fixture
def raw() -> Iterator[Raw]:
    r = Raw()
    yield r
    r.close()


def settle(endpoint: str) -> None:
    """Let the broker process what is queued before now: one MMI round trip
    on a fresh client, then a pause for libzmq's own commands (attaching a
    new connection's pipe). Only makes an attack *land* on code that lets
    it; passing tests never depend on it."""
    with mdp_zmq.Client(endpoint, ClientConfig(timeout=10, retries=0)) as c:
        c.service_exists("anything")
    time.sleep(0.2)


# ------------------------------------------------------------------ hijack


def _victim(endpoint: str, result: dict[str, object]) -> threading.Thread:
    def run() -> None:
        with mdp_zmq.Client(endpoint, ClientConfig(timeout=20, retries=0)) as client:
            try:
                result["reply"] = client.request("slow", b"secret-balance")
            except Exception as exc:
                result["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("sending", [False, True], ids=["silent", "sending"])
def test_a_peer_claiming_a_waiting_clients_routing_id_gets_nothing(
    broker: BrokerThread, raw: Raw, sending: bool
) -> None:
    # The slow worker is a raw socket, so the test reads the victim's routing
    # id from the REQUEST, as any worker could (and as libzmq's predictable
    # ids let anyone guess).
    worker = raw.dealer(broker.endpoint)
    worker.send_multipart(encode(Ready(b"slow"), Dialect.MDP02))
    assert broker.wait_count(WorkerReady, 1)
    result: dict[str, object] = {}
    victim = _victim(broker.endpoint, result)
    assert worker.poll(10_000)
    request = worker.recv_multipart()
    assert request[:2] == [b"MDPW02", b"\x02"] and request[-1] == b"secret-balance"
    client_id = request[2]

    thief = raw.dealer(broker.endpoint, routing_id=client_id)
    if sending:
        thief.send_multipart(encode(ClientRequest(b"slow", (b"steal",)), Dialect.MDP02))
    settle(broker.endpoint)
    worker.send_multipart([b"MDPW02", b"\x04", client_id, b"", b"balance: 42"])
    victim.join(20)
    assert result == {"reply": [b"balance: 42"]}
    assert not thief.poll(500)  # nothing reached the thief, not even later
    assert not worker.poll(200)  # the thief's REQUEST (if sent) went nowhere
    assert broker.of(RequestAbandoned) == []


def test_a_peer_claiming_a_live_workers_id_cannot_disconnect_it(
    broker: BrokerThread, raw: Raw, workers: ThreadWorkers
) -> None:
    workers.start(broker.endpoint, "echo", echo)
    assert broker.wait_count(WorkerReady, 1)
    worker_id = broker.of(WorkerReady)[0][1].worker
    thief = raw.dealer(broker.endpoint, routing_id=worker_id)
    thief.send_multipart(encode(Disconnect(), Dialect.MDP02))
    settle(broker.endpoint)
    with mdp_zmq.Client(broker.endpoint, ClientConfig(timeout=10, retries=0)) as client:
        assert client.request("echo", b"still here") == [b"still here"]
    assert broker.of(WorkerLost) == []
    assert len(broker.of(WorkerReady)) == 1  # the same session throughout
    assert workers.workers[0].handled == 1


def test_a_routing_id_on_a_second_live_connection_is_refused_and_reported(
    raw: Raw, caplog: pytest.LogCaptureFixture
) -> None:
    # libzmq never lets such a message through without handover: make the
    # tracker hold the id on another live connection, as if it had.
    # The tracker is filled before the broker thread starts: no race on it.
    broker = BrokerThread("tcp://127.0.0.1:*", start=False)
    caplog.set_level(logging.WARNING, logger="mdp_zmq")
    try:
        tracker = broker.broker.tracker
        assert tracker.accepted(100_000) == []
        assert tracker.bind(b"taken", 100_000) == []
        broker.start()
        d = raw.dealer(broker.endpoint, routing_id=b"taken")
        for _ in range(3):
            d.send_multipart(encode(Ready(b"svc"), Dialect.MDP02))
        deadline = time.monotonic() + 10
        while sum("routing id taken" in r.getMessage() for r in caplog.records) < 3:
            assert time.monotonic() < deadline, [r.getMessage() for r in caplog.records]
            time.sleep(0.01)
        line = next(r.getMessage() for r in caplog.records if "routing id taken" in r.getMessage())
        assert "on fd 100000 is open; message dropped" in line
        assert "new connection (fd " in line
        assert broker.of(WorkerReady) == [] and broker.of(ProtocolError) == []
        assert tracker.connection_of(b"taken") == (100_000, 1)
    finally:
        broker.close()


def test_with_handover_on_a_new_connection_takes_the_routing_id_over(
    raw: Raw, caplog: pytest.LogCaptureFixture
) -> None:
    broker = BrokerThread("tcp://127.0.0.1:*", transport=TransportConfig(router_handover=True),
                          start=False)
    caplog.set_level(logging.INFO, logger="mdp_zmq")
    try:
        tracker = broker.broker.tracker
        tracker.accepted(100_000)
        tracker.bind(b"mine", 100_000)
        broker.start()
        d = raw.dealer(broker.endpoint, routing_id=b"mine")
        d.send_multipart(encode(Ready(b"svc"), Dialect.MDP02))
        assert broker.wait_count(WorkerReady, 1)
        assert any("handed over from fd 100000" in r.getMessage() for r in caplog.records)
        conn = tracker.connection_of(b"mine")
        assert conn is not None and conn[0] != 100_000
    finally:
        broker.close()


# ------------------------------------------------------------------ transport limits


def test_a_frame_over_max_message_bytes_never_reaches_the_core(
    broker: BrokerThread, raw: Raw, workers: ThreadWorkers
) -> None:
    workers.start(broker.endpoint, "echo", echo)
    assert broker.wait_count(WorkerReady, 1)
    big = raw.dealer(broker.endpoint)
    big.send(zmq.Frame(b"\0" * (100 * 1024 * 1024)), copy=False)
    # The broker drops the connection (the sender's monitor says so);
    # without the limit it would read the frame, and the core report it.
    assert raw.wait_for(big, zmq.EVENT_DISCONNECTED, 15), "the 100 MB frame was read"
    with mdp_zmq.Client(broker.endpoint, ClientConfig(timeout=10, retries=0)) as client:
        assert client.request("echo", b"small") == [b"small"]
    assert broker.of(ProtocolError) == []


def test_a_client_that_does_not_read_gets_exactly_the_replies_counted_delivered(
    broker: BrokerThread, raw: Raw, workers: ThreadWorkers
) -> None:
    """Replies the ROUTER refuses (the client's queue is full) are reported to
    the core, which ends those requests with RequestUndelivered: afterwards
    the client can read exactly as many replies as were counted delivered."""
    workers.start(broker.endpoint, "echo", echo)
    assert broker.wait_count(WorkerReady, 1)
    client = raw.dealer(broker.endpoint)
    client.setsockopt(zmq.RCVHWM, 1)
    n, body = 1000, b"y" * 65536
    for _ in range(n):
        client.send_multipart(encode(ClientRequest(b"echo", (body,)), Dialect.MDP02))

    def ended() -> int:
        return len(broker.of(RequestDelivered)) + len(broker.of(RequestUndelivered))

    assert broker.wait(lambda: ended() >= n, 60), f"only {ended()} of {n} requests ended"
    undelivered = broker.of(RequestUndelivered)
    assert undelivered, "every reply fitted: the test did not fill the client's queue"
    assert all(e.service == b"echo" for _, e in undelivered)
    delivered = len(broker.of(RequestDelivered))
    got = 0
    while client.poll(2000):
        assert client.recv_multipart()[-1] == body
        got += 1
    assert got == delivered
    assert ended() == n  # exactly one outcome each


def test_a_flood_of_bad_messages_logs_a_bounded_number_of_lines(raw: Raw) -> None:
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    handler = Collect(logging.WARNING)
    logger = logging.getLogger("mdp_zmq")
    old_level = logger.level
    logger.setLevel(logging.WARNING)
    logger.addHandler(handler)
    broker = BrokerThread("tcp://127.0.0.1:*")
    try:
        flood = raw.dealer(broker.endpoint)
        n = 100_000
        for i in range(n):
            flood.send(b"bad %06d" % i)  # 10 bytes, no MDP header
        assert broker.wait_count(ProtocolError, n, timeout=120)
    finally:
        broker.close()  # writes the summary of the window still open
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    # 5 lines per 10 s window, then one summary per window: the flood would
    # need minutes to make 50 (before: one line per message).
    assert len(lines) < 50, len(lines)
    assert all(len(line) < 500 for line in lines)
    summaries = [line for line in lines if line.startswith("suppressed ")]
    assert summaries and all(
        " ProtocolError (malformed message dropped) lines in the last " in line
        for line in summaries)
    shown = [line for line in lines if line.startswith("ProtocolError ")]
    assert len(shown) + sum(int(line.split()[1]) for line in summaries) == n


def test_an_idle_broker_writes_the_summary_when_the_window_ends(
    raw: Raw, caplog: pytest.LogCaptureFixture
) -> None:
    # No worker, so the core has no deadline: only the limiter's wakes the loop.
    broker = BrokerThread("tcp://127.0.0.1:*", start=False)
    broker.broker.log_limiter = LogLimiter(burst=1, window=0.3)
    caplog.set_level(logging.WARNING, logger="mdp_zmq")
    try:
        broker.start()
        flood = raw.dealer(broker.endpoint)
        for _ in range(3):
            flood.send(b"bad")
        assert broker.wait_count(ProtocolError, 3)
        deadline = time.monotonic() + 10
        while not any(r.getMessage().startswith("suppressed 2 ") for r in caplog.records):
            assert time.monotonic() < deadline, [r.getMessage() for r in caplog.records]
            time.sleep(0.02)
        assert broker.broker.core.next_deadline() is None
    finally:
        broker.close()


# ------------------------------------------------------------------ argument checks


def test_worker_and_client_refuse_wrong_argument_types_at_construction() -> None:
    ep = "tcp://127.0.0.1:5"
    with pytest.raises(TypeError, match="handler must be callable"):
        mdp_zmq.Worker(ep, "x", "not callable")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="service must be bytes-like or str, not int"):
        mdp_zmq.Worker(ep, 123, echo)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"version must be a mdp_core\.Dialect"):
        mdp_zmq.Worker(ep, "x", echo, version="0.1")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"version must be a mdp_core\.Dialect"):
        mdp_zmq.Client(ep, version="0.1")  # type: ignore[arg-type]
    for bad in (5555, b"tcp://127.0.0.1:5", None):
        with pytest.raises(TypeError, match="endpoint must be a str"):
            mdp_zmq.Worker(bad, "x", echo)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="endpoint must be a str"):
            mdp_zmq.Client(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="empty endpoint"):
        mdp_zmq.Worker(" ", "x", echo)
    with pytest.raises(ValueError, match="empty endpoint"):
        mdp_zmq.Client("")
    with pytest.raises(TypeError, match="endpoints must be a str or a sequence"):
        mdp_zmq.Broker(b"tcp://127.0.0.1:*")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="endpoint must be a str, not int"):
        mdp_zmq.Broker([5555])  # type: ignore[list-item]


def test_client_refuses_wrong_service_and_frame_types_at_the_call() -> None:
    with mdp_zmq.Client("tcp://127.0.0.1:5") as client:
        with pytest.raises(TypeError, match=r"frame 0 must be bytes, .* not int"):
            client.request("upper", 123)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"frame 1 must be bytes, .* not str"):
            client.request("upper", b"ok", "text")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="service must be bytes-like or str, not int"):
            client.request(7, b"x")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="frame 0 must be bytes, bytearray or memoryview"):
            client.stream("upper", None)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="name must be bytes-like or str"):
            client.service_exists(1.5)  # type: ignore[arg-type]
        assert client._engine is None  # nothing was sent, no socket opened


def test_bytes_like_names_and_frames_are_accepted(
    broker: BrokerThread, workers: ThreadWorkers
) -> None:
    workers.start(broker.endpoint, bytearray(b"echo"), echo)
    assert broker.wait_count(WorkerReady, 1)
    with mdp_zmq.Client(broker.endpoint, ClientConfig(timeout=10, retries=0)) as client:
        assert client.request(memoryview(b"echo"), bytearray(b"a"), memoryview(b"b")) == [
            b"a", b"b"]


# ------------------------------------------------------------------ handler results


def _gen_str(frames: list[bytes]) -> Iterator[bytes]:
    yield "text"  # type: ignore[misc]
    return b"never"  # type: ignore[return-value]


def _gen_bytes(frames: list[bytes]) -> Iterator[bytes]:
    yield b"part"
    return b"never"  # type: ignore[return-value]


BAD_RESULTS: dict[str, tuple[Callable[[list[bytes]], object], Dialect]] = {
    "empty list": (lambda frames: [], Dialect.MDP02),
    "list of str": (lambda frames: ["a"], Dialect.MDP02),
    "bytes then str": (lambda frames: (b"a", "b"), Dialect.MDP02),
    "int": (lambda frames: 123, Dialect.MDP02),
    "None": (lambda frames: None, Dialect.MDP02),
    "generator of str": (_gen_str, Dialect.MDP02),
    "generator on MDP/0.1": (_gen_bytes, Dialect.MDP01),
}


@pytest.mark.parametrize("case", sorted(BAD_RESULTS))
def test_an_unsendable_handler_result_abandons_the_request_and_the_worker_lives_on(
    broker: BrokerThread, workers: ThreadWorkers, case: str
) -> None:
    bad, version = BAD_RESULTS[case]
    calls: list[bytes] = []

    def handler(frames: list[bytes]) -> object:
        calls.append(frames[0])
        if len(calls) == 1:
            return bad(frames)
        return [b"ok", frames[0]]

    worker = workers.start(broker.endpoint, "svc", handler,
                           WorkerConfig(reconnect_delay=0.05), version)
    thread = workers.threads[-1]
    assert broker.wait_count(WorkerReady, 1)
    with mdp_zmq.Client(broker.endpoint, ClientConfig(timeout=10, retries=0)) as client:
        # The first attempt is abandoned; the broker re-dispatches it to the
        # worker, which registered again and answers it.
        assert client.request("svc", b"first") == [b"ok", b"first"]
        assert client.request("svc", b"second") == [b"ok", b"second"]
    assert calls == [b"first", b"first", b"second"]
    assert broker.wait_count(RequestRequeued, 1)
    assert thread.is_alive()
    assert worker.handled == 2


def test_handler_failures_are_logged_rate_limited_and_handler_error_without_traceback(
    broker: BrokerThread, workers: ThreadWorkers, caplog: pytest.LogCaptureFixture
) -> None:
    """A client that sends requests a handler fails on cannot flood the
    worker's log; HandlerError gives one line with no traceback."""

    def handler(frames: list[bytes]) -> list[bytes]:
        if frames[0] == b"bug":
            raise KeyError("a bug")
        raise mdp_zmq.HandlerError("bad request body")

    caplog.set_level(logging.ERROR, logger="mdp_zmq.worker")
    workers.start(broker.endpoint, "svc", handler, WorkerConfig(reconnect_delay=0.01))
    assert broker.wait_count(WorkerReady, 1)
    config = mdp_core.BrokerConfig()
    with mdp_zmq.Client(broker.endpoint, ClientConfig(timeout=0.3, retries=0,
                                                      diagnose_timeout=None)) as client:
        with pytest.raises(mdp_zmq.RequestTimeout):
            client.request("svc", b"bug")
        for _ in range(12):
            with pytest.raises(mdp_zmq.RequestTimeout):
                client.request("svc", b"no")
    # 13 requests, each tried max_attempts times: far more failures than lines.
    assert broker.wait_count(RequestExpired, 13, timeout=30)
    records = [r for r in caplog.records if r.name == "mdp_zmq.worker"]
    failures = [r for r in records if "request abandoned" in r.getMessage()]
    bugs = [r for r in failures if r.exc_info is not None]  # a bug: its traceback shown
    assert len(bugs) == config.max_attempts and failures[:len(bugs)] == bugs
    plain = failures[len(bugs):]
    assert plain and all(r.exc_info is None and r.getMessage().endswith(
        "request abandoned: bad request body") for r in plain)
    assert len(failures) <= 5 < 13 * config.max_attempts


# ------------------------------------------------------------------ SIGTERM


def _wakeup_fd_now() -> int:
    fd = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(fd, warn_on_full_buffer=False)
    return fd


def test_run_wakes_on_signals_through_the_wakeup_fd_and_restores_it(
    workers: ThreadWorkers,
) -> None:
    before = _wakeup_fd_now()
    seen: list[int] = []
    b = mdp_zmq.Broker("tcp://127.0.0.1:*")

    def on_event(event: object) -> None:  # in run()'s thread: the main thread
        if isinstance(event, WorkerReady) and not seen:
            seen.append(_wakeup_fd_now())
            b.close()

    b.on_event = on_event
    write_fd = b._waker.write_fd()
    workers.start(b.endpoint, "echo", echo)
    b.run()
    assert seen == [write_fd]
    assert _wakeup_fd_now() == before

    seen.clear()
    w: mdp_zmq.Worker

    def handler(frames: list[bytes]) -> list[bytes]:
        seen.append(_wakeup_fd_now())
        w.close()
        return frames

    bt = BrokerThread("tcp://127.0.0.1:*")
    try:
        w = mdp_zmq.Worker(bt.endpoint, "echo", handler)
        write_fd = w._waker.write_fd()
        result: dict[str, object] = {}

        def call() -> None:
            with mdp_zmq.Client(bt.endpoint, ClientConfig(timeout=10, retries=0)) as c:
                result["reply"] = c.request("echo", b"x")

        caller = threading.Thread(target=call, daemon=True)
        caller.start()
        w.run()
        caller.join(10)
        assert seen == [write_fd]
        assert result == {"reply": [b"x"]}
        assert _wakeup_fd_now() == before
    finally:
        bt.close()


_PEERS = """
import sys, threading, time
import mdp_zmq, zmq
from mdp_core import ClientConfig, Dialect, Ready, WorkerConfig, encode
ep = sys.argv[1]
cfg = WorkerConfig(reconnect_delay=0.05)
for _ in range(8):
    mdp_zmq.Worker(ep, "echo", lambda frames: frames, cfg).start()
idle = []  # more connections to vanish at once: more for the broker to do then
for _ in range(40):
    idle.append(zmq.Context.instance().socket(zmq.DEALER))
    idle[-1].connect(ep)
    idle[-1].send_multipart(encode(Ready(b"idle"), Dialect.MDP02))
first = threading.Event()
def load():
    with mdp_zmq.Client(ep, ClientConfig(timeout=1, retries=100)) as c:
        while True:
            c.request("echo", b"x" * 100)
            first.set()
threading.Thread(target=load, daemon=True).start()
first.wait(30)
print("ready", flush=True)
time.sleep(600)
"""


@pytest.mark.slow
def test_broker_exits_on_sigterm_at_any_moment_under_load_and_after_peers_vanish(
    procs: ProcSet,
) -> None:
    rng = random.Random(9)
    for i in range(30):
        endpoint = free_tcp_endpoint()
        broker = procs.start(mdp_cli("broker", "--bind", endpoint))
        broker.wait_line("mdp broker listening")
        peers = procs.start([sys.executable, "-c", _PEERS, endpoint])
        peers.wait_line("ready", timeout=30)
        after_kill = i % 3 != 2
        if after_kill:  # 8 workers and a client vanish at once
            peers.signal(signal.SIGKILL)
            time.sleep(rng.uniform(0, 0.003))
        else:  # in the middle of the load
            time.sleep(rng.uniform(0, 0.05))
        broker.signal(signal.SIGTERM)
        try:
            code = broker.popen.wait(15)
        except Exception:
            pytest.fail(f"iteration {i}: the broker ignored SIGTERM "
                        f"({'after its peers vanished' if after_kill else 'under load'})")
        assert code == 0, (i, code)
        peers.stop()
        broker.stop()


@pytest.mark.parametrize("driver", ["mdp_zmq", "mdp_async", "mdp_gevent"])
def test_every_broker_refuses_endpoints_that_are_not_str_before_it_opens_anything(
    driver: str,
) -> None:
    import importlib

    broker_class = importlib.import_module(driver).Broker
    for bad in (b"tcp://127.0.0.1:*", 5555, None):
        with pytest.raises(TypeError, match="endpoints must be a str or a sequence"):
            broker_class(bad)
