"""Independent MDP peers for the interop tests, written from the RFC texts alone.

Nothing here imports ``mdp_core`` or ``mdp_zmq``: every frame is spelled
out as RFC 7/MDP (MDP/0.1) and RFC 18/MDP (MDP/0.2) print it, so a
codec bug of ours cannot hide behind a shared helper. Anything the broker
sends that the RFC text does not allow raises :class:`RfcViolation` (an
AssertionError, so a test using these peers fails on it).

RFC 7 (MDP/0.1), as the broker's ROUTER sees it after the identity frame::

    client REQUEST  "", "MDPC01", service, body...      (REQ adds/strips the "")
    broker REPLY    "", "MDPC01", service, body...
    worker          "", "MDPW01", command, ...
                    READY 0x01 service | REQUEST 0x02 client "" body... |
                    REPLY 0x03 client "" body... | HEARTBEAT 0x04 | DISCONNECT 0x05

RFC 18 (MDP/0.2): no leading empty frame::

    client          "MDPC02", REQUEST 0x01 | PARTIAL 0x02 | FINAL 0x03, service, body...
    worker          "MDPW02", READY 0x01 service | REQUEST 0x02 client "" body... |
                    PARTIAL 0x03 client "" body... | FINAL 0x04 client "" body... |
                    HEARTBEAT 0x05 | DISCONNECT 0x06

RFC 8 (MMI): services starting with ``mmi.`` are the broker's own;
``mmi.service`` answers ``200``/``404``, other ``mmi.*`` ``501``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

import zmq

# ---------------------------------------------------------------- RFC 7 (MDP/0.1)
MDPC01 = b"MDPC01"
MDPW01 = b"MDPW01"
W01_COMMANDS = {"READY": b"\x01", "REQUEST": b"\x02", "REPLY": b"\x03",
                "HEARTBEAT": b"\x04", "DISCONNECT": b"\x05"}

# ---------------------------------------------------------------- RFC 18 (MDP/0.2)
MDPC02 = b"MDPC02"
MDPW02 = b"MDPW02"
C02_COMMANDS = {"REQUEST": b"\x01", "PARTIAL": b"\x02", "FINAL": b"\x03"}
W02_COMMANDS = {"READY": b"\x01", "REQUEST": b"\x02", "PARTIAL": b"\x03", "FINAL": b"\x04",
                "HEARTBEAT": b"\x05", "DISCONNECT": b"\x06"}


class RfcViolation(AssertionError):
    """The broker sent something the RFC text does not allow."""


class BrokerSaidDisconnect(Exception):
    """The broker sent DISCONNECT to a worker."""


def _recv(sock: zmq.Socket[bytes], timeout: float) -> list[bytes]:
    if not sock.poll(max(0, int(timeout * 1000)), zmq.POLLIN):
        raise TimeoutError(f"nothing received within {timeout:g} s")
    return sock.recv_multipart()


def _dealer(ctx: zmq.Context[zmq.Socket[bytes]], endpoint: str, identity: bytes | None
            ) -> zmq.Socket[bytes]:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if identity is not None:
        sock.setsockopt(zmq.ROUTING_ID, identity)
    sock.connect(endpoint)
    return sock


# ---------------------------------------------------------------- clients


class Rfc7Client:
    """An MDP/0.1 client: a REQ socket, or (``dealer=True``) a DEALER that
    writes the empty frame 0 itself, as RFC 7 allows."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], endpoint: str, *,
                 dealer: bool = False, identity: bytes | None = None) -> None:
        self.dealer = dealer
        if dealer:
            self.sock = _dealer(ctx, endpoint, identity)
        else:
            self.sock = ctx.socket(zmq.REQ)
            self.sock.setsockopt(zmq.LINGER, 0)
            if identity is not None:
                self.sock.setsockopt(zmq.ROUTING_ID, identity)
            self.sock.connect(endpoint)

    def send(self, service: bytes, *body: bytes) -> None:
        """Send a REQUEST (frame 0, the empty frame, is added by REQ)."""
        frames = [MDPC01, service, *body]
        self.sock.send_multipart([b"", *frames] if self.dealer else frames)

    def recv(self, timeout: float = 5.0) -> tuple[bytes, list[bytes]]:
        """Receive one REPLY; return ``(service, body)``."""
        frames = _recv(self.sock, timeout)
        if self.dealer:
            if not frames or frames[0] != b"":
                raise RfcViolation(f"REPLY without the empty frame 0: {frames!r}")
            frames = frames[1:]
        if len(frames) < 3 or frames[0] != MDPC01:
            raise RfcViolation(f"not an MDP/0.1 REPLY (4 or more frames): {frames!r}")
        return frames[1], frames[2:]

    def request(self, service: bytes, *body: bytes, timeout: float = 5.0) -> list[bytes]:
        """REQUEST then REPLY; the REPLY must name the same service."""
        self.send(service, *body)
        got_service, reply = self.recv(timeout)
        if got_service != service:
            raise RfcViolation(f"REPLY names service {got_service!r}, asked {service!r}")
        return reply

    def close(self) -> None:
        self.sock.close(0)


class Rfc18Client:
    """An MDP/0.2 client on a DEALER socket (RFC 18: "Clients MUST use a DEALER")."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], endpoint: str, *,
                 identity: bytes | None = None) -> None:
        self.sock = _dealer(ctx, endpoint, identity)

    def send(self, service: bytes, *body: bytes) -> None:
        self.sock.send_multipart([MDPC02, C02_COMMANDS["REQUEST"], service, *body])

    def recv(self, timeout: float = 5.0) -> tuple[str, bytes, list[bytes]]:
        """One PARTIAL or FINAL: ``(kind, service, body)``."""
        frames = _recv(self.sock, timeout)
        if len(frames) < 4 or frames[0] != MDPC02:
            raise RfcViolation(f"not an MDP/0.2 reply (4 or more frames): {frames!r}")
        for kind in ("PARTIAL", "FINAL"):
            if frames[1] == C02_COMMANDS[kind]:
                return kind, frames[2], frames[3:]
        raise RfcViolation(f"broker sent client command {frames[1]!r}: {frames!r}")

    def request(self, service: bytes, *body: bytes, timeout: float = 5.0
                ) -> list[tuple[str, list[bytes]]]:
        """REQUEST, then every ``(kind, body)`` up to and including the FINAL."""
        self.send(service, *body)
        replies: list[tuple[str, list[bytes]]] = []
        while True:
            kind, got_service, reply = self.recv(timeout)
            if got_service != service:
                raise RfcViolation(f"{kind} names service {got_service!r}, asked {service!r}")
            replies.append((kind, reply))
            if kind == "FINAL":
                return replies

    def close(self) -> None:
        self.sock.close(0)


# ---------------------------------------------------------------- workers


class RawWorker:
    """An MDP worker on one DEALER, in ``version`` "0.1" (RFC 7) or "0.2" (RFC 18).

    It sends HEARTBEAT every ``heartbeat_interval`` while it waits (RFC:
    "Both broker and worker MUST send heartbeats"), counts the broker's
    HEARTBEATs, and raises :class:`BrokerSaidDisconnect` on DISCONNECT.
    """

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], endpoint: str, service: bytes,
                 version: str, *, identity: bytes | None = None,
                 heartbeat_interval: float = 1.0) -> None:
        if version not in ("0.1", "0.2"):
            raise ValueError(version)
        self.ctx = ctx
        self.endpoint = endpoint
        self.service = service
        self.version = version
        self.identity = identity
        self.heartbeat_interval = heartbeat_interval
        self.prefix = [b"", MDPW01] if version == "0.1" else [MDPW02]
        self.codes = W01_COMMANDS if version == "0.1" else W02_COMMANDS
        self.names = {code: name for name, code in self.codes.items()}
        self.sock: zmq.Socket[bytes] | None = None
        self.heartbeats_received = 0
        self.last_sent = 0.0
        self.conversations = 0

    # -- sending
    def open(self, *, ready: bool = True) -> None:
        """A new socket (a new conversation); send READY unless told not to.

        A later conversation gets a fresh routing id (``identity + b".N"``):
        a ROUTER ignores a second connection that claims an id still in use.
        """
        self.close()
        identity = self.identity
        if identity is not None and self.conversations:
            identity += b".%d" % self.conversations
        self.conversations += 1
        self.sock = _dealer(self.ctx, self.endpoint, identity)
        if ready:
            self.send("READY", self.service)

    def send(self, command: str, *frames: bytes) -> None:
        self.send_raw([*self.prefix, self.codes[command], *frames])

    def send_raw(self, frames: Sequence[bytes]) -> None:
        assert self.sock is not None
        self.sock.send_multipart(list(frames))
        self.last_sent = time.monotonic()

    def reply(self, client: bytes, *body: bytes) -> None:
        """The one reply of MDP/0.1 (REPLY) or the FINAL of MDP/0.2."""
        self.send("REPLY" if self.version == "0.1" else "FINAL", client, b"", *body)

    def partial(self, client: bytes, *body: bytes) -> None:
        """An MDP/0.2 PARTIAL (MDP/0.1 has none)."""
        self.send("PARTIAL", client, b"", *body)

    # -- receiving
    def recv_command(self, timeout: float) -> tuple[str, list[bytes]]:
        """The next command from the broker, checked against the RFC:
        ``(name, frames after the command frame)``."""
        assert self.sock is not None
        frames = _recv(self.sock, timeout)
        n = len(self.prefix)
        if frames[:n] != self.prefix or len(frames) <= n:
            raise RfcViolation(f"MDP/{self.version} worker got a foreign message: {frames!r}")
        name = self.names.get(frames[n])
        rest = frames[n + 1:]
        if name == "REQUEST":
            # "precisely one client address frame ... followed by an empty frame", then a body
            if len(rest) < 3 or not rest[0] or rest[1] != b"":
                raise RfcViolation(f"malformed REQUEST: {frames!r}")
        elif name in ("HEARTBEAT", "DISCONNECT"):
            if rest:
                raise RfcViolation(f"{name} with extra frames: {frames!r}")
        else:
            raise RfcViolation(f"broker sent worker command {frames[n]!r}: {frames!r}")
        return name, rest

    def next_request(self, timeout: float) -> tuple[bytes, list[bytes]]:
        """Wait for a REQUEST, heartbeating meanwhile: ``(client address, body)``.

        Raises TimeoutError, or BrokerSaidDisconnect (and closes the socket:
        "it MUST close its socket").
        """
        end = time.monotonic() + timeout
        while True:
            now = time.monotonic()
            if now - self.last_sent >= self.heartbeat_interval:
                self.send("HEARTBEAT")
            left = min(end - now, self.heartbeat_interval)
            if left <= 0:
                raise TimeoutError(f"no REQUEST within {timeout:g} s")
            try:
                name, rest = self.recv_command(left)
            except TimeoutError:
                continue
            if name == "HEARTBEAT":
                self.heartbeats_received += 1
            elif name == "DISCONNECT":
                self.close()
                raise BrokerSaidDisconnect()
            else:
                return rest[0], rest[2:]

    def expect_disconnect(self, timeout: float = 5.0) -> None:
        """Read (ignoring HEARTBEATs) until DISCONNECT; fail on anything else."""
        end = time.monotonic() + timeout
        while True:
            name, rest = self.recv_command(max(0.0, end - time.monotonic()))
            if name == "DISCONNECT":
                return
            if name != "HEARTBEAT":
                raise RfcViolation(f"expected DISCONNECT, got {name} {rest!r}")

    def close(self, linger: float = 0.0) -> None:
        """Close the socket; ``linger`` seconds lets queued messages out first."""
        if self.sock is not None:
            self.sock.close(int(linger * 1000))
            self.sock = None


Handler = Callable[[list[bytes]], list[list[bytes]]]


class RawWorkerThread:
    """A :class:`RawWorker` serving requests in its own thread until :meth:`stop`.

    ``handler(body)`` returns the reply bodies: MDP/0.2 sends all but the
    last as PARTIAL and the last as FINAL; MDP/0.1 needs exactly one (REPLY).
    On DISCONNECT it reconnects on a new socket and sends READY again, as
    the RFCs require. ``errors`` collects what went wrong (a test checks it
    is empty); ``served`` counts replies sent; ``requests`` logs the
    ``(client, body)`` of each REQUEST.
    """

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], endpoint: str, service: bytes,
                 version: str, handler: Handler, *, identity: bytes | None = None,
                 heartbeat_interval: float = 1.0) -> None:
        self.worker = RawWorker(ctx, endpoint, service, version, identity=identity,
                                heartbeat_interval=heartbeat_interval)
        self.handler = handler
        self.errors: list[BaseException] = []
        self.requests: list[tuple[bytes, list[bytes]]] = []
        self.served = 0
        self.disconnects = 0
        self.started = threading.Event()
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True,
                                       name=f"raw-{version}-worker")
        self.thread.start()
        if not self.started.wait(5):
            raise RuntimeError("raw worker thread did not start")

    def _run(self) -> None:
        w = self.worker
        try:
            w.open()
            self.started.set()
            while not self._stop.is_set():
                try:
                    client, body = w.next_request(0.05)
                except TimeoutError:
                    continue
                except BrokerSaidDisconnect:
                    self.disconnects += 1
                    w.open()
                    continue
                self.requests.append((client, body))
                replies = self.handler(body)
                if w.version == "0.1" and len(replies) != 1:
                    raise ValueError("an MDP/0.1 worker sends exactly one REPLY")
                for part in replies[:-1]:
                    w.partial(client, *part)
                w.reply(client, *replies[-1])
                self.served += 1
        except BaseException as exc:  # reported by the test through .errors
            self.errors.append(exc)
        finally:
            self.started.set()
            if w.sock is not None and not self.errors:
                w.send("DISCONNECT")  # "The worker MAY send DISCONNECT at any time"
            w.close()

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(10)


# ---------------------------------------------------------------- broker


class RawBroker:
    """The broker end of RFC 7 / RFC 18 on a ROUTER bound to ``endpoint``;
    the test drives it message by message (``endpoint`` is resolved)."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]],
                 endpoint: str = "tcp://127.0.0.1:*") -> None:
        self.sock = ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(endpoint)
        self.endpoint = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)

    def recv(self, timeout: float = 5.0) -> tuple[bytes, list[bytes]]:
        """``(routing id, frames)`` of the next message."""
        frames = _recv(self.sock, timeout)
        return frames[0], frames[1:]

    def recv_worker(self, version: str, timeout: float = 5.0, *, skip_heartbeats: bool = True
                    ) -> tuple[bytes, str, list[bytes]]:
        """The next worker command, checked against the RFC:
        ``(routing id, name, frames after the command frame)``."""
        prefix = [b"", MDPW01] if version == "0.1" else [MDPW02]
        codes = W01_COMMANDS if version == "0.1" else W02_COMMANDS
        names = {code: name for name, code in codes.items()}
        end = time.monotonic() + timeout
        while True:
            peer, frames = self.recv(max(0.0, end - time.monotonic()))
            n = len(prefix)
            if frames[:n] != prefix or len(frames) <= n or frames[n] not in names:
                raise RfcViolation(f"not an MDP/{version} worker command: {frames!r}")
            name, rest = names[frames[n]], frames[n + 1:]
            if name == "READY" and len(rest) != 1:
                raise RfcViolation(f"READY needs exactly one service frame: {frames!r}")
            if name in ("HEARTBEAT", "DISCONNECT") and rest:
                raise RfcViolation(f"{name} with extra frames: {frames!r}")
            if name in ("REPLY", "PARTIAL", "FINAL") and (
                    len(rest) < 3 or not rest[0] or rest[1] != b""):
                raise RfcViolation(f"{name} without client address + empty frame + body: "
                                   f"{frames!r}")
            if name == "REQUEST":
                raise RfcViolation(f"a worker sent REQUEST: {frames!r}")
            if name == "HEARTBEAT" and skip_heartbeats:
                continue
            return peer, name, rest

    def send_worker(self, peer: bytes, version: str, command: str, *frames: bytes) -> None:
        prefix = [b"", MDPW01] if version == "0.1" else [MDPW02]
        codes = W01_COMMANDS if version == "0.1" else W02_COMMANDS
        self.sock.send_multipart([peer, *prefix, codes[command], *frames])

    def close(self) -> None:
        self.sock.close(0)


class StrictBroker:
    """A raw RFC 18 broker that expires a worker silent for ``window`` s, busy or not.

    RFC 7/18 want both sides to "send heartbeats at regular and agreed-upon
    intervals" and to treat a peer silent for the liveness window as
    disconnected. :meth:`job` registers one worker, heartbeats it every
    ``heartbeat`` s, sends it one REQUEST and waits for the FINAL; it
    returns the worker's messages during the job and whether the broker
    had to expire it (it then sends DISCONNECT).
    """

    def __init__(self, window: float, heartbeat: float) -> None:
        self.window = window
        self.heartbeat = heartbeat
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.raw = RawBroker(self.ctx)
        self.endpoint = self.raw.endpoint

    def job(self, body: bytes, timeout: float) -> tuple[list[str], bool, list[bytes]]:
        """``(commands heard during the job, expired?, FINAL frames)``."""
        raw = self.raw
        peer, name, _ = raw.recv_worker("0.2", skip_heartbeats=False)
        assert name == "READY"
        raw.send_worker(peer, "0.2", "REQUEST", b"client-1", b"", body)
        heard: list[str] = []
        last = time.monotonic()
        end = last + timeout
        next_hb = 0.0
        while time.monotonic() < end:
            now = time.monotonic()
            if now >= next_hb:
                raw.send_worker(peer, "0.2", "HEARTBEAT")
                next_hb = now + self.heartbeat
            if now - last > self.window:
                raw.send_worker(peer, "0.2", "DISCONNECT")  # "treat that peer as disconnected"
                return heard, True, []
            try:
                p, name, rest = raw.recv_worker("0.2", 0.05, skip_heartbeats=False)
            except TimeoutError:
                continue
            assert p == peer
            last = time.monotonic()
            heard.append(name)
            if name == "FINAL":
                return heard, False, rest
        raise TimeoutError("no FINAL")

    def close(self) -> None:
        self.raw.close()
        self.ctx.destroy(linger=0)
