"""An ``mdp_async`` broker or echo worker in a process of its own, for the socket tests.

Stands in for ``mdp broker`` / ``mdp worker SERVICE --echo --announce``
with the async driver (until the ``mdp`` command's ``--driver`` flag) and
prints the same lines, so tests can treat both alike: ``mdp broker
listening on <endpoint>``; ``ready pid=<pid>`` before the worker connects
and ``started pid=<pid>`` when a job starts. SIGTERM or SIGINT stops it
cleanly (the broker DISCONNECTs its workers, the worker its broker).

Run: ``python tests/async_peer.py --backend trio broker --bind tcp://127.0.0.1:5555``
or ``python tests/async_peer.py --backend asyncio worker echo --connect ... --delay 30``
(``--heartbeat``, ``--zmtp-heartbeat``, ``--zmtp-timeout`` after the role, as for ``mdp``).
"""

from __future__ import annotations

import os
import signal
import sys

import anyio
import mdp_async
from peer_args import parser, served


def main(argv: list[str]) -> None:
    """Parse, build the broker or worker, serve until SIGTERM/SIGINT."""
    p = parser(__doc__)
    p.add_argument("--backend", choices=["trio", "asyncio"], default="trio")
    args = p.parse_args(argv)
    pid = os.getpid()

    async def echo(frames: list[bytes]) -> list[bytes]:
        print(f"started pid={pid}", flush=True)
        if args.delay:
            await anyio.sleep(args.delay)
        return frames

    anyio.run(serve_until_signal, served(mdp_async, args, echo), backend=args.backend)


async def serve_until_signal(served: mdp_async.Broker | mdp_async.Worker) -> None:
    """Serve until SIGTERM or SIGINT, then shut down cleanly."""
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with served:
            async for _ in signals:
                return


if __name__ == "__main__":
    main(sys.argv[1:])
