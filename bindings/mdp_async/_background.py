"""``async with`` for the drivers that serve: ``serve()`` in a background task."""

from __future__ import annotations

from types import TracebackType
from typing import TypeVar

import anyio
from anyio.abc import TaskGroup, TaskStatus

__all__ = ["Background"]

_S = TypeVar("_S", bound="Background")


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
