"""Async driver for :class:`mdp_core.Client` (anyio: trio or asyncio), Lazy Pirate.

MDP allows one outstanding request per client socket, so a
:class:`Client` keeps a bounded pool of *pairs*, each a core Client and
its DEALER (connected to the broker that core chose: pair ``i`` has the
home broker ``spread + i``, so a pool is spread over several brokers). A
``request()`` takes a free pair (or waits for one) and, while its request
is outstanding, is the pump of that pair's socket: it waits for a reply or
the core's deadline, feeds the core and sends what it queued. A task per
socket watches the DEALER's monitor and wakes the caller when the
connection to the broker drops (the core then retries at once). On
``ResetConnection`` the pair's socket is replaced (by one to the broker
the event names) before the resend, so a late reply to an abandoned
attempt is never read as the answer to a later one; a cancelled
``request()`` replaces the pair's core and socket for the same reason.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from types import TracebackType

import anyio
import zmq
from anyio.abc import TaskGroup
from mdp_zmq.engine import DealerEngine
from mdp_zmq.glue import TransportConfig, as_endpoints, make_dealer, next_spread
from mdp_zmq.lanes import ClientPair

import mdp_core
from mdp_core import (
    BytesLike,
    Dialect,
    FinalReply,
    PartialReply,
)

from ._pump import Pump, close_monitor_socket, close_socket, make_pump, watch_monitor

__all__ = ["Client"]

log = logging.getLogger("mdp_async.client")


class Client:
    """An async MDP client of the broker at ``endpoints`` (one, or a list); many
    requests at once.

    Use it as ``async with mdp_async.Client(...) as client:``. Any number
    of tasks may call :meth:`request`, :meth:`stream` and
    :meth:`service_exists` concurrently; at most ``pool_size`` requests
    are outstanding at a time (each on a socket of its own, as MDP
    requires), the others wait for a free socket. ``config`` gives the
    default ``timeout`` (seconds per attempt) and ``retries`` (resends
    after the first attempt). With several brokers the core of each
    socket picks the broker of each attempt; the pool's ``i``-th socket
    has the home broker ``endpoints[(spread + i) % len(endpoints)]``
    (``spread`` defaults to :func:`mdp_zmq.glue.next_spread`). Raises
    ValueError for ``pool_size < 1``, no endpoint, an empty one or one
    given twice; TypeError if ``endpoints`` is not a str or a list of str.
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
        self.endpoints = as_endpoints(endpoints)
        self.spread = next_spread() if spread is None else spread
        self.config = config
        self.version = version
        self.pool_size = pool_size
        self.transport = transport if transport is not None else TransportConfig()
        self.context = context if context is not None else zmq.Context.instance()
        self._free: list[_Pair] = []
        self._pairs: list[_Pair] = []
        self._slots = anyio.Semaphore(pool_size)
        self._group: TaskGroup | None = None
        self._closed = False

    # --------------------------------------------------------------- public

    async def request(
        self,
        service: str | BytesLike,
        *frames: BytesLike,
        timeout: float | None = None,
        retries: int | None = None,
    ) -> list[bytes]:
        """Send ``frames`` to ``service`` and return the reply's frames.

        PARTIAL replies (MDP/0.2) are skipped; the FINAL is returned.
        ``timeout``/``retries`` override the config for this call.
        Cancelling the call cancels the request: its socket is replaced,
        so its reply cannot reach a later request. Raises
        :class:`mdp_zmq.RequestTimeout` if no reply came after all
        attempts, :class:`mdp_core.EmptyBody` if no frame is given,
        ValueError for an empty service name, RuntimeError outside
        ``async with``.
        """
        async with self._pair() as pair:
            pair.begin(pair.core.request(service, frames, anyio.current_time(), timeout,
                                         retries))
            while True:
                for reply in await pair.step():
                    if isinstance(reply, FinalReply):
                        return list(reply.body)

    async def stream(
        self,
        service: str | BytesLike,
        *frames: BytesLike,
        timeout: float | None = None,
        retries: int | None = None,
    ) -> AsyncIterator[list[bytes]]:
        """Send a request; yield each PARTIAL body, then the FINAL body.

        ``timeout`` applies to each gap between replies. After a resend a
        stream may start again from its first PARTIAL. Leaving the loop
        early cancels the request (the socket is replaced); wrap the call
        in ``contextlib.aclosing`` to have that happen at once rather than
        when the generator is collected. Raises like :meth:`request`.
        """
        async with self._pair() as pair:
            pair.begin(pair.core.request(service, frames, anyio.current_time(), timeout,
                                         retries))
            while True:
                replies = await pair.step()
                for reply in replies:
                    yield list(reply.body)
                if replies and isinstance(replies[-1], FinalReply):
                    return

    async def service_exists(self, name: str | BytesLike) -> bool:
        """Ask the broker (MMI ``mmi.service``) whether ``name`` has workers.

        Uses the config's timeout and retries. Raises
        :class:`mdp_zmq.RequestTimeout` without an answer, ValueError if
        the broker does not implement MMI.
        """
        async with self._pair() as pair:
            pair.begin(pair.core.service_exists(name, anyio.current_time()))
            while True:
                for reply in await pair.step():
                    if isinstance(reply, FinalReply):
                        return mdp_core.mmi_service_found(reply)

    async def __aenter__(self) -> Client:
        if self._closed or self._group is not None:
            raise RuntimeError("a Client is entered once")
        group = anyio.create_task_group()
        await group.__aenter__()
        self._group = group
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        self._closed = True
        for pair in self._pairs:
            pair.close()
        group, self._group = self._group, None
        assert group is not None
        group.cancel_scope.cancel()
        return await group.__aexit__(exc_type, exc, tb)

    # --------------------------------------------------------------- pool

    def _pair(self) -> _Lease:
        if self._closed or self._group is None:
            raise RuntimeError("use the client as `async with Client(...) as client:`")
        return _Lease(self)

    def _make_pair(self) -> _Pair:
        assert self._group is not None
        pair = _Pair(self, self._group)
        self._pairs.append(pair)
        return pair


class _Lease:
    """``async with``: a free pair for one request, returned to the pool after."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.pair: _Pair | None = None

    async def __aenter__(self) -> _Pair:
        client = self.client
        await client._slots.acquire()
        self.pair = client._free.pop() if client._free else client._make_pair()
        self.pair.report_idle_drop()
        return self.pair

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        pair, client = self.pair, self.client
        assert pair is not None
        if pair.core.outstanding is not None:
            # Abandoned mid-request (cancelled, or the stream was left): the
            # core drops it and the socket goes, so a late reply cannot be
            # taken for the next request's.
            pair.cancel()
        client._free.append(pair)
        client._slots.release()


class _Pair(ClientPair):
    """A core Client and its DEALER (opened on first use, replaced on reset;
    the turn is :class:`~mdp_zmq.lanes.ClientPair`'s)."""

    pump: Pump | None

    def __init__(self, client: Client, group: TaskGroup) -> None:
        super().__init__(mdp_core.Client(client.config, client.version,
                                         brokers=len(client.endpoints),
                                         spread=client.spread + len(client._pairs)),
                         client.endpoints, log=log, clock=anyio.current_time)
        self.client = client
        self.group = group

    async def step(self) -> list[PartialReply | FinalReply]:
        """Drive the core until the request has news: its replies in order.

        Raises :class:`mdp_zmq.RequestTimeout` when the core gives up on it.
        """
        while True:
            self.prepare()
            assert self.pump is not None
            try:
                out: list[PartialReply | FinalReply] = await self.pump.run(self.turn)
            finally:
                self.after_run()
            if out:
                return out

    def open(self) -> None:
        """A socket to the broker the core chose, and its monitor's watcher."""
        c = self.client
        endpoint = self.endpoint
        sock, mon = make_dealer(c.context, endpoint, c.transport)
        assert mon is not None
        self.engine = DealerEngine(self.core, sock, mon, log=log, endpoint=endpoint)
        self.pump = make_pump(sock)
        self.group.start_soon(watch_monitor, mon, self.on_monitor)

    def close(self) -> None:
        """Close the socket (the pair may be opened again; the Client prevents it)."""
        engine = self.engine
        if engine is None:
            return
        close_monitor_socket(engine.sock, engine.monitor)  # its watcher returns
        close_socket(engine.sock, self.pump, None)
        self.engine = self.pump = None
