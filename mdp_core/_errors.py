"""Exceptions of the protocol core.

Two kinds, never confused: :class:`MalformedMessage` is about bytes a peer
sent (the state machines catch it at ``receive`` and turn it into a
:class:`~mdp_core.ProtocolError` event); :class:`LocalProtocolError` and its
subclasses are raised at once when the local application misuses a state
machine, and leave its state unchanged.
"""

from __future__ import annotations

__all__ = ["EmptyBody", "LocalProtocolError", "MalformedMessage", "MdpError"]


class MdpError(Exception):
    """Base class of every exception raised by :mod:`mdp_core`."""


class MalformedMessage(MdpError, ValueError):
    """A frame sequence is not a well-formed MDP command.

    ``reason`` says precisely what is wrong with it.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class LocalProtocolError(MdpError, RuntimeError):
    """The local application called a state machine in a way MDP forbids."""


class EmptyBody(LocalProtocolError, ValueError):
    """A request or reply body with no frames; MDP bodies need at least one.

    (A single empty frame, ``b""``, is a valid one-frame body.)
    """
