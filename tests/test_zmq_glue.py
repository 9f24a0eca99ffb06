"""The pyzmq glue every driver shares: options, endpoints, monitor, SRCFD."""

from __future__ import annotations

import time

import pytest
import zmq
from mdp_zmq.glue import (
    TransportConfig,
    Waker,
    close_monitor,
    configure_socket,
    drain_monitor,
    make_dealer,
    make_router,
    normalize_endpoint,
    recv_routed,
    timeout_ms,
)


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
