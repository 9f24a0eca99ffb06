"""What the drivers that serve share: ``async with``, and Ctrl-C out of a task group."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from types import TracebackType
from typing import TypeVar

import anyio
from anyio.abc import TaskGroup, TaskStatus

if sys.version_info < (3, 11):  # pragma: no cover - anyio depends on the backport there
    from exceptiongroup import BaseExceptionGroup  # type: ignore[import-not-found,unused-ignore]

__all__ = ["Background", "plain_interrupt"]

_S = TypeVar("_S", bound="Background")


@contextlib.contextmanager
def plain_interrupt() -> Iterator[None]:
    """Let a Ctrl-C leave a task group as a plain KeyboardInterrupt.

    anyio's task groups wrap what they raise in an exception group; on trio
    that includes the KeyboardInterrupt of a Ctrl-C, which ``except
    KeyboardInterrupt`` (say, in ``anyio.run(broker.serve)``'s caller) would
    not catch. A group holding only KeyboardInterrupts becomes one.
    """
    try:
        yield
    except BaseExceptionGroup as group:
        rest = group.subgroup(lambda e: not isinstance(e, (KeyboardInterrupt,
                                                           BaseExceptionGroup)))
        if rest is None:
            raise KeyboardInterrupt from group
        raise


class Background:
    """``async with obj:`` runs ``await obj.serve()`` until the block ends.

    The block starts once ``serve`` reported it is serving
    (``task_status.started()``); leaving it cancels ``serve`` and waits for
    its clean shutdown. An exception ``serve`` raises cancels the block and
    comes out of the ``async with``.
    """

    _group: TaskGroup | None = None

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled (the subclass's loop)."""
        raise NotImplementedError

    async def __aenter__(self: _S) -> _S:
        group = anyio.create_task_group()
        await group.__aenter__()
        try:
            await group.start(self.serve)
        except BaseException as exc:
            await group.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        self._group = group
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        group, self._group = self._group, None
        assert group is not None
        group.cancel_scope.cancel()
        return await group.__aexit__(exc_type, exc, tb)
