"""The operator's side of the ``mdp`` command: ``mdp status`` and ``--metrics``.

``mdp status`` asks each broker ``mmi.stats`` (the core formats and parses
it) and prints a summary line and a table of services per broker; with
``--watch`` it refreshes, redrawing in place on a terminal and printing
one block after another otherwise. ``--metrics`` serves Prometheus
metrics with :mod:`mdp_zmq.metrics`, imported only then (it needs the
``metrics`` extra).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, TextIO

import mdp_core

from ._client import Client, RequestTimeout
from .glue import shorten

__all__ = ["metrics_module", "run_status", "status_lines"]

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")
_CLEAR = "\x1b[H\x1b[2J"  # cursor home, clear the screen: redraw in place


class MetricsUnavailable(Exception):
    """``--metrics`` was asked for but prometheus-client is not installed."""


def metrics_module() -> Any:
    """:mod:`mdp_zmq.metrics`; raises :class:`MetricsUnavailable` (naming the
    extra to install) if prometheus-client cannot be imported."""
    try:
        from . import metrics
    except ImportError as exc:
        raise MetricsUnavailable(f"--metrics needs prometheus-client ({exc}): "
                                 "pip install 'mdp-core[metrics]'") from None
    return metrics


def _size(n: int) -> str:
    """A byte count for people: ``512 B``, ``2.9 KiB``, ``1.2 MiB``..."""
    value, unit = float(n), 0
    while value >= 1024 and unit < len(_UNITS) - 1:
        value /= 1024
        unit += 1
    return f"{n} B" if unit == 0 else f"{value:.1f} {_UNITS[unit]}"


def status_lines(endpoint: str, stats: mdp_core.BrokerStats, rate: float | None) -> list[str]:
    """The ``mdp status`` text of one broker: a summary line (``rate``:
    requests accepted per second since the last look, if known), then a
    table of its services: idle and busy workers, queued and in-flight
    requests. Service names are shown as :func:`~mdp_zmq.glue.shorten` does."""
    services = stats.services
    idle, busy = sum(s.idle for s in services), sum(s.busy for s in services)
    queued = sum(s.queued for s in services)
    per_second = f" ({rate:.1f}/s)" if rate is not None else ""
    lines = [f"{endpoint}  workers {stats.workers} ({idle} idle, {busy} busy)  "
             f"queued {queued}  held {_size(stats.queued_bytes)}  "
             f"requests {stats.requests}{per_second}"]
    if not services:
        return [*lines, "  (no services)"]
    names = [shorten(s.name) for s in services]
    width = max(7, *map(len, names))
    lines.append(f"  {'SERVICE':<{width}}  {'IDLE':>5}  {'BUSY':>5}  {'QUEUED':>7}  "
                 f"{'IN FLIGHT':>9}")
    lines += [f"  {name:<{width}}  {s.idle:>5}  {s.busy:>5}  {s.queued:>7}  {s.in_flight:>9}"
              for name, s in zip(names, services, strict=True)]
    if stats.service_count > len(services):
        lines.append(f"  ... {stats.service_count - len(services)} more services (the reply "
                     "was cut to the broker's max_mmi_reply_bytes)")
    return lines


class _Rates:
    """Requests per second per broker, from two looks at its counter."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[float, int]] = {}

    def update(self, endpoint: str, requests: int, now: float) -> float | None:
        prev = self._last.get(endpoint)
        self._last[endpoint] = (now, requests)
        if prev is None or requests < prev[1] or now <= prev[0]:  # first look, or a restart
            return None
        return (requests - prev[1]) / (now - prev[0])


def run_status(clients: Sequence[Client], out: TextIO, *, watch: float | None = None,
               count: int = 0) -> int:
    """Print the status of the brokers ``clients`` talk to (one each).

    Once, or with ``watch`` every ``watch`` seconds, ``count`` times (0:
    until interrupted). Returns 1 if a broker did not answer the last time
    (no reply, or not an ``mmi.stats`` answer), else 0.
    """
    rates = _Rates()
    terminal = out.isatty()
    shown = 0
    while True:
        lines, failed = [], False
        if watch:
            lines.append(f"mdp status  {time.strftime('%H:%M:%S')}  every {watch:g} s")
        for client in clients:
            endpoint = client.endpoint
            try:
                stats = mdp_core.parse_mmi_stats(client.request("mmi.stats", b""))
            except (RequestTimeout, ValueError) as exc:
                lines.append(f"{endpoint}  no status: {shorten(str(exc))}")
                failed = True
                continue
            lines += status_lines(endpoint, stats,
                                  rates.update(endpoint, stats.requests, time.monotonic()))
        shown += 1
        if watch and terminal:
            out.write(_CLEAR)
        elif shown > 1:
            out.write("\n")
        out.write("\n".join(lines) + "\n")
        out.flush()
        if not watch or (count and shown >= count):
            return 1 if failed else 0
        time.sleep(watch)
