"""ConnectionTracker: fd/generation bookkeeping, no sockets."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule
from mdp_zmq._tracker import ConnectionTracker

A = b"\x00\x00\x00\x00\x01"
B = b"\x00\x00\x00\x00\x02"
C = b"\x00\x00\x00\x00\x03"


def test_disconnect_reports_the_peer_bound_to_the_fd() -> None:
    t = ConnectionTracker()
    assert t.accepted(19) == []
    assert not t.knows(A, 19)
    assert t.bind(A, 19) == []
    assert t.knows(A, 19)
    assert t.disconnected(19) == [A]
    assert not t.knows(A, 19)
    assert len(t) == 0


def test_fd_reused_before_new_peers_first_message_keeps_peers_apart() -> None:
    t = ConnectionTracker()
    t.accepted(19)
    t.bind(A, 19)
    # A goes away, B is accepted on the same fd number before it sends.
    assert t.disconnected(19) == [A]
    assert t.accepted(19) == []
    assert t.bind(B, 19) == []
    assert t.connection_of(B) == (19, 2)
    assert t.disconnected(19) == [B]


def test_fd_reused_after_new_peers_first_message_was_queued() -> None:
    # Monitor events arrive (and are drained) before B's first message is
    # read: the order libzmq guarantees. B binds to the new generation only.
    t = ConnectionTracker()
    t.accepted(19)
    t.bind(A, 19)
    lost = t.disconnected(19) + t.accepted(19)  # drained in one go
    assert lost == [A]
    t.bind(B, 19)
    assert t.knows(B, 19)
    assert not t.knows(A, 19)
    assert t.disconnected(19) == [B]


def test_message_from_a_connection_already_closed_reports_the_peer_lost() -> None:
    # A connects, sends, dies; the monitor is drained before its message is read.
    t = ConnectionTracker()
    t.accepted(19)
    assert t.disconnected(19) == []  # nobody bound yet
    assert t.bind(A, 19) == [A]
    assert not t.knows(A, 19)
    assert len(t) == 0


def test_a_stale_peer_on_a_reused_fd_is_reported_with_that_connection() -> None:
    # A sends and dies, and fd 19 is re-accepted for B before A's message
    # is read: A is bound to B's connection and reported when it closes
    # (documented limit; ROUTER_MANDATORY reports A sooner, on first send).
    t = ConnectionTracker()
    t.accepted(19)
    t.disconnected(19)
    t.accepted(19)
    assert t.bind(A, 19) == []
    assert t.bind(B, 19) == []
    assert t.disconnected(19) == [A, B]


def test_two_peers_on_different_fds_are_independent() -> None:
    t = ConnectionTracker()
    t.accepted(19)
    t.accepted(20)
    t.bind(A, 19)
    t.bind(B, 20)
    assert t.disconnected(20) == [B]
    assert t.knows(A, 19)
    assert t.disconnected(19) == [A]


def test_disconnect_of_unknown_or_closed_fd_reports_nothing() -> None:
    t = ConnectionTracker()
    assert t.disconnected(7) == []
    t.accepted(7)
    assert t.disconnected(7) == []
    assert t.disconnected(7) == []


def test_disconnect_of_an_fd_with_no_bound_peer_leaves_others_alone() -> None:
    t = ConnectionTracker()
    t.accepted(19)
    t.accepted(20)
    t.bind(A, 19)
    assert t.disconnected(20) == []
    assert t.knows(A, 19)


def test_message_on_an_fd_never_accepted_is_adopted() -> None:
    # A connection accepted before the monitor was attached.
    t = ConnectionTracker()
    assert t.bind(A, 5) == []
    assert t.knows(A, 5)
    assert t.disconnected(5) == [A]


def test_accept_without_disconnect_reports_the_old_connections_peers() -> None:
    # Only possible if monitor events were dropped; do not keep a ghost.
    t = ConnectionTracker()
    t.accepted(19)
    t.bind(A, 19)
    assert t.accepted(19) == [A]
    assert not t.knows(A, 19)


def test_routing_id_handed_over_to_a_new_connection_moves() -> None:
    t = ConnectionTracker()
    t.accepted(19)
    t.accepted(20)
    t.bind(A, 19)
    t.bind(B, 19)
    assert not t.knows(A, 20)
    t.bind(A, 20)
    assert t.knows(A, 20)
    assert t.disconnected(19) == [B]
    assert t.disconnected(20) == [A]


def test_rival_names_the_live_connection_a_second_one_claims() -> None:
    t = ConnectionTracker()
    t.accepted(19)
    t.accepted(20)
    assert t.rival(A, 20) is None  # unbound
    t.bind(A, 19)
    assert t.rival(A, 19) is None  # its own connection
    assert t.rival(A, 20) == (19, 1)  # another live connection claims it
    assert t.rival(A, 33) == (19, 1)  # ... or one opened before monitoring
    t.disconnected(20)
    assert t.rival(A, 20) is None  # a message still queued from a closed one
    assert t.knows(A, 19)  # asking changes nothing


def test_stale_message_from_a_closed_connection_keeps_a_live_peers_binding() -> None:
    # An explicit routing id reconnected on fd 20; a message still queued
    # from its old, closed connection on fd 19 must not unbind it.
    t = ConnectionTracker()
    t.accepted(19)
    t.bind(A, 19)
    t.accepted(20)
    t.bind(A, 20)
    assert t.disconnected(19) == []
    assert t.bind(A, 19) == []
    assert t.knows(A, 20)
    assert t.disconnected(20) == [A]


def test_rebinding_a_lone_peer_frees_its_old_connection_record() -> None:
    t = ConnectionTracker()
    t.accepted(19)
    t.accepted(20)
    t.bind(A, 19)
    t.bind(A, 20)
    t.bind(A, 20)  # idempotent
    assert t.disconnected(19) == []
    assert t.disconnected(20) == [A]


def test_forget_unbinds_a_peer_lost_another_way() -> None:
    t = ConnectionTracker()
    t.accepted(19)
    t.bind(A, 19)
    t.bind(C, 19)
    t.forget(A)
    t.forget(A)  # unknown: no-op
    assert t.connection_of(A) is None
    assert t.disconnected(19) == [C]
    t.forget(B)


def test_generations_count_up_per_fd() -> None:
    t = ConnectionTracker()
    for gen in range(1, 5):
        t.accepted(3)
        t.bind(A, 3)
        assert t.connection_of(A) == (3, gen)
        assert t.disconnected(3) == [A]


# ------------------------------------------------------------------ model check
#
# A model of what libzmq guarantees and nothing more: a connection's ACCEPTED
# is queued on the monitor before any of its messages reach the ROUTER; its
# DISCONNECTED is queued before the kernel frees (and may reuse) its fd, the
# lowest free one; its messages may still be read after that. The driver
# reads messages in any order across connections, drains the monitor
# whenever it likes, and always before binding a routing id it does not know.


class TrackerModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tracker = ConnectionTracker()
        self.free: set[int] = set(range(3, 8))
        self.fd_of: dict[bytes, int] = {}
        self.alive: set[bytes] = set()
        self.monitor: list[tuple[str, int]] = []
        self.router: list[tuple[bytes, int]] = []
        self.sent: set[bytes] = set()
        self.reported: set[bytes] = set()
        self.next_peer = 0

    def _lost(self, peers: list[bytes]) -> None:
        for peer in peers:
            # Soundness: only a peer whose connection has closed is reported.
            assert peer not in self.alive, peer
            self.reported.add(peer)

    def _drain(self) -> None:
        for kind, fd in self.monitor:
            self._lost(self.tracker.accepted(fd) if kind == "acc"
                       else self.tracker.disconnected(fd))
        self.monitor.clear()

    def _read(self, index: int) -> None:
        peer, fd = self.router.pop(index % len(self.router))
        if not self.tracker.knows(peer, fd):
            self._drain()
            self._lost(self.tracker.bind(peer, fd))

    @precondition(lambda self: bool(self.free))
    @rule()
    def connect(self) -> None:
        fd = min(self.free)
        self.free.discard(fd)
        self.next_peer += 1
        peer = b"p%d" % self.next_peer
        self.fd_of[peer] = fd
        self.alive.add(peer)
        self.monitor.append(("acc", fd))

    @precondition(lambda self: bool(self.alive))
    @rule(data=st.data())
    def send(self, data: st.DataObject) -> None:
        peer = data.draw(st.sampled_from(sorted(self.alive)))
        self.router.append((peer, self.fd_of[peer]))
        self.sent.add(peer)

    @precondition(lambda self: bool(self.alive))
    @rule(data=st.data())
    def close(self, data: st.DataObject) -> None:
        peer = data.draw(st.sampled_from(sorted(self.alive)))
        self.alive.discard(peer)
        self.monitor.append(("disc", self.fd_of[peer]))
        self.free.add(self.fd_of[peer])

    @rule()
    def drain_monitor(self) -> None:
        self._drain()

    @precondition(lambda self: bool(self.router))
    @rule(index=st.integers(min_value=0, max_value=50))
    def read_message(self, index: int) -> None:
        self._read(index)

    def teardown(self) -> None:
        # Completeness: once everything has closed and been read, every peer
        # that ever sent something has been reported lost.
        for peer in sorted(self.alive):
            self.alive.discard(peer)
            self.monitor.append(("disc", self.fd_of[peer]))
        while self.router:
            self._read(0)
        self._drain()
        assert self.sent <= self.reported
        assert len(self.tracker) == 0


TrackerModel.TestCase.settings = settings(max_examples=150, stateful_step_count=30,
                                          deadline=None)
test_tracker_model_reports_only_closed_peers_and_all_of_them = TrackerModel.TestCase
