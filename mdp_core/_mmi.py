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
``mmi.stats``
    first a frame of totals, ``b"requests=R workers=W services=S
    queued_bytes=B"`` (requests accepted since the start, live workers,
    services, what the held requests count against ``max_queued_bytes``),
    then one frame per service, sorted, ``b"<service> idle=I busy=B
    queued=Q in_flight=F"`` (see :class:`~mdp_core.ServiceStats`).
    :func:`parse_mmi_stats` reads it.
``mmi.allowed`` (ours, not in RFC 8)
    body frame 0 is a service name; ``200`` if the asking client may call
    it (``BrokerConfig.policy``; always without a policy), else ``403``.
anything else in ``mmi.``
    ``501``.

With a policy, every answer is about the services the asking client may
call: the others are absent from ``mmi.services``, ``mmi.workers`` and the
service lines of ``mmi.stats`` (its totals stay the broker's), and
``mmi.service`` answers ``404`` for them (a client does not learn of
services it may not call; ``mmi.allowed`` tells it that it may not).

The three lists are cut to ``BrokerConfig.max_mmi_reply_bytes``: entries are
kept in sorted order while their total size stays within it, each entry
counting its length plus 64 bytes (what a frame costs beside its bytes, so
that many tiny entries are bounded too); the first entry is always kept.
A cut list is marked by one empty frame after the last entry kept. No
entry is ever empty, so the marker cannot be mistaken for one, and a cut
list (at least one entry, then the marker) cannot be mistaken for the
empty list (the empty frame alone). ``mmi.stats`` counts its totals frame
first, keeps it always, and has no empty-list frame (no service: the
totals alone).

``mmi.services``, ``mmi.workers`` and ``mmi.stats`` cost O(services) and
O(workers): they are management queries, not the data path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol

from ._broker_parts import _FRAME_OVERHEAD
from ._stats import BrokerStats, ServiceStats

__all__ = ["MMI_PREFIX", "mmi_reply", "parse_mmi_stats"]

MMI_PREFIX = b"mmi."


class _ServiceView(Protocol):
    name: bytes
    workers: int


def mmi_reply(
    service: bytes,
    body: Sequence[bytes],
    services: Mapping[bytes, _ServiceView],
    worker_lines: Iterable[bytes],
    stats: Callable[[], BrokerStats],
    limit: int,
    visible: Callable[[bytes], bool] | None = None,
) -> tuple[bytes, ...]:
    """The reply body to an MMI request for ``service`` (raises nothing).

    ``worker_lines`` yields one ``b"<service> <state>"`` line per live
    worker the client may see; it is only consumed for ``mmi.workers``, and
    ``stats`` only called for ``mmi.stats``. ``limit`` is the size the lists
    are cut to (see the module docstring). ``visible(name)`` says whether
    the asking client may call service ``name`` (None: every service).
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
    if service == b"mmi.stats":
        return _stats_reply(stats(), limit, visible)
    if service == b"mmi.allowed":
        return (b"200" if visible is None or visible(body[0]) else b"403",)
    return (b"501",)


def _stats_reply(
    st: BrokerStats, limit: int, visible: Callable[[bytes], bool] | None,
) -> tuple[bytes, ...]:
    totals = b"requests=%d workers=%d services=%d queued_bytes=%d" % (
        st.requests, st.workers, st.service_count, st.queued_bytes)
    lines = [b"%s idle=%d busy=%d queued=%d in_flight=%d" % (
        s.name, s.idle, s.busy, s.queued, s.in_flight) for s in st.services
        if visible is None or visible(s.name)]
    if not lines:
        return (totals,)
    return (totals, *_fit(lines, limit - len(totals) - _FRAME_OVERHEAD))


def _counts(fields: Sequence[bytes], keys: Sequence[bytes]) -> list[int]:
    """The values of ``key=N`` fields, in ``keys`` order; ValueError if not so."""
    if len(fields) != len(keys):
        raise ValueError("wrong number of fields")
    values = []
    for field, key in zip(fields, keys, strict=True):
        name, eq, value = field.partition(b"=")
        if name != key or not eq or not value.isdigit():
            raise ValueError(f"expected {key.decode()}=N, got {field!r}")
        values.append(int(value))
    return values


_TOTALS = (b"requests", b"workers", b"services", b"queued_bytes")
_SERVICE = (b"idle", b"busy", b"queued", b"in_flight")


def parse_mmi_stats(body: Sequence[bytes]) -> BrokerStats:
    """Read the body of an ``mmi.stats`` reply (format: :mod:`mdp_core._mmi`).

    A reply cut to ``max_mmi_reply_bytes`` gives fewer ``services`` than
    ``service_count``. Raises :class:`ValueError` if ``body`` is not such a
    reply (e.g. ``[b"501"]`` from a broker without ``mmi.stats``).
    """
    if not body:
        raise ValueError("not an mmi.stats answer: empty")
    try:
        requests, workers, count, held = _counts(body[0].split(b" "), _TOTALS)
        services = []
        for line in body[1:]:
            if not line:  # the cut marker
                break
            name, *fields = line.rsplit(b" ", len(_SERVICE))
            if not name:
                raise ValueError("no service name")
            services.append(ServiceStats(name, *_counts(fields, _SERVICE)))
    except ValueError as exc:
        raise ValueError(f"not an mmi.stats answer ({exc}): {list(body)!r}"[:300]) from None
    return BrokerStats(requests, workers, held, count, tuple(services))


def _fit(entries: list[bytes], limit: int) -> tuple[bytes, ...]:
    """``entries`` (sorted) as a reply body, cut to ``limit`` and marked if cut."""
    total = 0
    for i, entry in enumerate(entries):
        total += len(entry) + _FRAME_OVERHEAD
        if total > limit and i > 0:
            return (*entries[:i], b"")
    return tuple(entries) or (b"",)
