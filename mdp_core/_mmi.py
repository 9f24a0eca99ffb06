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
``mmi.allowed`` (ours, not in RFC 8)
    body frame 0 is a service name; ``200`` if the asking client may call
    it (``BrokerConfig.policy``; always without a policy), else ``403``.
anything else in ``mmi.``
    ``501``.

With a policy, every answer is about the services the asking client may
call: the others are absent from ``mmi.services`` and ``mmi.workers``, and
``mmi.service`` answers ``404`` for them (a client does not learn of
services it may not call; ``mmi.allowed`` tells it that it may not).

The two lists are cut to ``BrokerConfig.max_mmi_reply_bytes``: entries are
kept in sorted order while their total size stays within it, each entry
counting its length plus 64 bytes (what a frame costs beside its bytes, so
that many tiny entries are bounded too); the first entry is always kept.
A cut list is marked by one empty frame after the last entry kept. No
entry is ever empty, so the marker cannot be mistaken for one, and a cut
list (at least one entry, then the marker) cannot be mistaken for the
empty list (the empty frame alone).

``mmi.services`` and ``mmi.workers`` cost O(services) and O(workers):
they are management queries, not the data path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol

from ._broker_parts import _FRAME_OVERHEAD

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
    limit: int,
    visible: Callable[[bytes], bool] | None = None,
) -> tuple[bytes, ...]:
    """The reply body to an MMI request for ``service`` (raises nothing).

    ``worker_lines`` yields one ``b"<service> <state>"`` line per live
    worker the client may see; it is only consumed for ``mmi.workers``.
    ``limit`` is the size the two lists are cut to (see the module
    docstring). ``visible(name)`` says whether the asking client may call
    service ``name`` (None: every service).
    """
    if service == b"mmi.service":
        record = services.get(body[0])
        found = record is not None and record.workers > 0
        return (b"200" if found and (visible is None or visible(body[0])) else b"404",)
    if service == b"mmi.services":
        return _fit(sorted(s.name for s in services.values()
                           if s.workers > 0 and (visible is None or visible(s.name))), limit)
    if service == b"mmi.workers":
        return _fit(sorted(worker_lines), limit)
    if service == b"mmi.allowed":
        return (b"200" if visible is None or visible(body[0]) else b"403",)
    return (b"501",)


def _fit(entries: list[bytes], limit: int) -> tuple[bytes, ...]:
    """``entries`` (sorted) as a reply body, cut to ``limit`` and marked if cut."""
    total = 0
    for i, entry in enumerate(entries):
        total += len(entry) + _FRAME_OVERHEAD
        if total > limit and i > 0:
            return (*entries[:i], b"")
    return tuple(entries) or (b"",)
