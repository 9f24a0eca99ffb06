"""``mdp_zmq.Broker`` in its own process, printing selected core events.

Each event named on the command line is printed as ``event <Name>
<monotonic>`` (CLOCK_MONOTONIC is shared by all processes on Linux, so
the bench can subtract its own timestamps). Prints ``listening <endpoint>``
once bound. Stops on SIGTERM/SIGINT.

Run: ``python bench/broker_proc.py tcp://127.0.0.1:* RequestRequeued WorkerLost``.
"""

from __future__ import annotations

import sys
import time

import mdp_zmq

from mdp_core import Event


def main(argv: list[str]) -> None:
    """Serve ``argv[0]``; report the events named in ``argv[1:]``."""
    wanted = set(argv[1:])
    out = sys.stdout

    def on_event(event: Event) -> None:
        name = type(event).__name__
        if name in wanted:
            out.write(f"event {name} {time.monotonic():.9f}\n")
            out.flush()

    broker = mdp_zmq.Broker(argv[0], on_event=on_event)
    print("listening " + broker.endpoint, flush=True)
    broker.run()


if __name__ == "__main__":
    main(sys.argv[1:])
