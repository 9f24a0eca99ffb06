"""CURVE keys, key files and the ZAP handler every driver shares (re-exported by ``glue``).

* :class:`Security`: the CURVE keys of one socket (ZeroMQ RFC 26): a
  broker's key pair and the public keys it lets in (each mapped to the
  identity the core is told), or a peer's key pair and the broker's
  public key. ``TransportConfig.security`` carries it; ``make_router`` and
  ``make_dealer`` apply it.
* Key files in the format of ``zmq.auth.create_certificates`` (``NAME.key``
  holds the public key, ``NAME.key_secret`` both): :func:`keygen`,
  :func:`load_secret_key`, :func:`load_public_key`, :func:`load_allowed`
  (a directory of public keys; each file's name is its key's identity).
  They raise :class:`KeyFileError` with a one-line message.
* :class:`ZapHandler`: answers libzmq's ZAP requests (RFC 27) with
  pyzmq's ``zmq.auth.Authenticator``, driven by the broker's own loop (no
  thread): a key not in the allow-list is refused at the handshake, an
  accepted one gets its name as the connection's ``User-Id``.
* :func:`load_policy`: a :class:`mdp_core.Policy` from a TOML file.

The decisions (who may serve or call what) are the core's; this module
only moves keys and names.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import logging
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq
import zmq.auth
from zmq.utils import z85

import mdp_core

__all__ = [
    "KeyFileError",
    "Refusal",
    "Security",
    "ZapHandler",
    "apply_security",
    "keygen",
    "load_allowed",
    "load_policy",
    "load_public_key",
    "load_secret_key",
]

#: Where libzmq sends ZAP requests (RFC 27): one handler per context.
ZAP_ENDPOINT = "inproc://zeromq.zap.01"
#: ZAP requests answered per call of :meth:`ZapHandler.handle_waiting`.
ZAP_BATCH = 64
_Z85_KEY = 40  # a 32-byte CURVE key in Z85


class KeyFileError(ValueError):
    """A key file (or directory) is missing, unreadable, malformed or open to
    other users; the message is one line naming the file."""


def _check_key(key: object, what: str) -> bytes:
    if isinstance(key, str):
        key = key.encode("ascii", "replace")
    if not isinstance(key, bytes) or len(key) != _Z85_KEY:
        raise ValueError(f"{what} must be a CURVE key in Z85 (40 characters)")
    try:
        z85.decode(key)
    except (ValueError, KeyError):
        raise ValueError(f"{what} is not valid Z85") from None
    return key


@dataclass(frozen=True, slots=True)
class Security:
    """The CURVE keys (Z85, 40 bytes each) of a broker's or a peer's socket.

    A broker's: its ``public_key``/``secret_key`` and ``allowed``, the
    public keys it lets in, each mapped to the identity the broker's core
    is told for that peer (``BrokerConfig.policy`` is written in those
    names). A worker's or client's: its own key pair and ``broker_key``,
    the broker's public key, which it checks during the handshake.
    Set it as ``TransportConfig(security=...)``; :meth:`for_broker` and
    :meth:`for_peer` read it from key files.

    Raises ValueError for a key that is not Z85 CURVE key, a public key
    that does not match the secret one, a broker with no allowed key, a
    peer with some, or an empty identity.
    """

    public_key: bytes
    secret_key: bytes
    broker_key: bytes | None = None
    allowed: Mapping[bytes, str] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        public = _check_key(self.public_key, "public_key")
        secret = _check_key(self.secret_key, "secret_key")
        if zmq.curve_public(secret) != public:
            raise ValueError("public_key is not the public key of secret_key")
        allowed = {_check_key(key, "an allowed key"): name
                   for key, name in dict(self.allowed).items()}
        if any(not isinstance(name, str) or not name for name in allowed.values()):
            raise ValueError("every allowed key needs a non-empty identity (str)")
        if self.broker_key is None and not allowed:
            raise ValueError("a broker's Security needs the allowed keys (none would let "
                             "nobody in)")
        if self.broker_key is not None:
            object.__setattr__(self, "broker_key", _check_key(self.broker_key, "broker_key"))
            if allowed:
                raise ValueError("allowed keys belong to a broker's Security, not a peer's "
                                 "(one with broker_key)")
        object.__setattr__(self, "public_key", public)
        object.__setattr__(self, "secret_key", secret)
        object.__setattr__(self, "allowed", allowed)

    @property
    def is_broker(self) -> bool:
        """True for a broker's keys (no ``broker_key``)."""
        return self.broker_key is None

    @classmethod
    def for_broker(cls, secret_file: str | os.PathLike[str], allow_dir: str | os.PathLike[str]
                   ) -> Security:
        """A broker's keys from its secret key file and a directory of allowed
        public keys (see :func:`load_allowed`). Raises :class:`KeyFileError`."""
        public, secret = load_secret_key(secret_file)
        return cls(public, secret, allowed=load_allowed(allow_dir))

    @classmethod
    def for_peer(cls, secret_file: str | os.PathLike[str],
                 broker_key_file: str | os.PathLike[str]) -> Security:
        """A worker's or client's keys from its secret key file and the broker's
        public key file. Raises :class:`KeyFileError`."""
        public, secret = load_secret_key(secret_file)
        return cls(public, secret, broker_key=load_public_key(broker_key_file))


def apply_security(sock: zmq.Socket[bytes], security: Security) -> None:
    """Set the CURVE options of ``sock`` (before it binds or connects)."""
    sock.setsockopt(zmq.CURVE_SECRETKEY, security.secret_key)
    sock.setsockopt(zmq.CURVE_PUBLICKEY, security.public_key)
    if security.broker_key is None:
        sock.setsockopt(zmq.CURVE_SERVER, 1)
    else:
        sock.setsockopt(zmq.CURVE_SERVERKEY, security.broker_key)


# ------------------------------------------------------------------ key files


def _read_certificate(path: Path) -> tuple[bytes, bytes | None]:
    """``(public, secret or None)`` of a key file, or KeyFileError."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise KeyFileError(f"{path}: no such key file") from None
    except OSError as exc:
        raise KeyFileError(f"{path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise KeyFileError(f"{path}: not a key file")
    try:
        public, secret = zmq.auth.load_certificate(path)
    except PermissionError:
        raise KeyFileError(f"{path}: cannot read it (permission denied)") from None
    except (OSError, ValueError, UnicodeError) as exc:
        raise KeyFileError(f"{path}: not a key file ({exc})") from None
    try:
        _check_key(public, "its public key")
        if secret is not None:
            _check_key(secret, "its secret key")
    except ValueError as exc:
        raise KeyFileError(f"{path}: {exc}") from None
    return public, secret


def load_secret_key(path: str | os.PathLike[str]) -> tuple[bytes, bytes]:
    """``(public, secret)`` from a secret key file (``NAME.key_secret``).

    Raises :class:`KeyFileError` if it is missing, unreadable, holds no
    secret key, holds a secret key that does not match its public key, or
    other users may read or write it (``chmod 600`` it).
    """
    p = Path(path)
    public, secret = _read_certificate(p)
    if secret is None:
        raise KeyFileError(f"{p}: holds no secret key (give the NAME.key_secret file)")
    mode = stat.S_IMODE(p.stat().st_mode)
    if mode & 0o007:
        raise KeyFileError(f"{p}: other users may read or write this secret key (mode "
                           f"{mode:04o}); chmod 600 it")
    if zmq.curve_public(secret) != public:
        raise KeyFileError(f"{p}: its public key is not that of its secret key")
    return public, secret


def load_public_key(path: str | os.PathLike[str]) -> bytes:
    """The public key of a public key file (``NAME.key``).

    Raises :class:`KeyFileError` if it is missing, unreadable or malformed,
    or if it holds a secret key too (give the public file; keep the
    secret one where it belongs).
    """
    p = Path(path)
    public, secret = _read_certificate(p)
    if secret is not None:
        raise KeyFileError(f"{p}: holds a secret key; give the public NAME.key file instead")
    return public


def load_allowed(directory: str | os.PathLike[str]) -> dict[bytes, str]:
    """The allow-list: ``{public key: identity}`` of every ``*.key`` file in
    ``directory``, the identity being the file's name without ``.key``.

    Raises :class:`KeyFileError` if the directory is missing or holds no
    ``*.key`` file, for a file :func:`load_public_key` refuses, or if two
    files hold the same key.
    """
    d = Path(directory)
    if not d.is_dir():
        raise KeyFileError(f"{d}: no such directory of public keys")
    allowed: dict[bytes, str] = {}
    try:
        files = sorted(d.glob("*.key"))
    except OSError as exc:  # pragma: no cover - unreadable directory
        raise KeyFileError(f"{d}: {exc.strerror or exc}") from None
    for path in files:
        key = load_public_key(path)
        if key in allowed:
            raise KeyFileError(f"{path}: the same key as {allowed[key]}.key")
        allowed[key] = path.stem
    if not allowed:
        raise KeyFileError(f"{d}: no public key files (NAME.key) in it")
    return allowed


def keygen(name: str, directory: str | os.PathLike[str] = ".") -> tuple[Path, Path]:
    """Write a new key pair as ``DIR/NAME.key`` (public, mode 644) and
    ``DIR/NAME.key_secret`` (mode 600), with ``zmq.auth.create_certificates``;
    return their paths.

    The files are made in a private temporary directory inside ``DIR`` and
    linked into place, so the secret one is never readable by others and
    an existing file is never replaced. Raises ValueError for a name that
    is empty, starts with ``.`` or holds a path separator,
    FileExistsError if either file exists, OSError if ``DIR`` cannot be
    written.
    """
    if not name or name.startswith(".") or "/" in name or os.sep in name or "\0" in name:
        raise ValueError(f"{name!r}: a key name is a plain file name (no '/', not starting "
                         "with '.')")
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    public, secret = d / f"{name}.key", d / f"{name}.key_secret"
    for path in (public, secret):
        if path.exists():
            raise FileExistsError(f"{path} exists already; not replaced")
    tmp = Path(tempfile.mkdtemp(prefix=".mdp-keygen-", dir=d))  # mode 700
    try:
        made_public, made_secret = (Path(p) for p in zmq.auth.create_certificates(tmp, name))
        made_secret.chmod(0o600)
        made_public.chmod(0o644)
        os.link(made_secret, secret)
        try:
            os.link(made_public, public)
        except BaseException:
            secret.unlink()
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return public, secret


def load_policy(path: str | os.PathLike[str]) -> mdp_core.Policy:
    """A :class:`mdp_core.Policy` from a TOML file with ``[serve]`` and
    ``[call]`` tables of ``"pattern" = ["identity", ...]``.

    Raises :class:`KeyFileError` (a ValueError) with a one-line message for
    a file that is missing, unreadable, not TOML, or not a valid policy.
    """
    # The stdlib's since 3.11, its backport (a dependency) on 3.10.
    tomllib = importlib.import_module("tomllib" if sys.version_info >= (3, 11) else "tomli")
    p = Path(path)
    try:
        with p.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise KeyFileError(f"{p}: no such policy file") from None
    except OSError as exc:
        raise KeyFileError(f"{p}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise KeyFileError(f"{p}: not TOML ({exc})") from None
    unknown = sorted(set(data) - {"serve", "call"})
    if unknown:
        raise KeyFileError(f"{p}: unknown table(s) {', '.join(unknown)}; a policy has [serve] "
                           "and [call]")
    try:
        return mdp_core.Policy(serve=data.get("serve", {}), call=data.get("call", {}))
    except (TypeError, ValueError) as exc:
        raise KeyFileError(f"{p}: {exc}") from None


# ------------------------------------------------------------------ ZAP


@dataclass(frozen=True, slots=True)
class Refusal:
    """A CURVE key the ZAP handler refused: ``address`` is the peer's IP
    address as libzmq gave it, ``key`` its public key (Z85)."""

    address: str
    key: str


class _Authenticator(zmq.auth.Authenticator):
    """pyzmq's Authenticator with the allow-list as a key -> identity mapping:
    it is its own credentials provider and names each accepted key."""

    def __init__(self, context: zmq.Context[Any], allowed: Mapping[bytes, str],
                 log: logging.Logger) -> None:
        super().__init__(context, log=log)
        self.names = dict(allowed)
        self.address = ""  # of the request being handled, for Refusal
        self.refused: list[Refusal] = []

    def callback(self, domain: str, key: bytes) -> bool:
        """The credentials provider's check (``configure_curve_callback``)."""
        if key in self.names:
            return True
        self.refused.append(Refusal(self.address, key.decode("ascii", "replace")))
        return False

    def curve_user_id(self, client_public_key: bytes) -> str:
        """The ``User-Id`` of an accepted key: its identity."""
        return self.names[z85.encode(client_public_key)]


class ZapHandler:
    """The ZAP handler (RFC 27) of one ZeroMQ context, run by a broker's loop.

    Binds :data:`ZAP_ENDPOINT` in ``context`` at once: create it before the
    broker's ROUTER binds, since libzmq admits every CURVE key while no
    handler is bound. The driver waits for :attr:`socket` to be readable
    (it is the only one to wait on it) and then calls
    :meth:`handle_waiting`; :meth:`close` it after the ROUTER is closed.
    Each request is answered by pyzmq's ``Authenticator`` with
    ``security.allowed`` as its key list; a refused key comes back from
    :meth:`handle_waiting` as a :class:`Refusal`, for the driver to log.

    Raises ValueError if ``security`` is not a broker's, ``zmq.ZMQError``
    if another ZAP handler is bound in ``context`` (one per context: give
    each secured broker its own).
    """

    def __init__(self, context: zmq.Context[Any], security: Security, *,
                 log: logging.Logger | None = None) -> None:
        if not security.is_broker:
            raise ValueError("a ZapHandler needs a broker's Security (with allowed keys)")
        self.context = context
        self._auth = _Authenticator(context, security.allowed,
                                    log or logging.getLogger("mdp_zmq.zap"))
        try:
            self._auth.start()
        except zmq.ZMQError as exc:
            self._auth.stop()
            if exc.errno == zmq.EADDRINUSE:
                raise zmq.ZMQError(exc.errno, "a ZAP handler is already bound in this ZeroMQ "
                                   "context: give each secured broker a context of its "
                                   "own") from None
            raise  # pragma: no cover - any other bind failure
        self._auth.configure_curve_callback("*", self._auth)
        #: The REP socket libzmq's ZAP requests arrive on.
        self.socket: zmq.Socket[bytes] = self._auth.zap_socket

    def handle_waiting(self, limit: int = ZAP_BATCH) -> list[Refusal]:
        """Answer up to ``limit`` waiting ZAP requests without blocking;
        return the keys refused among them."""
        auth, sock = self._auth, self.socket
        for _ in range(limit):
            try:
                msg = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            auth.address = msg[3].decode(errors="replace") if len(msg) > 3 else ""
            _run_now(auth.handle_zap_message(msg))
        refused, auth.refused = auth.refused, []
        return refused

    def close(self) -> None:
        """Unbind and close the ZAP socket (after the ROUTER closed)."""
        sock = self.socket
        if not sock.closed:
            # libzmq frees an inproc name at unbind, but only later at close:
            # unbind first, so the context can take a ZAP handler again at once.
            with contextlib.suppress(zmq.ZMQError):
                sock.unbind(ZAP_ENDPOINT)
        self._auth.stop()


def _run_now(result: object) -> None:
    """Run ``Authenticator.handle_zap_message`` to its end, here and now.

    It is a coroutine in recent pyzmq (a plain call in older ones) that
    awaits only an awaitable credentials check, which ours is not; so one
    step runs it to its end without an event loop.
    """
    if not inspect.iscoroutine(result):  # pragma: no cover - older pyzmq
        return
    try:
        result.send(None)
    except StopIteration:
        return
    result.close()  # pragma: no cover - it awaited: not with our callback
    raise RuntimeError("the ZAP handler awaited something")  # pragma: no cover
