"""Gates on the async driver: mypy --strict, documented exports, no private glue.

``mdp_async`` is typed (it ships ``py.typed``), every name it exports has a
docstring (the AST checker of ``test_gates.py``), and it reaches the
blocking driver only through its public modules (``mdp_zmq``,
``mdp_zmq.glue``), never a private ``mdp_zmq._x``.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import mdp_async
from test_gates import _definitions, undocumented

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "bindings" / "mdp_async"


def test_mypy_strict_passes_on_the_async_driver() -> None:
    env = {**os.environ, "MYPYPATH": str(ROOT / "bindings")}
    proc = subprocess.run([sys.executable, "-m", "mypy", "--strict", "bindings/mdp_async"],
                          cwd=ROOT, capture_output=True, text=True, timeout=110, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (PACKAGE / "py.typed").exists()


def _where(name: str) -> Path:
    """The module of mdp_async that defines ``name`` (re-exports followed once)."""
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module and any(
                (a.asname or a.name) == name for a in node.names):
            return PACKAGE / f"{node.module}.py"
    raise LookupError(name)


def test_every_name_it_defines_and_exports_has_a_docstring() -> None:
    missing: list[str] = []
    own = [n for n in mdp_async.__all__
           if getattr(getattr(mdp_async, n), "__module__", "").startswith("mdp_async")
           or n in ("Body", "Handler")]
    for name in own:
        path = _where(name)
        missing += [f"{path.name}: {m}" for m in
                    undocumented(_definitions(ast.parse(path.read_text())), [name])]
    assert own and missing == []
    assert (mdp_async.__doc__ or "").strip()


def test_it_imports_no_private_module_of_another_driver() -> None:
    for path in PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom)
                     and node.level == 0 else [])
            for name in names:
                top, _, rest = name.partition(".")
                assert not (top == "mdp_zmq" and rest.startswith("_")), f"{path.name}: {name}"
