"""Who a peer is and what it may do, as functions of the Broker (see ``_broker.py``).

The driver passes each message's authenticated identity (with CURVE, the
name the ZAP handler gave the peer's key) to ``Broker.receive``. Two rules
follow from it:

* **Binding.** A worker session, and a client's pending requests, keep
  the identity they started with. A message from their routing id under
  another identity is dropped with a :class:`~mdp_core.ProtocolError`;
  the session, the requests and their replies are untouched. (libzmq
  already ignores a second connection that claims a live routing id; this
  also covers the moment when a routing id is claimed anew before the
  broker has heard that its first connection closed.)
* **Policy.** ``BrokerConfig.policy`` decides who may register for a
  service (READY; refused: DISCONNECT and
  :class:`~mdp_core.WorkerRefused`) and who may call it (REQUEST; refused:
  :class:`~mdp_core.RequestRefused` whose reason starts with ``"not
  allowed"``). The handlers in ``_broker.py`` ask it.

Messages without an identity on a broker without a policy are not
checked at all: the data path stays as it was. Checked ones then take the
same path, fast paths included.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._broker_parts import _disconnect_frames, _shown
from ._codec import Dialect
from ._events import ProtocolError, RequestRefused, WorkerRefused

if TYPE_CHECKING:
    from ._broker import Broker

__all__ = ["bound", "refuse_caller", "refuse_worker"]


def _who(identity: str | None) -> str:
    return "(unauthenticated)" if identity is None else repr(identity)


def bound(b: Broker, peer: bytes, identity: str | None) -> bool:
    """Whether a message from ``peer`` under ``identity`` may be handled:
    False (with a ProtocolError) if the routing id's worker session or
    pending requests belong to another identity. Raises TypeError (the
    driver's mistake, not the peer's) for an identity that is not a str."""
    if identity is not None:
        if type(identity) is not str:
            raise TypeError(f"identity must be a str or None, not {type(identity).__name__}")
        b._guarded = True  # from now on every message is checked, None included
    if type(peer) is not bytes:
        peer = bytes(peer)
    w = b._workers.get(peer)
    if w is not None and w.identity != identity:
        b._events.append(ProtocolError(
            peer, f"identity {_who(identity)} is not {_who(w.identity)}, whose worker "
            "session this routing id holds; dropped"))
        return False
    requests = b._clients.get(peer)
    if requests is not None:
        owner = next(iter(requests.values())).identity
        if owner != identity:
            b._events.append(ProtocolError(
                peer, f"identity {_who(identity)} is not {_who(owner)}, whose requests this "
                "routing id holds; dropped"))
            return False
    return True


def refuse_worker(
    b: Broker, peer: bytes, dialect: Dialect, service: bytes, identity: str | None
) -> None:
    """A READY the policy does not allow: DISCONNECT, no session."""
    b._out.append((peer, _disconnect_frames(dialect)))
    b._events.append(WorkerRefused(
        peer, service, f"not allowed: identity {_who(identity)} may not serve "
        f"{_shown(service)}; sent DISCONNECT"))


def refuse_caller(b: Broker, peer: bytes, service: bytes, identity: str | None) -> None:
    """A REQUEST the policy does not allow: dropped, with an event."""
    b._events.append(RequestRefused(
        peer, service, f"not allowed: identity {_who(identity)} may not call "
        f"{_shown(service)}"))
