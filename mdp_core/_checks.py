"""Checks of what the local application passes in: bodies, names, versions, numbers.

They run at the call, before any state changes, so misuse raises at once
with the argument named (a frame of the wrong type would otherwise be
turned into NUL bytes by ``bytes(123)``, or fail deep inside with
"string argument without an encoding").
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from ._codec import Dialect
from ._errors import EmptyBody

__all__ = ["BodyLike", "BytesLike", "as_body", "as_service", "check_int", "check_real",
           "check_version", "in_batch"]

BytesLike = bytes | bytearray | memoryview
"""What a frame (or, with ``str``, a service name) may be given as."""
BodyLike = BytesLike | Iterable[BytesLike]
"""A body as the application may give it: one frame, or a sequence of frames."""

_FRAME_TYPES = (bytes, bytearray, memoryview)


def as_body(body: BodyLike, argument: str = "body") -> tuple[bytes, ...]:
    """Normalise a body (one bytes-like frame or a sequence of them) to a tuple.

    Raises :class:`TypeError` naming ``argument`` (and the frame's index)
    for anything but bytes, bytearray or memoryview frames, a ``str``
    included; :class:`~mdp_core.EmptyBody` for a sequence with no frames.
    """
    if isinstance(body, _FRAME_TYPES):
        return (bytes(body),)
    if isinstance(body, str) or not isinstance(body, Iterable):
        raise TypeError(f"{argument} must be bytes-like or a sequence of bytes-like frames, "
                        f"not {type(body).__name__}")
    frames = []
    for i, frame in enumerate(body):
        if not isinstance(frame, _FRAME_TYPES):
            raise TypeError(f"{argument} frame {i} must be bytes, bytearray or memoryview, "
                            f"not {type(frame).__name__}")
        frames.append(bytes(frame))
    if not frames:
        raise EmptyBody(f"{argument}: an MDP body needs at least one frame")
    return tuple(frames)


def as_service(name: BytesLike | str, argument: str = "service") -> bytes:
    """A service name as bytes: bytes-like as is, ``str`` encoded as UTF-8.

    Raises :class:`TypeError` naming ``argument`` for any other type,
    :class:`ValueError` for an empty name.
    """
    if isinstance(name, str):
        value = name.encode()
    elif isinstance(name, _FRAME_TYPES):
        value = bytes(name)
    else:
        raise TypeError(f"{argument} must be bytes-like or str, not {type(name).__name__}")
    if not value:
        raise ValueError(f"empty {argument} name")
    return value


def check_version(version: object) -> Dialect:
    """``version`` itself if it is a :class:`~mdp_core.Dialect`; else TypeError."""
    if not isinstance(version, Dialect):
        raise TypeError(f"version must be a mdp_core.Dialect (e.g. Dialect.MDP02), "
                        f"not {type(version).__name__} {version!r}")
    return version


def check_real(value: object, argument: str) -> float:
    """``value`` if it is an int or float (not a bool); else TypeError naming ``argument``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{argument} must be a number, not {type(value).__name__}")
    return value


def check_int(value: object, argument: str) -> int:
    """``value`` if it is an int (not a bool); else TypeError naming ``argument``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{argument} must be an int, not {type(value).__name__}")
    return value


def in_batch(batch: list[list[bytes]], frames: Sequence[bytes]) -> bool:
    """Whether ``frames`` (a driver's ``send_failed`` report) is a message of ``batch``."""
    wanted = frames if isinstance(frames, list) else list(frames)
    return any(message is frames or message == wanted for message in batch)
