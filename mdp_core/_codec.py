"""Wire codec: MDP frames <-> small frozen command objects.

Theory of operation
-------------------
MDP has two sub-protocols (client and worker) in two versions, plus the
dialect spoken by the ``majortomo`` package. One broker socket carries all
of them, so :func:`decode` recognises the dialect from the envelope of each
message and returns it together with the command:

============  ==========================================  =====================
dialect       envelope                                    commands
============  ==========================================  =====================
MDP01         ``""``, ``MDPC01``/``MDPW01``               RFC 7
MDP02         ``MDPC02``/``MDPW02``                       RFC 18
MAJORTOMO     ``""``, ``MDPC02``/``MDPW02``               majortomo 0.2.0
============  ==========================================  =====================

The majortomo dialect (checked against majortomo 0.2.0's own source) is
RFC 18 with an empty frame in front of every message, and a client
sub-protocol that reuses the worker's command numbers (REQUEST 0x02,
PARTIAL 0x03, FINAL 0x04) and carries no service frame in replies.

A client REQUEST and a 0.1 REPLY have the same shape on the wire, so the
client sub-protocol is decoded by direction: ``decode(frames)`` reads what a
peer sends *to the broker*, ``decode(frames, from_broker=True)`` what the
broker sends to a client or worker. The worker sub-protocol numbers every
command uniquely, so a well-formed command sent in the wrong direction
decodes fine and the receiving state machine judges it "valid but
unexpected", as RFC 7 requires.

Bodies must hold at least one frame, as RFC 7 and 18 say ("4 or more
frames" for REQUEST/REPLY); READY, HEARTBEAT and DISCONNECT must hold
exactly their frames. Anything else raises :class:`MalformedMessage`.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from ._errors import MalformedMessage

__all__ = [
    "ClientReply",
    "ClientRequest",
    "Command",
    "Dialect",
    "Disconnect",
    "Heartbeat",
    "Ready",
    "WorkerReply",
    "WorkerRequest",
    "decode",
    "encode",
]

Body = tuple[bytes, ...]

C01 = b"MDPC01"
W01 = b"MDPW01"
C02 = b"MDPC02"
W02 = b"MDPW02"


class Dialect(enum.Enum):
    """Which MDP variant a peer speaks; each peer is answered in its own."""

    MDP01 = "MDP/0.1"
    MDP02 = "MDP/0.2"
    MAJORTOMO = "majortomo"


# ---------------------------------------------------------------- commands


@dataclass(frozen=True, slots=True)
class ClientRequest:
    """A client asks ``service`` to process ``body`` (client -> broker)."""

    service: bytes
    body: Body


@dataclass(frozen=True, slots=True)
class ClientReply:
    """A reply to a client (broker -> client).

    ``final`` is False for an MDP/0.2 PARTIAL. ``service`` is None in the
    majortomo dialect, whose replies carry no service frame.
    """

    service: bytes | None
    body: Body
    final: bool = True


@dataclass(frozen=True, slots=True)
class Ready:
    """A worker registers for ``service`` (worker -> broker)."""

    service: bytes


@dataclass(frozen=True, slots=True)
class WorkerRequest:
    """The broker hands a worker a request from ``client`` (broker -> worker)."""

    client: bytes
    body: Body


@dataclass(frozen=True, slots=True)
class WorkerReply:
    """A worker answers ``client`` (worker -> broker); PARTIAL if not ``final``."""

    client: bytes
    body: Body
    final: bool = True


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Worker-protocol HEARTBEAT, either direction."""


@dataclass(frozen=True, slots=True)
class Disconnect:
    """Worker-protocol DISCONNECT, either direction."""


Command = (
    ClientRequest | ClientReply | Ready | WorkerRequest | WorkerReply | Heartbeat | Disconnect
)
"""Any MDP command: what :func:`decode` returns and :func:`encode` takes."""

# Worker-protocol command bytes. MDP/0.2 and majortomo share the RFC 18 table;
# names are the RFCs' own (RFC 7's 0x03 is REPLY), so error reasons match the text.
_W01_CODES = {b"\x01": "READY", b"\x02": "REQUEST", b"\x03": "REPLY", b"\x04": "HEARTBEAT",
              b"\x05": "DISCONNECT"}
_W02_CODES = {b"\x01": "READY", b"\x02": "REQUEST", b"\x03": "PARTIAL", b"\x04": "FINAL",
              b"\x05": "HEARTBEAT", b"\x06": "DISCONNECT"}
_W01_BYTES = {name: code for code, name in _W01_CODES.items()}
_W02_BYTES = {name: code for code, name in _W02_CODES.items()}

# Client-protocol command bytes (MDP/0.1 has no command frame).
_C02_CODES = {b"\x01": "REQUEST", b"\x02": "PARTIAL", b"\x03": "FINAL"}
_CMT_CODES = {b"\x02": "REQUEST", b"\x03": "PARTIAL", b"\x04": "FINAL"}
_C02_BYTES = {name: code for code, name in _C02_CODES.items()}
_CMT_BYTES = {name: code for code, name in _CMT_CODES.items()}

_HEARTBEAT = Heartbeat()
_DISCONNECT = Disconnect()


# ---------------------------------------------------------------- decoding


def decode(
    frames: Sequence[bytes | bytearray | memoryview], *, from_broker: bool = False
) -> tuple[Dialect, Command]:
    """Parse one MDP message (without the ROUTER identity frame).

    ``from_broker`` selects the direction of the client sub-protocol: False
    for what clients send to a broker, True for what a broker sends.
    Returns the dialect the message was written in and the command.
    Raises :class:`MalformedMessage` (with a precise ``reason``) for
    anything that is not a well-formed MDP command.
    """
    n = len(frames)
    if n == 0:
        raise MalformedMessage("empty message")
    first = bytes(frames[0])
    if first == b"":
        if n < 2:
            raise MalformedMessage("empty frame without a protocol header")
        header = bytes(frames[1])
        start = 2
        if header == C01:
            return Dialect.MDP01, _client01(frames, start, from_broker)
        if header == W01:
            return Dialect.MDP01, _worker(frames, start, _W01_CODES, "MDPW01")
        dialect = Dialect.MAJORTOMO
    else:
        header = first
        start = 1
        dialect = Dialect.MDP02
    if header == C02:
        codes = _C02_CODES if dialect is Dialect.MDP02 else _CMT_CODES
        return dialect, _client02(frames, start, codes, dialect)
    if header == W02:
        return dialect, _worker(frames, start, _W02_CODES, "MDPW02")
    raise MalformedMessage(f"unknown protocol header {header[:16]!r}")


def _body(frames: Sequence[bytes | bytearray | memoryview], start: int, what: str) -> Body:
    if len(frames) <= start:
        raise MalformedMessage(f"{what} has no body frame")
    return tuple([bytes(f) for f in frames[start:]])


def _service(frames: Sequence[bytes | bytearray | memoryview], index: int, what: str) -> bytes:
    if len(frames) <= index:
        raise MalformedMessage(f"{what} has no service frame")
    service = bytes(frames[index])
    if not service:
        raise MalformedMessage(f"{what} has an empty service name")
    return service


def _client01(
    frames: Sequence[bytes | bytearray | memoryview], start: int, from_broker: bool
) -> Command:
    what = "MDPC01 REPLY" if from_broker else "MDPC01 REQUEST"
    service = _service(frames, start, what)
    body = _body(frames, start + 1, what)
    if from_broker:
        return ClientReply(service, body)
    return ClientRequest(service, body)


def _command(
    frames: Sequence[bytes | bytearray | memoryview], start: int, codes: dict[bytes, str],
    header: str,
) -> str:
    if len(frames) <= start:
        raise MalformedMessage(f"{header} message has no command frame")
    code = bytes(frames[start])
    name = codes.get(code)
    if name is None:
        raise MalformedMessage(f"unknown {header} command {code[:8]!r}")
    return name


def _client02(
    frames: Sequence[bytes | bytearray | memoryview], start: int, codes: dict[bytes, str],
    dialect: Dialect,
) -> Command:
    name = _command(frames, start, codes, "MDPC02")
    what = f"MDPC02 {name}"
    if name == "REQUEST":
        return ClientRequest(_service(frames, start + 1, what), _body(frames, start + 2, what))
    final = name == "FINAL"
    if dialect is Dialect.MAJORTOMO:
        return ClientReply(None, _body(frames, start + 1, what), final)
    return ClientReply(_service(frames, start + 1, what), _body(frames, start + 2, what), final)


def _worker(
    frames: Sequence[bytes | bytearray | memoryview], start: int, codes: dict[bytes, str],
    header: str,
) -> Command:
    name = _command(frames, start, codes, header)
    what = f"{header} {name}"
    rest = len(frames) - start - 1
    if name == "READY":
        if rest != 1:
            raise MalformedMessage(f"{what} needs exactly one service frame, got {rest} frames")
        return Ready(_service(frames, start + 1, what))
    if name == "HEARTBEAT" or name == "DISCONNECT":
        if rest != 0:
            raise MalformedMessage(f"{what} takes no frames, got {rest}")
        return _HEARTBEAT if name == "HEARTBEAT" else _DISCONNECT
    # REQUEST, PARTIAL, FINAL/REPLY: client address, empty delimiter, body.
    if rest < 2:
        raise MalformedMessage(f"{what} needs a client address and an empty delimiter")
    client = bytes(frames[start + 1])
    if not client:
        raise MalformedMessage(f"{what} has an empty client address")
    if bytes(frames[start + 2]) != b"":
        raise MalformedMessage(f"{what} client address is not followed by an empty frame")
    body = _body(frames, start + 3, what)
    if name == "REQUEST":
        return WorkerRequest(client, body)
    return WorkerReply(client, body, name != "PARTIAL")  # FINAL, or MDP/0.1 REPLY


# ---------------------------------------------------------------- encoding


def encode(command: Command, dialect: Dialect) -> list[bytes]:
    """Build the frames of ``command`` in ``dialect`` (no ROUTER identity frame).

    Raises :class:`ValueError` for a command the dialect cannot express: a
    PARTIAL in MDP/0.1, an empty body, or an empty service or client frame.
    """
    if isinstance(command, (ClientRequest, ClientReply)):
        return _encode_client(command, dialect)
    if dialect is Dialect.MDP01:
        prefix = [b"", W01]
        codes = _W01_BYTES
    else:
        prefix = [W02] if dialect is Dialect.MDP02 else [b"", W02]
        codes = _W02_BYTES
    if isinstance(command, Heartbeat):
        return [*prefix, codes["HEARTBEAT"]]
    if isinstance(command, Disconnect):
        return [*prefix, codes["DISCONNECT"]]
    if isinstance(command, Ready):
        _check_name(command.service, "service")
        return [*prefix, codes["READY"], command.service]
    _check_name(command.client, "client address")
    _check_body(command.body)
    if isinstance(command, WorkerRequest):
        code = codes["REQUEST"]
    elif command.final:
        code = codes["REPLY" if dialect is Dialect.MDP01 else "FINAL"]
    elif dialect is Dialect.MDP01:
        raise ValueError("MDP/0.1 has no PARTIAL reply")
    else:
        code = codes["PARTIAL"]
    return [*prefix, code, command.client, b"", *command.body]


def _encode_client(command: ClientRequest | ClientReply, dialect: Dialect) -> list[bytes]:
    _check_body(command.body)
    if isinstance(command, ClientRequest):
        _check_name(command.service, "service")
        if dialect is Dialect.MDP01:
            return [b"", C01, command.service, *command.body]
        if dialect is Dialect.MDP02:
            return [C02, _C02_BYTES["REQUEST"], command.service, *command.body]
        return [b"", C02, _CMT_BYTES["REQUEST"], command.service, *command.body]
    kind = "FINAL" if command.final else "PARTIAL"
    if dialect is Dialect.MAJORTOMO:
        return [b"", C02, _CMT_BYTES[kind], *command.body]
    if command.service is None:
        raise ValueError(f"{dialect.value} replies carry a service name")
    _check_name(command.service, "service")
    if dialect is Dialect.MDP02:
        return [C02, _C02_BYTES[kind], command.service, *command.body]
    if not command.final:
        raise ValueError("MDP/0.1 has no PARTIAL reply")
    return [b"", C01, command.service, *command.body]


def _check_name(value: bytes, what: str) -> None:
    if not value:
        raise ValueError(f"empty {what}")


def _check_body(body: Body) -> None:
    if not body:
        raise ValueError("MDP bodies need at least one frame")
