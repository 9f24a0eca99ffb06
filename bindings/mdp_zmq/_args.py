"""Type checks of the drivers' public arguments, raised at the call.

Deliberately small: the cores are gaining the same checks; once they have
them, :func:`name_bytes` and :func:`frame_list` can go.
"""

from __future__ import annotations

from collections.abc import Iterable

from mdp_core import Dialect

__all__ = ["BytesLike", "check_dialect", "frame_list", "name_bytes", "reply_body"]

#: What the drivers accept as a frame or (with ``str``) a service name.
BytesLike = bytes | bytearray | memoryview
_BYTES_LIKE = (bytes, bytearray, memoryview)


def name_bytes(value: object, what: str) -> bytes:
    """A service name as bytes: ``str`` is UTF-8 encoded, bytes-like copied.

    Raises TypeError naming ``what`` for anything else (an int would
    otherwise become that many NUL bytes).
    """
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, _BYTES_LIKE):
        return bytes(value)
    raise TypeError(f"{what} must be str or bytes, not {type(value).__name__}")


def frame_list(frames: Iterable[object], what: str = "frame") -> list[bytes]:
    """Every item of ``frames`` as bytes; TypeError naming the index of the first
    item that is not bytes-like (``str`` included: say which encoding)."""
    out: list[bytes] = []
    for i, frame in enumerate(frames):
        if not isinstance(frame, _BYTES_LIKE):
            raise TypeError(f"{what} {i} must be bytes-like, not {type(frame).__name__}")
        out.append(bytes(frame))
    return out


def reply_body(result: object) -> list[bytes]:
    """A handler's result (one bytes-like frame or a list/tuple of them) as
    frames; TypeError for anything else. An empty list is returned as is:
    the core refuses it (``EmptyBody``)."""
    if isinstance(result, _BYTES_LIKE):
        return [bytes(result)]
    if isinstance(result, (list, tuple)):
        return frame_list(result, "reply frame")
    raise TypeError(
        f"handler returned {type(result).__name__}, not bytes or a list of bytes frames")


def check_dialect(version: object) -> Dialect:
    """``version`` if it is a :class:`mdp_core.Dialect`, else TypeError."""
    if not isinstance(version, Dialect):
        raise TypeError(
            f"version must be an mdp_core.Dialect (e.g. Dialect.MDP01), not {version!r}")
    return version
