"""Metrics from the machines' events: an I/O-free collector for dashboards.

Theory of operation
-------------------
:class:`BrokerMetrics` counts what a Broker's events say, in the order
``Broker.events()`` returned them (:meth:`BrokerMetrics.observe`), and
reads what the broker holds on demand (:meth:`BrokerMetrics.snapshot`
calls ``Broker.stats()``). Nothing here reads a clock: the times come
from the core, which measured them with the ``now`` it was given
(``TimedRequestDelivered`` from a ``Broker(timed=True)``,
``RequestRedispatched``). The data path pays one dict lookup and a few
additions per event, and nothing at all per message in the core.

Label values are service names, which come from peers, so their number
is bounded: the first ``max_services`` names seen (in an event or a
snapshot) keep their own label for good; later ones, and any name longer
than 255 bytes, share the label ``other``. A name's label never changes,
so every counter only grows.

``received`` is derived, not counted: every request that arrives ends
with exactly one outcome event, or is still held by the broker
(``ServiceStats.in_flight``), so received = outcomes + in flight, exact
at every snapshot.

:class:`WorkerMetrics` times a worker's handler (``started``/``finished``
with the driver's ``now``) and counts its lost broker connections.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import TYPE_CHECKING, cast

from ._events import (
    BrokerLost,
    Event,
    ProtocolError,
    RequestAbandoned,
    RequestDelivered,
    RequestExpired,
    RequestReceived,
    RequestRedispatched,
    RequestRefused,
    RequestUndelivered,
    TimedRequestDelivered,
    WorkerLost,
    WorkerReady,
)

if TYPE_CHECKING:
    from ._broker import Broker

__all__ = [
    "DEFAULT_BUCKETS",
    "LOSS_REASONS",
    "OTHER",
    "OUTCOMES",
    "BrokerMetrics",
    "HistogramSnapshot",
    "MetricsSnapshot",
    "WorkerMetrics",
    "WorkerMetricsSnapshot",
    "loss_reason",
]

DEFAULT_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    30.0, 60.0, 300.0)
"""Upper bounds (seconds) of the histogram buckets unless told otherwise."""
OUTCOMES = ("delivered", "undelivered", "expired", "refused", "abandoned")
"""How a request ended, the ``outcome`` label: one per ending event."""
LOSS_REASONS = ("connection_lost", "heartbeat_expired", "disconnect", "processing_timeout",
                "protocol_violation", "send_failed", "broker_closed", "other")
"""Why a worker was lost, the ``reason`` label (see :func:`loss_reason`)."""
OTHER = "other"
"""The label value the services past ``max_services`` share."""

_LONGEST_NAME = 255  # a longer name is no real service (BrokerConfig.max_service_name)
_PREFIXES = (  # how the core's WorkerLost reasons start
    ("connection lost", "connection_lost"),
    ("heartbeat expired", "heartbeat_expired"),
    ("worker sent DISCONNECT", "disconnect"),
    ("processing timeout", "processing_timeout"),
    ("protocol violation", "protocol_violation"),
    ("send failed", "send_failed"),
    ("broker closed", "broker_closed"),
)
_WORKER_OUTCOMES = ("replied", "failed")


def loss_reason(reason: str) -> str:
    """The :data:`LOSS_REASONS` label of a ``WorkerLost.reason``; raises nothing."""
    for prefix, label in _PREFIXES:
        if reason.startswith(prefix):
            return label
    return "other"


def _check_buckets(buckets: Sequence[float]) -> tuple[float, ...]:
    bounds = tuple(float(b) for b in buckets)
    if not bounds or any(not math.isfinite(b) for b in bounds) or any(
            a >= b for a, b in pairwise(bounds)):
        raise ValueError("buckets must be finite and strictly increasing, at least one")
    return bounds


@dataclass(frozen=True, slots=True)
class HistogramSnapshot:
    """A histogram's values: ``buckets[i]`` observations were <= ``bounds[i]``
    (cumulative, as Prometheus has them); ``count`` and ``sum`` of all."""

    bounds: tuple[float, ...]
    buckets: tuple[int, ...]
    count: int
    sum: float


class _Histogram:
    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one: above every bound
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def snapshot(self) -> HistogramSnapshot:
        cumulative, running = [], 0
        for n in self.counts[:-1]:
            running += n
            cumulative.append(running)
        return HistogramSnapshot(self.bounds, tuple(cumulative), running + self.counts[-1],
                                 self.total)


class _Label:
    """The counters and histograms of one label value."""

    __slots__ = ("duration", "lost", "outcomes", "processing", "recovery", "redispatched",
                 "registered", "wait")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.outcomes = dict.fromkeys(OUTCOMES, 0)
        self.lost: dict[str, int] = {}
        self.registered = self.redispatched = 0
        self.wait = _Histogram(bounds)
        self.processing = _Histogram(bounds)
        self.duration = _Histogram(bounds)
        self.recovery = _Histogram(bounds)


@dataclass(frozen=True, slots=True)
class MetricsSnapshot:
    """Every broker metric at one moment, keyed by label values.

    Counters (since the collector started): ``requests`` by (service,
    outcome), every outcome present; ``received``, ``redispatched``,
    ``workers_registered`` by service; ``workers_lost`` by (service,
    reason), the reasons seen; ``protocol_errors``. Gauges (now):
    ``workers`` by (service, ``idle``/``busy``), ``queue_depth`` by
    service, ``queued_bytes``. Histograms by service, in seconds:
    ``request_wait`` (arrival to the dispatch that answered),
    ``worker_processing`` (that dispatch to the FINAL),
    ``request_duration`` (arrival to delivery), ``recovery`` (a worker's
    loss to the re-dispatch of its request).
    """

    requests: Mapping[tuple[str, str], int]
    received: Mapping[str, int]
    redispatched: Mapping[str, int]
    workers_registered: Mapping[str, int]
    workers_lost: Mapping[tuple[str, str], int]
    protocol_errors: int
    workers: Mapping[tuple[str, str], int]
    queue_depth: Mapping[str, int]
    queued_bytes: int
    request_wait: Mapping[str, HistogramSnapshot]
    worker_processing: Mapping[str, HistogramSnapshot]
    request_duration: Mapping[str, HistogramSnapshot]
    recovery: Mapping[str, HistogramSnapshot]


class BrokerMetrics:
    """Counts a :class:`~mdp_core.Broker`'s events for metrics (see the module).

    ``max_services``: label values kept before names fold into
    :data:`OTHER`; ``buckets``: histogram upper bounds in seconds. The
    histograms of request times fill only from a ``Broker(timed=True)``.
    Not thread-safe: call it where the broker runs. Raises
    :class:`ValueError` if ``max_services`` < 0 or the buckets are not
    finite and strictly increasing.
    """

    def __init__(self, max_services: int = 100,
                 buckets: Sequence[float] = DEFAULT_BUCKETS) -> None:
        if max_services < 0:
            raise ValueError("max_services must be >= 0")
        self.max_services = max_services
        self.buckets = _check_buckets(buckets)
        self._names: dict[bytes, _Label] = {}  # at most max_services
        self._labels: dict[str, _Label] = {}  # label text -> record, other included
        self._other: _Label | None = None
        self.protocol_errors = 0
        self._on: dict[type[Event], Callable[[_Label, Event], None]] = {
            TimedRequestDelivered: self._timed,
            RequestDelivered: _outcome("delivered"),
            RequestUndelivered: _outcome("undelivered"),
            RequestExpired: _outcome("expired"),
            RequestRefused: _outcome("refused"),
            RequestAbandoned: _outcome("abandoned"),
            RequestRedispatched: _redispatched,
            WorkerReady: _registered,
            WorkerLost: _lost,
        }

    def label(self, service: bytes) -> str:
        """The label value of ``service`` (taking a new one if there is room)."""
        return self._record(service)[0]

    def _record(self, service: bytes) -> tuple[str, _Label]:
        rec = self._names.get(service)
        if rec is not None:
            return service.decode(errors="backslashreplace"), rec
        if len(self._names) < self.max_services and len(service) <= _LONGEST_NAME:
            text = service.decode(errors="backslashreplace")
            rec = self._labels.get(text)  # two names may decode alike: one label
            if rec is None:
                rec = self._labels[text] = _Label(self.buckets)
            self._names[service] = rec
            return text, rec
        if self._other is None:
            self._other = self._labels.setdefault(OTHER, _Label(self.buckets))
        return OTHER, self._other

    def observe(self, events: Iterable[Event]) -> None:
        """Count ``events`` (what ``Broker.events()`` returned, in order);
        other machines' events are ignored. Raises nothing."""
        on, names = self._on, self._names
        for event in events:
            handler = on.get(type(event))
            if handler is not None:
                service: bytes = event.service  # type: ignore[attr-defined]
                rec = names.get(service)
                handler(rec if rec is not None else self._record(service)[1], event)
            elif type(event) is ProtocolError:
                self.protocol_errors += 1

    @staticmethod
    def _timed(rec: _Label, event: Event) -> None:
        ev = cast(TimedRequestDelivered, event)
        rec.outcomes["delivered"] += 1
        rec.wait.observe(ev.waited)
        rec.processing.observe(ev.processing)
        rec.duration.observe(ev.waited + ev.processing)

    def snapshot(self, broker: Broker) -> MetricsSnapshot:
        """Every metric now: the counters so far and ``broker``'s state.

        Call it after every event the broker returned so far was observed,
        so that ``received`` is exact. O(services + workers). Raises nothing.
        """
        stats = broker.stats()
        workers: dict[tuple[str, str], int] = {}
        depth: dict[str, int] = {}
        in_flight: dict[str, int] = {}
        for s in stats.services:
            text = self.label(s.name)
            for key, n in (((text, "idle"), s.idle), ((text, "busy"), s.busy)):
                workers[key] = workers.get(key, 0) + n
            depth[text] = depth.get(text, 0) + s.queued
            in_flight[text] = in_flight.get(text, 0) + s.in_flight
        labels = sorted(self._labels.items())
        return MetricsSnapshot(
            requests={(t, o): n for t, r in labels for o, n in r.outcomes.items()},
            received={t: sum(r.outcomes.values()) + in_flight.get(t, 0) for t, r in labels},
            redispatched={t: r.redispatched for t, r in labels},
            workers_registered={t: r.registered for t, r in labels},
            workers_lost={(t, why): n for t, r in labels for why, n in sorted(r.lost.items())},
            protocol_errors=self.protocol_errors,
            workers=workers,
            queue_depth=depth,
            queued_bytes=stats.queued_bytes,
            request_wait={t: r.wait.snapshot() for t, r in labels},
            worker_processing={t: r.processing.snapshot() for t, r in labels},
            request_duration={t: r.duration.snapshot() for t, r in labels},
            recovery={t: r.recovery.snapshot() for t, r in labels},
        )


def _outcome(outcome: str) -> Callable[[_Label, Event], None]:
    def count(rec: _Label, event: Event) -> None:
        rec.outcomes[outcome] += 1

    return count


def _redispatched(rec: _Label, event: Event) -> None:
    rec.redispatched += 1
    rec.recovery.observe(cast(RequestRedispatched, event).recovery)


def _registered(rec: _Label, event: Event) -> None:
    rec.registered += 1


def _lost(rec: _Label, event: Event) -> None:
    why = loss_reason(cast(WorkerLost, event).reason)
    rec.lost[why] = rec.lost.get(why, 0) + 1


# ------------------------------------------------------------------ worker


@dataclass(frozen=True, slots=True)
class WorkerMetricsSnapshot:
    """A worker's metrics: ``handled`` by outcome (``replied``, ``failed``),
    ``handler`` seconds per request, ``broker_lost`` conversations ended,
    ``in_progress`` requests being handled now."""

    service: str
    handled: Mapping[str, int]
    handler: HistogramSnapshot
    broker_lost: int
    in_progress: int


class WorkerMetrics:
    """Times a worker's handler and counts its lost broker conversations.

    The driver calls :meth:`started` when it hands a request to the
    handler and :meth:`finished` when the reply is sent or the request
    abandoned, with its clock's ``now``; :meth:`observe` counts
    ``BrokerLost`` events. ``service`` is the worker's service (its label
    value). Feed it from one thread; :meth:`snapshot` may run in another
    (it copies a few fixed-size records, so at worst it misses the update
    in progress). Raises :class:`ValueError` for bad buckets.
    """

    def __init__(self, service: bytes, buckets: Sequence[float] = DEFAULT_BUCKETS) -> None:
        self.service = service.decode(errors="backslashreplace")
        self._handler = _Histogram(_check_buckets(buckets))
        self._handled = dict.fromkeys(_WORKER_OUTCOMES, 0)
        # id of a request being handled -> when its handler started. Not its
        # handle: each conversation (a worker may hold several) counts its own.
        self._started: dict[int, float] = {}
        self.broker_lost = 0

    def observe(self, events: Iterable[Event]) -> None:
        """Count the worker core's events (``BrokerLost``). Raises nothing."""
        for event in events:
            if type(event) is BrokerLost:
                self.broker_lost += 1

    def started(self, request: RequestReceived, now: float) -> None:
        """The handler starts on ``request`` at ``now``. Raises nothing."""
        self._started[id(request)] = now

    def finished(self, request: RequestReceived, replied: bool, now: float) -> None:
        """The handler is done with ``request`` at ``now``: replied, or failed
        (abandoned). A request not :meth:`started` is ignored. Raises nothing."""
        start = self._started.pop(id(request), None)
        if start is not None:
            self._handled[_WORKER_OUTCOMES[0] if replied else _WORKER_OUTCOMES[1]] += 1
            self._handler.observe(now - start)

    def snapshot(self) -> WorkerMetricsSnapshot:
        """The metrics now. Raises nothing."""
        return WorkerMetricsSnapshot(self.service, dict(self._handled),
                                     self._handler.snapshot(), self.broker_lost,
                                     len(self._started))
