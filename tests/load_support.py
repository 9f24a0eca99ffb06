"""Many requests with a peer killed on the way: each must have exactly one outcome.

Shared by the behaviour suite (``tests/test_drivers.py``: a worker killed)
and ``tests/test_multi_broker.py`` (a broker killed).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import mdp_zmq


def requests_with_a_kill(
    clients: Sequence[Any], per_client: int, kill: Callable[[], None], *, kill_after: int = 300
) -> dict[bytes, list[object]]:
    """Each client sends ``per_client`` ``echo`` requests (bodies ``b"c-n"``), in
    a thread of its own; once ``kill_after`` have an outcome, ``kill()`` runs.

    Returns each body's outcomes: the reply, or the RequestTimeout it raised
    (an explicit failure is an outcome too). Fails if a thread waits more
    than 30 s for the next outcome or 120 s to end.
    """
    outcomes: dict[bytes, list[object]] = {}
    lock = threading.Lock()
    progress = threading.Semaphore(0)

    def run(c: int) -> None:
        for n in range(per_client):
            body = b"%d-%d" % (c, n)
            try:
                outcome: object = clients[c].request("echo", body)
            except mdp_zmq.RequestTimeout as exc:
                outcome = exc
            with lock:
                outcomes.setdefault(body, []).append(outcome)
            progress.release()

    threads = [threading.Thread(target=run, args=(c,), daemon=True)
               for c in range(len(clients))]
    for t in threads:
        t.start()
    for _ in range(kill_after):
        assert progress.acquire(timeout=30)
    kill()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads)
    return outcomes


def one_outcome_each(
    outcomes: dict[bytes, list[object]], n_clients: int, per_client: int
) -> list[mdp_zmq.RequestTimeout]:
    """Assert that every request sent has exactly one outcome, its own reply or a
    RequestTimeout; return the timeouts."""
    expected = {b"%d-%d" % (c, n) for c in range(n_clients) for n in range(per_client)}
    assert set(outcomes) == expected
    assert all(len(o) == 1 for o in outcomes.values())  # one outcome each, none twice
    answered = {body for body, (o,) in outcomes.items() if o == [body]}
    failed = [o for (o,) in outcomes.values() if isinstance(o, mdp_zmq.RequestTimeout)]
    assert len(answered) + len(failed) == len(expected)  # a reply is always its own
    return failed
