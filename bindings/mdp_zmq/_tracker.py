"""Which routing id came in on which TCP/IPC connection: I/O-free bookkeeping.

Theory of operation
-------------------
A ROUTER socket does not tell its owner when a peer's connection closes.
Its *monitor* does, but names the connection by file descriptor only
(``EVENT_ACCEPTED`` / ``EVENT_DISCONNECTED`` carry the fd), while messages
name their peer by routing id. The link between the two is ``zmq.SRCFD``,
read from each received frame. This class keeps that link:

* ``accepted(fd)`` opens a new *connection* ``(fd, generation)``; the
  generation counts up every time the fd number is accepted again, because
  the kernel reuses a closed fd number at once (measured: a DISCONNECTED
  fd=19 is followed by an ACCEPTED fd=19).
* ``bind(peer, fd)`` ties a routing id to the connection currently open on
  ``fd``. The driver first drains the monitor, so ``bind`` sees every
  accept/disconnect libzmq has reported so far. libzmq reports ACCEPTED
  before the connection's first message can be read, and DISCONNECTED
  before it closes (and can reuse) the fd, so after a drain the fd's
  current generation is the message's connection - or the connection is
  already closed, in which case the message was still queued from a peer
  that is gone, and ``bind`` reports that peer lost at once.
* ``disconnected(fd)`` closes the current connection on ``fd`` and returns
  every routing id bound to it: each one becomes ``connection_lost``.

Limits, covered by other layers: if a peer sends and dies *and* its fd is
re-accepted for a new peer before the driver reads that message, the dead
peer is bound to the new connection and is reported when that one closes
(ROUTER_MANDATORY reports it sooner, at the first send to it). A connection
that was open before monitoring started is adopted on its first message.

Nothing here touches a socket or a clock; the driver feeds it.
"""

from __future__ import annotations

__all__ = ["ConnectionTracker"]

Connection = tuple[int, int]  # (fd, generation)


class ConnectionTracker:
    """Map routing ids to (fd, generation) connections from monitor events.

    Methods that can reveal lost peers return them as a list of routing ids
    (usually empty); the driver passes each to ``Broker.connection_lost``.
    No method raises on any input order.
    """

    __slots__ = ("_generation", "_open", "_peer_conn", "_peers")

    def __init__(self) -> None:
        self._generation: dict[int, int] = {}  # fd -> latest generation seen
        self._open: set[int] = set()  # fds whose latest generation is open
        self._peers: dict[Connection, set[bytes]] = {}  # open connection -> routing ids
        self._peer_conn: dict[bytes, Connection] = {}  # routing id -> its connection

    # ---------------------------------------------------------- monitor side

    def accepted(self, fd: int) -> list[bytes]:
        """Record ``EVENT_ACCEPTED`` for ``fd``: a new connection opens on it.

        Returns the peers of a previous connection on ``fd`` whose disconnect
        was never reported (only possible if monitor events were lost).
        """
        lost = self._close(fd)
        self._generation[fd] = self._generation.get(fd, 0) + 1
        self._open.add(fd)
        return lost

    def disconnected(self, fd: int) -> list[bytes]:
        """Record ``EVENT_DISCONNECTED`` for ``fd``; return the peers it carried.

        An fd that is unknown, already closed or carried no peer yet gives
        an empty list.
        """
        return self._close(fd)

    # ---------------------------------------------------------- message side

    def knows(self, peer: bytes, fd: int) -> bool:
        """True if ``peer`` is already bound to the connection open on ``fd``.

        This is the per-message check (two dict lookups); when it is False
        the driver drains the monitor and then calls :meth:`bind`.
        """
        # Invariant: a bound connection is always the open generation of its
        # fd (closing a connection unbinds its peers), so the fd suffices.
        conn = self._peer_conn.get(peer)
        return conn is not None and conn[0] == fd

    def rival(self, peer: bytes, fd: int) -> tuple[int, int] | None:
        """The open connection ``peer`` is bound to, if it is not the one on ``fd``.

        A message from ``peer`` on ``fd`` then claims a routing id that a
        live connection holds: a takeover (``ROUTER_HANDOVER``) or an
        attack. None if ``peer`` is unbound or bound to ``fd``, or if
        ``fd``'s connection has closed (a message still queued from it;
        see :meth:`bind`). Call after a drain, as for :meth:`bind`.
        """
        conn = self._peer_conn.get(peer)
        if conn is None or conn[0] == fd:
            return None
        if fd in self._generation and fd not in self._open:
            return None
        return conn

    def bind(self, peer: bytes, fd: int) -> list[bytes]:
        """Tie ``peer`` to the connection now open on ``fd`` (after a drain).

        Returns ``[peer]`` if ``fd`` was seen and is closed: the message
        came from a connection that is already gone, so the peer is lost
        (the driver feeds the message first, then ``connection_lost``) -
        unless the peer is bound to another, open connection, whose
        binding is kept.
        An fd never seen is adopted as a connection opened before
        monitoring began. A peer bound elsewhere (an explicit routing id
        handed over to a new connection) moves; the driver checks
        :meth:`rival` first, and refuses the message or ends the old
        connection's session.
        """
        if fd not in self._open:
            if fd in self._generation:
                # A message still queued from a closed connection: its peer
                # is lost, unless it already lives on (a newer connection).
                return [] if peer in self._peer_conn else [peer]
            self.accepted(fd)
        conn = (fd, self._generation[fd])
        old = self._peer_conn.get(peer)
        if old != conn:
            if old is not None:
                self._unbind(peer, old)
            self._peer_conn[peer] = conn
            self._peers.setdefault(conn, set()).add(peer)
        return []

    def forget(self, peer: bytes) -> None:
        """Drop ``peer`` (its loss was learnt another way, e.g. EHOSTUNREACH)."""
        conn = self._peer_conn.pop(peer, None)
        if conn is not None:
            self._unbind(peer, conn)

    # ------------------------------------------------------------ inspection

    def connection_of(self, peer: bytes) -> tuple[int, int] | None:
        """The ``(fd, generation)`` ``peer`` is bound to, or None."""
        return self._peer_conn.get(peer)

    def __len__(self) -> int:
        """Number of routing ids currently bound."""
        return len(self._peer_conn)

    # --------------------------------------------------------------- private

    def _close(self, fd: int) -> list[bytes]:
        if fd not in self._open:
            return []
        self._open.discard(fd)
        peers = self._peers.pop((fd, self._generation[fd]), set())
        for peer in peers:
            del self._peer_conn[peer]
        return sorted(peers)

    def _unbind(self, peer: bytes, conn: Connection) -> None:
        peers = self._peers.get(conn)
        if peers is not None:
            peers.discard(peer)
            if not peers:
                del self._peers[conn]
