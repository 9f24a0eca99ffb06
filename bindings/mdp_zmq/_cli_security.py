"""The ``mdp`` command's CURVE and policy parts (docs/security.md).

``mdp keygen NAME [--dir DIR]``; the broker's ``--curve-secret FILE
--allow DIR --policy FILE``; the peers' ``--curve-secret FILE
--broker-key FILE``. Every key or policy file the command cannot use is a
usage error (:class:`~mdp_zmq.cli.CliError`, exit status 2) naming the
file, in one line.
"""

from __future__ import annotations

import argparse
import logging

import mdp_core
from mdp_core import FailureCause

from ._cli_base import CliError
from .glue import KeyFileError, Security, keygen, load_policy

__all__ = ["add_curve_flags", "cmd_keygen", "curve_hint", "policy_config", "security_config"]

log = logging.getLogger("mdp_zmq.cli")


def add_curve_flags(sp: argparse.ArgumentParser, *, broker: bool) -> None:
    """Add ``--curve-secret`` and, for the broker, ``--allow``/``--policy``;
    else ``--broker-key``."""
    sp.add_argument("--curve-secret", metavar="FILE",
                    help="CURVE: this side's secret key file (NAME.key_secret, from "
                    "'mdp keygen'; mode 600)")
    if broker:
        sp.add_argument("--allow", metavar="DIR",
                        help="CURVE: the public key files (NAME.key) of the peers let in; "
                        "each file's NAME is that peer's identity")
        sp.add_argument("--policy", metavar="FILE",
                        help="who may serve and call which service: TOML with [serve] "
                        "and [call] tables of \"pattern\" = [\"identity\", ...]")
    else:
        sp.add_argument("--broker-key", metavar="FILE",
                        help="CURVE: the broker's public key file (NAME.key)")


def policy_config(args: argparse.Namespace) -> mdp_core.Policy | None:
    """The Policy of ``--policy FILE`` (TOML), or None. Raises CliError."""
    path = getattr(args, "policy", None)
    if path is None:
        return None
    try:
        policy = load_policy(path)
    except KeyFileError as exc:
        raise CliError(f"--policy {exc}") from None
    if getattr(args, "curve_secret", None) is None:
        log.warning("--policy without --curve-secret: every peer is unauthenticated, so only "
                    "the policy's \"*\" identities apply")
    return policy


def security_config(args: argparse.Namespace) -> Security | None:
    """The CURVE keys of ``--curve-secret`` with ``--allow`` (broker) or
    ``--broker-key`` (worker, client), or None. Raises CliError naming the
    key file at fault."""
    secret = getattr(args, "curve_secret", None)
    broker = hasattr(args, "allow")
    other, flag = (args.allow, "--allow DIR") if broker else (args.broker_key,
                                                              "--broker-key FILE")
    if secret is None and other is None:
        return None
    if secret is None or other is None:
        raise CliError(f"--curve-secret FILE and {flag} go together")
    try:
        if broker:
            return Security.for_broker(secret, other)
        return Security.for_peer(secret, other)
    except KeyFileError as exc:
        raise CliError(str(exc)) from None


def cmd_keygen(args: argparse.Namespace) -> int:
    """Write a CURVE key pair: DIR/NAME.key (public) and DIR/NAME.key_secret."""
    try:
        public, secret = keygen(args.name, args.dir)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    except FileExistsError as exc:
        raise CliError(str(exc), status=1) from None
    print(f"public key {public} (give it to the broker's --allow directory, or to peers as "
          "--broker-key)")
    print(f"secret key {secret} (mode 600: keep it on this host, pass it as --curve-secret)")
    return 0


def curve_hint(args: argparse.Namespace, cause: FailureCause) -> str:
    """For a client with a key that reached no broker: what to check (a key
    refused by the broker's allow-list fails as REFUSED and says so)."""
    if cause is FailureCause.UNREACHABLE and getattr(args, "curve_secret", None):
        return " (or the CURVE handshake failed: is --broker-key the broker's public key?)"
    return ""
    if cause is FailureCause.REFUSED:
        return " (is its public key in the broker's --allow directory?)"
    if cause is FailureCause.UNREACHABLE:
        return (" (or the handshake failed: is --broker-key the broker's public key?)")
    return ""
