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
    Security,
    TransportConfig,
    ZapHandler,
    keygen,
    log_event,
    make_dealer,
    make_router,
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


def test_worker_refused_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("mdp_zmq.test")
    with caplog.at_level(logging.WARNING, logger="mdp_zmq.test"):
        log_event(log, WorkerRefused(b"w", b"payments", "not allowed: ..."), LogLimiter())
    assert "WorkerRefused worker=w service=payments" in caplog.text
