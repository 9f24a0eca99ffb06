"""Gates on the sans-IO core: stdlib only, no clock, locked exports, types, lint, events.

The AST checker and the docstring checker are tested against known-bad
snippets too, so a checker that silently stops finding anything fails.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import json
import subprocess
import sys
import typing
from pathlib import Path

import pytest

import mdp_core
from mdp_core import Event

ROOT = Path(__file__).resolve().parent.parent
CORE = ROOT / "mdp_core"

BANNED_MODULES = frozenset({
    "time", "socket", "select", "selectors", "asyncio", "threading", "_thread",
    "multiprocessing", "concurrent", "random", "secrets", "zmq", "trio", "gevent",
})
# Calls that read a clock, sleep, draw randomness or import dynamically.
BANNED_CALLS = frozenset({
    "time", "time_ns", "monotonic", "monotonic_ns", "perf_counter", "perf_counter_ns",
    "process_time", "process_time_ns", "thread_time", "thread_time_ns",
    "clock_gettime", "clock_gettime_ns", "sleep", "now", "utcnow", "today",
    "urandom", "getrandom", "__import__", "import_module",
})


def _core_files() -> list[Path]:
    files = sorted(CORE.rglob("*.py"))
    assert files, "no mdp_core sources found"
    return files


def forbidden_in(source: str, filename: str = "<src>") -> list[str]:
    """Every banned or non-stdlib import and every banned call in ``source``."""
    problems: list[str] = []
    for node in ast.walk(ast.parse(source, filename)):
        modules: list[str] = []
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules = [node.module]
        for module in modules:
            top = module.partition(".")[0]
            if top in BANNED_MODULES:
                problems.append(f"{filename}:{node.lineno}: imports banned module {module}")
            elif top not in sys.stdlib_module_names:
                problems.append(f"{filename}:{node.lineno}: imports non-stdlib module {module}")
        if isinstance(node, ast.Call):
            func = node.func
            name = (func.id if isinstance(func, ast.Name)
                    else func.attr if isinstance(func, ast.Attribute) else None)
            if name in BANNED_CALLS:
                problems.append(f"{filename}:{node.lineno}: calls {name}()")
    return problems


@pytest.mark.parametrize(("source", "expected"), [
    ("import time", "imports banned module time"),
    ("import os, socket", "imports banned module socket"),
    ("from select import select", "imports banned module select"),
    ("import selectors", "imports banned module selectors"),
    ("import asyncio.events", "imports banned module asyncio.events"),
    ("from threading import Thread", "imports banned module threading"),
    ("import multiprocessing", "imports banned module multiprocessing"),
    ("from random import random", "imports banned module random"),
    ("import secrets", "imports banned module secrets"),
    ("import zmq", "imports banned module zmq"),
    ("from zmq.green import Socket", "imports banned module zmq.green"),
    ("import trio", "imports banned module trio"),
    ("import gevent", "imports banned module gevent"),
    ("def f():\n    import numpy", "imports non-stdlib module numpy"),
    ("from attr import define", "imports non-stdlib module attr"),
    ("import os\nos.urandom(4)", "calls urandom()"),
    ("import datetime\ndatetime.datetime.now()", "calls now()"),
    ("import datetime\ndatetime.date.today()", "calls today()"),
    ("clock.monotonic()", "calls monotonic()"),
    ("loop.time()", "calls time()"),
    ("x = perf_counter()", "calls perf_counter()"),
    ("__import__('zmq')", "calls __import__()"),
    ("importlib.import_module('socket')", "calls import_module()"),
])
def test_the_import_checker_catches_banned_imports_and_clock_calls(
    source: str, expected: str
) -> None:
    problems = forbidden_in(source)
    assert any(p.endswith(expected) for p in problems), problems


def test_the_import_checker_allows_stdlib_and_relative_imports() -> None:
    source = (
        "from __future__ import annotations\nimport enum, heapq\n"
        "from collections import deque\nfrom . import _codec\nfrom ._state import X\n"
        "def f(now: float) -> float:\n    return max(now, 0.0)\n"
    )
    assert forbidden_in(source) == []


@pytest.mark.parametrize("path", _core_files(), ids=lambda p: p.name)
def test_core_module_imports_only_allowed_stdlib_and_reads_no_clock(path: Path) -> None:
    assert forbidden_in(path.read_text(encoding="utf-8"), path.name) == []


def test_importing_mdp_core_loads_no_third_party_module() -> None:
    code = (
        "import json, sys\n"
        "before = set(sys.modules)\n"
        "import mdp_core\n"
        "new = sorted(set(sys.modules) - before)\n"
        "bad = [m for m in new if m.partition('.')[0] not in sys.stdlib_module_names\n"
        "       and m.partition('.')[0] != 'mdp_core']\n"
        "print(json.dumps({'new': new, 'bad': bad, 'file': mdp_core.__file__}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, check=True)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert Path(result["file"]).resolve().parent == CORE
    assert "mdp_core._codec" in result["new"]  # the measurement saw the import
    assert result["bad"] == []
    assert not set(result["new"]) & {"zmq", "trio", "gevent", "socket", "threading"}


# ------------------------------------------------------------ public exports

# Locked public API. Changing it is a deliberate act: update this list.
EXPECTED_EXPORTS = [
    "AlreadyConnected",
    "AlreadyReplied",
    "BodyLike",
    "Broker",
    "BrokerConfig",
    "BrokerLost",
    "BrokerMetrics",
    "BrokerStats",
    "BytesLike",
    "Client",
    "ClientConfig",
    "ClientReply",
    "ClientRequest",
    "Command",
    "DEFAULT_BUCKETS",
    "Dialect",
    "Disconnect",
    "Disconnected",
    "EmptyBody",
    "Event",
    "FailureCause",
    "FinalReply",
    "Heartbeat",
    "HistogramSnapshot",
    "LOSS_REASONS",
    "LocalProtocolError",
    "MalformedMessage",
    "MdpError",
    "MetricsSnapshot",
    "NotCurrentRequest",
    "OTHER",
    "OUTCOMES",
    "PartialNotSupported",
    "PartialReply",
    "Policy",
    "ProtocolError",
    "Ready",
    "RequestAbandoned",
    "RequestDelivered",
    "RequestExpired",
    "RequestFailed",
    "RequestInProgress",
    "RequestReceived",
    "RequestRedispatched",
    "RequestRefused",
    "RequestRequeued",
    "RequestState",
    "RequestUndelivered",
    "ResetConnection",
    "ServiceStats",
    "StaleRequest",
    "TimedRequestDelivered",
    "Worker",
    "WorkerConfig",
    "WorkerLost",
    "WorkerMetrics",
    "WorkerMetricsSnapshot",
    "WorkerReady",
    "WorkerRefused",
    "WorkerReply",
    "WorkerRequest",
    "WorkerState",
    "as_body",
    "as_service",
    "decode",
    "encode",
    "loss_reason",
    "mmi_list",
    "mmi_merge",
    "mmi_service_found",
    "parse_mmi_stats",
]


def test_public_exports_are_locked() -> None:
    assert sorted(mdp_core.__all__) == EXPECTED_EXPORTS
    assert len(set(mdp_core.__all__)) == len(mdp_core.__all__), "duplicate names in __all__"


def test_every_exported_name_exists() -> None:
    missing = [name for name in mdp_core.__all__ if not hasattr(mdp_core, name)]
    assert missing == []


def test_star_import_gives_exactly_the_exports() -> None:
    namespace: dict[str, object] = {}
    exec("from mdp_core import *", namespace)
    namespace.pop("__builtins__")
    assert sorted(namespace) == sorted(mdp_core.__all__)


def _definitions(tree: ast.Module) -> dict[str, list[ast.stmt]]:
    """Module-level statements that define each name (class, def, assignment)."""
    found: dict[str, list[ast.stmt]] = {}
    body = tree.body
    for index, node in enumerate(body):
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            found[node.name] = [node]
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            following = body[index + 1:index + 2]
            for target in targets:
                if isinstance(target, ast.Name):
                    found[target.id] = [node, *following]
    return found


def _has_docstring(nodes: list[ast.stmt]) -> bool:
    node = nodes[0]
    if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
        return bool((ast.get_docstring(node) or "").strip())
    # an assignment documents itself with a string statement right after it
    rest = nodes[1:]
    return bool(rest) and isinstance(rest[0], ast.Expr) and isinstance(
        rest[0].value, ast.Constant) and isinstance(rest[0].value.value, str) and bool(
        rest[0].value.value.strip())


def undocumented(definitions: dict[str, list[ast.stmt]], names: list[str]) -> list[str]:
    """Names (and public methods of named classes) without a docstring of their own."""
    missing: list[str] = []
    for name in names:
        nodes = definitions.get(name)
        if nodes is None:
            missing.append(f"{name} (definition not found)")
            continue
        if not _has_docstring(nodes):
            missing.append(name)
        node = nodes[0]
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if (isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef))
                        and not item.name.startswith("_")
                        and not (ast.get_docstring(item) or "").strip()):
                    missing.append(f"{name}.{item.name}")
    return missing


def _resolve(path: Path, name: str) -> tuple[Path, str, dict[str, list[ast.stmt]]] | None:
    """Follow relative re-exports from ``path`` to the file that defines ``name``."""
    for _ in range(10):
        tree = ast.parse(path.read_text("utf-8"))
        definitions = _definitions(tree)
        if name in definitions:
            return path, name, definitions
        for node in tree.body:
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
                match = [a for a in node.names if (a.asname or a.name) == name]
                if match:
                    path, name = CORE / f"{node.module}.py", match[0].name
                    break
        else:
            return None
    return None


def test_the_docstring_checker_sees_missing_docstrings() -> None:
    tree = ast.parse(
        "@dataclass\nclass A:\n    x: int\n"
        "class B:\n    '''Doc.'''\n    def run(self):\n        pass\n    def _p(self):\n"
        "        pass\n"
        "def f():\n    pass\n"
        "Alias = int | str\n"
        "Good = int | str\n'''Doc.'''\n"
        "def g():\n    '''Doc.'''\n"
    )
    assert undocumented(_definitions(tree), ["A", "B", "f", "Alias", "Good", "g", "nope"]) == [
        "A", "B.run", "f", "Alias", "nope (definition not found)"]


def test_every_public_name_has_a_docstring() -> None:
    missing: list[str] = []
    for name in mdp_core.__all__:
        found = _resolve(CORE / "__init__.py", name)
        if found is None:
            missing.append(f"{name} (definition not found)")
            continue
        path, real_name, definitions = found
        missing += [f"{path.name}: {m}" for m in undocumented(definitions, [real_name])]
    assert missing == []
    assert (mdp_core.__doc__ or "").strip()


# ------------------------------------------------------------ tools


def _run_tool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=110)


def test_mypy_strict_passes_on_the_core() -> None:
    proc = _run_tool("mypy", "--strict", "mdp_core")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ruff_check_passes_on_the_repository() -> None:
    proc = _run_tool("ruff", "check", ".")
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ------------------------------------------------------------ events


def _event_classes() -> list[type]:
    for path in _core_files():  # make sure every module's events are loaded
        if path.name != "__init__.py":
            __import__(f"mdp_core.{path.stem}")
    seen: list[type] = []
    stack: list[type] = [Event]
    while stack:
        cls = stack.pop()
        # dataclass(slots=True) replaces each class; its discarded original can
        # linger in __subclasses__(), so keep only the class its module exports.
        module = sys.modules[cls.__module__]
        if cls not in seen and getattr(module, cls.__qualname__, None) is cls:
            seen.append(cls)
        stack.extend(cls.__subclasses__())
    return sorted(seen, key=lambda c: c.__name__)


def test_events_are_found() -> None:
    names = {cls.__name__ for cls in _event_classes()}
    assert {"Event", "ProtocolError", "WorkerLost", "RequestExpired", "FinalReply"} <= names


@pytest.mark.parametrize("cls", _event_classes(), ids=lambda c: c.__name__)
def test_every_event_is_a_frozen_dataclass_with_slots(cls: type) -> None:
    assert dataclasses.is_dataclass(cls) and "__dataclass_fields__" in cls.__dict__
    assert cls.__dataclass_params__.frozen  # type: ignore[attr-defined]
    for klass in cls.__mro__[:-1]:  # every class but object declares slots: no __dict__
        assert "__slots__" in klass.__dict__, klass
    assert (inspect.getdoc(cls) or "").strip()
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        hint = hints[field.name]
        assert typing.get_origin(hint) not in (list, dict, set), field.name
        assert hint not in (list, dict, set, bytearray, memoryview), field.name
        if field.name == "body":
            assert hint == tuple[bytes, ...]
