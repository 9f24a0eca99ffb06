"""Metrics, ``mdp status`` and JSON logs over real sockets (loopback only).

Every wait is bounded and waits for a condition (an event the broker
recorded, a line a process printed), never for a time.
"""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator

import mdp_zmq
import pytest
import zmq
from mdp_zmq.cli import main
from mdp_zmq.glue import JsonFormatter, LogLimiter, log_event, parse_host_port
from mdp_zmq.metrics import BrokerCollector, WorkerCollector, serve, worker_families
from prometheus_client.parser import text_string_to_metric_families
from zmq_support import BrokerThread, ProcSet, ThreadWorkers, free_tcp_endpoint, mdp_cli

from mdp_core import (
    BrokerConfig,
    BrokerMetrics,
    ClientConfig,
    RequestDelivered,
    RequestExpired,
    RequestRedispatched,
    TimedRequestDelivered,
    WorkerLost,
    WorkerMetrics,
    WorkerReady,
)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> Samples:
    """``/metrics`` parsed: (sample name, labels) -> value."""
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def until(pred: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll ``pred`` until it holds (for state no event announces)."""
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            return False
        time.sleep(0.01)
    return True


def echo(frames: list[bytes]) -> list[bytes]:
    return frames


@pytest.fixture
def metered() -> Iterator[BrokerThread]:
    """A broker with metrics; queued requests expire after 0.5 s."""
    broker = BrokerThread("tcp://127.0.0.1:*",
                          BrokerConfig(heartbeat_interval=10.0, request_timeout=0.5),
                          metrics=BrokerMetrics())
    yield broker
    broker.close()


# ------------------------------------------------------------------ the scrape


@pytest.mark.slow
def test_scrape_counts_requests_a_killed_worker_and_an_expiry(
    metered: BrokerThread, procs: ProcSet, workers: ThreadWorkers
) -> None:
    broker = metered
    server = serve(BrokerCollector(broker.broker.metrics_snapshot), "127.0.0.1:0")
    ctx = zmq.Context.instance()
    stray = ctx.socket(zmq.DEALER)
    try:
        workers.start(broker.endpoint, "echo", echo)
        busy = procs.worker(broker.endpoint, "job", "--delay", "30", "--heartbeat", "10")
        assert broker.wait_count(WorkerReady, 2)
        with mdp_zmq.Client(broker.endpoint, ClientConfig(timeout=10, retries=0)) as client:
            for i in range(3):
                assert client.request("echo", b"%d" % i) == [b"%d" % i]
        result: dict[str, object] = {}

        def ask() -> None:
            with mdp_zmq.Client(broker.endpoint, ClientConfig(timeout=30, retries=0)) as c:
                result["reply"] = c.request("job", b"payload")

        asker = threading.Thread(target=ask, daemon=True)
        asker.start()
        busy.wait_line("started")
        workers.start(broker.endpoint, "job", echo)  # idle: takes the request over
        assert broker.wait_count(WorkerReady, 3)
        busy.signal(signal.SIGKILL)
        asker.join(20)
        assert result == {"reply": [b"payload"]}
        # A request for a service nobody serves, from a client that stays.
        stray.connect(broker.endpoint)
        stray.send_multipart([b"MDPC02", b"\x01", b"nobody", b"x"])
        assert broker.wait_count(RequestExpired, 1)
        assert broker.wait_count(RequestDelivered, 4)

        s = scrape(server.url)
        assert value(s, "mdp_requests_total", service="echo", outcome="delivered") == 3
        assert value(s, "mdp_requests_total", service="job", outcome="delivered") == 1
        assert value(s, "mdp_requests_total", service="nobody", outcome="expired") == 1
        assert value(s, "mdp_requests_total", service="echo", outcome="refused") == 0
        assert value(s, "mdp_requests_received_total", service="job") == 1
        assert value(s, "mdp_requests_received_total", service="echo") == 3
        assert value(s, "mdp_requests_redispatched_total", service="job") == 1
        assert value(s, "mdp_recovery_seconds_count", service="job") == 1
        assert value(s, "mdp_workers_registered_total", service="job") == 2
        assert value(s, "mdp_workers_lost_total", service="job", reason="connection_lost") == 1
        assert value(s, "mdp_workers", service="job", state="idle") == 1
        assert value(s, "mdp_workers", service="job", state="busy") == 0
        assert value(s, "mdp_workers", service="echo", state="idle") == 1
        assert value(s, "mdp_queue_depth", service="echo") == 0
        assert value(s, "mdp_queue_depth", service="nobody") is None  # dropped: no gauge
        assert value(s, "mdp_queued_bytes") == 0
        assert value(s, "mdp_worker_processing_seconds_count", service="echo") == 3
        assert value(s, "mdp_request_wait_seconds_count", service="job") == 1
        assert value(s, "mdp_request_duration_seconds_bucket", service="echo", le="+Inf") == 3
        assert value(s, "mdp_protocol_errors_total") == 0
        # The core's own figures say the same.
        (_, redispatched), = broker.of(RequestRedispatched)
        (_, lost), = broker.of(WorkerLost)
        assert redispatched.attempt == 2 and redispatched.worker != lost.worker
        timed = [e for _, e in broker.of(TimedRequestDelivered) if e.service == b"job"]
        assert len(timed) == 1 and timed[0].processing >= 0
    finally:
        stray.close(0)
        server.close()


# ------------------------------------------------------------------ snapshots


def test_metrics_snapshot_is_taken_directly_before_start_and_after_close() -> None:
    broker = mdp_zmq.Broker("tcp://127.0.0.1:*", metrics=BrokerMetrics())
    try:
        assert broker.metrics_snapshot().received == {}
        thread = broker.start()
        with mdp_zmq.Client(broker.endpoint, ClientConfig(timeout=10, retries=0)) as client:
            client.request("mmi.stats", b"")
        assert until(lambda: broker.metrics_snapshot().requests.get(
            ("mmi.stats", "delivered")) == 1)
    finally:
        broker.close()
    thread.join(10)
    assert broker.metrics_snapshot().requests[("mmi.stats", "delivered")] == 1


def test_metrics_snapshot_from_the_brokers_own_thread_does_not_wait() -> None:
    got: list[object] = []
    broker: mdp_zmq.Broker

    def on_event(event: object) -> None:
        got.append(broker.metrics_snapshot(timeout=0.1).workers_registered)

    broker = mdp_zmq.Broker("tcp://127.0.0.1:*", metrics=BrokerMetrics(), on_event=on_event)
    thread = broker.start()
    workers = ThreadWorkers()
    try:
        workers.start(broker.endpoint, "echo", echo)
        assert until(lambda: bool(got))
        assert got[0] == {"echo": 1}
    finally:
        workers.close()
        broker.close()
        thread.join(10)


def test_metrics_snapshot_times_out_when_the_loop_is_stuck() -> None:
    release = threading.Event()
    entered = threading.Event()

    def on_event(event: object) -> None:
        entered.set()
        release.wait(10)

    broker = mdp_zmq.Broker("tcp://127.0.0.1:*", metrics=BrokerMetrics(), on_event=on_event)
    thread = broker.start()
    workers = ThreadWorkers()
    try:
        workers.start(broker.endpoint, "echo", echo)
        assert entered.wait(10)
        with pytest.raises(TimeoutError, match="no metrics snapshot"):
            broker.metrics_snapshot(timeout=0.05)
    finally:
        release.set()
        workers.close()
        broker.close()
        thread.join(10)


def test_metrics_snapshot_needs_metrics() -> None:
    with mdp_zmq.Broker("tcp://127.0.0.1:*") as broker, \
            pytest.raises(RuntimeError, match="without metrics"):
        broker.metrics_snapshot()


def test_worker_metrics_time_the_handler_and_count_failures(
    workers: ThreadWorkers,
) -> None:
    broker = BrokerThread("tcp://127.0.0.1:*")
    failures = [1]

    def flaky(frames: list[bytes]) -> list[bytes]:
        if failures:
            failures.pop()
            raise RuntimeError("first call fails")
        return frames

    metrics = WorkerMetrics(b"flaky")
    try:
        workers.start(broker.endpoint, "flaky", flaky, metrics=metrics)
        with mdp_zmq.Client(broker.endpoint, ClientConfig(timeout=10, retries=0)) as client:
            assert client.request("flaky", b"x") == [b"x"]  # the second attempt
        assert until(lambda: metrics.snapshot().handled["replied"] == 1)
        snap = metrics.snapshot()
        assert snap.handled == {"replied": 1, "failed": 1}
        assert snap.handler.count == 2 and snap.in_progress == 0
        names = {f.name for f in worker_families(snap)}
        assert names == {"mdp_handler_requests", "mdp_handler_seconds",
                         "mdp_handler_in_progress", "mdp_broker_connections_lost"}
        server = serve(WorkerCollector(metrics.snapshot), "127.0.0.1:0")
        try:
            s = scrape(server.url)
        finally:
            server.close()
        assert value(s, "mdp_handler_requests_total", service="flaky", outcome="failed") == 1
        assert value(s, "mdp_handler_seconds_count", service="flaky") == 2
    finally:
        broker.close()


# ------------------------------------------------------------------ mdp status


@pytest.fixture
def echo_broker(workers: ThreadWorkers) -> Iterator[BrokerThread]:
    broker = BrokerThread("tcp://127.0.0.1:*")
    workers.start(broker.endpoint, "echo", echo)
    assert broker.wait_count(WorkerReady, 1)
    yield broker
    broker.close()


def test_status_prints_each_brokers_services_in_plain_text(
    echo_broker: BrokerThread, capsys: pytest.CaptureFixture[str]
) -> None:
    ep = echo_broker.endpoint
    assert main(["status", "--connect", ep]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"{ep}  workers 1 (1 idle, 0 busy)  queued 0  held 0 B  requests 0",
        "  SERVICE   IDLE   BUSY   QUEUED  IN FLIGHT",
        "  echo         1      0        0          0",
    ]


def test_status_names_a_broker_that_does_not_answer(
    echo_broker: BrokerThread, capsys: pytest.CaptureFixture[str]
) -> None:
    gone = free_tcp_endpoint()
    assert main(["status", "--connect", f"{echo_broker.endpoint},{gone}",
                 "--timeout", "0.2"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"{echo_broker.endpoint}  workers 1")
    assert lines[-1].startswith(f"{gone}  no status: ")


def test_status_watch_prints_blocks_without_terminal_codes(
    echo_broker: BrokerThread, capsys: pytest.CaptureFixture[str]
) -> None:
    with mdp_zmq.Client(echo_broker.endpoint, ClientConfig(timeout=10, retries=0)) as client:
        client.request("echo", b"x")
    assert main(["status", "--connect", echo_broker.endpoint, "--watch", "0.05",
                 "--count", "2"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out
    first, second = out.split("\n\n")
    assert first.startswith("mdp status ") and second.startswith("mdp status ")
    assert "requests 1\n" in first  # no rate yet
    assert "requests 1 (0.0/s)\n" in second


def test_status_of_an_empty_broker_and_a_cut_reply(
    capsys: pytest.CaptureFixture[str], workers: ThreadWorkers
) -> None:
    broker = BrokerThread("tcp://127.0.0.1:*", BrokerConfig(max_mmi_reply_bytes=0))
    try:
        assert main(["status", "--connect", broker.endpoint]) == 0
        assert capsys.readouterr().out.splitlines()[1:] == ["  (no services)"]
        for name in ("a", "b", "c"):
            workers.start(broker.endpoint, name, echo)
        assert broker.wait_count(WorkerReady, 3)
        assert main(["status", "--connect", broker.endpoint]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert lines[2:] == ["  a            1      0        0          0",
                             "  ... 2 more services (the reply was cut to the broker's "
                             "max_mmi_reply_bytes)"]
    finally:
        broker.close()


# ------------------------------------------------------------------ the CLI


@pytest.mark.parametrize("driver", ["zmq", "trio", "gevent"])
def test_mdp_broker_metrics_serves_metrics_and_json_logs(
    tmp_path: object, workers: ThreadWorkers, driver: str
) -> None:
    err_path = os.path.join(str(tmp_path), "stderr")
    with open(err_path, "wb") as err:
        proc = subprocess.Popen(
            mdp_cli("broker", "-v", "--log-format", "json", "--bind", "tcp://127.0.0.1:*",
                    "--metrics", "127.0.0.1:0", "--driver", driver),
            stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().decode().split()[-1]
        endpoint = proc.stdout.readline().decode().split()[-1]
        assert url.startswith("http://127.0.0.1:") and url.endswith("/metrics")
        workers.start(endpoint, "echo", echo)
        assert until(lambda: value(scrape(url), "mdp_workers", service="echo",
                                   state="idle") == 1)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
        assert proc.stdout is not None
        proc.stdout.close()
    assert proc.returncode == 0
    with open(err_path, "rb") as err:
        records = [json.loads(line) for line in err.read().splitlines()]
    ready = [r for r in records if r.get("event") == "WorkerReady"]
    assert len(ready) == 1
    assert ready[0]["service"] == "echo" and ready[0]["level"] == "INFO"
    package = {"zmq": "mdp_zmq", "gevent": "mdp_gevent"}.get(driver, "mdp_async")
    assert ready[0]["logger"] == f"{package}.broker" and ready[0]["worker"]
    assert {"time", "message"} <= set(ready[0])


@pytest.mark.parametrize("driver", ["zmq", "asyncio", "gevent"])
def test_mdp_worker_metrics_serves_the_handlers_metrics(
    echo_broker: BrokerThread, procs: ProcSet, driver: str
) -> None:
    service = f"up-{driver}"
    worker = procs.start(mdp_cli("worker", service, "--echo", "--announce", "--connect",
                                 echo_broker.endpoint, "--metrics", "127.0.0.1:0",
                                 "--driver", driver))
    url = worker.wait_line("mdp worker metrics on ").split()[-1]
    worker.wait_line("ready")
    assert echo_broker.wait(lambda: any(
        isinstance(e, WorkerReady) and e.service == service.encode()
        for _, e in echo_broker.events))
    with mdp_zmq.Client(echo_broker.endpoint, ClientConfig(timeout=10, retries=0)) as client:
        assert client.request(service, b"x") == [b"x"]
    assert until(lambda: value(scrape(url), "mdp_handler_requests_total", service=service,
                               outcome="replied") == 1)
    assert value(scrape(url), "mdp_handler_seconds_count", service=service) == 1


def test_metrics_without_prometheus_client_is_a_one_line_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "mdp_zmq.metrics", None)  # import fails
    monkeypatch.delattr(mdp_zmq, "metrics", raising=False)
    assert main(["broker", "--bind", "tcp://127.0.0.1:*", "--metrics", "127.0.0.1:0"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("mdp broker: --metrics needs prometheus-client")
    assert "pip install 'mdp-core[metrics]'" in err and err.count("\n") == 1


def test_metrics_address_that_cannot_be_bound_is_a_one_line_error(
    capsys: pytest.CaptureFixture[str]
) -> None:
    holder = mdp_zmq.Broker("tcp://127.0.0.1:*", metrics=BrokerMetrics())
    server = serve(BrokerCollector(holder.metrics_snapshot), "127.0.0.1:0")
    try:
        port = parse_host_port(server.url.split("/")[2])[1]
        assert main(["broker", "--bind", "tcp://127.0.0.1:*",
                     "--metrics", f"127.0.0.1:{port}"]) == 1
        assert capsys.readouterr().err.startswith(
            f"mdp broker: cannot serve metrics on 127.0.0.1:{port}: ")
    finally:
        server.close()
        holder.close()


@pytest.mark.parametrize("bad", ["9100", "host:", ":9100", "h:65536", "h:x"])
def test_a_bad_metrics_address_is_a_usage_error(bad: str) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["broker", "--metrics", bad])
    assert exc.value.code == 2


def test_parse_host_port_takes_ipv6_in_brackets() -> None:
    assert parse_host_port("[::1]:9100") == ("::1", 9100)
    assert parse_host_port("0.0.0.0:0") == ("0.0.0.0", 0)


def test_importing_mdp_zmq_does_not_need_prometheus_client() -> None:
    code = ("import sys; sys.modules['prometheus_client'] = None; "
            "import mdp_zmq, mdp_zmq.cli; assert 'mdp_zmq.metrics' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# ------------------------------------------------------------------ JSON logs


def test_json_log_lines_carry_the_events_fields_cut_like_text_lines() -> None:
    logger = logging.getLogger("test.json")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    try:
        log_event(logger, WorkerLost(b"\xff" * 100, b"echo", "connection lost"), LogLimiter())
        log_event(logger, RequestRedispatched(b"c", b"echo", b"w", 2, 0.25), LogLimiter())
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("plain line")
    finally:
        logger.removeHandler(handler)
    lost, again, plain = (json.loads(line) for line in stream.getvalue().splitlines())
    assert lost["event"] == "WorkerLost" and lost["level"] == "INFO"
    assert lost["worker"] == "ff" * 64 + "...(100 bytes)"
    assert lost["service"] == "echo" and lost["reason"] == "connection lost"
    assert lost["message"].startswith("WorkerLost worker=ffff")
    assert lost["time"].endswith("Z") and lost["logger"] == "test.json"
    assert again["attempt"] == 2 and again["recovery"] == 0.25
    assert plain["message"] == "plain line" and "event" not in plain
    assert "ValueError: boom" in plain["exception"]
