"""gevent driver for :class:`mdp_core.Client` (Lazy Pirate), safe for many greenlets.

MDP allows one outstanding request per client socket, so a
:class:`Client` keeps a bounded pool of *pairs*, each a core Client and
its DEALER (connected to the broker that core chose: pair ``i`` has the
home broker ``spread + i``, so a pool is spread over several brokers). A
call takes a free pair (or waits for one) and, while its
request is outstanding, its greenlet is the pump of that pair's socket:
it waits for a reply or the core's deadline, and each turn is
:class:`~mdp_zmq.engine.DealerEngine`'s (read into the core, tell it what
the monitor saw, tick it). A greenlet per socket watches the DEALER's
monitor and wakes the caller on a completed handshake or a dropped
connection (the core then retries at once). On ``ResetConnection`` the
pair's socket is replaced (by one to the broker the event names) before
the resend, so a late reply to an
abandoned attempt is never read as the answer to a later one; a call
that is abandoned (its greenlet killed, a ``gevent.Timeout``, a stream
left early) cancels its request in the core and closes the socket for
the same reason.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Sequence
from types import TracebackType

import gevent.lock
import zmq
from mdp_zmq.engine import DealerEngine
from mdp_zmq.glue import (
    TransportConfig,
    as_endpoints,
    close_monitor,
    make_dealer,
    next_spread,
)
from mdp_zmq.lanes import ClientPair

import mdp_core
from mdp_core import (
    BodyLike,
    BytesLike,
    Dialect,
    FinalReply,
    PartialReply,
)

from ._pump import MonitorWatch, Pump, green_context, plain

__all__ = ["Client"]

log = logging.getLogger("mdp_gevent.client")


class Client:
    """A gevent MDP client of the broker at ``endpoints`` (one, or a list); many
    greenlets at once.

    Any number of greenlets (of the thread that uses it) may call
    :meth:`request`, :meth:`stream` and :meth:`service_exists` at once; at
    most ``pool_size`` requests are outstanding at a time, each on a
    socket of its own as MDP requires, and the other callers wait for a
    free one. ``config`` gives the default ``timeout`` (seconds per
    attempt) and ``retries`` (resends after the first attempt). With
    several brokers the core of each socket picks the broker of each
    attempt; the pool's ``i``-th socket has the home broker
    ``endpoints[(spread + i) % len(endpoints)]`` (``spread`` defaults to
    :func:`mdp_zmq.glue.next_spread`). Use it as a context manager or call
    :meth:`close`. ``context`` must be a ``zmq.green.Context`` (default:
    its ``instance()``). Raises TypeError if ``endpoints`` is not a str or
    a list of str, ``version`` not a :class:`mdp_core.Dialect`, ``config``
    not a ClientConfig or ``context`` not green; ValueError for
    ``pool_size < 1``, no endpoint, an empty one or one given twice.
    """

    def __init__(
        self,
        endpoints: str | Sequence[str],
        config: mdp_core.ClientConfig | None = None,
        version: Dialect = Dialect.MDP02,
        *,
        pool_size: int = 16,
        spread: int | None = None,
        transport: TransportConfig | None = None,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
    ) -> None:
        if pool_size < 1:
            raise ValueError("pool_size must be >= 1")
        self.endpoints = as_endpoints(endpoints)  # TypeError/ValueError now, not at connect
        self.spread = next_spread() if spread is None else spread
        self.config = config
        self.version = version
        self.pool_size = pool_size
        self.transport = transport if transport is not None else TransportConfig()
        self.context = green_context(context)
        self._pairs: list[_Pair] = []
        first = self._make_pair()  # its core checks config and version now
        self._free = [first]
        self._slots = gevent.lock.BoundedSemaphore(pool_size)
        self._closed = False

    # --------------------------------------------------------------- public

    def request(
        self,
        service: str | BytesLike,
        *frames: BytesLike,
        timeout: float | None = None,
        retries: int | None = None,
    ) -> list[bytes]:
        """Send ``frames`` to ``service`` and return the reply's frames.

        PARTIAL replies (MDP/0.2) are skipped; the FINAL is returned.
        ``timeout``/``retries`` override the config for this call. A call
        abandoned on the way (its greenlet killed, a ``gevent.Timeout``)
        cancels its request: its socket is closed, so its reply cannot
        reach a later call. Raises :class:`mdp_zmq.RequestTimeout` if no
        reply came after all attempts, :class:`mdp_core.EmptyBody` if no
        frame is given, ValueError for an empty service name, TypeError if
        ``service`` is not str or bytes or a frame is not bytes-like,
        RuntimeError once the client is closed.
        """
        with self._lease() as pair:
            pair.begin(pair.core.request(service, frames, time.monotonic(), timeout, retries))
            while True:
                for reply in pair.step():
                    if isinstance(reply, FinalReply):
                        return list(reply.body)

    def stream(
        self,
        service: str | BytesLike,
        *frames: BytesLike,
        timeout: float | None = None,
        retries: int | None = None,
    ) -> Iterator[list[bytes]]:
        """Send a request and yield each PARTIAL body, then the FINAL body.

        ``timeout`` applies to each gap between replies. After a resend a
        stream may start again from its first PARTIAL (see the core).
        Leaving the loop early cancels the request (the socket is closed)
        once the generator is closed: at once with
        ``contextlib.closing(...)``, else when it is collected. Raises like
        :meth:`request`; a wrong argument type at the call, the rest while
        iterating.
        """
        # Checked now, sent when the caller starts iterating.
        name, body = mdp_core.as_service(service), mdp_core.as_body(frames)
        return self._stream(name, body, timeout, retries)

    def service_exists(self, name: str | BytesLike) -> bool:
        """Ask the broker (MMI ``mmi.service``) whether ``name`` has workers.

        Uses the config's timeout and retries. Raises
        :class:`mdp_zmq.RequestTimeout` without an answer, ValueError if
        the broker does not implement MMI, TypeError if ``name`` is not
        str or bytes.
        """
        with self._lease() as pair:
            pair.begin(pair.core.service_exists(name, time.monotonic()))
            while True:
                for reply in pair.step():
                    if isinstance(reply, FinalReply):
                        return mdp_core.mmi_service_found(reply)

    def close(self) -> None:
        """Close the sockets; idempotent. Calls in progress finish (their socket
        closes when they do); new calls raise RuntimeError."""
        self._closed = True
        for pair in self._free:
            pair.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --------------------------------------------------------------- pool

    def _stream(
        self, name: bytes, body: BodyLike, timeout: float | None, retries: int | None
    ) -> Iterator[list[bytes]]:
        with self._lease() as pair:
            pair.begin(pair.core.request(name, body, time.monotonic(), timeout, retries))
            while True:
                replies = pair.step()
                for reply in replies:
                    yield list(reply.body)
                if replies and isinstance(replies[-1], FinalReply):
                    return

    @contextlib.contextmanager
    def _lease(self) -> Iterator[_Pair]:
        """A free pair for one request, returned to the pool after."""
        if self._closed:
            raise RuntimeError("client is closed")
        self._slots.acquire()
        pair = self._free.pop() if self._free else self._make_pair()
        pair.report_idle_drop()
        try:
            yield pair
        finally:
            if pair.core.outstanding is not None:
                # Abandoned mid-request: the core drops it and the socket goes,
                # so a late reply cannot be taken for the next request's.
                pair.cancel()
            if self._closed:
                pair.close()
            self._free.append(pair)
            self._slots.release()

    def _make_pair(self) -> _Pair:
        pair = _Pair(self)
        self._pairs.append(pair)
        return pair


class _Pair(ClientPair):
    """A core Client and its DEALER (opened on first use, replaced on reset;
    the turn is :class:`~mdp_zmq.lanes.ClientPair`'s)."""

    pump: Pump | None

    def __init__(self, client: Client) -> None:
        super().__init__(mdp_core.Client(client.config, client.version,
                                         brokers=len(client.endpoints),
                                         spread=client.spread + len(client._pairs)),
                         client.endpoints, log=log, clock=time.monotonic)
        self.client = client
        self._watch: MonitorWatch | None = None
        self._sock: zmq.Socket[bytes] | None = None  # the green sockets, which own them
        self._mon: zmq.Socket[bytes] | None = None

    def step(self) -> list[PartialReply | FinalReply]:
        """Drive the core until the request has news: its replies in order.

        Raises :class:`mdp_zmq.RequestTimeout` when the core gives up on it.
        """
        while True:
            self.prepare()
            assert self.pump is not None
            try:
                out: list[PartialReply | FinalReply] = self.pump.run(self.turn)
            finally:
                self.after_run()
            if out:
                return out

    def open(self) -> None:
        """A socket to the broker the core chose, and its monitor's watcher."""
        c = self.client
        endpoint = self.endpoint
        self._sock, self._mon = make_dealer(c.context, endpoint, c.transport)
        assert self._mon is not None
        sock = plain(self._sock)
        self.engine = DealerEngine(self.core, sock, plain(self._mon), log=log,
                                   endpoint=endpoint)
        self.pump = Pump(sock)
        self._watch = MonitorWatch(self.engine.monitor, self.on_monitor)

    def close(self) -> None:
        """Close the socket (opened again on next use; a closed Client prevents it)."""
        if self._sock is None:
            return
        assert self._watch is not None and self.pump is not None and self._mon is not None
        self._watch.stop()
        self.pump.stop()
        close_monitor(self._sock, self._mon)
        self._sock.close(0)
        self.engine = self.pump = self._watch = None
        self._sock = self._mon = None
