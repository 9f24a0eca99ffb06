"""mdp_gevent as a gevent program: loopback sockets, bounded waits, gevent unpatched.

Broker, workers and clients run as greenlets of pytest's own thread (its
hub serves while the test's greenlet waits); raw RFC peers
(tests/rfc_peers.py) stand in where a test must see the wire, their
blocking calls in a thread of the hub's pool. How programs run it (a
signal to stop, ``monkey.patch_all()``) is tested in subprocesses, since
signals and patching are process-wide.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from typing import Any

import gevent
import gevent.event
import mdp_gevent
import pytest
import zmq
import zmq.green
from gevent_support import Recorder, blocking
from mdp_gevent import Broker, Client, Worker
from rfc_peers import RawWorker, Rfc18Client, StrictBroker
from zmq_support import free_tcp_endpoint

from mdp_core import (
    BrokerConfig,
    BrokerMetrics,
    ClientConfig,
    EmptyBody,
    FailureCause,
    Policy,
    RequestAbandoned,
    RequestExpired,
    RequestRequeued,
    WorkerConfig,
    WorkerLost,
    WorkerMetrics,
    WorkerReady,
)

ONE_SHOT = ClientConfig(timeout=5.0, retries=0)


def echo(frames: list[bytes]) -> list[bytes]:
    return frames


@pytest.fixture(autouse=True)
def bounded() -> Iterator[None]:
    """No test waits more than 30 s in the hub."""
    with gevent.Timeout(30):
        yield


# ------------------------------------------------------------------ handlers


@pytest.mark.parametrize("failure", ["raises", "int", "empty", "handler-error"])
def test_failing_handler_is_logged_once_abandoned_and_the_retry_answered(
    failure: str, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[bytes] = []

    def bad(frames: list[bytes]) -> Any:
        calls.append(frames[0])
        if len(calls) > 1:
            return frames
        if failure == "raises":
            raise RuntimeError("boom (expected by the test)")
        if failure == "handler-error":
            raise mdp_gevent.HandlerError("bad body (expected by the test)")
        return {"int": 42, "empty": []}[failure]

    rec = Recorder()
    broker = Broker("tcp://127.0.0.1:*", on_event=rec)
    with caplog.at_level(logging.ERROR, "mdp_gevent.worker"), broker, \
            Worker(broker.endpoint, "flaky", bad), Client(broker.endpoint, ONE_SHOT) as client:
        assert client.request("flaky", b"x") == [b"x"]
    assert calls == [b"x", b"x"]  # abandoned, re-dispatched to the same worker, answered
    assert [e.attempt for e in rec.of(RequestRequeued)] == [1]
    logged = [r for r in caplog.records if "request abandoned" in r.message]
    assert len(logged) == 1
    assert (logged[0].exc_info is None) == (failure == "handler-error")  # one line for it


def test_a_generator_handler_streams_its_partials_and_returns_the_final() -> None:
    def progress(frames: list[bytes]) -> Iterator[bytes]:
        for pct in (25, 50):
            gevent.sleep(0.01)
            yield b"%d%%" % pct
        return b"done " + frames[0]  # type: ignore[return-value]

    broker = Broker("tcp://127.0.0.1:*")
    with broker, Worker(broker.endpoint, "p", progress), \
            Client(broker.endpoint, ONE_SHOT) as client:
        assert list(client.stream("p", b"job")) == [[b"25%"], [b"50%"], [b"done job"]]
        assert client.request("p", b"again") == [b"done again"]


# ------------------------------------------------------------------ concurrency


def test_concurrency_n_handles_n_requests_at_once_on_n_sockets() -> None:
    running = peak = 0
    all_in = gevent.event.Event()

    def slow(frames: list[bytes]) -> list[bytes]:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        if running == 3:
            all_in.set()
        assert all_in.wait(10)  # only returns once three jobs run together
        running -= 1
        return frames

    rec = Recorder()
    broker = Broker("tcp://127.0.0.1:*", on_event=rec)
    with broker, Worker(broker.endpoint, "slow", slow, concurrency=3) as worker, \
            Client(broker.endpoint, ONE_SHOT) as client:
        rec.wait_count(WorkerReady, 3)
        calls = [gevent.spawn(client.request, "slow", b"%d" % i) for i in range(3)]
        assert [c.get() for c in calls] == [[b"0"], [b"1"], [b"2"]]
    assert peak == 3 and worker.handled == 3


def test_many_greenlets_share_a_bounded_pool_of_sockets() -> None:
    broker = Broker("tcp://127.0.0.1:*")
    with broker, Worker(broker.endpoint, "echo", echo, concurrency=2), \
            Client(broker.endpoint, ONE_SHOT, pool_size=4) as client:
        calls = {i: gevent.spawn(client.request, "echo", b"%d" % i) for i in range(40)}
        assert {i: c.get() for i, c in calls.items()} == {i: [b"%d" % i] for i in range(40)}
        assert len(client._pairs) == 4  # never more sockets than the pool allows


def test_a_killed_caller_leaves_nothing_a_later_request_could_read() -> None:
    started, release, hold = gevent.event.Event(), gevent.event.Event(), gevent.event.Event()

    def gated(frames: list[bytes]) -> list[bytes]:
        if frames[0] == b"first":
            started.set()
            release.wait()
        elif frames[0] == b"hold":
            hold.wait()  # until the worker closes
        return frames

    rec = Recorder()
    broker = Broker("tcp://127.0.0.1:*", on_event=rec)
    with broker, Worker(broker.endpoint, "gated", gated, concurrency=2), \
            Client(broker.endpoint, ONE_SHOT, pool_size=1) as client:
        rec.wait_count(WorkerReady, 2)
        first = gevent.spawn(client.request, "gated", b"first")
        assert started.wait(10)  # the worker is on it
        first.kill()  # Client.cancel, and its socket closes
        # The client closed that socket: the broker drops the request's reply.
        rec.wait_count(RequestAbandoned, 1)
        release.set()
        assert client.request("gated", b"second") == [b"second"]
        with gevent.Timeout(0.3, False):  # a gevent.Timeout abandons a call the same way
            client.request("gated", b"hold", timeout=10)
            pytest.fail("the held request cannot be answered")
        assert client.request("gated", b"third") == [b"third"]


def test_leaving_a_stream_early_cancels_the_request() -> None:
    def endless(frames: list[bytes]) -> Iterator[bytes]:
        i = 0
        while True:
            yield b"%d" % i
            i += 1
            gevent.sleep(0.01)

    broker = Broker("tcp://127.0.0.1:*")
    with broker, Worker(broker.endpoint, "endless", endless), \
            Worker(broker.endpoint, "echo", echo), \
            Client(broker.endpoint, ONE_SHOT, pool_size=1) as client:
        with contextlib.closing(client.stream("endless", b"x")) as parts:
            for body in parts:
                assert body == [b"0"]
                break
        assert client.request("echo", b"next") == [b"next"]


# ------------------------------------------------------------------ failures and causes


def test_no_broker_is_unreachable_and_a_job_longer_than_the_timeout_is_no_reply() -> None:
    endpoint = free_tcp_endpoint()
    with Client(endpoint, ClientConfig(timeout=0.3, retries=0)) as client, \
            pytest.raises(mdp_gevent.RequestTimeout) as unreachable:
        client.request("echo", b"x")
    assert unreachable.value.cause is FailureCause.UNREACHABLE
    assert endpoint in str(unreachable.value)

    def slow(frames: list[bytes]) -> list[bytes]:
        gevent.sleep(2)
        return frames

    broker = Broker("tcp://127.0.0.1:*")
    with broker, Worker(broker.endpoint, "slow", slow), \
            Client(broker.endpoint, ClientConfig(timeout=0.5, retries=0)) as client, \
            pytest.raises(mdp_gevent.RequestTimeout) as late:
        client.request("slow", b"x")
    # The monitor's handshake reached the core: the broker was reached.
    assert late.value.cause is FailureCause.NO_REPLY


def test_a_hung_handler_is_ended_by_the_brokers_processing_timeout() -> None:
    killed = gevent.event.Event()
    started = 0

    def hang(frames: list[bytes]) -> list[bytes]:
        nonlocal started
        started += 1
        try:
            gevent.sleep(60)
        finally:
            killed.set()
        raise AssertionError("unreachable")

    rec = Recorder()
    config = BrokerConfig(processing_timeout=0.3, max_attempts=1)
    broker = Broker("tcp://127.0.0.1:*", config, on_event=rec)
    fast = WorkerConfig(reconnect_delay=0.05)
    with broker, Worker(broker.endpoint, "hang", hang, fast), \
            Client(broker.endpoint, ClientConfig(timeout=5.0, retries=0)) as client:
        rec.wait_count(WorkerReady, 1)
        call = gevent.spawn(client.request, "hang", b"x")  # expires, unanswered
        rec.wait_count(RequestExpired, 1)
        assert killed.wait(10)  # the broker's DISCONNECT killed the job's greenlet
        rec.wait_count(WorkerReady, 2)  # and the worker is back
        call.kill()
    assert rec.of(WorkerLost)[0].reason.startswith("processing timeout")
    assert started == 1


# ------------------------------------------------------------------ lifecycle


def test_broker_close_sends_disconnect_and_start_returns_the_serving_greenlet() -> None:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    rec = Recorder()
    broker = Broker("tcp://127.0.0.1:*", on_event=rec)
    raw = RawWorker(ctx, broker.endpoint, b"svc", "0.2")
    try:
        serving = broker.start()
        assert isinstance(serving, gevent.Greenlet)
        raw.open()
        rec.wait_count(WorkerReady, 1)
        broker.close()
        blocking(raw.expect_disconnect, 5.0)
        serving.get(timeout=5)  # serve() returned after the clean shutdown
        assert [e.reason for e in rec.of(WorkerLost)] == ["broker closed"]
    finally:
        raw.close()
        ctx.destroy(linger=0)


def test_worker_sends_disconnect_on_close_and_serve_returns() -> None:
    rec = Recorder()
    broker = Broker("tcp://127.0.0.1:*", on_event=rec)
    with broker:
        worker = Worker(broker.endpoint, "echo", echo)

        def close_once_registered() -> None:
            rec.wait_count(WorkerReady, 1)
            worker.close()

        closer = gevent.spawn(close_once_registered)
        worker.serve()  # blocks this greenlet until close()
        closer.get()
        rec.wait_count(WorkerLost, 1)
    assert rec.of(WorkerLost)[0].reason == "worker sent DISCONNECT"


def test_worker_reregisters_with_a_new_broker_on_the_same_endpoint() -> None:
    endpoint = free_tcp_endpoint()
    fast = WorkerConfig(reconnect_delay=0.05, reconnect_delay_max=0.5)
    with Worker(endpoint, "echo", echo, fast), Client(endpoint, ONE_SHOT) as client:
        for _ in range(2):  # the first broker's DISCONNECT ends the first conversation
            rec = Recorder()
            with rebind(endpoint, on_event=rec):
                rec.wait_count(WorkerReady, 1)
                assert client.request("echo", b"x") == [b"x"]


def rebind(endpoint: str, **kwargs: Any) -> Broker:
    """A broker on ``endpoint``, once the last one's socket let go of it."""
    while True:
        try:
            return Broker(endpoint, **kwargs)
        except zmq.ZMQError as exc:  # libzmq closes a socket in the background
            if exc.errno != zmq.EADDRINUSE:
                raise
        gevent.sleep(0.02)


def test_misuse_raises_at_once() -> None:
    broker = Broker("tcp://127.0.0.1:*")
    with broker, pytest.raises(RuntimeError, match="already serving"):
        broker.serve()
    with pytest.raises(RuntimeError, match="closed"):
        broker.start()
    plain: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        with pytest.raises(TypeError, match="green"):
            Broker("tcp://127.0.0.1:*", context=plain)
        with pytest.raises(TypeError, match="green"):
            Client(broker.endpoint, context=plain)
    finally:
        plain.term()
    with pytest.raises(ValueError, match="concurrency"):
        Worker(broker.endpoint, "echo", echo, concurrency=0)
    with pytest.raises(TypeError, match="callable"):
        Worker(broker.endpoint, "echo", b"not a handler")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Worker(broker.endpoint, "", echo)  # the core's check
    with pytest.raises(TypeError):
        Worker(broker.endpoint, "echo", echo, version="0.2")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="pool_size"):
        Client(broker.endpoint, pool_size=0)
    client = Client(broker.endpoint)
    with pytest.raises(EmptyBody):
        client.request("echo")
    with pytest.raises(TypeError):
        client.request("echo", "not bytes")  # type: ignore[arg-type]
    client.close()
    with pytest.raises(RuntimeError, match="closed"):
        client.request("echo", b"x")


# ------------------------------------------------------------------ heartbeats during jobs

WINDOW = 1.0  # the strict broker's liveness window, s
HEARTBEAT = WorkerConfig(heartbeat_interval=0.25, heartbeat_liveness=4)  # the same 1 s window


@pytest.fixture
def strict() -> Iterator[StrictBroker]:
    b = StrictBroker(WINDOW, HEARTBEAT.heartbeat_interval)
    yield b
    b.close()


@pytest.mark.slow
def test_a_5_second_job_that_yields_keeps_its_session_at_a_strict_broker(
    strict: StrictBroker,
) -> None:
    def long_job(frames: list[bytes]) -> list[bytes]:
        gevent.sleep(5.0)  # gevent I/O and sleeps yield to the hub: the pump goes on
        return [b"done", *frames]

    with Worker(strict.endpoint, "job", long_job, HEARTBEAT):
        heard, expired, final = blocking(strict.job, b"x", 20.0)
    assert not expired
    assert final == [b"client-1", b"", b"done", b"x"]
    assert heard.count("HEARTBEAT") >= 5 * 2  # every 0.25 s, so about 20


@pytest.mark.slow
def test_a_job_that_never_yields_is_silent_and_the_strict_broker_expires_it(
    strict: StrictBroker,
) -> None:
    # What docs/gevent.md says plainly: computing (here a plain, unpatched
    # time.sleep) holds the hub, so no HEARTBEAT goes out meanwhile.
    def cpu_bound(frames: list[bytes]) -> list[bytes]:
        time.sleep(2.0)
        return frames

    with Worker(strict.endpoint, "job", cpu_bound, HEARTBEAT):
        heard, expired, _ = blocking(strict.job, b"x", 20.0)
    assert expired and "HEARTBEAT" not in heard


# ------------------------------------------------------------------ how programs run it
# (subprocesses: signal handlers and monkey-patching are process-wide)

SERVE = """
import signal, sys, gevent
{patch}
import mdp_gevent
broker = mdp_gevent.Broker("tcp://127.0.0.1:*")
if sys.argv[1] == "gevent.signal_handler":
    gevent.signal_handler(signal.SIGTERM, broker.close)
elif sys.argv[1] == "signal.signal":
    signal.signal(signal.SIGTERM, lambda signum, frame: broker.close())
print(broker.endpoint, flush=True)
try:
    broker.serve()
except KeyboardInterrupt:
    sys.exit(130)
print("serve returned", flush=True)
"""


@pytest.mark.parametrize(("how", "patched", "sig", "status"), [
    ("gevent.signal_handler", False, signal.SIGTERM, 0),
    ("signal.signal", True, signal.SIGTERM, 0),
    ("ctrl-c", False, signal.SIGINT, 130),
])
def test_a_signal_stops_serve_cleanly(how: str, patched: bool, sig: int, status: int) -> None:
    code = SERVE.format(patch="from gevent import monkey; monkey.patch_all()" if patched else "")
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), how],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        assert proc.stdout is not None
        endpoint = blocking(proc.stdout.readline).strip()
        raw = RawWorker(ctx, endpoint, b"svc", "0.2")
        raw.open()
        asker = Rfc18Client(ctx, endpoint)
        while blocking(asker.request, b"mmi.service", b"svc") != [("FINAL", [b"200"])]:
            gevent.sleep(0.02)  # until the broker has registered the worker
        asker.close()
        proc.send_signal(sig)
        blocking(raw.expect_disconnect, 10.0)  # workers still get DISCONNECT
        out, err = blocking(proc.communicate, None, 10)
        assert proc.returncode == status, err
        assert ("serve returned" in out) == (status == 0)
        raw.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        ctx.destroy(linger=0)


PATCHED = """
from gevent import monkey; monkey.patch_all()
import threading, time, mdp_gevent

running = peak = 0

def slow_upper(frames):
    global running, peak
    running += 1
    peak = max(peak, running)
    time.sleep(0.5)  # patched: a cooperative sleep, the other jobs go on
    running -= 1
    return [f.upper() for f in frames]

broker = mdp_gevent.Broker("tcp://127.0.0.1:*")
broker.start()
worker = mdp_gevent.Worker(broker.endpoint, "upper", slow_upper, concurrency=5)
worker.start()
with mdp_gevent.Client(broker.endpoint) as client:
    results = {}
    def call(i):  # patched threads are greenlets
        results[i] = client.request("upper", b"job %d" % i)
    threads = [threading.Thread(target=call, args=(i,)) for i in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(sorted(results.values()), "peak", peak)
worker.close()
broker.close()
"""


def test_it_works_under_monkey_patch_all() -> None:
    proc = blocking(subprocess.run, [sys.executable, "-c", PATCHED], capture_output=True,
                    text=True, timeout=30, check=False)
    assert proc.returncode == 0, proc.stderr
    expected = sorted([b"JOB %d" % i] for i in range(5))
    # Five jobs from five patched threads ran at once on the worker's five conversations.
    assert proc.stdout.splitlines() == [f"{expected} peak 5"]


PATCHED_CURVE = """
from gevent import monkey; monkey.patch_all()
import threading, zmq, mdp_gevent
from mdp_core import BrokerConfig, ClientConfig, Policy, WorkerReady
from mdp_zmq.glue import Security

public, secret = zmq.curve_keypair()
pay, pay_secret = zmq.curve_keypair()
outsider, outsider_secret = zmq.curve_keypair()

def peer(key, key_secret):
    return mdp_gevent.TransportConfig(security=Security(key, key_secret, broker_key=public))

ready = []
only_pay = Policy(serve={"echo": ["pay"]}, call={"echo": ["pay"]})  # so the identity counts
broker = mdp_gevent.Broker(
    "tcp://127.0.0.1:*", BrokerConfig(policy=only_pay),
    on_event=lambda e: isinstance(e, WorkerReady) and ready.append(e),
    transport=mdp_gevent.TransportConfig(security=Security(public, secret, allowed={pay: "pay"})))
with broker, mdp_gevent.Worker(broker.endpoint, "echo", lambda f: f,
                               transport=peer(pay, pay_secret)):
    out = []
    def call(key, key_secret, timeout):  # patched threads are greenlets
        with mdp_gevent.Client(broker.endpoint, ClientConfig(timeout=timeout, retries=0),
                               transport=peer(key, key_secret)) as client:
            try:
                out.append(client.request("echo", b"hi"))
            except mdp_gevent.RequestTimeout as exc:
                out.append(exc.cause.name)
    for args in ((pay, pay_secret, 5.0), (outsider, outsider_secret, 0.5)):
        t = threading.Thread(target=call, args=args)
        t.start()
        t.join()
    print(out, [e.service for e in ready])
print("context closed", broker.context.closed)
"""


def test_a_secured_broker_works_under_monkey_patch_all() -> None:
    proc = blocking(subprocess.run, [sys.executable, "-c", PATCHED_CURVE], capture_output=True,
                    text=True, timeout=30, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["[[b'hi'], 'REFUSED'] [b'echo']",
                                        "context closed True"]


# ------------------------------------------------------------------ metrics


def _until(pred: Any, timeout: float = 10.0) -> bool:
    """Poll ``pred`` (in a plain thread: sleeps block only it) until true or ``timeout``."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_broker_metrics_snapshot_from_another_thread_is_taken_in_the_hub() -> None:
    broker = Broker("tcp://127.0.0.1:*", metrics=BrokerMetrics())
    assert broker.metrics_snapshot().received == {}  # not serving: taken at once
    worker_metrics = WorkerMetrics(b"echo")
    with broker, Worker(broker.endpoint, "echo", echo, metrics=worker_metrics), \
            Client(broker.endpoint, ONE_SHOT) as client:
        assert client.request("echo", b"x") == [b"x"]
        # A real thread (a scrape's): the hub answers it between two switches.
        assert blocking(_until, lambda: broker.metrics_snapshot().requests.get(
            ("echo", "delivered")) == 1)
        with gevent.Timeout(10):
            while worker_metrics.snapshot().handled.get("replied") != 1:
                gevent.sleep(0.01)
        assert worker_metrics.snapshot().handler.count == 1
    assert broker.metrics_snapshot().requests[("echo", "delivered")] == 1  # shut down


def test_broker_metrics_snapshot_from_the_hub_itself_does_not_wait() -> None:
    got: list[object] = []
    broker: Broker

    def on_event(event: object) -> None:
        got.append(broker.metrics_snapshot(timeout=0.1).workers_registered)

    broker = Broker("tcp://127.0.0.1:*", metrics=BrokerMetrics(), on_event=on_event)
    with broker, Worker(broker.endpoint, "echo", echo), gevent.Timeout(10):
        broker.metrics_snapshot(timeout=0.1)  # started, not yet run: at once, no TimeoutError
        while not got:
            gevent.sleep(0.01)
    assert got[0] == {"echo": 1}


def test_broker_metrics_snapshot_times_out_when_the_hub_is_stuck() -> None:
    entered, release = threading.Event(), threading.Event()

    def on_event(event: object) -> None:
        if not release.is_set():
            entered.set()
            release.wait(10)  # unpatched: holds the whole hub

    def ask() -> str:
        assert entered.wait(10)
        try:
            broker.metrics_snapshot(timeout=0.05)
        except TimeoutError as exc:
            return str(exc)
        finally:
            release.set()
        return "answered"

    broker = Broker("tcp://127.0.0.1:*", metrics=BrokerMetrics(), on_event=on_event)
    asking = gevent.get_hub().threadpool.spawn(ask)
    with broker, Worker(broker.endpoint, "echo", echo):
        assert "no metrics snapshot" in asking.get()


def test_broker_metrics_snapshot_needs_metrics() -> None:
    broker = Broker("tcp://127.0.0.1:*")
    try:
        with pytest.raises(RuntimeError, match="without metrics"):
            broker.metrics_snapshot()
    finally:
        broker.close()


# ------------------------------------------------------------------ several brokers


def test_a_drop_seen_while_idle_moves_the_next_request_to_the_other_broker() -> None:
    first, second = Broker("tcp://127.0.0.1:*"), Broker("tcp://127.0.0.1:*")
    endpoints = [first.endpoint, second.endpoint]
    with second, Worker(endpoints, "echo", echo), \
            Client(endpoints, ClientConfig(timeout=5.0, retries=0), pool_size=1,
                   spread=0) as client:
        with first:
            assert client.request("echo", b"home") == [b"home"]  # the home broker: first
        with gevent.Timeout(10):  # the idle socket's monitor has seen the drop
            while not ((engine := client._pairs[0].engine) and engine.dropped):
                gevent.sleep(0.01)
        # Told to the core before the request: it goes to the second broker
        # at once, and its one attempt is answered there.
        assert client.request("echo", b"moved") == [b"moved"]


def _curve() -> tuple[Any, Any, Any]:
    """A broker's transport that allows one key, that key's and an outsider's."""
    from mdp_zmq.glue import Security

    public, secret = zmq.curve_keypair()
    (peer, peer_secret), (other, other_secret) = zmq.curve_keypair(), zmq.curve_keypair()
    return (mdp_gevent.TransportConfig(security=Security(public, secret,
                                                         allowed={peer: "peer"})),
            mdp_gevent.TransportConfig(security=Security(peer, peer_secret, broker_key=public)),
            mdp_gevent.TransportConfig(security=Security(other, other_secret,
                                                         broker_key=public)))


def test_a_secured_broker_serves_in_a_green_context_of_its_own_and_ends_it() -> None:
    secured, allowed, outsider = _curve()
    first, second = (Broker("tcp://127.0.0.1:*", transport=secured) for _ in range(2))
    with second:
        for broker in (first, second):
            assert isinstance(broker.context, zmq.green.Context)
        assert first.context is not second.context
        assert zmq.green.Context.instance() not in (first.context, second.context)
        quick = ClientConfig(timeout=0.5, retries=0)
        with Client(second.endpoint, quick, transport=allowed) as client:
            assert not client.service_exists("echo")  # a round trip: the ZAP greenlet let it in
        with Client(second.endpoint, quick, transport=outsider) as client, \
                pytest.raises(mdp_gevent.RequestTimeout):
            client.request("echo", b"x")
    first.close()  # one that never served
    assert first.context.closed and second.context.closed  # made by the broker, ended by it
    shared = zmq.green.Context()
    try:
        given = Broker("tcp://127.0.0.1:*", transport=secured, context=shared)
        with pytest.raises(zmq.ZMQError, match="context of its own"):
            Broker("tcp://127.0.0.1:*", transport=secured, context=shared)
        with given:
            pass
        assert not shared.closed  # given, not owned
    finally:
        shared.term()


def test_a_client_the_policy_refuses_learns_it_from_its_second_question() -> None:
    # Without CURVE every peer is unauthenticated: only "*" would be let in.
    broker = Broker("tcp://127.0.0.1:*", BrokerConfig(policy=Policy(call={"secret": ["admin"]})))
    config = ClientConfig(timeout=0.3, retries=0, diagnose_timeout=10.0)
    with broker, Client(broker.endpoint, config) as client, \
            pytest.raises(mdp_gevent.RequestTimeout) as refused:
        client.request("secret", b"x")
    assert refused.value.cause is FailureCause.REFUSED
