"""``mdp keygen``, the CURVE and policy flags, and the secured setup of docs/security.md.

Key file errors are usage errors: one line on stderr, exit status 2, and
nothing started. The last test runs the documented setup as processes:
keys from ``mdp keygen``, a broker with ``--curve-secret --allow
--policy``, a worker and clients with ``--curve-secret --broker-key``.
"""

from __future__ import annotations

import logging
import os
import stat
import subprocess
from pathlib import Path

import pytest
from mdp_zmq.cli import broker_config, build_parser, main, transport_config
from mdp_zmq.glue import KeyFileError, Security, keygen, load_allowed, load_policy
from zmq_support import ProcSet, mdp_cli

from mdp_core import Policy

USAGE, RUNTIME = 2, 1

POLICY_TOML = """\
[serve]
"payments" = ["pay"]
"payments.*" = ["pay"]

[call]
"payments" = ["shop"]
"*" = ["admin"]
"""


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    """broker, pay, shop and mallory key pairs in tmp/keys; all but broker's in tmp/allow."""
    allow = tmp_path / "allow"
    allow.mkdir()
    for name in ("broker", "pay", "shop", "mallory"):
        public, _ = keygen(name, tmp_path / "keys")
        if name != "broker":
            (allow / public.name).write_bytes(public.read_bytes())
    (tmp_path / "policy.toml").write_text(POLICY_TOML)
    return tmp_path


def one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str], status: int) -> str:
    assert main(argv) == status
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


# ------------------------------------------------------------------ keygen


def test_keygen_writes_a_public_and_a_private_key_file(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    assert main(["keygen", "shop", "--dir", str(tmp_path / "new")]) == 0
    public, secret = tmp_path / "new" / "shop.key", tmp_path / "new" / "shop.key_secret"
    assert stat.S_IMODE(public.stat().st_mode) == 0o644
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    out = capsys.readouterr().out
    assert str(public) in out and str(secret) in out
    security = Security.for_peer(secret, public)  # a valid pair, in zmq.auth's format
    assert security.public_key == security.broker_key
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == ["shop.key",
                                                                     "shop.key_secret"]


def test_keygen_never_replaces_a_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                     ) -> None:
    keygen("shop", tmp_path)
    before = (tmp_path / "shop.key_secret").read_bytes()
    err = one_line_error(capsys, ["keygen", "shop", "--dir", str(tmp_path)], RUNTIME)
    assert "exists already" in err
    assert (tmp_path / "shop.key_secret").read_bytes() == before


@pytest.mark.parametrize("name", ["", ".hidden", "a/b", "../up"])
def test_keygen_takes_a_plain_name(name: str, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    one_line_error(capsys, ["keygen", name, "--dir", str(tmp_path)], USAGE)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ flags


def test_the_curve_flags_set_the_transport_and_the_policy(keys: Path) -> None:
    parse = build_parser().parse_args
    k = keys / "keys"
    args = parse(["broker", "--curve-secret", str(k / "broker.key_secret"),
                  "--allow", str(keys / "allow"), "--policy", str(keys / "policy.toml")])
    security = transport_config(args).security
    assert security is not None and security.is_broker
    assert sorted(security.allowed.values()) == ["mallory", "pay", "shop"]
    assert broker_config(args).policy == Policy(
        serve={"payments": ["pay"], "payments.*": ["pay"]},
        call={"payments": ["shop"], "*": ["admin"]})
    peer = transport_config(parse(["call", "x", "--curve-secret", str(k / "shop.key_secret"),
                                   "--broker-key", str(k / "broker.key")])).security
    assert peer is not None and peer.broker_key == security.public_key
    assert transport_config(parse(["services"])).security is None


def test_mdp_status_takes_the_peer_curve_flags(keys: Path) -> None:
    parse = build_parser().parse_args
    k = keys / "keys"
    security = transport_config(parse(["status", "--curve-secret", str(k / "shop.key_secret"),
                                       "--broker-key", str(k / "broker.key")])).security
    assert security is not None and not security.is_broker
    assert transport_config(parse(["status"])).security is None


def test_a_policy_without_curve_is_allowed_with_a_warning(keys: Path,
                                                          caplog: pytest.LogCaptureFixture
                                                          ) -> None:
    args = build_parser().parse_args(["broker", "--policy", str(keys / "policy.toml")])
    with caplog.at_level(logging.WARNING, logger="mdp_zmq.cli"):
        assert broker_config(args).policy is not None
    assert "unauthenticated" in caplog.text


def _usage_cases(keys: Path) -> dict[str, tuple[list[str], str]]:
    k, allow = keys / "keys", str(keys / "allow")
    secret, broker_key = str(k / "shop.key_secret"), str(k / "broker.key")
    bsecret = str(k / "broker.key_secret")
    (keys / "bad.toml").write_text("[serve\n")
    (keys / "extra.toml").write_text("[serve]\n[admins]\n")
    (keys / "pattern.toml").write_text('[call]\n"pay*" = ["shop"]\n')
    (keys / "bare.toml").write_text('[call]\n"pay" = "shop"\n')
    (keys / "junk.key_secret").write_text("not a key\n")
    (keys / "empty").mkdir()
    return {
        "secret missing": (["call", "x", "--curve-secret", str(k / "nope.key_secret"),
                            "--broker-key", broker_key], "no such key file"),
        "secret without broker key": (["call", "x", "--curve-secret", secret],
                                      "go together"),
        "broker key without secret": (["worker", "x", "--echo", "--broker-key", broker_key],
                                      "go together"),
        "broker key is a secret": (["services", "--curve-secret", secret,
                                    "--broker-key", bsecret], "holds a secret key"),
        "secret is a public key": (["call", "x", "--curve-secret", broker_key,
                                    "--broker-key", broker_key], "holds no secret key"),
        "secret is junk": (["call", "x", "--curve-secret", str(keys / "junk.key_secret"),
                            "--broker-key", broker_key], "not a key file"),
        "secret is a directory": (["call", "x", "--curve-secret", allow,
                                   "--broker-key", broker_key], "not a key file"),
        "broker without allow": (["broker", "--curve-secret", bsecret], "go together"),
        "allow missing": (["broker", "--curve-secret", bsecret, "--allow",
                           str(keys / "nope")], "no such directory"),
        "allow empty": (["broker", "--curve-secret", bsecret, "--allow",
                         str(keys / "empty")], "no public key files"),
        "policy missing": (["broker", "--policy", str(keys / "nope.toml")],
                           "no such policy file"),
        "policy not toml": (["broker", "--policy", str(keys / "bad.toml")], "not TOML"),
        "policy unknown table": (["broker", "--policy", str(keys / "extra.toml")],
                                 "unknown table(s) admins"),
        "policy bad pattern": (["broker", "--policy", str(keys / "pattern.toml")],
                               "bad service pattern"),
        "policy bare identity": (["broker", "--policy", str(keys / "bare.toml")],
                                 "must be a list of identities"),
    }


CASES = ["secret missing", "secret without broker key", "broker key without secret",
         "broker key is a secret", "secret is a public key", "secret is junk",
         "secret is a directory", "broker without allow", "allow missing", "allow empty",
         "policy missing", "policy not toml", "policy unknown table", "policy bad pattern",
         "policy bare identity"]


@pytest.mark.parametrize("case", CASES)
def test_a_bad_key_or_policy_file_is_one_line_and_exit_2(
    case: str, keys: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv, text = _usage_cases(keys)[case]
    err = one_line_error(capsys, argv, USAGE)
    assert text in err, err


def test_a_secret_key_other_users_may_read_is_refused(keys: Path,
                                                      capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    k = keys / "keys"
    (k / "broker.key_secret").chmod(0o644)
    err = one_line_error(capsys, ["broker", "--curve-secret", str(k / "broker.key_secret"),
                                  "--allow", str(keys / "allow")], USAGE)
    assert "other users may read or write this secret key (mode 0644); chmod 600 it" in err
    (k / "broker.key_secret").chmod(0o606)
    assert "mode 0606" in one_line_error(
        capsys, ["call", "x", "--curve-secret", str(k / "broker.key_secret"), "--broker-key",
                 str(k / "broker.key")], USAGE)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_key_file_is_refused(keys: Path, capsys: pytest.CaptureFixture[str]
                                           ) -> None:
    k = keys / "keys"
    (k / "broker.key").chmod(0)
    err = one_line_error(capsys, ["call", "x", "--curve-secret", str(k / "shop.key_secret"),
                                  "--broker-key", str(k / "broker.key")], USAGE)
    assert "permission denied" in err


def test_the_allow_list_refuses_two_names_for_one_key(keys: Path) -> None:
    allow = keys / "allow"
    (allow / "copy.key").write_bytes((allow / "shop.key").read_bytes())
    with pytest.raises(KeyFileError, match="the same key as"):
        load_allowed(allow)
    with pytest.raises(KeyFileError, match="holds a secret key"):
        (allow / "copy.key").write_bytes((keys / "keys" / "shop.key_secret").read_bytes())
        load_allowed(allow)


def test_load_policy_reads_both_tables(keys: Path) -> None:
    assert load_policy(keys / "policy.toml").may_call("admin", "anything")
    (keys / "empty.toml").write_text("")
    assert load_policy(keys / "empty.toml") == Policy()


# ------------------------------------------------------------------ the documented setup


@pytest.mark.parametrize("driver", ["zmq", "gevent"])
def test_the_secured_setup_of_the_docs_runs(driver: str, tmp_path: Path, procs: ProcSet
                                            ) -> None:
    """docs/security.md's commands, from mdp keygen to a refused and a served call,
    with the blocking and the gevent broker (``--driver gevent``)."""
    if driver != "zmq":
        pytest.importorskip(driver)
    def mdp(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(mdp_cli(*argv), capture_output=True, text=True, timeout=60,
                              check=False, cwd=tmp_path)

    for name in ("broker", "pay", "shop", "mallory", "stranger"):
        assert mdp("keygen", name, "--dir", "keys").returncode == 0
    allow = tmp_path / "allow"
    allow.mkdir()
    for name in ("pay", "shop", "mallory"):
        (allow / f"{name}.key").write_bytes((tmp_path / "keys" / f"{name}.key").read_bytes())
    (tmp_path / "policy.toml").write_text(POLICY_TOML)
    broker = procs.start(mdp_cli(
        "broker", "--driver", driver, "--bind", "tcp://127.0.0.1:*", "--curve-secret",
        str(tmp_path / "keys" / "broker.key_secret"), "--allow", str(allow),
        "--policy", str(tmp_path / "policy.toml")))
    endpoint = broker.wait_line("mdp broker listening on ").split()[-1]
    assert broker.wait_line("mdp broker: CURVE on") == (
        "mdp broker: CURVE on; 3 key(s) allowed: mallory, pay, shop")

    def peer(name: str) -> list[str]:
        return ["--connect", endpoint, "--curve-secret",
                str(tmp_path / "keys" / f"{name}.key_secret"),
                "--broker-key", str(tmp_path / "keys" / "broker.key")]

    procs.worker(endpoint, "payments", *peer("pay")[2:])
    served = mdp("call", "payments", "100", *peer("shop"), "--timeout", "10", "--retries", "0")
    assert (served.returncode, served.stdout) == (0, "100\n"), served.stderr
    assert mdp("services", *peer("shop")).stdout == "payments\n"
    assert mdp("services", *peer("mallory")).stdout == ""  # it learns of nothing
    refused = mdp("call", "payments", "100", *peer("mallory"), "--timeout", "1",
                  "--retries", "0")
    assert refused.returncode == RUNTIME
    assert refused.stderr.strip().endswith(
        "the broker does not allow this client to call 'payments'")
    outsider = mdp("call", "payments", "100", "--connect", endpoint, "--timeout", "1",
                   "--retries", "0")  # no key
    assert outsider.returncode == RUNTIME and "no broker reachable" in outsider.stderr
    stranger = mdp("call", "payments", "100", *peer("stranger"), "--timeout", "1",
                   "--retries", "0")  # a key not in allow/
    assert stranger.returncode == RUNTIME
    # One line, the reason in it (the client's own log line is at INFO).
    assert stranger.stderr.splitlines() == [
        "mdp call: payments: connection lost after 1 attempt: the broker refused this "
        "client's key at the handshake"], stranger.stderr
