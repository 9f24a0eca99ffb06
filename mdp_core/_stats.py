"""What a Broker holds at one moment: ``Broker.stats()`` and ``mmi.stats``.

A snapshot is built on request from the broker's own records, in
O(services + workers): a management query, never on the data path. The
counts that only grow (requests accepted) are kept by the broker as it
goes at no extra cost (the counter also numbers the requests).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ._state import RequestState

if TYPE_CHECKING:
    from ._broker import Broker

__all__ = ["BrokerStats", "ServiceStats", "broker_stats"]


@dataclass(frozen=True, slots=True)
class ServiceStats:
    """One service at the broker.

    ``idle`` and ``busy``: its live workers waiting for a request and
    serving one; ``queued``: requests waiting for a worker; ``in_flight``:
    requests accepted and not ended yet (``queued`` plus those dispatched).
    A busy worker may serve a request that has ended already (its client
    went away), so ``busy`` can exceed ``in_flight - queued``.
    """

    name: bytes
    idle: int
    busy: int
    queued: int
    in_flight: int


@dataclass(frozen=True, slots=True)
class BrokerStats:
    """A broker's state at one moment.

    ``requests``: requests accepted since the broker started (``mmi.*`` and
    refused ones are not); ``workers``: live workers; ``queued_bytes``: what
    the requests held count against ``BrokerConfig.max_queued_bytes``;
    ``service_count``: services that exist (a worker registered or a
    request waits); ``services``: one :class:`ServiceStats` each, sorted by
    name. An ``mmi.stats`` reply cut to ``max_mmi_reply_bytes`` lists fewer
    services than ``service_count``.
    """

    requests: int
    workers: int
    queued_bytes: int
    service_count: int
    services: tuple[ServiceStats, ...]


def broker_stats(b: Broker) -> BrokerStats:
    """``Broker.stats()`` (see there)."""
    dispatched: dict[bytes, int] = {}
    for w in b._workers.values():
        req = w.request
        if req is not None and req.state is RequestState.DISPATCHED:
            name = w.service.name
            dispatched[name] = dispatched.get(name, 0) + 1
    services = tuple(
        ServiceStats(name, len(svc.idle), svc.workers - len(svc.idle), svc.queued,
                     svc.queued + dispatched.get(name, 0))
        for name, svc in sorted(b._services.items())
    )
    return BrokerStats(b._accepted, len(b._workers), b._held, len(services), services)
