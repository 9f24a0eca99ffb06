"""The pyzmq glue every driver shares: options, endpoints, monitor, SRCFD, log lines."""

from __future__ import annotations

import logging
import os
import select
import subprocess
import sys
import time

import pytest
import zmq
from mdp_zmq._logging import default_limiter
from mdp_zmq.glue import (
    BROKER_IO_THREADS,
    DEFAULT_MAX_MESSAGE_BYTES,
    ROUTER_BACKLOG,
    ROUTER_HWM,
    LogLimiter,
    TransportConfig,
    Waker,
    close_monitor,
    configure_socket,
    describe,
    drain_monitor,
    log_event,
    make_dealer,
    make_router,
    normalize_endpoint,
    recv_routed,
    send_frames,
    send_routed,
    shorten,
    timeout_ms,
)

import mdp_core
from mdp_core import ProtocolError, RequestExpired, WorkerReady


@pytest.fixture
def ctx() -> zmq.Context[zmq.Socket[bytes]]:
    return zmq.Context.instance()


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("5555", "tcp://127.0.0.1:5555"),
        ("example.org:5555", "tcp://example.org:5555"),
        ("/tmp/mdp.sock", "ipc:///tmp/mdp.sock"),
        ("tcp://*:5555", "tcp://*:5555"),
        (" ipc://x ", "ipc://x"),
    ],
)
def test_normalize_endpoint_fills_in_the_scheme(given: str, expected: str) -> None:
    assert normalize_endpoint(given) == expected


def test_normalize_endpoint_rejects_empty() -> None:
    with pytest.raises(ValueError, match="bind"):
        normalize_endpoint(" ", bind=True)


def test_timeout_ms_rounds_up_and_caps() -> None:
    assert timeout_ms(None, 5.0) is None
    assert timeout_ms(None, 5.0, cap=0.25) == 250
    assert timeout_ms(5.0011, 5.0) == 2
    assert timeout_ms(4.0, 5.0) == 0
    assert timeout_ms(9.0, 5.0, cap=1.0) == 1000


def test_transport_config_sets_zmtp_heartbeats_and_linger(
    ctx: zmq.Context[zmq.Socket[bytes]],
) -> None:
    sock = ctx.socket(zmq.DEALER)
    try:
        configure_socket(sock, TransportConfig(heartbeat_ivl=0.2, heartbeat_timeout=0.5,
                                               heartbeat_ttl=0.5, linger=0.3, sndhwm=7))
        assert sock.getsockopt(zmq.HEARTBEAT_IVL) == 200
        assert sock.getsockopt(zmq.HEARTBEAT_TIMEOUT) == 500
        assert sock.getsockopt(zmq.HEARTBEAT_TTL) == 500
        assert sock.getsockopt(zmq.LINGER) == 300
        assert sock.getsockopt(zmq.SNDHWM) == 7
        configure_socket(sock, TransportConfig(heartbeat_ivl=None, linger=0))
        assert sock.getsockopt(zmq.HEARTBEAT_IVL) == 0
        assert sock.getsockopt(zmq.LINGER) == 0
    finally:
        sock.close(0)


def test_router_reports_fd_of_each_peer_matching_its_monitor(
    ctx: zmq.Context[zmq.Socket[bytes]],
) -> None:
    router, monitor, bound = make_router(ctx, ["tcp://127.0.0.1:*"], TransportConfig())
    dealer, dmon = make_dealer(ctx, bound[0], TransportConfig(), monitor=False)
    assert dmon is None
    try:
        assert bound[0].startswith("tcp://127.0.0.1:") and not bound[0].endswith("*")
        assert recv_routed(router) is None
        dealer.send_multipart([b"a", b"b"])
        assert router.poll(5000)
        item = recv_routed(router)
        assert item is not None
        peer, frames, fd = item
        assert frames == [b"a", b"b"] and fd >= 0
        events = drain_monitor(monitor)
        assert [(e.event, e.value) for e in events] == [(zmq.EVENT_ACCEPTED, fd)]
        dealer.close(0)
        deadline = time.monotonic() + 5
        events = []
        while not events and time.monotonic() < deadline:
            monitor.poll(100)
            events = drain_monitor(monitor)
        assert [(e.event, e.value) for e in events] == [(zmq.EVENT_DISCONNECTED, fd)]
        # ROUTER_MANDATORY: sending to the peer that left raises (once the
        # ROUTER has processed the pipe's termination; it may lag the monitor).
        with pytest.raises(zmq.ZMQError) as info:
            while time.monotonic() < deadline:
                router.send_multipart([peer, b"late"], zmq.NOBLOCK)
                time.sleep(0.01)
        assert info.value.errno == zmq.EHOSTUNREACH
    finally:
        dealer.close(0)
        close_monitor(router, monitor)
        router.close(0)


def test_send_routed_sends_one_message_to_the_peer_or_refuses_it_whole(
    ctx: zmq.Context[zmq.Socket[bytes]],
) -> None:
    router, monitor, bound = make_router(ctx, ["tcp://127.0.0.1:*"], TransportConfig())
    dealer, _ = make_dealer(ctx, bound[0], TransportConfig(), monitor=False)
    try:
        dealer.send_multipart([b"hello"])
        assert router.poll(5000)
        item = recv_routed(router)
        assert item is not None
        peer = item[0]
        send_routed(router, peer, [b"MDPC02", b"\x03", b"echo", b"body"])
        send_routed(router, peer, [b"one"])
        send_frames(router, [peer, b"two", b"frames"])
        got = []
        while len(got) < 3 and dealer.poll(5000):
            got.append(dealer.recv_multipart())
        assert got == [[b"MDPC02", b"\x03", b"echo", b"body"], [b"one"], [b"two", b"frames"]]
        # ROUTER_MANDATORY refuses an unknown peer on its first frame: nothing
        # is left half-sent, the next message goes through whole.
        with pytest.raises(zmq.ZMQError) as info:
            send_routed(router, b"nobody", [b"x", b"y"])
        assert info.value.errno == zmq.EHOSTUNREACH
        send_routed(router, peer, [b"after"])
        assert dealer.poll(5000) and dealer.recv_multipart() == [b"after"]
    finally:
        dealer.close(0)
        close_monitor(router, monitor)
        router.close(0)


def test_router_engine_reads_a_batch_per_turn_then_one_message_unless_more_are_pending(
    ctx: zmq.Context[zmq.Socket[bytes]],
) -> None:
    # inproc: a send lands in the ROUTER's queue at once, so the turns below
    # find every message there (no I/O thread, no timing).
    from mdp_zmq.engine import BATCH, RouterEngine

    import mdp_core

    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.RCVHWM, 0)
    router.setsockopt(zmq.SNDHWM, 0)
    router.bind("inproc://engine-batch")
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.SNDHWM, 0)
    dealer.setsockopt(zmq.RCVHWM, 0)
    dealer.connect("inproc://engine-batch")
    monitor = ctx.socket(zmq.PAIR)  # never read: inproc messages carry no fd
    engine = RouterEngine(mdp_core.Broker(), router, monitor, TransportConfig(),
                          log=logging.getLogger("test.engine"), clock=time.monotonic)
    try:
        n = BATCH + 5
        for i in range(n):
            dealer.send_multipart([b"MDPC02", b"\x01", b"mmi.service", b"echo%d" % i])
        assert engine.turn(time.monotonic()) is False  # BATCH read, the rest waits
        assert engine.turn(time.monotonic()) is True  # the rest, to zmq.Again
        assert engine.turn(time.monotonic()) is True  # nothing left
        replies = [dealer.recv_multipart(zmq.NOBLOCK) for _ in range(n)]
        assert [r[3] for r in replies] == [b"404"] * n
        assert [r[2] for r in replies] == [b"mmi.service"] * n
        assert engine.pending() is False
        for body in (b"one", b"two"):
            dealer.send_multipart([b"MDPC02", b"\x01", b"mmi.service", body])
        assert engine.turn(time.monotonic()) is True  # one message: pending() says the rest
        assert dealer.recv_multipart(zmq.NOBLOCK)[3] == b"404"
        with pytest.raises(zmq.Again):
            dealer.recv_multipart(zmq.NOBLOCK)
        # The second waits, and the ROUTER's fd will never say so: only pending() does.
        assert not select.select([router.get(zmq.FD)], [], [], 0)[0]
        assert engine.pending() is True
        assert engine.turn(time.monotonic(), readable=False) is True  # known: read anyway
        assert dealer.recv_multipart(zmq.NOBLOCK)[3] == b"404"
        assert engine.pending() is False
    finally:
        dealer.close(0)
        monitor.close(0)
        router.close(0)


def test_make_router_needs_an_endpoint_and_cleans_up_on_bad_ones(
    ctx: zmq.Context[zmq.Socket[bytes]],
) -> None:
    with pytest.raises(ValueError, match="at least one"):
        make_router(ctx, [], TransportConfig())
    with pytest.raises(zmq.ZMQError):
        make_router(ctx, ["bogus://nowhere"], TransportConfig())


def test_dealer_monitor_reports_handshake_and_disconnect(
    ctx: zmq.Context[zmq.Socket[bytes]],
) -> None:
    router, monitor, bound = make_router(ctx, ["tcp://127.0.0.1:*"], TransportConfig())
    dealer, dmon = make_dealer(ctx, bound[0], TransportConfig())
    assert dmon is not None
    try:
        seen: list[int] = []
        deadline = time.monotonic() + 5
        while zmq.EVENT_HANDSHAKE_SUCCEEDED not in seen and time.monotonic() < deadline:
            dmon.poll(100)
            seen += [e.event for e in drain_monitor(dmon)]
        assert zmq.EVENT_HANDSHAKE_SUCCEEDED in seen
        close_monitor(router, monitor)
        router.close(0)
        while zmq.EVENT_DISCONNECTED not in seen and time.monotonic() < deadline:
            dmon.poll(100)
            seen += [e.event for e in drain_monitor(dmon)]
        assert zmq.EVENT_DISCONNECTED in seen
    finally:
        close_monitor(dealer, dmon)
        dealer.close(0)
        if not router.closed:
            close_monitor(router, monitor)
            router.close(0)


def test_waker_wakes_a_poller_and_clears() -> None:
    waker = Waker()
    try:
        poller = zmq.Poller()
        poller.register(waker.fileno(), zmq.POLLIN)
        assert poller.poll(0) == []
        waker.wake()
        waker.wake()
        assert poller.poll(1000) == [(waker.fileno(), zmq.POLLIN)]
        waker.clear()
        assert poller.poll(0) == []
    finally:
        waker.close()
    waker.wake()  # after close: silently nothing


def test_waker_write_fd_is_the_end_a_signal_handler_writes() -> None:
    waker = Waker()
    try:
        assert os.get_blocking(waker.write_fd()) is False
        os.write(waker.write_fd(), b"\x0f")  # what the C-level signal handler does
        poller = zmq.Poller()
        poller.register(waker.fileno(), zmq.POLLIN)
        assert poller.poll(1000) == [(waker.fileno(), zmq.POLLIN)]
        waker.clear()
        assert poller.poll(0) == []
    finally:
        waker.close()


def test_normalize_endpoint_refuses_what_is_not_a_str() -> None:
    for bad in (5555, b"tcp://127.0.0.1:5555", None):
        with pytest.raises(TypeError, match="endpoint must be a str"):
            normalize_endpoint(bad)  # type: ignore[arg-type]


# ------------------------------------------------------------------ transport limits


def test_every_socket_gets_max_message_bytes(ctx: zmq.Context[zmq.Socket[bytes]]) -> None:
    sock = ctx.socket(zmq.DEALER)
    try:
        configure_socket(sock, TransportConfig())
        assert sock.getsockopt(zmq.MAXMSGSIZE) == DEFAULT_MAX_MESSAGE_BYTES == 64 * 1024 * 1024
        configure_socket(sock, TransportConfig(max_message_bytes=1000))
        assert sock.getsockopt(zmq.MAXMSGSIZE) == 1000
        configure_socket(sock, TransportConfig(max_message_bytes=None))
        assert sock.getsockopt(zmq.MAXMSGSIZE) == -1
    finally:
        sock.close(0)


def test_the_router_has_its_own_hwm_defaults_and_dealers_keep_libzmqs(
    ctx: zmq.Context[zmq.Socket[bytes]],
) -> None:
    router, monitor, bound = make_router(ctx, ["tcp://127.0.0.1:*"], TransportConfig())
    dealer, _ = make_dealer(ctx, bound[0], TransportConfig(), monitor=False)
    tuned, tmon, _ = make_router(ctx, ["tcp://127.0.0.1:*"],
                                 TransportConfig(sndhwm=7, rcvhwm=0, max_message_bytes=10))
    try:
        assert router.getsockopt(zmq.SNDHWM) == router.getsockopt(zmq.RCVHWM) == ROUTER_HWM
        assert router.getsockopt(zmq.MAXMSGSIZE) == DEFAULT_MAX_MESSAGE_BYTES
        assert (tuned.getsockopt(zmq.SNDHWM), tuned.getsockopt(zmq.RCVHWM)) == (7, 0)
        assert tuned.getsockopt(zmq.MAXMSGSIZE) == 10
        assert dealer.getsockopt(zmq.SNDHWM) == dealer.getsockopt(zmq.RCVHWM) == 1000
        assert dealer.getsockopt(zmq.MAXMSGSIZE) == DEFAULT_MAX_MESSAGE_BYTES
    finally:
        dealer.close(0)
        for sock, mon in ((router, monitor), (tuned, tmon)):
            close_monitor(sock, mon)
            sock.close(0)


def test_the_router_listens_with_a_backlog_for_thousands_of_connects(
    ctx: zmq.Context[zmq.Socket[bytes]],
) -> None:
    router, monitor, _ = make_router(ctx, ["tcp://127.0.0.1:*"], TransportConfig())
    small, smon, _ = make_router(ctx, ["tcp://127.0.0.1:*"], TransportConfig(backlog=5))
    try:
        assert router.getsockopt(zmq.BACKLOG) == ROUTER_BACKLOG == 4096
        assert small.getsockopt(zmq.BACKLOG) == 5
    finally:
        for sock, mon in ((router, monitor), (small, smon)):
            close_monitor(sock, mon)
            sock.close(0)


@pytest.mark.parametrize(("driver", "kind"), [("mdp_zmq", "zmq.Context"),
                                              ("mdp_async", "zmq.Context"),
                                              ("mdp_gevent", "zmq.green.Context")])
def test_a_broker_that_makes_the_shared_context_gives_it_two_io_threads(
    driver: str, kind: str,
) -> None:
    # A fresh process: this one's shared context exists already.
    code = (f"import zmq, zmq.green, {driver}\n"
            f"b = {driver}.Broker('tcp://127.0.0.1:*')\n"
            f"print(b.context is {kind}.instance(), b.context.get(zmq.IO_THREADS), "
            "flush=True)\n"
            "import os; os._exit(0)\n")  # the bound socket goes with the process
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=30, check=True).stdout.split()
    assert out == ["True", str(BROKER_IO_THREADS)] == ["True", "2"]


# ------------------------------------------------------------------ log lines


def test_shorten_bounds_every_peer_value_and_keeps_short_ones_readable() -> None:
    assert shorten(b"echo") == "echo"
    assert shorten(b"\x00\x6b\x8b\x45\x67") == "006b8b4567"
    assert shorten(bytearray(b"ab")) == "ab" and shorten(memoryview(b"cd")) == "cd"
    name = b"mmi." + b"\0" * (20 * 1024 * 1024)  # the READY of issue 9
    assert shorten(name) == b"mmi.".hex() + "00" * 60 + f"...({len(name)} bytes)"
    assert shorten(b"a" * 64) == "a" * 64
    assert shorten(b"a" * 65) == "a" * 64 + "...(65 bytes)"
    assert shorten("r" * 1000) == "r" * 256 + "...(1000 chars)"
    assert shorten((b"a", b"b")) == "<2 frame(s)>"
    assert shorten(2.5) == "2.5"


def test_describe_truncates_routing_ids_and_reasons() -> None:
    event = ProtocolError(b"\xff" * 255, "READY for " + repr(b"mmi." + b"\0" * 100_000))
    line = describe(event)
    assert len(line) < 600
    assert line.startswith("ProtocolError peer=" + "ff" * 64 + "...(255 bytes) reason=READY for ")
    assert line.endswith(f"...({len(event.reason)} chars)")


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _records(caplog: pytest.LogCaptureFixture) -> list[str]:
    out = [r.getMessage() for r in caplog.records]
    caplog.clear()
    return out


def test_log_limiter_lets_a_burst_through_then_summarises_each_window(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    lim = LogLimiter(burst=2, window=10.0, clock=clock)
    logger = logging.getLogger("mdp_zmq.test")
    caplog.set_level(logging.WARNING, logger="mdp_zmq.test")
    assert lim.next_due is None
    assert [lim.allow(logger, logging.WARNING, "k") for _ in range(5)] == [
        True, True, False, False, False]
    assert lim.next_due == 110.0
    assert lim.allow(logger, logging.WARNING, "other kind")  # kinds are apart
    lim.flush()  # window still open: nothing yet
    assert _records(caplog) == []
    clock.now = 110.0
    lim.flush()
    assert _records(caplog) == ["suppressed 3 k lines in the last 10 s"]
    assert lim.next_due is None
    lim.flush()  # written once
    assert _records(caplog) == []
    # A new window opens with the next line and lets a burst through again.
    assert lim.allow(logger, logging.WARNING, "k")
    assert lim.allow(logger, logging.WARNING, "k")
    assert not lim.allow(logger, logging.WARNING, "k")
    clock.now = 125.0  # past that window: the next allow writes its summary first
    assert lim.allow(logger, logging.WARNING, "k")
    assert _records(caplog) == ["suppressed 1 k lines in the last 10 s"]


def test_log_limiter_final_flush_writes_open_windows_at_their_level(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    lim = LogLimiter(burst=1, window=10.0, clock=clock)
    logger = logging.getLogger("mdp_zmq.test")
    caplog.set_level(logging.DEBUG, logger="mdp_zmq.test")
    lim.allow(logger, logging.ERROR, "e")
    lim.allow(logger, logging.ERROR, "e")
    lim.allow(logger, logging.WARNING, "quiet")  # nothing suppressed: no summary
    clock.now = 102.5
    lim.flush(final=True)
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.ERROR, "suppressed 1 e lines in the last 2.5 s")]
    assert lim.next_due is None
    assert lim.allow(logger, logging.WARNING, "quiet")  # windows were closed


def test_log_limiter_tracks_a_bounded_number_of_kinds() -> None:
    clock = FakeClock()
    lim = LogLimiter(burst=1, window=10.0, max_kinds=2, clock=clock)
    logger = logging.getLogger("mdp_zmq.test")
    assert lim.allow(logger, logging.WARNING, "a")
    assert lim.allow(logger, logging.WARNING, "b")
    assert lim.allow(logger, logging.WARNING, "c")  # the first of the shared kind
    assert not lim.allow(logger, logging.WARNING, "d")  # shares it with "c"
    clock.now = 110.0  # the old windows ended: room for new kinds again
    assert lim.allow(logger, logging.WARNING, "d")
    assert lim.allow(logger, logging.WARNING, "e")
    with pytest.raises(ValueError):
        LogLimiter(burst=0)
    with pytest.raises(ValueError):
        LogLimiter(window=0)
    with pytest.raises(ValueError):
        LogLimiter(max_kinds=0)


def test_log_event_limits_warnings_per_event_type_and_reason_prefix(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    lim = LogLimiter(burst=2, window=10.0, clock=clock)
    logger = logging.getLogger("mdp_zmq.test")
    caplog.set_level(logging.DEBUG, logger="mdp_zmq.test")
    for i in range(5):  # peer bytes after the prefix do not make new kinds
        log_event(logger, ProtocolError(b"p", f"malformed message dropped: header b'{i}'"), lim)
        log_event(logger, ProtocolError(b"p", f"READY for b'mmi.{i}': refused"), lim)
        log_event(logger, RequestExpired(b"c", b"s", "no worker"), lim)
        log_event(logger, WorkerReady(b"w%d" % i, b"s"), lim)  # INFO: never limited
    clock.now = 111.0
    lim.flush()
    lines = _records(caplog)
    assert sum(line.startswith("WorkerReady") for line in lines) == 5
    assert sum(line.startswith("ProtocolError") for line in lines) == 4
    assert sum(line.startswith("RequestExpired") for line in lines) == 2
    assert sorted(line for line in lines if line.startswith("suppressed")) == [
        "suppressed 3 ProtocolError (READY for) lines in the last 10 s",
        "suppressed 3 ProtocolError (malformed message dropped) lines in the last 10 s",
        "suppressed 3 RequestExpired (no worker) lines in the last 10 s",
    ]
    log_event(logger, ProtocolError(b"p", "123"), lim)  # no usable prefix: the type alone
    assert _records(caplog) == ["ProtocolError peer=p reason=123"]


def test_log_event_without_a_limiter_uses_the_shared_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    logger = logging.getLogger("mdp_zmq.test.shared")
    caplog.set_level(logging.WARNING, logger="mdp_zmq.test.shared")
    for _ in range(default_limiter.burst + 3):  # a reason no other test uses
        log_event(logger, ProtocolError(b"p", "shared limiter test"))
    assert len(caplog.records) == default_limiter.burst


@pytest.mark.parametrize("bounded", [False, True])
def test_a_backlog_of_heartbeats_is_read_before_the_timers_judge_silence(
    bounded: bool, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 300 workers heartbeat while the broker is stalled past their expiry:
    # the first turn reads only a batch of their messages, and must not
    # expire those whose heartbeat is still queued behind it - unless the
    # timers have waited their most (bounded: MAX_TICK_DEFERRAL = 0).
    from mdp_zmq import engine as engine_module
    from mdp_zmq.engine import BATCH, RouterEngine

    if bounded:
        monkeypatch.setattr(engine_module, "MAX_TICK_DEFERRAL", 0)

    n = BATCH + 44
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    addr = f"inproc://backlog-{os.getpid()}"
    router, monitor, _ = make_router(ctx, [addr], TransportConfig())
    core = mdp_core.Broker(mdp_core.BrokerConfig(heartbeat_interval=1.0, heartbeat_liveness=3))
    engine = RouterEngine(core, router, monitor, TransportConfig(),
                          log=logging.getLogger("test"), clock=lambda: 0.0)
    dealers = []
    try:
        for _ in range(n):
            d = ctx.socket(zmq.DEALER)
            d.setsockopt(zmq.LINGER, 0)
            d.connect(addr)  # inproc: a send is in the ROUTER's queue when it returns
            d.send_multipart([b"MDPW02", b"\x01", b"svc"])
            dealers.append(d)
        deadline = time.monotonic() + 10
        while core.stats().workers < n and time.monotonic() < deadline:
            engine.wake_at()
            engine.turn(0.0)
        assert core.stats().workers == n
        core.outgoing()  # nothing reads the broker's heartbeats
        assert not engine.pending()  # idle: the next turn reads one message
        for d in dealers:
            d.send_multipart([b"MDPW02", b"\x05"])
        turns = 0
        while True:  # as a driver turns: again while messages wait (10 s: every READY is old)
            engine.wake_at()
            done = engine.turn(10.0)
            if done and not engine.pending():
                break
            turns += 1
        engine.wake_at()
        engine.turn(10.0)
        assert turns >= 2  # one message, then batches
        # Bounded (no deferral): the timers ran after the first message read.
        assert core.stats().workers == (1 if bounded else n)
    finally:
        for d in dealers:
            d.close(0)
        close_monitor(router, monitor)
        router.close(0)
        ctx.term()
