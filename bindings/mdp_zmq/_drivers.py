"""How the ``mdp`` command runs each driver: blocking, async (trio/asyncio), gevent.

The three drivers have the same classes with the same arguments
(``Broker``, ``Worker``, ``Client``); what differs is how a program runs
them until SIGINT/SIGTERM and how it sleeps or calls. This module holds
those differences for the command and the demo, and nothing about MDP.
"""

from __future__ import annotations

import importlib
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from types import ModuleType
from typing import Any

__all__ = ["DRIVERS", "BrokerInThread", "call", "load", "serve", "sleeper", "subprocess_run"]

#: ``--driver`` values: the blocking driver, the async driver on each
#: backend, and the gevent driver.
DRIVERS = ("zmq", "trio", "asyncio", "gevent")

_MODULES = {"zmq": "mdp_zmq", "trio": "mdp_async", "asyncio": "mdp_async",
            "gevent": "mdp_gevent"}
_NEEDS = {"zmq": ("zmq",), "trio": ("anyio", "trio"), "asyncio": ("anyio",),
          "gevent": ("gevent",)}
_EXTRA = {"zmq": "", "trio": "[trio]", "asyncio": "[asyncio]", "gevent": "[gevent]"}


class DriverMissing(RuntimeError):
    """The packages a driver needs are not installed (the message says how)."""


def load(driver: str) -> ModuleType:
    """The package of ``driver`` (``mdp_zmq``, ``mdp_async`` or ``mdp_gevent``).

    Raises :class:`DriverMissing` naming the extra to install if its
    packages are missing.
    """
    try:
        for name in _NEEDS[driver]:
            importlib.import_module(name)
        return importlib.import_module(_MODULES[driver])
    except ImportError as exc:
        raise DriverMissing(
            f"the {driver} driver needs {exc.name or 'its packages'}: "
            f"pip install 'mdp-core{_EXTRA[driver]}'") from None


def serve(driver: str, runnable: Any) -> None:
    """Run a ``Broker`` or ``Worker`` of ``driver`` until SIGINT/SIGTERM, then
    let it shut down cleanly (workers get DISCONNECT)."""
    if driver == "zmq":
        runnable.run()
    elif driver == "gevent":
        import gevent

        stops = [gevent.signal_handler(sig, runnable.close)
                 for sig in (signal.SIGINT, signal.SIGTERM)]
        try:
            runnable.serve()
        finally:
            for handler in stops:
                handler.cancel()
    else:
        import anyio

        async def until_signal() -> None:
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(runnable.serve)
                    async for _ in signals:
                        tg.cancel_scope.cancel()
                        break

        anyio.run(until_signal, backend=driver)


def call(
    driver: str,
    client: Any,
    service: bytes | str,
    body: Sequence[bytes],
    stream: bool,
    on_reply: Callable[[list[bytes]], None],
) -> None:
    """With the (not yet entered) ``Client`` of ``driver``: one request, each
    reply body (every PARTIAL and the FINAL if ``stream``, else the FINAL)
    handed to ``on_reply``. Raises what the client raises."""
    if driver in ("zmq", "gevent"):
        with client as c:
            replies: Iterable[list[bytes]] = (
                c.stream(service, *body) if stream else [c.request(service, *body)])
            for frames in replies:
                on_reply(frames)
        return
    import anyio

    failed: list[Exception] = []

    async def main() -> None:
        async with client as c:
            # Caught inside the client's task group, which would wrap it
            # in an ExceptionGroup: the caller gets the client's exception.
            try:
                if stream:
                    async for frames in c.stream(service, *body):
                        on_reply(frames)
                else:
                    on_reply(await c.request(service, *body))
            except Exception as exc:
                failed.append(exc)

    anyio.run(main, backend=driver)
    if failed:
        raise failed[0]


def sleeper(driver: str) -> Callable[[float], Any]:
    """The sleep a handler of ``driver`` should use (it lets heartbeats flow
    where the driver can: an ``await``-able sleep for the async driver)."""
    if driver == "gevent":
        import gevent

        return gevent.sleep
    if driver in ("trio", "asyncio"):
        import anyio

        return anyio.sleep
    return time.sleep


def subprocess_run(driver: str) -> Callable[..., subprocess.CompletedProcess[bytes]]:
    """``subprocess.run`` for a handler of ``driver`` (gevent's cooperative one
    under gevent; the async driver runs such a handler in a thread)."""
    if driver == "gevent":
        import gevent.subprocess

        run: Callable[..., subprocess.CompletedProcess[bytes]] = gevent.subprocess.run
        return run
    return subprocess.run


class BrokerInThread:
    """A ``Broker`` of ``driver`` serving in a thread of its own (for the demo).

    ``endpoint`` is its bound address; :meth:`close` stops it and waits.
    ``on_event`` runs in that thread.
    """

    def __init__(self, driver: str, endpoint: str, on_event: Callable[[Any], None]) -> None:
        self.driver = driver
        module = load(driver)
        self._stop = threading.Event()
        if driver == "zmq":
            self.broker = module.Broker(endpoint, on_event=on_event)
            self.endpoint: str = self.broker.endpoint
            self.thread = self.broker.start()
            return
        # Made in its own thread: a gevent socket belongs to the hub of the
        # thread that made it.
        ready: list[Any] = []
        started = threading.Event()

        def main() -> None:
            try:
                self.broker = module.Broker(endpoint, on_event=on_event)
            except BaseException as exc:
                ready.append(exc)
                started.set()
                return
            ready.append(self.broker.endpoint)
            started.set()
            self._serve()

        self.thread = threading.Thread(target=main, name=f"mdp-{driver}-broker", daemon=True)
        self.thread.start()
        started.wait()
        if isinstance(ready[0], BaseException):
            raise ready[0]
        self.endpoint = ready[0]

    def _serve(self) -> None:
        if self.driver == "gevent":
            import gevent

            def stopper() -> None:
                while not self._stop.is_set():
                    gevent.sleep(0.05)
                self.broker.close()

            gevent.spawn(stopper)
            self.broker.serve()
            return
        import anyio
        import anyio.to_thread

        async def main() -> None:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self.broker.serve)
                await anyio.to_thread.run_sync(self._stop.wait)
                tg.cancel_scope.cancel()

        anyio.run(main, backend=self.driver)

    def close(self) -> None:
        """Stop the broker (workers get DISCONNECT) and join its thread."""
        if self.driver == "zmq":
            self.broker.close()
        self._stop.set()
        self.thread.join(5)
