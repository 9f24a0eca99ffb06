"""Prometheus exposition of the core's metrics (``mdp broker --metrics HOST:PORT``).

Needs the ``metrics`` extra (``pip install 'mdp-core[metrics]'``, i.e.
``prometheus-client``); ``import mdp_zmq`` does not import this module.

A custom collector reads a snapshot of :class:`mdp_core.BrokerMetrics`
(or :class:`mdp_core.WorkerMetrics`) on every scrape and turns it into
metric families; nothing is counted twice and nothing runs between
scrapes. :func:`serve` exposes a collector on ``/metrics`` with
prometheus-client's own HTTP server, in daemon threads. The metrics and
their labels are listed in ``docs/operations.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from threading import Thread
from wsgiref.simple_server import WSGIServer

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import start_http_server
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

from mdp_core import HistogramSnapshot, MetricsSnapshot, WorkerMetricsSnapshot

from .glue import parse_host_port

__all__ = ["BrokerCollector", "MetricsServer", "WorkerCollector", "broker_families", "serve",
           "worker_families"]

_HISTOGRAMS = (
    ("request_wait", "mdp_request_wait_seconds",
     "Seconds from a request's arrival at the broker to the dispatch whose worker answered."),
    ("worker_processing", "mdp_worker_processing_seconds",
     "Seconds from a request's dispatch to its worker's FINAL."),
    ("request_duration", "mdp_request_duration_seconds",
     "Seconds from a request's arrival at the broker to the delivery of its reply."),
    ("recovery", "mdp_recovery_seconds",
     "Seconds from a busy worker's loss to the re-dispatch of its request."),
)


def _histogram(family: HistogramMetricFamily, labels: list[str], h: HistogramSnapshot) -> None:
    buckets = [(floatToGoString(b), n) for b, n in zip(h.bounds, h.buckets, strict=True)]
    family.add_metric(labels, [*buckets, ("+Inf", h.count)], h.sum)


def _counter(name: str, doc: str, labels: list[str], values: Mapping[object, int]
             ) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=labels)
    for key, n in values.items():
        family.add_metric(list(key) if isinstance(key, tuple) else [str(key)], n)
    return family


def _gauge(name: str, doc: str, labels: list[str], values: Mapping[object, int]
           ) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=labels)
    for key, n in values.items():
        family.add_metric(list(key) if isinstance(key, tuple) else [str(key)], n)
    return family


def broker_families(snap: MetricsSnapshot) -> Iterator[Metric]:
    """The metric families of a broker's snapshot."""
    yield _counter("mdp_requests", "Requests ended, by outcome.",
                   ["service", "outcome"], snap.requests)
    yield _counter("mdp_requests_received", "Requests that arrived (ended or in flight).",
                   ["service"], snap.received)
    yield _counter("mdp_requests_redispatched",
                   "Requests given to another worker after theirs was lost.",
                   ["service"], snap.redispatched)
    yield _counter("mdp_workers_registered", "Worker sessions opened (READY).",
                   ["service"], snap.workers_registered)
    yield _counter("mdp_workers_lost", "Worker sessions ended, by reason.",
                   ["service", "reason"], snap.workers_lost)
    yield CounterMetricFamily("mdp_protocol_errors",
                              "Malformed or unexpected messages dropped.",
                              value=snap.protocol_errors)
    yield _gauge("mdp_workers", "Live workers, idle or busy.", ["service", "state"],
                 snap.workers)
    yield _gauge("mdp_queue_depth", "Requests waiting for a worker.", ["service"],
                 snap.queue_depth)
    yield GaugeMetricFamily("mdp_queued_bytes",
                            "What the requests held count against max_queued_bytes.",
                            value=snap.queued_bytes)
    for attr, name, doc in _HISTOGRAMS:
        family = HistogramMetricFamily(name, doc, labels=["service"])
        for service, h in getattr(snap, attr).items():
            _histogram(family, [service], h)
        yield family


def worker_families(snap: WorkerMetricsSnapshot) -> Iterator[Metric]:
    """The metric families of a worker's snapshot."""
    label = [snap.service]
    yield _counter("mdp_handler_requests", "Requests handled, by outcome (replied, failed).",
                   ["service", "outcome"],
                   {(snap.service, outcome): n for outcome, n in snap.handled.items()})
    family = HistogramMetricFamily("mdp_handler_seconds",
                                   "Seconds from a handler's start to its reply sent.",
                                   labels=["service"])
    _histogram(family, label, snap.handler)
    yield family
    gauge = GaugeMetricFamily("mdp_handler_in_progress", "Requests being handled.",
                              labels=["service"])
    gauge.add_metric(label, snap.in_progress)
    yield gauge
    counter = CounterMetricFamily("mdp_broker_connections_lost",
                                  "Conversations with the broker that ended.",
                                  labels=["service"])
    counter.add_metric(label, snap.broker_lost)
    yield counter


class BrokerCollector(Collector):
    """A prometheus-client collector of a broker's metrics.

    ``snapshot`` is called on every scrape, in the scraping thread: pass
    :meth:`mdp_zmq.Broker.metrics_snapshot`, which is thread-safe.
    """

    def __init__(self, snapshot: Callable[[], MetricsSnapshot]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        """The metric families now (what prometheus-client calls on a scrape)."""
        return broker_families(self._snapshot())


class WorkerCollector(Collector):
    """A prometheus-client collector of a worker's metrics (``snapshot``:
    :meth:`mdp_core.WorkerMetrics.snapshot`)."""

    def __init__(self, snapshot: Callable[[], WorkerMetricsSnapshot]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        """The metric families now (what prometheus-client calls on a scrape)."""
        return worker_families(self._snapshot())


@dataclass
class MetricsServer:
    """The HTTP server :func:`serve` started; ``url`` is its ``/metrics``."""

    server: WSGIServer
    thread: Thread

    @property
    def url(self) -> str:
        """``http://HOST:PORT/metrics``, with the port actually bound."""
        host, port = self.server.server_address[:2]
        shown = f"[{host}]" if ":" in str(host) else host
        return f"http://{shown}:{port}/metrics"

    def close(self) -> None:
        """Stop serving and release the port (waits up to 5 s for the thread)."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def serve(collector: Collector, address: str) -> MetricsServer:
    """Serve ``collector`` on ``http://address/metrics`` (``HOST:PORT``) in
    daemon threads, with a registry of its own.

    Raises ValueError for a bad address, OSError if it cannot be bound.
    """
    host, port = parse_host_port(address)
    registry = CollectorRegistry()
    registry.register(collector)
    server, thread = start_http_server(port, host, registry)
    return MetricsServer(server, thread)
