"""The ``mdp`` command: broker, worker, call, services, status, demo, keygen.

``-v`` logs lifecycle events (INFO: workers registered or lost, requests
re-dispatched, reconnects); ``-vv`` adds one line per message (DEBUG); it
may be given before or after the subcommand, and so may ``--log-format
json`` (one JSON object per line, with the event's fields).

Workers and clients connect to ``--connect``, else ``$MDP_ENDPOINT``, else
``tcp://127.0.0.1:5555`` (either may list several brokers, comma-separated:
a worker serves them all, a client fails over between them, and ``mdp
services`` and ``mdp call mmi.*`` merge their answers); the broker binds
``--bind``, else ``$MDP_BIND``, else ``$MDP_ENDPOINT``, else the same
default.

CURVE (docs/security.md): ``mdp keygen NAME`` writes a key pair; the
broker takes ``--curve-secret FILE --allow DIR`` (and ``--policy FILE``),
workers and clients ``--curve-secret FILE --broker-key FILE``. A key file
that is missing, unreadable, or a secret key that other users may read,
is a usage error.

Exit status: 0 on success, 1 for a failure at run time (no reply, cannot
bind, ...), 2 for a usage error (a bad argument, environment variable or
key file), 130 when interrupted. Every error is one line on stderr, never
a traceback.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Iterable, Sequence
from types import ModuleType
from typing import Any, BinaryIO, NoReturn

import zmq

import mdp_core
from mdp_core import Dialect, FailureCause

from . import _drivers
from ._cli_base import (
    DEFAULT_ENDPOINT,
    CliError,
    bind_endpoint,
    connect_endpoint,
    connect_endpoints,
    connect_to,
    env_endpoint,
    exec_command,
    metrics_address,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    service_name,
    worker_service,
)
from ._cli_security import (
    add_curve_flags,
    cmd_keygen,
    curve_hint,
    policy_config,
    security_config,
)
from ._client import Client, MdpZmqError, RequestTimeout
from ._worker import Handler
from .glue import HandlerError, JsonFormatter, TransportConfig

# The argparse types live in _cli_base; these two stay importable from here.
__all__ = ["CliError", "CommandFailed", "bind_endpoint", "build_parser", "connect_endpoint",
           "log_handler", "log_level", "main"]

_VERSIONS = {"0.1": Dialect.MDP01, "0.2": Dialect.MDP02}
#: Longest piece of a command's stderr line copied into one log line.
_CLIP = 200
_LOG_FORMATS = ("text", "json")

log = logging.getLogger("mdp_zmq.cli")


class CommandFailed(HandlerError):
    """An ``--exec`` command failed on one request, which is then abandoned.

    The message is one line: how the command ended and its last stderr line.
    """


# ------------------------------------------------------------------ configs


def broker_config(args: argparse.Namespace) -> mdp_core.BrokerConfig:
    """The BrokerConfig of ``mdp broker``'s flags; a flag not given keeps the default."""
    names = ("heartbeat_interval", "request_timeout", "processing_timeout", "max_attempts",
             "max_queue", "max_queued_bytes")
    given = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    policy = policy_config(args)
    if policy is not None:
        given["policy"] = policy
    return mdp_core.BrokerConfig(**given)


def transport_config(args: argparse.Namespace) -> TransportConfig:
    """The TransportConfig of the ``--zmtp-*`` flags (and ``--max-message-bytes``)."""
    extra: dict[str, Any] = {"security": security_config(args)}
    if getattr(args, "max_message_bytes", None) is not None:
        extra["max_message_bytes"] = args.max_message_bytes
    zmtp = args.zmtp_heartbeat
    if zmtp == 0:
        return TransportConfig(heartbeat_ivl=None, heartbeat_timeout=None, heartbeat_ttl=None,
                               **extra)
    timeout = args.zmtp_timeout or 3 * zmtp
    return TransportConfig(heartbeat_ivl=zmtp, heartbeat_timeout=timeout, **extra)


# ------------------------------------------------------------------ commands


def _driver(args: argparse.Namespace) -> ModuleType:
    """The package of ``--driver``; one line saying which extra to install if missing."""
    try:
        return _drivers.load(args.driver)
    except _drivers.DriverMissing as exc:
        raise CliError(str(exc), status=1) from None


def cmd_broker(args: argparse.Namespace) -> int:
    """Run a broker until SIGINT/SIGTERM."""
    endpoints = args.bind or [
        env_endpoint(("MDP_BIND", "MDP_ENDPOINT"), bind=True) or DEFAULT_ENDPOINT]
    config, transport = broker_config(args), transport_config(args)
    module = _driver(args)
    exposition = _metrics() if args.metrics else None
    metrics = mdp_core.BrokerMetrics(args.metrics_max_services) if exposition else None
    try:
        broker = module.Broker(endpoints, config, transport=transport, metrics=metrics)
    except zmq.ZMQError as exc:
        raise CliError(f"cannot bind {' '.join(endpoints)}: {exc}", status=1) from None
    server = None
    if exposition is not None:
        try:
            server = _serve_metrics(exposition.BrokerCollector(broker.metrics_snapshot), args)
        except CliError:
            broker.close()
            raise
        print(f"mdp broker metrics on {server.url}", flush=True)
    print("mdp broker listening on " + " ".join(broker.endpoints), flush=True)
    if transport.security is not None:
        names = sorted(transport.security.allowed.values())
        print(f"mdp broker: CURVE on; {len(names)} key(s) allowed: {', '.join(names)}",
              flush=True)
    try:
        _drivers.serve(args.driver, broker)
    finally:
        if server is not None:
            server.close()
    return 0


def _metrics() -> Any:
    """``mdp_zmq.metrics``, or a CliError (status 1) naming the extra to install."""
    from ._ops import MetricsUnavailable, metrics_module

    try:
        return metrics_module()
    except MetricsUnavailable as exc:
        raise CliError(str(exc), status=1) from None


def _serve_metrics(collector: Any, args: argparse.Namespace) -> Any:
    """Serve ``collector`` on ``--metrics``; CliError (status 1) if it cannot bind."""
    try:
        return _metrics().serve(collector, args.metrics)
    except OSError as exc:
        raise CliError(f"cannot serve metrics on {args.metrics}: {exc}", status=1) from None


def _printable(text: str) -> str:
    """``text`` cut to ``_CLIP`` characters, control characters escaped."""
    if len(text) > _CLIP:
        text = f"{text[:_CLIP]}... ({len(text)} characters)"
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _exec_handler(argv: list[str], run: Callable[..., Any] = subprocess.run) -> Handler:
    program = argv[0]

    def handler(frames: list[bytes]) -> bytes:
        try:
            done = run(argv, input=b"\n".join(frames), capture_output=True, check=False)
        except OSError as exc:
            raise CommandFailed(f"cannot run {program}: {exc.strerror or exc}") from None
        lines = done.stderr.decode(errors="backslashreplace").splitlines()
        if done.returncode != 0:
            how = (f"exited with status {done.returncode}" if done.returncode > 0
                   else f"killed by signal {-done.returncode}")
            last = _printable(lines[-1]) if lines else "(nothing on stderr)"
            raise CommandFailed(f"{program} {how}: {last}")
        for line in lines:
            log.warning("%s: %s", program, _printable(line))
        return done.stdout

    return handler


def cmd_worker(args: argparse.Namespace) -> int:
    """Serve SERVICE with --echo or --exec until SIGINT/SIGTERM."""
    delay, announce, driver = args.delay, args.announce, args.driver
    module, sleep = _driver(args), _drivers.sleeper(driver)
    extra: dict[str, Any] = {}

    def started() -> None:
        if announce:
            print(f"started pid={os.getpid()}", flush=True)

    def echo(frames: list[bytes]) -> list[bytes]:
        started()
        if delay:
            sleep(delay)
        return frames

    async def async_echo(frames: list[bytes]) -> list[bytes]:
        started()
        if delay:
            await sleep(delay)  # the job's own task: MDP heartbeats go on
        return frames

    handler: Any
    if args.echo:
        handler = async_echo if driver in ("trio", "asyncio") else echo
    else:
        handler = _exec_handler(args.exec, _drivers.subprocess_run(driver))
        if driver in ("trio", "asyncio"):
            extra["threaded"] = True  # a blocking call: in a thread, off the loop
    hb = args.heartbeat_interval
    given = {} if hb is None else {"heartbeat_interval": hb}
    metrics = mdp_core.WorkerMetrics(args.service) if args.metrics else None
    server = None
    if metrics is not None:
        server = _serve_metrics(_metrics().WorkerCollector(metrics.snapshot), args)
        print(f"mdp worker metrics on {server.url}", flush=True)
    try:
        worker = module.Worker(connect_to(args), args.service, handler,
                               mdp_core.WorkerConfig(**given), _VERSIONS[args.mdp],
                               concurrency=args.concurrency, transport=transport_config(args),
                               metrics=metrics, **extra)
        if announce:
            print(f"ready pid={os.getpid()}", flush=True)
        _drivers.serve(driver, worker)
    finally:
        if server is not None:
            server.close()
    return 0


def _request_body(args: Sequence[str]) -> list[bytes]:
    if list(args) == ["-"]:
        return [sys.stdin.buffer.read()]
    return [os.fsencode(arg) for arg in args] or [b""]


def _write_frames(out: BinaryIO, frames: Iterable[bytes]) -> None:
    out.write(b"".join(frame + b"\n" for frame in frames))
    out.flush()


#: MMI questions whose answers from several brokers ``mdp`` merges (mdp_core.mmi_merge).
_MERGED = (b"mmi.service", b"mmi.services", b"mmi.workers")


def _ask_every_broker(args: argparse.Namespace, service: bytes, body: list[bytes],
                      version: Dialect = Dialect.MDP02) -> list[bytes]:
    """Ask each broker of ``--connect`` (one client each) and merge the answers.

    A broker that does not answer is left out, with one line on stderr;
    if none answers, its RequestTimeout is raised.
    """
    config = mdp_core.ClientConfig(timeout=args.timeout, retries=args.retries)
    module, answers, failures = _driver(args), [], []
    for endpoint in connect_to(args):
        client = module.Client(endpoint, config, version, transport=transport_config(args))
        replies: list[list[bytes]] = []
        try:
            _drivers.call(args.driver, client, service, body, False, replies.append)
        except RequestTimeout as exc:
            failures.append(exc)
            continue
        answers.append(replies[0])
    if not answers:
        raise failures[-1]
    for exc in failures:
        print(f"mdp {args.command}: left out: {exc}", file=sys.stderr)
    return list(mdp_core.mmi_merge(service, answers))


def cmd_call(args: argparse.Namespace) -> int:
    """Send one request and print the reply frames (PARTIALs too with --stream)."""
    body = _request_body(args.body)
    endpoints, version = connect_to(args), _VERSIONS[args.mdp]
    if len(endpoints) > 1 and args.service in _MERGED and not args.stream:
        _write_frames(sys.stdout.buffer, _ask_every_broker(args, args.service, body, version))
        return 0
    config = mdp_core.ClientConfig(timeout=args.timeout, retries=args.retries)
    client = _driver(args).Client(endpoints, config, version, transport=transport_config(args))
    _drivers.call(args.driver, client, args.service, body, args.stream,
                  lambda frames: _write_frames(sys.stdout.buffer, frames))
    return 0


def cmd_services(args: argparse.Namespace) -> int:
    """List the services that have workers on any broker (MMI ``mmi.services``)."""
    answer = _ask_every_broker(args, b"mmi.services", [b""])
    for name in mdp_core.mmi_list(mdp_core.FinalReply(0, b"mmi.services", tuple(answer))):
        print(name.decode(errors="backslashreplace"))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """Show each broker's services, workers and queues (MMI ``mmi.stats``);
    with --watch, again every S seconds."""
    from ._ops import run_status

    endpoints = ([ep for group in args.connect for ep in group] if args.connect
                 else connect_to(args))
    config = mdp_core.ClientConfig(timeout=args.timeout, retries=0)
    transport = transport_config(args)
    clients = [Client(ep, config, transport=transport) for ep in dict.fromkeys(endpoints)]
    try:
        return run_status(clients, sys.stdout, watch=args.watch, count=args.count)
    finally:
        for client in clients:
            client.close()


def cmd_demo(args: argparse.Namespace) -> int:
    """Kill a busy worker mid-job and show the request re-dispatched."""
    from ._demo import run_demo

    _driver(args)  # its packages installed, or one line saying which extra
    return run_demo(job_seconds=args.job, kill_after=args.kill_after, driver=args.driver)


# ------------------------------------------------------------------ parser


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (usage stays in ``--help``)."""

    def error(self, message: str) -> NoReturn:
        """Print ``PROG: MESSAGE`` on stderr and exit with status 2."""
        self.exit(2, f"{self.prog}: {message} (see '{self.prog} --help')\n")


def _version() -> str:
    try:
        return importlib.metadata.version("mdp-core")
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"


_CALL_HELP = """\
The request body is one frame per BODY argument (none: one empty frame;
a single "-": one frame read from stdin, all of it). Arguments are sent as
the bytes the shell passed, whatever their encoding.

The reply is printed one frame per line, each frame as its raw bytes
followed by a newline: `mdp call echo "a b" c` prints two lines, `mdp call
echo a b c` three (a frame that holds newlines spans several lines). With
--stream the frames of every PARTIAL and of the FINAL are printed as they
arrive.

Exit status: 0 replied, 1 no reply (or another failure at run time),
2 usage error."""


def build_parser() -> argparse.ArgumentParser:
    """The ``mdp`` argument parser."""
    p = _Parser(prog="mdp", description="ZeroMQ Majordomo (MDP/0.1, 0.2, MMI)")
    p.add_argument("--version", action="version", version=f"mdp {_version()}")
    p.add_argument("-v", "--verbose", action="count", default=0,
                   help="-v: lifecycle events; -vv: every message")
    p.add_argument("--log-format", choices=_LOG_FORMATS, help="log lines as text or "
                   "one JSON object each [text]")
    verbosity = _Parser(add_help=False)
    verbosity.add_argument("-v", "--verbose", action="count", default=0, dest="sub_verbose",
                           help="-v: lifecycle events; -vv: every message")
    verbosity.add_argument("--log-format", choices=_LOG_FORMATS, dest="sub_log_format",
                           help="log lines as text or one JSON object each [text]")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    defaults = mdp_core.BrokerConfig()
    zmtp = TransportConfig()

    def command(name: str, **kwargs: Any) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[verbosity], **kwargs)

    def common(sp: argparse.ArgumentParser, *, heartbeat: bool = True) -> None:
        sp.add_argument("--zmtp-heartbeat", type=non_negative_float, default=zmtp.heartbeat_ivl,
                        metavar="S", help=f"ZMTP ping interval in s (0: off) "
                        f"[{zmtp.heartbeat_ivl}]")
        sp.add_argument("--zmtp-timeout", type=non_negative_float, default=0.0, metavar="S",
                        help="drop a silent connection after S s [3 x interval]")
        if heartbeat:
            sp.add_argument("--heartbeat", type=positive_float, metavar="S",
                            dest="heartbeat_interval",
                            help=f"MDP heartbeat interval in s [{defaults.heartbeat_interval}]")

    def driver(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--driver", choices=_drivers.DRIVERS, default="zmq",
                        help="zmq: blocking pyzmq; trio, asyncio: the async driver on that "
                        "loop; gevent: the gevent driver [zmq]")

    def metrics(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--metrics", type=metrics_address, metavar="HOST:PORT",
                        help="serve Prometheus metrics on http://HOST:PORT/metrics (needs "
                        "the metrics extra; port 0: a free one)")

    def connect(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--connect", type=connect_endpoints, metavar="ENDPOINT[,ENDPOINT...]",
                        help="broker endpoint, or several separated by commas "
                        f"[$MDP_ENDPOINT or {DEFAULT_ENDPOINT}]")

    b = command("broker", help="run a broker")
    b.add_argument("--bind", action="append", type=bind_endpoint, metavar="ENDPOINT",
                   help="endpoint to bind (repeatable) "
                   f"[$MDP_BIND, else $MDP_ENDPOINT, else {DEFAULT_ENDPOINT}]")
    common(b)
    driver(b)
    b.add_argument("--request-timeout", type=positive_float, metavar="S",
                   help="a queued request expires after S s "
                   f"[{defaults.request_timeout:g}]")
    b.add_argument("--processing-timeout", type=positive_float, metavar="S",
                   help="a worker busy longer than S s is disconnected and its request "
                   "re-dispatched [unlimited]")
    b.add_argument("--max-attempts", type=positive_int, metavar="N",
                   help=f"dispatches per request [{defaults.max_attempts}]")
    b.add_argument("--max-queue", type=non_negative_int, metavar="N",
                   help=f"queued requests per service [{defaults.max_queue}]")
    b.add_argument("--max-queued-bytes", type=non_negative_int, metavar="N",
                   help="bytes of queued requests, all services together "
                   "[BrokerConfig's default]")
    b.add_argument("--max-message-bytes", type=positive_int, metavar="N",
                   help="largest message accepted (ZMQ_MAXMSGSIZE) [TransportConfig's default]")
    metrics(b)
    b.add_argument("--metrics-max-services", type=non_negative_int, default=100, metavar="N",
                   help="services with a label of their own; the rest share 'other' [100]")
    add_curve_flags(b, broker=True)
    b.set_defaults(func=cmd_broker)

    w = command("worker", help="run a worker for SERVICE")
    w.add_argument("service", type=worker_service)
    mode = w.add_mutually_exclusive_group(required=True)
    mode.add_argument("--echo", action="store_true", help="reply with the request frames")
    mode.add_argument("--exec", type=exec_command, metavar="CMD",
                      help="run CMD per request (split like a shell does; no shell runs): "
                      "frames joined by newlines on stdin, stdout is the reply, stderr goes "
                      "to the log; a non-zero exit abandons the request")
    connect(w)
    add_curve_flags(w, broker=False)
    w.add_argument("--mdp", choices=sorted(_VERSIONS), default="0.2", help="MDP version [0.2]")
    w.add_argument("--delay", type=non_negative_float, default=0.0, metavar="S",
                   help="--echo: sleep S s per request (a slow job)")
    w.add_argument("--concurrency", type=positive_int, default=1, metavar="N",
                   help="handle N requests at once (zmq: N threads, each with a "
                   "conversation per broker; async drivers: N per broker) [1]")
    w.add_argument("--announce", action="store_true", help=argparse.SUPPRESS)
    metrics(w)
    common(w)
    driver(w)
    w.set_defaults(func=cmd_worker)

    c = command("call", help="send one request and print the reply, one frame per line",
                description="Send one request to SERVICE and print the reply.",
                epilog=_CALL_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("service", type=service_name, help="the service (mmi.*: ask the broker)")
    c.add_argument("body", nargs="*", help="one frame each (none: one empty frame; "
                   "'-': one frame from stdin)")
    connect(c)
    add_curve_flags(c, broker=False)
    c.add_argument("--mdp", choices=sorted(_VERSIONS), default="0.2", help="MDP version [0.2]")
    c.add_argument("--stream", action="store_true", help="print PARTIAL replies as they come")
    c.add_argument("--timeout", type=positive_float, default=5.0, metavar="S",
                   help="per attempt [5]")
    c.add_argument("--retries", type=non_negative_int, default=1, metavar="N",
                   help="resends [1]")
    common(c, heartbeat=False)
    driver(c)
    c.set_defaults(func=cmd_call)

    s = command("services", help="list services that have workers (MMI)")
    connect(s)
    add_curve_flags(s, broker=False)
    s.add_argument("--timeout", type=positive_float, default=2.0, metavar="S",
                   help="per attempt [2]")
    s.add_argument("--retries", type=non_negative_int, default=0, metavar="N",
                   help="resends [0]")
    common(s, heartbeat=False)
    driver(s)
    s.set_defaults(func=cmd_services)

    st = command("status", help="show brokers' services, workers and queues (MMI)")
    st.add_argument("--connect", type=connect_endpoints, action="append",
                    metavar="A,B,...", help="broker endpoints, comma-separated (repeatable) "
                    f"[$MDP_ENDPOINT or {DEFAULT_ENDPOINT}]")
    st.add_argument("--watch", type=positive_float, metavar="S",
                    help="refresh every S s until Ctrl-C")
    st.add_argument("--count", type=non_negative_int, default=0, metavar="N",
                    help="with --watch: stop after N refreshes (0: never) [0]")
    st.add_argument("--timeout", type=positive_float, default=1.0, metavar="S",
                    help="wait per broker [1]")
    add_curve_flags(st, broker=False)
    common(st, heartbeat=False)
    st.set_defaults(func=cmd_status, connect=None)

    k = command("keygen", help="write a CURVE key pair: DIR/NAME.key and DIR/NAME.key_secret")
    k.add_argument("name", help="the key's name: the identity of the peer that uses it")
    k.add_argument("--dir", default=".", help="where to write the files (made if missing) [.]")
    k.set_defaults(func=cmd_keygen)

    d = command("demo", help="kill a busy worker mid-job; watch the request survive")
    d.add_argument("--job", type=positive_float, default=2.0, metavar="S",
                   help="job length [2]")
    d.add_argument("--kill-after", type=positive_float, default=0.5, metavar="S",
                   help="kill the busy worker S s into the job [0.5]")
    driver(d)
    d.set_defaults(func=cmd_demo)
    return p


def log_handler(args: argparse.Namespace) -> logging.Handler:
    """A stderr handler in the ``--log-format`` given before or after the
    subcommand (the one after wins)."""
    handler = logging.StreamHandler()
    fmt = args.sub_log_format or args.log_format or "text"
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(
        "%(asctime)s %(name)s %(levelname)s %(message)s"))
    return handler


def log_level(args: argparse.Namespace) -> int:
    """The logging level of the ``-v`` flags, counted before and after the subcommand."""
    verbose: int = args.verbose + args.sub_verbose
    return {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)


def _timeout_hint(args: argparse.Namespace, exc: RequestTimeout) -> str:
    """For a request that got no reply for no known reason: the flag to try."""
    timeout = getattr(args, "timeout", None)
    if exc.cause is FailureCause.UNREACHABLE:
        return curve_hint(args, exc.cause)
    if exc.cause is not FailureCause.NO_REPLY or timeout is None:
        return ""
    return f" (a job that takes longer than --timeout {timeout:g} s needs a larger one)"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mdp`` console script; returns the exit status.

    A usage error found while parsing exits at once (SystemExit, status 2).
    """
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=log_level(args), handlers=[log_handler(args)])
    try:
        status: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    except CliError as exc:
        message, status = str(exc), exc.status
    except RequestTimeout as exc:
        message, status = str(exc) + _timeout_hint(args, exc), 1
    except (zmq.ZMQError, MdpZmqError, OSError) as exc:
        message, status = str(exc), 1
    else:
        return status
    print(f"mdp {args.command}: {message}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
