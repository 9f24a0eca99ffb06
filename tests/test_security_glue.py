"""The security glue every driver shares: Security values, the ZAP handler, socket setup."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import mdp_zmq
import pytest
import zmq
from mdp_zmq.engine import RouterEngine
from mdp_zmq.glue import (
    BROKER_IO_THREADS,
    LogLimiter,
    MonitorEvent,
    Security,
    TransportConfig,
    ZapHandler,
    close_broker,
    keygen,
    log_event,
    make_dealer,
    make_router,
    open_broker,
    start_zap,
)

import mdp_core
from mdp_core import WorkerRefused


@pytest.fixture
def pairs() -> tuple[tuple[bytes, bytes], tuple[bytes, bytes]]:
    """Two key pairs: (public, secret) each."""
    a, b = zmq.curve_keypair(), zmq.curve_keypair()
    return (a[0], a[1]), (b[0], b[1])


@pytest.fixture
def context() -> Iterator[zmq.Context[zmq.Socket[bytes]]]:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    yield ctx
    ctx.destroy(0)


def broker_security(pairs: tuple[tuple[bytes, bytes], tuple[bytes, bytes]]) -> Security:
    (pub, sec), (peer_pub, _) = pairs
    return Security(pub, sec, allowed={peer_pub: "peer"})


def test_security_values_are_checked(pairs: tuple[tuple[bytes, bytes], ...]) -> None:
    (pub, sec), (other_pub, other_sec) = pairs
    assert Security(pub, sec, allowed={other_pub: "x"}).is_broker
    peer = Security(pub.decode(), sec.decode(), broker_key=other_pub)  # type: ignore[arg-type]
    assert not peer.is_broker and peer.public_key == pub  # str keys are taken as ASCII
    bad: list[dict[str, object]] = [
        {"public_key": pub, "secret_key": other_sec, "allowed": {other_pub: "x"}},  # not a pair
        {"public_key": pub[:-1], "secret_key": sec, "allowed": {other_pub: "x"}},
        {"public_key": b"\x00" * 40, "secret_key": sec, "allowed": {other_pub: "x"}},
        {"public_key": 5, "secret_key": sec, "allowed": {other_pub: "x"}},
        {"public_key": pub, "secret_key": sec},  # a broker letting nobody in
        {"public_key": pub, "secret_key": sec, "allowed": {other_pub: ""}},
        {"public_key": pub, "secret_key": sec, "allowed": {b"short": "x"}},
        {"public_key": pub, "secret_key": sec, "broker_key": other_pub,
         "allowed": {other_pub: "x"}},  # a peer with an allow-list
        {"public_key": pub, "secret_key": sec, "broker_key": b"nope"},
    ]
    for kwargs in bad:
        with pytest.raises(ValueError):
            Security(**kwargs)  # type: ignore[arg-type]


def test_curve_cannot_be_combined_with_router_handover(pairs: tuple[tuple[bytes, bytes], ...]
                                                       ) -> None:
    with pytest.raises(ValueError, match="router_handover"):
        TransportConfig(router_handover=True, security=broker_security(pairs))
    with pytest.raises(TypeError, match="Security"):
        TransportConfig(security="keys")  # type: ignore[arg-type]


def test_a_secured_router_needs_the_zap_handler_of_its_context(
    pairs: tuple[tuple[bytes, bytes], ...], context: zmq.Context[zmq.Socket[bytes]]
) -> None:
    transport = TransportConfig(security=broker_security(pairs))
    with pytest.raises(ValueError, match="ZapHandler"):
        make_router(context, ["tcp://127.0.0.1:*"], transport)
    other: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    zap = start_zap(other, transport)
    assert zap is not None
    try:
        with pytest.raises(ValueError, match="ZapHandler"):
            make_router(context, ["tcp://127.0.0.1:*"], transport, zap=zap)
    finally:
        zap.close()
        other.term()
    (pub, sec), (peer_pub, _) = pairs
    peer = TransportConfig(security=Security(pub, sec, broker_key=peer_pub))
    with pytest.raises(ValueError, match="broker's Security"):
        make_router(context, ["tcp://127.0.0.1:*"], peer)
    with pytest.raises(ValueError, match="peer's Security"):
        make_dealer(context, "tcp://127.0.0.1:5555", transport)
    with pytest.raises(ValueError, match="broker's Security"):
        ZapHandler(context, peer.security)  # type: ignore[arg-type]
    assert start_zap(context, TransportConfig()) is None


def test_one_zap_handler_per_context(pairs: tuple[tuple[bytes, bytes], ...],
                                     context: zmq.Context[zmq.Socket[bytes]]) -> None:
    security = broker_security(pairs)
    first = ZapHandler(context, security)
    try:
        with pytest.raises(zmq.ZMQError, match="a context of its own"):
            ZapHandler(context, security)
    finally:
        first.close()


def test_an_engine_with_security_needs_its_zap_handler(
    pairs: tuple[tuple[bytes, bytes], ...], context: zmq.Context[zmq.Socket[bytes]]
) -> None:
    transport = TransportConfig(security=broker_security(pairs))
    zap = ZapHandler(context, transport.security)  # type: ignore[arg-type]
    router, monitor, _ = make_router(context, ["tcp://127.0.0.1:*"], transport, zap=zap)
    try:
        with pytest.raises(ValueError, match="ZapHandler"):
            RouterEngine(mdp_core.Broker(), router, monitor, transport,
                         log=logging.getLogger("t"), clock=lambda: 0.0)
        engine = RouterEngine(mdp_core.Broker(), router, monitor, TransportConfig(),
                              log=logging.getLogger("t"), clock=lambda: 0.0)
        engine.zap_ready()  # no handler: nothing to do
    finally:
        monitor.close(0)
        router.close(0)
        zap.close()


def test_a_held_back_handshake_refusal_asks_the_driver_to_turn_for_its_summary(
    context: zmq.Context[zmq.Socket[bytes]],
) -> None:
    router, monitor, _ = make_router(context, ["tcp://127.0.0.1:*"], TransportConfig())
    try:
        engine = RouterEngine(mdp_core.Broker(), router, monitor, TransportConfig(),
                              log=logging.getLogger("t"), clock=lambda: 0.0)
        engine.log_limiter = LogLimiter(burst=1, window=5.0, clock=lambda: 0.0)
        assert engine.wake_at() is None  # an idle broker waits for something to happen
        refused = MonitorEvent(int(zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL),
                               int(zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH), "tcp://x")
        assert not engine.monitor_events([refused])  # logged: nothing due
        assert engine.monitor_events([refused])  # held back: its summary is due at 5
        assert engine.wake_at() == 5.0
        assert not engine.monitor_events([refused])  # the wait already ends then
    finally:
        monitor.close(0)
        router.close(0)


def test_secured_brokers_each_get_a_context_of_their_own(tmp_path: Path) -> None:
    keygen("broker", tmp_path)
    keygen("peer", tmp_path / "allow")
    transport = TransportConfig(security=Security.for_broker(tmp_path / "broker.key_secret",
                                                             tmp_path / "allow"))
    a = mdp_zmq.Broker("tcp://127.0.0.1:*", transport=transport)
    b = mdp_zmq.Broker("tcp://127.0.0.1:*", transport=transport)
    try:
        assert a.context is not b.context and a.context is not zmq.Context.instance()
        assert a.context.get(zmq.IO_THREADS) == BROKER_IO_THREADS == 2
    finally:
        a.close()
        b.close()
    assert a.context.closed and b.context.closed  # made by the broker, terminated by it
    shared: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        c = mdp_zmq.Broker("tcp://127.0.0.1:*", transport=transport, context=shared)
        with pytest.raises(zmq.ZMQError, match="context of its own"):
            mdp_zmq.Broker("tcp://127.0.0.1:*", transport=transport, context=shared)
        c.close()
        assert not shared.closed  # given, not owned
    finally:
        shared.term()


def test_a_broker_that_cannot_bind_releases_its_zap_handler_and_context(tmp_path: Path
                                                                         ) -> None:
    keygen("broker", tmp_path)
    keygen("peer", tmp_path / "allow")
    transport = TransportConfig(security=Security.for_broker(tmp_path / "broker.key_secret",
                                                             tmp_path / "allow"))
    shared: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        with pytest.raises(zmq.ZMQError):
            mdp_zmq.Broker("tcp://999.0.0.1:1", transport=transport, context=shared)
        mdp_zmq.Broker("tcp://127.0.0.1:*", transport=transport, context=shared).close()
    finally:
        shared.term()
    with pytest.raises(zmq.ZMQError):  # and with a context of its own
        mdp_zmq.Broker("tcp://999.0.0.1:1", transport=transport)


def test_close_broker_closes_the_zap_handler_after_the_router_then_its_context(
    pairs: tuple[tuple[bytes, bytes], ...],
) -> None:
    transport = TransportConfig(security=broker_security(pairs))
    context, owned, zap, router, monitor, _ = open_broker(None, ["tcp://127.0.0.1:*"],
                                                          transport)
    assert owned and zap is not None
    seen: list[tuple[zmq.Socket[bytes], bool]] = []
    close_broker(context, owned, zap, router, monitor,
                 lambda sock: seen.append((sock, router.closed)))
    assert seen == [(monitor, False), (router, False), (zap.socket, True)]
    assert monitor.closed and router.closed and zap.socket.closed and context.closed
    close_broker(context, owned, zap, router, monitor, lambda sock: seen.append((sock, True)))
    assert len(seen) == 3  # all closed already: nothing to do


def test_close_broker_leaves_the_zap_handler_bound_if_the_router_did_not_close(
    pairs: tuple[tuple[bytes, bytes], ...],
) -> None:
    transport = TransportConfig(security=broker_security(pairs))
    context, owned, zap, router, monitor, _ = open_broker(None, ["tcp://127.0.0.1:*"],
                                                          transport)
    assert zap is not None

    def fail_at_the_router(sock: zmq.Socket[bytes]) -> None:
        if sock is router:
            raise RuntimeError("the router's fd could not be let go (expected by the test)")

    with pytest.raises(RuntimeError, match="expected by the test"):
        close_broker(context, owned, zap, router, monitor, fail_at_the_router)
    # No window in which the ROUTER would admit every key: the handler stays.
    assert monitor.closed and not router.closed and not zap.socket.closed
    assert not context.closed
    close_broker(context, owned, zap, router, monitor)
    assert router.closed and zap.socket.closed and context.closed


def test_worker_refused_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("mdp_zmq.test")
    with caplog.at_level(logging.WARNING, logger="mdp_zmq.test"):
        log_event(log, WorkerRefused(b"w", b"payments", "not allowed: ..."), LogLimiter())
    assert "WorkerRefused worker=w service=payments" in caplog.text


@pytest.mark.parametrize("role", ["worker", "client"])
def test_a_key_refused_at_each_reconnect_is_logged_within_bounds(
    role: str, context: zmq.Context[zmq.Socket[bytes]], caplog: pytest.LogCaptureFixture,
) -> None:
    """libzmq retries a refused handshake and a worker opens a new socket
    after each drop: a worker's warnings go through its limiter, a client's
    line (its failed request gives the reason) is INFO, once per socket."""
    from mdp_zmq.engine import DealerEngine

    caplog.set_level(logging.DEBUG, "test.dealer")
    log = logging.getLogger("test.dealer")
    limiter = LogLimiter(burst=2, window=600, clock=lambda: 0.0)
    refused = MonitorEvent(zmq.EVENT_HANDSHAKE_FAILED_AUTH, 400, "tcp://127.0.0.1:1")
    for _ in range(3):  # three sockets, each refused three times
        core = mdp_core.Worker(b"echo") if role == "worker" else mdp_core.Client()
        sock, mon = make_dealer(context, "tcp://127.0.0.1:1", TransportConfig())
        assert mon is not None
        engine = DealerEngine(core, sock, mon, log=log, endpoint="tcp://127.0.0.1:1",
                              log_limiter=limiter if role == "worker" else None)
        engine.monitor_events([refused] * 3)
        sock.close(0)
        mon.close(0)
    levels = [r.levelno for r in caplog.records if "refused this peer's CURVE key" in r.message]
    if role == "worker":
        assert levels == [logging.WARNING] * 2
    else:
        assert levels == [logging.INFO, logging.DEBUG, logging.DEBUG] * 3


def test_a_send_refused_after_a_refused_handshake_fails_the_request_as_refused(
    context: zmq.Context[zmq.Socket[bytes]],
) -> None:
    """The refused handshake leaves the DEALER with no connection: its next
    send fails at once. The monitor's refusal, not read yet, must reach the
    core before the failed send ends the attempt (or the client would say
    UNREACHABLE: seen with the async clients under load)."""
    import struct

    from mdp_zmq.engine import DealerEngine

    core = mdp_core.Client(mdp_core.ClientConfig(timeout=5.0, retries=0))
    sock = context.socket(zmq.DEALER)  # connected to nothing: every send fails
    mon_in, mon = context.socket(zmq.PAIR), context.socket(zmq.PAIR)
    try:
        mon.bind("inproc://fake-monitor")
        mon_in.connect("inproc://fake-monitor")
        mon_in.send_multipart([struct.pack("=HI", zmq.EVENT_HANDSHAKE_FAILED_AUTH, 400),
                               b"tcp://127.0.0.1:1"])
        engine = DealerEngine(core, sock, mon, log=logging.getLogger("test.dealer"),
                              endpoint="tcp://127.0.0.1:1")
        core.request(b"echo", b"hi", 0.0)
        assert not engine.flush(0.0)
        (failed,) = [e for e in core.events() if isinstance(e, mdp_core.RequestFailed)]
        assert failed.cause is mdp_core.FailureCause.REFUSED, failed
    finally:
        for s in (sock, mon, mon_in):
            s.close(0)
