"""``mdp_gevent.Broker`` in its own process, printing selected events.

The gevent twin of ``broker_proc.py``: each event named on the command
line is printed as ``event <Name> <monotonic>`` (CLOCK_MONOTONIC, shared
by all processes on Linux). Prints ``listening <endpoint>`` once bound.
Serves in the main greenlet until SIGTERM/SIGINT (``gevent.signal_handler``
calls ``broker.close``), as the ``mdp`` command does for ``--driver gevent``.

``--curve-secret FILE --allow DIR`` turns CURVE on (``bench/e2e.py --curve``).

Run: ``python bench/gevent_broker_proc.py tcp://127.0.0.1:* RequestRequeued``.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time

import gevent
import mdp_gevent

from mdp_core import Event


def main(argv: list[str]) -> None:
    """Serve the endpoint; report the events named on the command line."""
    p = argparse.ArgumentParser(description="mdp_gevent broker for the benchmarks")
    p.add_argument("endpoint")
    p.add_argument("events", nargs="*")
    p.add_argument("--curve-secret", help="CURVE: the broker's secret key file")
    p.add_argument("--allow", help="CURVE: the directory of allowed public keys")
    a = p.parse_args(argv)
    wanted = set(a.events)
    out = sys.stdout

    def on_event(event: Event) -> None:
        name = type(event).__name__
        if name in wanted:
            out.write(f"event {name} {time.monotonic():.9f}\n")
            out.flush()

    transport = mdp_gevent.TransportConfig()
    if a.curve_secret:
        from mdp_zmq.glue import Security

        transport = mdp_gevent.TransportConfig(
            security=Security.for_broker(a.curve_secret, a.allow))
    broker = mdp_gevent.Broker(a.endpoint, on_event=on_event, transport=transport)
    print("listening " + broker.endpoint, flush=True)
    for sig in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(sig, broker.close)
    broker.serve()


if __name__ == "__main__":
    main(sys.argv[1:])
