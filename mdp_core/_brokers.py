"""Several brokers: which one a client's next attempt goes to, and merged MMI answers.

Theory of operation
-------------------
Brokers share nothing: a client that knows several (the driver's list of
endpoints, named here by their index ``0 .. count - 1``) sends each
attempt of a request to one of them, and the broker that holds a request
is the only one that can answer it. :class:`Rotation` makes that choice
from what the client saw and ``now``, never at random:

* The client's *home* broker is ``spread % count``: the caller passes a
  different ``spread`` to each client (a pool index, a process id) so
  that clients are spread over the brokers. The first request goes there.
* An attempt that fails on a broker (no reply in time, the connection
  lost, the send refused) puts that broker in *cool-off* until ``now +
  cool_off``, and the next attempt goes to the next broker in list order
  that is not cooling off. If every broker is cooling off, the one whose
  cool-off ends first gets it (ties: the first in list order after the
  current one), so a client never stops trying.
* A reply from a broker ends its cool-off: it works.
* A new request goes to the home broker unless it is cooling off; then it
  stays where the last one went. So requests stay on one broker while it
  answers (its connection is reused), and once a failed home broker's
  cool-off is over the client goes back to it: the spread that a broker's
  restart upset comes back on its own (at the cost of one attempt per
  cool-off while the home broker stays down).
* With ``round_robin``, each request after the first goes instead to the
  next broker after the last one used that is not cooling off (the same
  rule as after a failure), spreading one client's requests over the live
  brokers; it costs a new connection per request.

With one broker every choice is broker 0.

:func:`mmi_merge` is the rule for MMI answers from several brokers: a
service is present if any broker has a worker for it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from ._checks import check_int

__all__ = ["Rotation", "mmi_merge"]


class Rotation:
    """The broker choice of one client (see the module's theory of operation).

    ``current`` is the index of the broker the client's socket is for,
    ``home`` the one it prefers. Raises :class:`TypeError` for a ``count``
    or ``spread`` that is not an int, :class:`ValueError` for ``count < 1``
    (``cool_off`` and ``round_robin`` come checked, from a ClientConfig).
    """

    def __init__(self, count: int, spread: int, cool_off: float, round_robin: bool) -> None:
        """Start at the home broker, ``spread % count``."""
        if check_int(count, "brokers") < 1:
            raise ValueError("brokers must be >= 1")
        check_int(spread, "spread")
        self.count = count
        self.cool_off = cool_off
        self.round_robin = round_robin
        self.home = self.current = spread % count
        #: when each broker's cool-off ends (-inf: not cooling off)
        self._until = [float("-inf")] * count
        self._used = False  # a request went out (round robin moves on from its broker)

    def cooling(self, index: int, now: float) -> bool:
        """Whether broker ``index`` is in cool-off at ``now``."""
        return self._until[index] > now

    def for_request(self, now: float) -> bool:
        """Choose the broker of a new request; True if it is not the current one."""
        before = self.current
        if self.round_robin:
            if self._used:
                self.advance(now)
        elif not self.cooling(self.home, now):
            self.current = self.home
        self._used = True
        return self.current != before

    def failed(self, now: float) -> None:
        """An attempt on the current broker failed: cool it off, move to the next."""
        self._until[self.current] = now + self.cool_off
        self.advance(now)

    def advance(self, now: float) -> None:
        """Move to the next broker not in cool-off (see the rule)."""
        order = [(self.current + step) % self.count for step in range(1, self.count + 1)]
        live = [i for i in order if not self.cooling(i, now)]
        self.current = live[0] if live else min(order, key=self._until.__getitem__)

    def answered(self) -> None:
        """The current broker replied: its cool-off (if any) ends."""
        self._until[self.current] = float("-inf")


_MMI_SERVICE = b"mmi.service"
_LISTS = (b"mmi.services", b"mmi.workers")


def mmi_merge(service: bytes, bodies: Iterable[Sequence[bytes]]) -> tuple[bytes, ...]:
    """One MMI answer from the answers of several brokers to the same question.

    A service is present if any broker has a worker for it:

    * ``mmi.service``: ``200`` if any broker said ``200``, else ``404`` if
      any said ``404``, else ``501`` (none implements it);
    * ``mmi.services``: every name any broker listed, once each, sorted;
    * ``mmi.workers``: every broker's lines, sorted (each line is a worker
      of that broker, so the same line may come twice).

    A merged list is in the form one broker answers (read it with
    :func:`~mdp_core.mmi_list`): a single empty frame if empty, and one
    empty frame at its end if any broker cut its list. Raises
    :class:`ValueError` for another service (its answers have no known
    merge) or for no answer at all.
    """
    answers = [tuple(body) for body in bodies]
    if not answers:
        raise ValueError("no answer to merge")
    if service == _MMI_SERVICE:
        for code in (b"200", b"404"):
            if (code,) in answers:
                return (code,)
        return (b"501",)
    if service not in _LISTS:
        raise ValueError(f"no merge rule for the answers to {service!r}")
    items = [item for body in answers for item in body if item]
    entries = sorted(set(items)) if service == _LISTS[0] else sorted(items)
    cut = any(len(body) > 1 and not body[-1] for body in answers)
    if not entries:
        return (b"",)
    return (*entries, b"") if cut else tuple(entries)
