"""Two workers: one reply per request, and MDP/0.2 streaming with PARTIALs."""

import os
import time

from mdp_zmq import Worker, WorkerConfig

ENDPOINT = os.environ.get("MDP_ENDPOINT", "tcp://127.0.0.1:5555")


def upper(frames: list[bytes]) -> list[bytes]:
    """One request in, one reply out: bytes or a list of frames."""
    return [frame.upper() for frame in frames]


def progress(frames: list[bytes]):
    """Each yield is sent as a PARTIAL, the return value as the FINAL."""
    for pct in (25, 50, 75):
        time.sleep(0.1)  # real work; the broker still sees this worker alive
        yield b"%d%%" % pct
    return b"done: " + frames[0]


# Both reconnect on their own (after reconnect_delay) if the broker restarts.
Worker(ENDPOINT, "progress", progress).start()  # in a thread
Worker(ENDPOINT, "upper", upper, WorkerConfig(reconnect_delay=0.5)).run()
