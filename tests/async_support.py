"""Helpers for the tests of mdp_async that run in the test's own event loop."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import anyio
import zmq
from mdp_async import Broker

from mdp_core import Event


class Recorder:
    """A broker's ``on_event``: keeps the events, lets a task wait for one."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._changed = anyio.Event()

    def __call__(self, event: Event) -> None:
        self.events.append(event)
        self._changed.set()
        self._changed = anyio.Event()

    def of(self, kind: type[Any]) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]

    async def wait_count(self, kind: type[Event], n: int, timeout: float = 10.0) -> None:
        with anyio.fail_after(timeout):
            while len(self.of(kind)) < n:
                await self._changed.wait()


@contextlib.asynccontextmanager
async def serving(*services: Any) -> AsyncIterator[None]:
    """``async with`` every broker/worker given, innermost last."""
    async with contextlib.AsyncExitStack() as stack:
        for s in services:
            await stack.enter_async_context(s)
        yield


async def rebind(endpoint: str, **kwargs: Any) -> Broker:
    """A broker on ``endpoint``, once the last one's socket let go of it."""
    with anyio.fail_after(10):
        while True:
            try:
                return Broker(endpoint, **kwargs)
            except zmq.ZMQError as exc:  # libzmq closes a socket in the background
                if exc.errno != zmq.EADDRINUSE:
                    raise
            await anyio.sleep(0.02)
