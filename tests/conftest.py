"""Fixtures shared by the real-socket test modules (loopback only)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from zmq_support import ProcSet, ThreadWorkers


@pytest.fixture
def workers() -> Iterator[ThreadWorkers]:
    """In-process mdp_zmq workers, closed when the test ends."""
    tw = ThreadWorkers()
    yield tw
    tw.close()


@pytest.fixture
def procs() -> Iterator[ProcSet]:
    """Subprocesses the test starts; only these are stopped at the end."""
    ps = ProcSet()
    yield ps
    ps.stop_all()


@pytest.fixture(params=["trio", "asyncio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """The async driver's tests (``@pytest.mark.anyio``) run on both of anyio's backends."""
    backend: str = request.param
    return backend
