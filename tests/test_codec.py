"""The wire codec against the RFC texts, majortomo 0.2.0's own code, and fuzzing.

Expected frames are written out literally from RFC 7 (MDP/0.1), RFC 18
(MDP/0.2) and majortomo 0.2.0's source, never produced by our encoder.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import majortomo.broker
import majortomo.client
import majortomo.protocol
import majortomo.worker
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mdp_core import (
    ClientReply,
    ClientRequest,
    Command,
    Dialect,
    Disconnect,
    Heartbeat,
    MalformedMessage,
    Ready,
    WorkerReply,
    WorkerRequest,
    decode,
    encode,
)

MDP01 = Dialect.MDP01
MDP02 = Dialect.MDP02
MAJORTOMO = Dialect.MAJORTOMO

# (test id, dialect, from_broker, frames, command). `from_broker` is the
# direction the RFC gives the command: False = sent to the broker.
RFC_CASES: list[tuple[str, Dialect, bool, list[bytes], Command]] = [
    # ---- RFC 7, MDP/Client v0.1
    ("rfc7-client-REQUEST", MDP01, False,
     [b"", b"MDPC01", b"echo", b"hello"],
     ClientRequest(b"echo", (b"hello",))),
    ("rfc7-client-REQUEST-multiframe-body", MDP01, False,
     [b"", b"MDPC01", b"echo", b"a", b"", b"c"],
     ClientRequest(b"echo", (b"a", b"", b"c"))),
    ("rfc7-client-REPLY", MDP01, True,
     [b"", b"MDPC01", b"echo", b"hello"],
     ClientReply(b"echo", (b"hello",))),
    # ---- RFC 7, MDP/Worker v0.1
    ("rfc7-worker-READY", MDP01, False,
     [b"", b"MDPW01", b"\x01", b"echo"],
     Ready(b"echo")),
    ("rfc7-worker-REQUEST", MDP01, True,
     [b"", b"MDPW01", b"\x02", b"\x00k\x8bEg", b"", b"hello", b"world"],
     WorkerRequest(b"\x00k\x8bEg", (b"hello", b"world"))),
    ("rfc7-worker-REPLY", MDP01, False,
     [b"", b"MDPW01", b"\x03", b"\x00k\x8bEg", b"", b"hi"],
     WorkerReply(b"\x00k\x8bEg", (b"hi",), final=True)),
    ("rfc7-worker-HEARTBEAT", MDP01, False,
     [b"", b"MDPW01", b"\x04"],
     Heartbeat()),
    ("rfc7-worker-DISCONNECT", MDP01, True,
     [b"", b"MDPW01", b"\x05"],
     Disconnect()),
    # ---- RFC 18, MDP/Client v0.2
    ("rfc18-client-REQUEST", MDP02, False,
     [b"MDPC02", b"\x01", b"echo", b"hello"],
     ClientRequest(b"echo", (b"hello",))),
    ("rfc18-client-PARTIAL", MDP02, True,
     [b"MDPC02", b"\x02", b"echo", b"part", b"2"],
     ClientReply(b"echo", (b"part", b"2"), final=False)),
    ("rfc18-client-FINAL", MDP02, True,
     [b"MDPC02", b"\x03", b"echo", b"done"],
     ClientReply(b"echo", (b"done",), final=True)),
    # ---- RFC 18, MDP/Worker v0.2
    ("rfc18-worker-READY", MDP02, False,
     [b"MDPW02", b"\x01", b"echo"],
     Ready(b"echo")),
    ("rfc18-worker-REQUEST", MDP02, True,
     [b"MDPW02", b"\x02", b"client-7", b"", b"hello"],
     WorkerRequest(b"client-7", (b"hello",))),
    ("rfc18-worker-PARTIAL", MDP02, False,
     [b"MDPW02", b"\x03", b"client-7", b"", b"part"],
     WorkerReply(b"client-7", (b"part",), final=False)),
    ("rfc18-worker-FINAL", MDP02, False,
     [b"MDPW02", b"\x04", b"client-7", b"", b"done", b""],
     WorkerReply(b"client-7", (b"done", b""), final=True)),
    ("rfc18-worker-HEARTBEAT", MDP02, True,
     [b"MDPW02", b"\x05"],
     Heartbeat()),
    ("rfc18-worker-DISCONNECT", MDP02, False,
     [b"MDPW02", b"\x06"],
     Disconnect()),
    # ---- majortomo 0.2.0 (client.py Client.send, broker.py _send_to_client,
    # worker.py Worker._send, broker.py _send_to_worker)
    ("majortomo-client-REQUEST", MAJORTOMO, False,
     [b"", b"MDPC02", b"\x02", b"echo", b"hello"],
     ClientRequest(b"echo", (b"hello",))),
    ("majortomo-client-PARTIAL", MAJORTOMO, True,
     [b"", b"MDPC02", b"\x03", b"part"],
     ClientReply(None, (b"part",), final=False)),
    ("majortomo-client-FINAL", MAJORTOMO, True,
     [b"", b"MDPC02", b"\x04", b"done", b"x"],
     ClientReply(None, (b"done", b"x"), final=True)),
    ("majortomo-worker-READY", MAJORTOMO, False,
     [b"", b"MDPW02", b"\x01", b"echo"],
     Ready(b"echo")),
    ("majortomo-worker-REQUEST", MAJORTOMO, True,
     [b"", b"MDPW02", b"\x02", b"client-7", b"", b"hello"],
     WorkerRequest(b"client-7", (b"hello",))),
    ("majortomo-worker-PARTIAL", MAJORTOMO, False,
     [b"", b"MDPW02", b"\x03", b"client-7", b"", b"part"],
     WorkerReply(b"client-7", (b"part",), final=False)),
    ("majortomo-worker-FINAL", MAJORTOMO, False,
     [b"", b"MDPW02", b"\x04", b"client-7", b"", b"done"],
     WorkerReply(b"client-7", (b"done",), final=True)),
    ("majortomo-worker-HEARTBEAT", MAJORTOMO, False,
     [b"", b"MDPW02", b"\x05"],
     Heartbeat()),
    ("majortomo-worker-DISCONNECT", MAJORTOMO, True,
     [b"", b"MDPW02", b"\x06"],
     Disconnect()),
]

_CASE_IDS = [case[0] for case in RFC_CASES]


def _assert_plain_bytes(command: Command) -> None:
    """Every bytes field of ``command`` is exactly ``bytes``; bodies are tuples of bytes."""
    for field in dataclasses.fields(command):
        value = getattr(command, field.name)
        if field.name == "body":
            assert type(value) is tuple
            assert all(type(frame) is bytes for frame in value)
        elif field.name in ("service", "client") and value is not None:
            assert type(value) is bytes


# ------------------------------------------------------------ RFC frames


@pytest.mark.parametrize(("dialect", "from_broker", "frames", "command"),
                         [case[1:] for case in RFC_CASES], ids=_CASE_IDS)
def test_decode_reads_every_command_as_the_rfc_writes_it(
    dialect: Dialect, from_broker: bool, frames: list[bytes], command: Command
) -> None:
    assert decode(frames, from_broker=from_broker) == (dialect, command)


@pytest.mark.parametrize(("dialect", "frames", "command"),
                         [(case[1], case[3], case[4]) for case in RFC_CASES], ids=_CASE_IDS)
def test_encode_writes_every_command_as_the_rfc_writes_it(
    dialect: Dialect, frames: list[bytes], command: Command
) -> None:
    out = encode(command, dialect)
    assert out == frames
    assert type(out) is list
    assert all(type(frame) is bytes for frame in out)


@pytest.mark.parametrize(("dialect", "frames", "command"),
                         [(case[1], case[3], case[4]) for case in RFC_CASES
                          if b"MDPW0" in case[3][0] + case[3][1]],
                         ids=[case[0] for case in RFC_CASES
                              if b"MDPW0" in case[3][0] + case[3][1]])
def test_worker_commands_decode_the_same_in_either_direction(
    dialect: Dialect, frames: list[bytes], command: Command
) -> None:
    # Worker commands are numbered uniquely, so a command sent the wrong way
    # decodes and the state machine judges it "valid but unexpected" (RFC 7).
    assert decode(frames, from_broker=False) == (dialect, command)
    assert decode(frames, from_broker=True) == (dialect, command)


def test_mdp01_client_frames_are_a_request_to_the_broker_and_a_reply_from_it() -> None:
    frames = [b"", b"MDPC01", b"echo", b"x"]
    assert decode(frames) == (MDP01, ClientRequest(b"echo", (b"x",)))
    assert decode(frames, from_broker=True) == (MDP01, ClientReply(b"echo", (b"x",)))


@pytest.mark.parametrize("from_broker", [False, True])
def test_mdp02_and_majortomo_client_commands_do_not_depend_on_direction(
    from_broker: bool,
) -> None:
    assert decode([b"MDPC02", b"\x01", b"s", b"x"], from_broker=from_broker) == (
        MDP02, ClientRequest(b"s", (b"x",)))
    assert decode([b"MDPC02", b"\x03", b"s", b"x"], from_broker=from_broker) == (
        MDP02, ClientReply(b"s", (b"x",)))
    assert decode([b"", b"MDPC02", b"\x02", b"s", b"x"], from_broker=from_broker) == (
        MAJORTOMO, ClientRequest(b"s", (b"x",)))
    assert decode([b"", b"MDPC02", b"\x04", b"x"], from_broker=from_broker) == (
        MAJORTOMO, ClientReply(None, (b"x",)))


def test_a_single_empty_frame_is_a_valid_body() -> None:
    assert decode([b"", b"MDPC01", b"echo", b""]) == (MDP01, ClientRequest(b"echo", (b"",)))
    assert decode([b"MDPW02", b"\x04", b"c", b"", b""]) == (
        MDP02, WorkerReply(b"c", (b"",)))
    assert encode(ClientReply(b"echo", (b"",)), MDP02) == [b"MDPC02", b"\x03", b"echo", b""]


def test_majortomo_replies_carry_no_service_frame_even_if_the_command_names_one() -> None:
    assert encode(ClientReply(b"echo", (b"x",)), MAJORTOMO) == [b"", b"MDPC02", b"\x04", b"x"]
    assert encode(ClientReply(b"echo", (b"x",), final=False), MAJORTOMO) == [
        b"", b"MDPC02", b"\x03", b"x"]


def test_header_frames_are_the_rfc_literals() -> None:
    # RFC 7 and 18 headers: six ASCII bytes each, and the command frames one byte.
    for case in RFC_CASES:
        frames = case[3]
        header = frames[1] if frames[0] == b"" else frames[0]
        assert header in (b"MDPC01", b"MDPW01", b"MDPC02", b"MDPW02")
        assert len(header) == 6


def test_commands_are_frozen_hashable_and_default_to_final() -> None:
    assert ClientReply(b"s", (b"x",)).final is True
    assert WorkerReply(b"c", (b"x",)).final is True
    assert Heartbeat() == Heartbeat()
    assert Disconnect() == Disconnect()
    assert Heartbeat() != Disconnect()
    assert len({Ready(b"a"), Ready(b"a"), Ready(b"b")}) == 2
    ready = Ready(b"a")
    with pytest.raises(dataclasses.FrozenInstanceError):
        ready.service = b"b"  # type: ignore[misc]
    for case in RFC_CASES:
        command = case[4]
        assert not hasattr(command, "__dict__"), type(command)  # slots


# ------------------------------------------------------------ bytes-likes


@pytest.mark.parametrize("kind", [bytearray, memoryview])
@pytest.mark.parametrize(("dialect", "from_broker", "frames", "command"),
                         [case[1:] for case in RFC_CASES], ids=_CASE_IDS)
def test_decode_accepts_bytes_likes_and_returns_plain_bytes(
    kind: type, dialect: Dialect, from_broker: bool, frames: list[bytes], command: Command
) -> None:
    got_dialect, got = decode([kind(f) for f in frames], from_broker=from_broker)
    assert (got_dialect, got) == (dialect, command)
    _assert_plain_bytes(got)
    hash(got)  # a memoryview or bytearray inside would make it unhashable


def test_decode_accepts_a_tuple_of_frames() -> None:
    assert decode((b"MDPW02", b"\x05")) == (MDP02, Heartbeat())


def test_decode_copies_frames_out_of_memoryviews_of_a_larger_buffer() -> None:
    buffer = bytearray(b"MDPW02\x01echo")
    frames = [memoryview(buffer)[:6], memoryview(buffer)[6:7], memoryview(buffer)[7:]]
    dialect, command = decode(frames)
    buffer[7:] = b"XXXX"  # the caller reuses its buffer
    assert (dialect, command) == (MDP02, Ready(b"echo"))
    _assert_plain_bytes(command)


# ------------------------------------------------------------ malformed

# (frames, from_broker, exact reason)
MALFORMED: list[tuple[list[bytes], bool, str]] = [
    # envelope
    ([], False, "empty message"),
    ([], True, "empty message"),
    ([b""], False, "empty frame without a protocol header"),
    ([b"MDPC03", b"\x01", b"s", b"x"], False, "unknown protocol header b'MDPC03'"),
    ([b"", b"MDPX01", b"s", b"x"], False, "unknown protocol header b'MDPX01'"),
    ([b"", b"", b"MDPC01", b"s", b"x"], False, "unknown protocol header b''"),
    ([b"mdpc02", b"\x01", b"s", b"x"], False, "unknown protocol header b'mdpc02'"),
    # an MDP/0.1 command without its leading empty frame
    ([b"MDPC01", b"s", b"x"], False, "unknown protocol header b'MDPC01'"),
    ([b"MDPW01", b"\x04"], False, "unknown protocol header b'MDPW01'"),
    # the reason quotes at most 16 bytes of a garbage header
    ([b"A" * 100], False, "unknown protocol header b'AAAAAAAAAAAAAAAA'"),
    # MDPC01
    ([b"", b"MDPC01"], False, "MDPC01 REQUEST has no service frame"),
    ([b"", b"MDPC01"], True, "MDPC01 REPLY has no service frame"),
    ([b"", b"MDPC01", b"", b"x"], False, "MDPC01 REQUEST has an empty service name"),
    ([b"", b"MDPC01", b"", b"x"], True, "MDPC01 REPLY has an empty service name"),
    ([b"", b"MDPC01", b"echo"], False, "MDPC01 REQUEST has no body frame"),
    ([b"", b"MDPC01", b"echo"], True, "MDPC01 REPLY has no body frame"),
    # MDPC02 (RFC 18)
    ([b"MDPC02"], False, "MDPC02 message has no command frame"),
    ([b"MDPC02", b"\x04", b"s", b"x"], False, "unknown MDPC02 command b'\\x04'"),
    ([b"MDPC02", b"\x00", b"s", b"x"], True, "unknown MDPC02 command b'\\x00'"),
    ([b"MDPC02", b"", b"s", b"x"], False, "unknown MDPC02 command b''"),
    ([b"MDPC02", b"\x01\x00", b"s", b"x"], False, "unknown MDPC02 command b'\\x01\\x00'"),
    ([b"MDPC02", b"REQUEST", b"s", b"x"], False, "unknown MDPC02 command b'REQUEST'"),
    # the reason quotes at most 8 bytes of a garbage command
    ([b"MDPC02", b"0123456789", b"s", b"x"], False, "unknown MDPC02 command b'01234567'"),
    ([b"MDPC02", b"\x01"], False, "MDPC02 REQUEST has no service frame"),
    ([b"MDPC02", b"\x01", b"", b"x"], False, "MDPC02 REQUEST has an empty service name"),
    ([b"MDPC02", b"\x01", b"echo"], False, "MDPC02 REQUEST has no body frame"),
    ([b"MDPC02", b"\x02"], True, "MDPC02 PARTIAL has no service frame"),
    ([b"MDPC02", b"\x02", b"", b"x"], True, "MDPC02 PARTIAL has an empty service name"),
    ([b"MDPC02", b"\x02", b"echo"], True, "MDPC02 PARTIAL has no body frame"),
    ([b"MDPC02", b"\x03"], True, "MDPC02 FINAL has no service frame"),
    ([b"MDPC02", b"\x03", b"", b"x"], True, "MDPC02 FINAL has an empty service name"),
    ([b"MDPC02", b"\x03", b"echo"], True, "MDPC02 FINAL has no body frame"),
    # majortomo client (an RFC 18 REQUEST code inside majortomo's envelope is unknown)
    ([b"", b"MDPC02"], False, "MDPC02 message has no command frame"),
    ([b"", b"MDPC02", b"\x01", b"s", b"x"], False, "unknown MDPC02 command b'\\x01'"),
    ([b"", b"MDPC02", b"\x05", b"x"], True, "unknown MDPC02 command b'\\x05'"),
    ([b"", b"MDPC02", b"\x02"], False, "MDPC02 REQUEST has no service frame"),
    ([b"", b"MDPC02", b"\x02", b"", b"x"], False, "MDPC02 REQUEST has an empty service name"),
    ([b"", b"MDPC02", b"\x02", b"echo"], False, "MDPC02 REQUEST has no body frame"),
    ([b"", b"MDPC02", b"\x03"], True, "MDPC02 PARTIAL has no body frame"),
    ([b"", b"MDPC02", b"\x04"], True, "MDPC02 FINAL has no body frame"),
    # MDPW01 (RFC 7)
    ([b"", b"MDPW01"], False, "MDPW01 message has no command frame"),
    ([b"", b"MDPW01", b"\x06"], False, "unknown MDPW01 command b'\\x06'"),
    ([b"", b"MDPW01", b"\x00"], False, "unknown MDPW01 command b'\\x00'"),
    ([b"", b"MDPW01", b""], False, "unknown MDPW01 command b''"),
    ([b"", b"MDPW01", b"\x01\x01", b"echo"], False, "unknown MDPW01 command b'\\x01\\x01'"),
    ([b"", b"MDPW01", b"\x01"], False,
     "MDPW01 READY needs exactly one service frame, got 0 frames"),
    ([b"", b"MDPW01", b"\x01", b"echo", b"extra"], False,
     "MDPW01 READY needs exactly one service frame, got 2 frames"),
    ([b"", b"MDPW01", b"\x01", b""], False, "MDPW01 READY has an empty service name"),
    ([b"", b"MDPW01", b"\x02"], True,
     "MDPW01 REQUEST needs a client address and an empty delimiter"),
    ([b"", b"MDPW01", b"\x02", b"c"], True,
     "MDPW01 REQUEST needs a client address and an empty delimiter"),
    ([b"", b"MDPW01", b"\x02", b"", b"", b"x"], True, "MDPW01 REQUEST has an empty client address"),
    ([b"", b"MDPW01", b"\x02", b"c", b"d", b"x"], True,
     "MDPW01 REQUEST client address is not followed by an empty frame"),
    ([b"", b"MDPW01", b"\x02", b"c", b""], True, "MDPW01 REQUEST has no body frame"),
    ([b"", b"MDPW01", b"\x03", b"c"], False,
     "MDPW01 REPLY needs a client address and an empty delimiter"),
    ([b"", b"MDPW01", b"\x03", b"", b"", b"x"], False, "MDPW01 REPLY has an empty client address"),
    # two client address frames (RFC 7: "precisely one client address frame")
    ([b"", b"MDPW01", b"\x03", b"c1", b"c2", b"", b"x"], False,
     "MDPW01 REPLY client address is not followed by an empty frame"),
    ([b"", b"MDPW01", b"\x03", b"c", b""], False, "MDPW01 REPLY has no body frame"),
    ([b"", b"MDPW01", b"\x04", b"x"], False, "MDPW01 HEARTBEAT takes no frames, got 1"),
    ([b"", b"MDPW01", b"\x05", b"x", b"y"], False, "MDPW01 DISCONNECT takes no frames, got 2"),
    # MDPW02 (RFC 18)
    ([b"MDPW02"], False, "MDPW02 message has no command frame"),
    ([b"MDPW02", b"\x07"], False, "unknown MDPW02 command b'\\x07'"),
    ([b"MDPW02", b"\x00"], False, "unknown MDPW02 command b'\\x00'"),
    ([b"MDPW02", b""], False, "unknown MDPW02 command b''"),
    ([b"MDPW02", b"\x05\x00"], False, "unknown MDPW02 command b'\\x05\\x00'"),
    ([b"MDPW02", b"\x01"], False, "MDPW02 READY needs exactly one service frame, got 0 frames"),
    ([b"MDPW02", b"\x01", b"a", b"b"], False,
     "MDPW02 READY needs exactly one service frame, got 2 frames"),
    ([b"MDPW02", b"\x01", b""], False, "MDPW02 READY has an empty service name"),
    ([b"MDPW02", b"\x02", b"c"], True,
     "MDPW02 REQUEST needs a client address and an empty delimiter"),
    ([b"MDPW02", b"\x02", b"c", b"x", b"y"], True,
     "MDPW02 REQUEST client address is not followed by an empty frame"),
    ([b"MDPW02", b"\x02", b"c", b""], True, "MDPW02 REQUEST has no body frame"),
    ([b"MDPW02", b"\x03"], False, "MDPW02 PARTIAL needs a client address and an empty delimiter"),
    ([b"MDPW02", b"\x03", b"", b"", b"x"], False, "MDPW02 PARTIAL has an empty client address"),
    ([b"MDPW02", b"\x03", b"c", b"\x00", b"x"], False,
     "MDPW02 PARTIAL client address is not followed by an empty frame"),
    ([b"MDPW02", b"\x03", b"c", b""], False, "MDPW02 PARTIAL has no body frame"),
    ([b"MDPW02", b"\x04", b"c"], False,
     "MDPW02 FINAL needs a client address and an empty delimiter"),
    ([b"MDPW02", b"\x04", b"", b"", b"x"], False, "MDPW02 FINAL has an empty client address"),
    ([b"MDPW02", b"\x04", b"c", b""], False, "MDPW02 FINAL has no body frame"),
    ([b"MDPW02", b"\x05", b""], False, "MDPW02 HEARTBEAT takes no frames, got 1"),
    ([b"MDPW02", b"\x06", b"x"], False, "MDPW02 DISCONNECT takes no frames, got 1"),
    # majortomo worker (RFC 18 worker commands after an empty frame)
    ([b"", b"MDPW02"], False, "MDPW02 message has no command frame"),
    ([b"", b"MDPW02", b"\x07"], False, "unknown MDPW02 command b'\\x07'"),
    ([b"", b"MDPW02", b"\x01"], False,
     "MDPW02 READY needs exactly one service frame, got 0 frames"),
    ([b"", b"MDPW02", b"\x04", b"c", b""], False, "MDPW02 FINAL has no body frame"),
    ([b"", b"MDPW02", b"\x05", b"x"], False, "MDPW02 HEARTBEAT takes no frames, got 1"),
]


@pytest.mark.parametrize(("frames", "from_broker", "reason"), MALFORMED,
                         ids=[m[2] for m in MALFORMED])
def test_decode_rejects_malformed_messages_with_a_precise_reason(
    frames: list[bytes], from_broker: bool, reason: str
) -> None:
    with pytest.raises(MalformedMessage) as info:
        decode(frames, from_broker=from_broker)
    assert info.value.reason == reason
    assert str(info.value) == reason


@pytest.mark.parametrize(("frames", "from_broker", "reason"), MALFORMED,
                         ids=[m[2] for m in MALFORMED])
def test_decode_gives_the_same_reason_for_bytes_likes(
    frames: list[bytes], from_broker: bool, reason: str
) -> None:
    with pytest.raises(MalformedMessage) as info:
        decode([memoryview(f) for f in frames], from_broker=from_broker)
    assert info.value.reason == reason


def test_malformed_message_is_a_value_error_and_an_mdp_error() -> None:
    from mdp_core import MdpError

    error = MalformedMessage("x")
    assert isinstance(error, ValueError)
    assert isinstance(error, MdpError)
    assert error.reason == "x"


# ------------------------------------------------------------ encode errors

ENCODE_ERRORS: list[tuple[Command, Dialect, str]] = [
    (ClientReply(b"s", (b"x",), final=False), MDP01, "MDP/0.1 has no PARTIAL reply"),
    (WorkerReply(b"c", (b"x",), final=False), MDP01, "MDP/0.1 has no PARTIAL reply"),
    (ClientReply(None, (b"x",)), MDP01, "MDP/0.1 replies carry a service name"),
    (ClientReply(None, (b"x",), final=False), MDP02, "MDP/0.2 replies carry a service name"),
    (ClientReply(None, (b"x",)), MDP02, "MDP/0.2 replies carry a service name"),
    *[(ClientRequest(b"s", ()), d, "MDP bodies need at least one frame") for d in Dialect],
    *[(ClientReply(b"s", ()), d, "MDP bodies need at least one frame") for d in Dialect],
    *[(WorkerRequest(b"c", ()), d, "MDP bodies need at least one frame") for d in Dialect],
    *[(WorkerReply(b"c", ()), d, "MDP bodies need at least one frame") for d in Dialect],
    (WorkerReply(b"c", (), final=False), MDP02, "MDP bodies need at least one frame"),
    *[(ClientRequest(b"", (b"x",)), d, "empty service") for d in Dialect],
    *[(Ready(b""), d, "empty service") for d in Dialect],
    (ClientReply(b"", (b"x",)), MDP01, "empty service"),
    (ClientReply(b"", (b"x",), final=False), MDP02, "empty service"),
    *[(WorkerRequest(b"", (b"x",)), d, "empty client address") for d in Dialect],
    *[(WorkerReply(b"", (b"x",)), d, "empty client address") for d in Dialect],
    (WorkerReply(b"", (b"x",), final=False), MAJORTOMO, "empty client address"),
]


@pytest.mark.parametrize(("command", "dialect", "message"), ENCODE_ERRORS,
                         ids=[f"{c!r}-{d.name}" for c, d, _ in ENCODE_ERRORS])
def test_encode_refuses_commands_the_dialect_cannot_express(
    command: Command, dialect: Dialect, message: str
) -> None:
    with pytest.raises(ValueError) as info:
        encode(command, dialect)
    assert str(info.value) == message
    # Our own misuse, not a peer's bytes: never confused with MalformedMessage.
    assert not isinstance(info.value, MalformedMessage)


# ------------------------------------------------------------ majortomo itself
#
# Run majortomo 0.2.0's own code against ours: their parsers must accept
# what we encode, and what their code sends (captured from its real
# send_multipart calls) must decode with ours.

_P = majortomo.protocol


class _RecordingSocket:
    """Stands in for a zmq socket: records every send_multipart."""

    def __init__(self) -> None:
        self.sent: list[list[bytes]] = []

    def send_multipart(self, frames: Any) -> None:
        self.sent.append([bytes(f) for f in frames])


def _majortomo_broker() -> tuple[Any, _RecordingSocket]:
    broker = majortomo.broker.Broker(zmq_context=object())
    sock = _RecordingSocket()
    broker._socket = sock
    return broker, sock


def test_majortomo_broker_accepts_our_majortomo_client_and_worker_frames() -> None:
    parse = majortomo.broker.Broker._parse_incoming_message
    cases: list[tuple[Command, bytes, bytes, list[bytes]]] = [
        (ClientRequest(b"echo", (b"a", b"b")), _P.CLIENT_HEADER, _P.REQUEST, [b"echo", b"a", b"b"]),
        (Ready(b"echo"), _P.WORKER_HEADER, _P.READY, [b"echo"]),
        (Heartbeat(), _P.WORKER_HEADER, _P.HEARTBEAT, []),
        (Disconnect(), _P.WORKER_HEADER, _P.DISCONNECT, []),
        (WorkerReply(b"C1", (b"r",), final=False), _P.WORKER_HEADER, _P.PARTIAL,
         [b"C1", b"", b"r"]),
        (WorkerReply(b"C1", (b"r", b"s")), _P.WORKER_HEADER, _P.FINAL, [b"C1", b"", b"r", b"s"]),
    ]
    for command, header, code, rest in cases:
        message = parse([b"peer", *encode(command, MAJORTOMO)])
        assert (message.client, message.header, message.command, message.message) == (
            b"peer", header, code, rest), command


def test_majortomo_client_accepts_our_majortomo_replies() -> None:
    parse = majortomo.client.Client._parse_message
    assert parse(encode(ClientReply(None, (b"p",), final=False), MAJORTOMO)) == (
        _P.PARTIAL, [b"p"])
    assert parse(encode(ClientReply(None, (b"f", b"g")), MAJORTOMO)) == (_P.FINAL, [b"f", b"g"])


def test_majortomo_worker_accepts_our_majortomo_broker_commands() -> None:
    verify = majortomo.worker.Worker._verify_message
    assert verify(encode(WorkerRequest(b"C1", (b"q",)), MAJORTOMO)) == (
        _P.REQUEST, [b"C1", b"", b"q"])
    assert verify(encode(Heartbeat(), MAJORTOMO)) == (_P.HEARTBEAT, [])
    assert verify(encode(Disconnect(), MAJORTOMO)) == (_P.DISCONNECT, [])


def test_majortomo_rejects_the_rfc18_frames_so_the_dialects_really_differ() -> None:
    # Guards the cross-checks above: majortomo's parsers are strict enough to
    # notice if we sent it RFC 18 frames instead of its dialect.
    with pytest.raises(majortomo.error.ProtocolError):
        majortomo.broker.Broker._parse_incoming_message(
            [b"peer", *encode(ClientRequest(b"echo", (b"a",)), MDP02)])
    with pytest.raises(majortomo.error.ProtocolError):
        majortomo.client.Client._parse_message(encode(ClientReply(b"echo", (b"a",)), MDP02))
    with pytest.raises(majortomo.error.ProtocolError):
        majortomo.worker.Worker._verify_message(encode(Heartbeat(), MDP02))


def test_majortomo_client_and_worker_send_frames_we_decode() -> None:
    client = majortomo.client.Client("tcp://127.0.0.1:1", zmq_context=object())
    client._socket = client_sock = _RecordingSocket()
    client.send(b"echo", b"hello", b"world")
    assert [decode(m) for m in client_sock.sent] == [
        (MAJORTOMO, ClientRequest(b"echo", (b"hello", b"world")))]

    worker = majortomo.worker.Worker("tcp://127.0.0.1:1", b"echo", zmq_context=object())
    worker._socket = worker_sock = _RecordingSocket()
    worker._send_ready()
    worker._send(_P.HEARTBEAT)
    worker.send_reply_partial(b"C1", [b"p"])
    worker.send_reply_final(b"C1", [b"f", b"g"])
    worker._send_disconnect()
    assert [decode(m) for m in worker_sock.sent] == [
        (MAJORTOMO, Ready(b"echo")),
        (MAJORTOMO, Heartbeat()),
        (MAJORTOMO, WorkerReply(b"C1", (b"p",), final=False)),
        (MAJORTOMO, WorkerReply(b"C1", (b"f", b"g"), final=True)),
        (MAJORTOMO, Disconnect()),
    ]


def test_majortomo_broker_round_trip_with_our_peers_decodes_at_every_hop() -> None:
    # Our worker and client (majortomo dialect) talk through majortomo's own
    # broker logic; every frame it sends back decodes with ours.
    broker, sock = _majortomo_broker()

    def feed(peer: bytes, command: Command) -> None:
        broker.handle_message(
            majortomo.broker.Broker._parse_incoming_message([peer, *encode(command, MAJORTOMO)]))

    feed(b"W", Ready(b"echo"))
    feed(b"C", ClientRequest(b"echo", (b"ping", b"2")))
    assert len(sock.sent) == 1
    peer, *frames = sock.sent.pop()
    assert peer == b"W"
    assert decode(frames, from_broker=True) == (
        MAJORTOMO, WorkerRequest(b"C", (b"ping", b"2")))

    feed(b"W", WorkerReply(b"C", (b"pa",), final=False))
    feed(b"W", WorkerReply(b"C", (b"fi",)))
    replies = [(peer, decode(frames, from_broker=True)) for peer, *frames in sock.sent]
    assert replies == [
        (b"C", (MAJORTOMO, ClientReply(None, (b"pa",), final=False))),
        (b"C", (MAJORTOMO, ClientReply(None, (b"fi",), final=True))),
    ]
    sock.sent.clear()
    broker._services.get_worker(b"W").next_heartbeat = 0.0  # make a heartbeat due
    broker._send_heartbeat()
    broker._send_to_worker(b"W", _P.DISCONNECT)
    assert [(p, decode(f, from_broker=True)) for p, *f in sock.sent] == [
        (b"W", (MAJORTOMO, Heartbeat())), (b"W", (MAJORTOMO, Disconnect()))]


# ------------------------------------------------------------ hypothesis

_MEANINGFUL = [b"", b"MDPC01", b"MDPW01", b"MDPC02", b"MDPW02",
               b"\x00", b"\x01", b"\x02", b"\x03", b"\x04", b"\x05", b"\x06", b"\x07"]
_frame = st.one_of(st.sampled_from(_MEANINGFUL), st.binary(max_size=8))
_frames = st.lists(_frame, max_size=8)


@settings(max_examples=400, deadline=None)
@given(frames=_frames, from_broker=st.booleans(),
       kind=st.sampled_from([bytes, bytearray, memoryview]))
def test_decode_raises_only_malformed_message_and_reencodes_what_it_accepts(
    frames: list[bytes], from_broker: bool, kind: type
) -> None:
    try:
        dialect, command = decode([kind(f) for f in frames], from_broker=from_broker)
    except MalformedMessage as error:
        assert error.reason
        return
    _assert_plain_bytes(command)
    # Anything decode accepts, encode reproduces byte for byte.
    assert encode(command, dialect) == frames


_name = st.binary(min_size=1, max_size=8)
_body = st.lists(st.binary(max_size=8), min_size=1, max_size=4).map(tuple)


def _commands(dialect: Dialect) -> st.SearchStrategy[tuple[Command, bool]]:
    """Commands expressible in ``dialect``, each with its direction (from_broker)."""
    finals = st.just(True) if dialect is Dialect.MDP01 else st.booleans()
    reply_service = st.none() if dialect is Dialect.MAJORTOMO else _name
    return st.one_of(
        st.builds(ClientRequest, _name, _body).map(lambda c: (c, False)),
        st.builds(ClientReply, reply_service, _body, finals).map(lambda c: (c, True)),
        st.builds(Ready, _name).map(lambda c: (c, False)),
        st.builds(WorkerRequest, _name, _body).map(lambda c: (c, True)),
        st.builds(WorkerReply, _name, _body, finals).map(lambda c: (c, False)),
        st.sampled_from([Heartbeat(), Disconnect()]).flatmap(
            lambda c: st.tuples(st.just(c), st.booleans())),
    )


@settings(max_examples=300, deadline=None)
@given(data=st.data(), dialect=st.sampled_from(list(Dialect)))
def test_encode_then_decode_round_trips_in_every_dialect(
    data: st.DataObject, dialect: Dialect
) -> None:
    command, from_broker = data.draw(_commands(dialect))
    frames = encode(command, dialect)
    assert decode(frames, from_broker=from_broker) == (dialect, command)
