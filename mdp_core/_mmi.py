"""RFC 8/MMI: the management services the broker answers itself.

Every service whose name starts with ``mmi.`` is handled here and never
reaches a worker. Replies (one or more frames) are:

``mmi.service``
    body frame 0 is a service name; ``200`` if at least one live worker
    (idle or busy) is registered for it, else ``404``.
``mmi.services``
    one frame per service with at least one live worker, sorted; a single
    empty frame if there is none (MDP bodies cannot be empty).
``mmi.workers``
    one frame per live worker, ``b"<service> <state>"`` (state is ``idle``
    or ``busy``), sorted; a single empty frame if there is none.
anything else in ``mmi.``
    ``501``.

``mmi.services`` and ``mmi.workers`` cost O(services) and O(workers):
they are management queries, not the data path.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

__all__ = ["MMI_PREFIX", "mmi_reply"]

MMI_PREFIX = b"mmi."


class _ServiceView(Protocol):
    name: bytes
    workers: int


def mmi_reply(
    service: bytes,
    body: Sequence[bytes],
    services: Mapping[bytes, _ServiceView],
    worker_lines: Iterable[bytes],
) -> tuple[bytes, ...]:
    """The reply body to an MMI request for ``service`` (raises nothing).

    ``worker_lines`` yields one ``b"<service> <state>"`` line per live
    worker; it is only consumed for ``mmi.workers``.
    """
    if service == b"mmi.service":
        record = services.get(body[0])
        return (b"200" if record is not None and record.workers > 0 else b"404",)
    if service == b"mmi.services":
        names = sorted(s.name for s in services.values() if s.workers > 0)
        return tuple(names) or (b"",)
    if service == b"mmi.workers":
        lines = sorted(worker_lines)
        return tuple(lines) or (b"",)
    return (b"501",)
