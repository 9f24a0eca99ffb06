"""docs/conformance.md cannot drift: every row names existing tests or states a reason.

The table's last column (headed ``test``) holds ``tests/file.py::test_name``
references (or ``tests/file.py::Class::test_name``, optionally with a
parametrize id ``[...]``), several separated by ``<br>`` or ``, ``; or
``reason: ...`` when no test applies.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "conformance.md"

_REF = re.compile(
    r"^(?P<file>tests/[\w/.-]+\.py)::(?P<names>[A-Za-z_]\w*(?:::[A-Za-z_]\w*)?)"
    r"(?P<param>\[.*\])?$"
)
_BR = re.compile(r"<br\s*/?>", re.IGNORECASE)


def _cells(line: str) -> list[str]:
    inner = line.strip()
    inner = inner[1:] if inner.startswith("|") else inner
    inner = inner[:-1] if inner.endswith("|") else inner
    # a literal pipe inside a cell is written \|
    return [cell.strip().replace("\\|", "|") for cell in re.split(r"(?<!\\)\|", inner)]


def _is_separator(cells: list[str]) -> bool:
    return all(re.fullmatch(r":?-{3,}:?", cell) for cell in cells)


def test_rows(markdown: str) -> list[tuple[int, str]]:
    """(line number, last cell) of every body row of every table headed ``... | test |``."""
    rows: list[tuple[int, str]] = []
    lines = markdown.splitlines()
    in_table = False
    for number, line in enumerate(lines, 1):
        if not line.strip().startswith("|"):
            in_table = False
            continue
        cells = _cells(line)
        if not in_table:
            following = lines[number] if number < len(lines) else ""
            in_table = (cells[-1].strip("` *").lower() == "test"
                        and following.strip().startswith("|")
                        and _is_separator(_cells(following)))
            continue  # the header row itself
        if _is_separator(cells):
            continue
        rows.append((number, cells[-1]))
    return rows


test_rows.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test


def _defined_names(path: Path) -> tuple[set[str], dict[str, set[str]]]:
    """Module-level names (functions, classes, assigned names) and each class's methods."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    top: set[str] = set()
    methods: dict[str, set[str]] = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            top.add(node.name)
        elif isinstance(node, ast.ClassDef):
            top.add(node.name)
            methods[node.name] = {item.name for item in node.body
                                  if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef))}
        elif isinstance(node, ast.Assign):
            top.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            top.add(node.target.id)
    return top, methods


def _split_refs(part: str) -> list[str]:
    """Split on ", " outside ``[...]`` (parametrize ids may contain ", ")."""
    items: list[str] = []
    depth = start = 0
    for index, char in enumerate(part):
        if char == "[":
            depth += 1
        elif char == "]":
            depth = max(depth - 1, 0)
        elif depth == 0 and part.startswith(", ", index):
            items.append(part[start:index])
            start = index + 2
    items.append(part[start:])
    return items


def problems(markdown: str, root: Path) -> list[str]:
    """Everything wrong with the conformance table in ``markdown``."""
    found: list[str] = []
    cache: dict[Path, tuple[set[str], dict[str, set[str]]] | None] = {}
    rows = test_rows(markdown)
    if not rows:
        return ["no table with a 'test' column found"]
    for line, cell in rows:
        where = f"line {line}"
        named_something = False
        for part in _BR.split(cell):
            part = part.strip()
            if not part:
                continue
            if part.strip("`").lower().startswith("reason:"):
                if not part.strip("`")[len("reason:"):].strip():
                    found.append(f"{where}: empty reason")
                else:
                    named_something = True
                continue
            for item in _split_refs(part):
                ref = item.strip().strip("`")
                if not ref:
                    continue
                match = _REF.match(ref)
                if match is None:
                    found.append(f"{where}: not a test reference or a reason: {ref!r}")
                    continue
                named_something = True
                path = root / match["file"]
                if path not in cache:
                    cache[path] = _defined_names(path) if path.is_file() else None
                names = cache[path]
                if names is None:
                    found.append(f"{where}: no such test file {match['file']}")
                    continue
                top, methods = names
                parts = match["names"].split("::")
                if len(parts) == 2 and parts[0] in methods:
                    ok = parts[1] in methods[parts[0]]
                elif len(parts) == 2:
                    # e.g. ``TestMachine = Machine.TestCase``: the class is built
                    # at import time, so only its name can be checked
                    ok = parts[0] in top
                else:
                    ok = parts[0] in top or any(parts[0] in m for m in methods.values())
                if not ok:
                    found.append(f"{where}: {match['file']} has no test {match['names']}")
        if not named_something:
            found.append(f"{where}: names no test and gives no reason")
    return found


# ------------------------------------------------------------ the checker itself


@pytest.fixture
def fake_repo(tmp_path: Path) -> Path:
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_a.py").write_text(
        "import pytest\n\n"
        "def test_one():\n    pass\n\n"
        "class TestGroup:\n    def test_method(self):\n        pass\n\n"
        "TestMachine = object()\n",
        encoding="utf-8",
    )
    return tmp_path


_HEAD = "| RFC | clause | level | our behaviour | test |\n|---|---|---|---|---|\n"


def test_checker_accepts_tests_methods_params_several_refs_and_reasons(fake_repo: Path) -> None:
    doc = _HEAD + (
        "| 7 | a | MUST | x | `tests/test_a.py::test_one` |\n"
        "| 7 | b | MUST | x | tests/test_a.py::test_one[MDP01-x, y]<br>"
        "tests/test_a.py::TestGroup::test_method |\n"
        "| 7 | c | SHOULD | x | tests/test_a.py::test_one, tests/test_a.py::test_method |\n"
        "| 7 | d | MAY | x | tests/test_a.py::TestMachine::runTest |\n"
        "| 7 | e | MAY | x | reason: not applicable, broker only \\| really |\n"
        "| 7 | f | MAY | x | tests/test_a.py::test_one<br>reason: plus a driver test |\n"
    )
    assert problems(doc, fake_repo) == []


def test_checker_rejects_missing_files_tests_and_reasons(fake_repo: Path) -> None:
    doc = "# Title\n\n" + _HEAD + (
        "| 7 | a | MUST | x | tests/test_b.py::test_one |\n"
        "| 7 | b | MUST | x | tests/test_a.py::test_two |\n"
        "| 7 | c | MUST | x | tests/test_a.py::TestGroup::test_one |\n"
        "| 7 | d | MUST | x |  |\n"
        "| 7 | e | MUST | x | reason: |\n"
        "| 7 | f | MUST | x | see above |\n"
        "| 7 | g | MUST | x | tests/test_a.py |\n"
        "| 7 | h | MUST | x | tests/test_a.py::Nope::test_x |\n"
    )
    assert problems(doc, fake_repo) == [
        "line 5: no such test file tests/test_b.py",
        "line 6: tests/test_a.py has no test test_two",
        "line 7: tests/test_a.py has no test TestGroup::test_one",
        "line 8: names no test and gives no reason",
        "line 9: empty reason",
        "line 9: names no test and gives no reason",
        "line 10: not a test reference or a reason: 'see above'",
        "line 10: names no test and gives no reason",
        "line 11: not a test reference or a reason: 'tests/test_a.py'",
        "line 11: names no test and gives no reason",
        "line 12: tests/test_a.py has no test Nope::test_x",
    ]


def test_checker_ignores_other_tables_and_fails_without_a_test_table(fake_repo: Path) -> None:
    other = "| a | b |\n|---|---|\n| 1 | 2 |\n"
    assert problems(other, fake_repo) == ["no table with a 'test' column found"]
    assert problems(other + "\n" + _HEAD + "| 7 | a | MUST | x | reason: ok |\n",
                    fake_repo) == []


# ------------------------------------------------------------ the real document


def test_every_conformance_row_names_an_existing_test_or_a_reason() -> None:
    assert DOC.is_file(), "docs/conformance.md is missing"
    assert problems(DOC.read_text(encoding="utf-8"), ROOT) == []
