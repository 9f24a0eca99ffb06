"""Gates on the async and gevent drivers: mypy --strict, documented exports, no private glue.

``mdp_async`` and ``mdp_gevent`` are typed (each ships ``py.typed``), every
name they export has a docstring (the AST checker of ``test_gates.py``),
and they reach the blocking driver only through its public modules
(``mdp_zmq``, ``mdp_zmq.glue``, ``mdp_zmq.engine``), never a private
``mdp_zmq._x``.
"""

from __future__ import annotations

import ast
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_gates import _definitions, undocumented

ROOT = Path(__file__).resolve().parent.parent
DRIVERS = ["mdp_async", "mdp_gevent"]
#: Type aliases each exports (documented by the string under them).
ALIASES = ("Body", "Handler")


@pytest.mark.parametrize("driver", DRIVERS)
def test_mypy_strict_passes_on_the_driver(driver: str) -> None:
    env = {**os.environ, "MYPYPATH": str(ROOT / "bindings")}
    proc = subprocess.run([sys.executable, "-m", "mypy", "--strict", f"bindings/{driver}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=110, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (ROOT / "bindings" / driver / "py.typed").exists()


def _where(package: Path, name: str) -> Path:
    """The module of the package that defines ``name`` (re-exports followed once)."""
    tree = ast.parse((package / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module and any(
                (a.asname or a.name) == name for a in node.names):
            return package / f"{node.module}.py"
    raise LookupError(name)


@pytest.mark.parametrize("driver", DRIVERS)
def test_every_name_it_defines_and_exports_has_a_docstring(driver: str) -> None:
    module = importlib.import_module(driver)
    package = ROOT / "bindings" / driver
    missing: list[str] = []
    own = [n for n in module.__all__
           if getattr(getattr(module, n), "__module__", "").startswith(driver)
           or n in ALIASES]
    for name in own:
        path = _where(package, name)
        missing += [f"{path.name}: {m}" for m in
                    undocumented(_definitions(ast.parse(path.read_text())), [name])]
    assert own and missing == []
    assert (module.__doc__ or "").strip()


@pytest.mark.parametrize("driver", DRIVERS)
def test_it_imports_no_private_module_of_another_driver(driver: str) -> None:
    for path in (ROOT / "bindings" / driver).glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom)
                     and node.level == 0 else [])
            for name in names:
                top, _, rest = name.partition(".")
                assert not (top in ("mdp_zmq", *DRIVERS) and top != driver
                            and rest.startswith("_")), f"{path.name}: {name}"
