"""``mdp_async.Broker`` in its own process (trio or asyncio), printing selected events.

The async twin of ``broker_proc.py``: each event named on the command
line is printed as ``event <Name> <monotonic>`` (CLOCK_MONOTONIC, shared
by all processes on Linux). Prints ``listening <endpoint>`` once bound.
Serves under ``anyio.run(..., backend=...)``, as the ``mdp`` command does
for ``--driver trio``/``asyncio``; stops cleanly on SIGTERM/SIGINT.

``--curve-secret FILE --allow DIR`` turns CURVE on (``bench/e2e.py --curve``).

Run: ``python bench/async_broker_proc.py tcp://127.0.0.1:* --backend trio RequestRequeued``.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time

import anyio
import mdp_async

from mdp_core import Event


def main(argv: list[str]) -> None:
    """Serve the endpoint; report the events named on the command line."""
    p = argparse.ArgumentParser(description="mdp_async broker for the benchmarks")
    p.add_argument("endpoint")
    p.add_argument("events", nargs="*")
    p.add_argument("--backend", choices=["trio", "asyncio"], default="trio")
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

    transport = mdp_async.TransportConfig()
    if a.curve_secret:
        from mdp_zmq.glue import Security

        transport = mdp_async.TransportConfig(
            security=Security.for_broker(a.curve_secret, a.allow))
    broker = mdp_async.Broker(a.endpoint, on_event=on_event, transport=transport)
    print("listening " + broker.endpoint, flush=True)
    anyio.run(serve_until_signal, broker, backend=a.backend)


async def serve_until_signal(broker: mdp_async.Broker) -> None:
    """Serve until SIGTERM or SIGINT, then shut down cleanly."""
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with broker:
            async for _ in signals:
                return


if __name__ == "__main__":
    main(sys.argv[1:])
