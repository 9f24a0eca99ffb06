"""Who may serve and who may call which service: the broker's authorization rule.

A :class:`Policy` maps service *patterns* to the *identities* they admit,
once for serving (a worker's READY) and once for calling (a client's
REQUEST). Identities are the names the transport authenticated (with
CURVE, the name of the peer's public key file); the core only compares
them. Patterns:

* ``payments``: that one service;
* ``payments.*``: every service whose name starts with ``payments.``
  (``payments.refund``, ``payments.eu.refund``), not ``payments`` itself;
* ``*``: every service.

An identity is admitted for a service if any pattern that matches the
service lists it, or lists ``*`` (any peer, an unauthenticated one
included). A service that no pattern covers is admitted to nobody: with
a policy, what is not granted is refused.

A check costs one dict lookup per dot in the service name plus two, so
it does not grow with the number of rules, services or peers.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from ._checks import BytesLike, as_service

__all__ = ["ANY", "Policy"]

#: As an identity: every peer. As a pattern: every service.
ANY = "*"

_Identities = frozenset[str | None]
#: Compiled: exact names, prefixes (``payments.``) and the ``*`` entry.
_Rules = tuple[dict[bytes, _Identities], dict[bytes, _Identities], _Identities]
_MMI = b"mmi."


def _compile(table: Mapping[str, Collection[str]], what: str) -> _Rules:
    """``{pattern: identities}`` as three lookups: exact names, prefixes
    (``payments.*`` kept as ``payments.``) and ``*``."""
    if not isinstance(table, Mapping):
        raise TypeError(f"Policy {what} must be a mapping of service patterns to identities, "
                        f"not {type(table).__name__}")
    exact: dict[bytes, _Identities] = {}
    prefixes: dict[bytes, _Identities] = {}
    anything: _Identities = frozenset()
    for pattern, identities in table.items():
        if not isinstance(pattern, str):
            raise TypeError(f"Policy {what}: a service pattern must be a str, not "
                            f"{type(pattern).__name__}")
        if isinstance(identities, str) or not isinstance(identities, Collection):
            raise TypeError(f"Policy {what}[{pattern!r}] must be a list of identities, not "
                            f"{type(identities).__name__}")
        for identity in identities:
            if not isinstance(identity, str) or not identity:
                raise TypeError(f"Policy {what}[{pattern!r}]: an identity must be a "
                                f"non-empty str, not {identity!r}")
        names: _Identities = frozenset(identities)
        if pattern == ANY:
            anything = names
            continue
        prefix = pattern.endswith(".*")
        name = pattern[:-2] if prefix else pattern
        if not name or "*" in name:
            raise ValueError(f"Policy {what}: bad service pattern {pattern!r} (a name, "
                             "NAME.* or *)")
        key = as_service(name) + (b"." if prefix else b"")
        if key.startswith(_MMI):
            raise ValueError(f"Policy {what}: {pattern!r}: mmi.* is answered by the "
                             "broker and always callable; it takes no rule")
        (prefixes if prefix else exact)[key] = names
    return exact, prefixes, anything


def _admits(rules: _Rules, identity: str | None, service: bytes) -> bool:
    exact, prefixes, anything = rules
    if identity in anything or ANY in anything:
        return True
    entry = exact.get(service)
    if entry is not None and (identity in entry or ANY in entry):
        return True
    if prefixes:
        end = len(service)
        while (end := service.rfind(b".", 0, end)) > 0:
            entry = prefixes.get(service[:end + 1])
            if entry is not None and (identity in entry or ANY in entry):
                return True
    return False


@dataclass(frozen=True)
class Policy:
    """Which identities may serve (``serve``) and call (``call``) which services.

    Both map a service pattern (``"payments"``, ``"payments.*"`` or
    ``"*"``, see the module docstring) to the identities it admits
    (``"*"``: every peer). What no pattern grants is refused. Give it to
    :class:`~mdp_core.BrokerConfig` (``policy=``); without one the broker
    admits everyone to everything. ``mmi.*`` takes no rule: every client
    may ask, and the answers only show what it may call.

    Raises :class:`TypeError` for a table that is not a mapping of str to
    lists of non-empty str (a bare str where a list belongs included),
    :class:`ValueError` for a malformed pattern or one in ``mmi.``.
    """

    serve: Mapping[str, Collection[str]] = field(default_factory=dict, hash=False)
    call: Mapping[str, Collection[str]] = field(default_factory=dict, hash=False)
    _serve: _Rules = field(init=False, repr=False, compare=False, hash=False)
    _call: _Rules = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_serve", _compile(self.serve, "serve"))
        object.__setattr__(self, "_call", _compile(self.call, "call"))

    def may_serve(self, identity: str | None, service: BytesLike | str) -> bool:
        """Whether ``identity`` (None: an unauthenticated peer) may register a
        worker for ``service``. Raises TypeError/ValueError for a bad name."""
        return self._may_serve(identity, as_service(service))

    def may_call(self, identity: str | None, service: BytesLike | str) -> bool:
        """Whether ``identity`` (None: an unauthenticated peer) may send
        requests to ``service``; ``mmi.*`` is always allowed. Raises
        TypeError/ValueError for a bad name."""
        return self._may_call(identity, as_service(service))

    # The broker's checks, on names it already holds as bytes.

    def _may_serve(self, identity: str | None, service: bytes) -> bool:
        return _admits(self._serve, identity, service)

    def _may_call(self, identity: str | None, service: bytes) -> bool:
        return service.startswith(_MMI) or _admits(self._call, identity, service)
