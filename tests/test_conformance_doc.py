"""docs/conformance.md cannot drift: every row names existing tests or states a reason.

The table's last column (headed ``test``) holds ``tests/file.py::test_name``
references (or ``tests/file.py::Class::test_name``, optionally with a
parametrize id ``[...]``), several separated by ``<br>`` or ``, ``; or
``reason: ...`` when no test applies. Where the table has them, the ``#``
column must count 1..N without gaps, ``level`` must be an RFC 2119 key word
or ``format``, and ``our behaviour`` must start with ``implemented``,
``not used`` or ``deliberately different``. A backquoted test reference
anywhere else in the document (the notes after the table) must exist too.
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


LEVELS = frozenset({"MUST", "MUST NOT", "REQUIRED", "SHALL", "SHALL NOT", "SHOULD",
                    "SHOULD NOT", "RECOMMENDED", "MAY", "OPTIONAL", "format"})
BEHAVIOURS = ("implemented", "not used", "deliberately different")
COLUMNS = ["#", "RFC", "role", "clause (quoted short)", "level", "our behaviour", "test"]


def table_rows(markdown: str) -> list[tuple[int, dict[str, str]]]:
    """(line number, {header: cell}) of every body row of every table headed ``... | test |``."""
    rows: list[tuple[int, dict[str, str]]] = []
    lines = markdown.splitlines()
    header: list[str] | None = None
    for number, line in enumerate(lines, 1):
        if not line.strip().startswith("|"):
            header = None
            continue
        cells = _cells(line)
        if header is None:
            following = lines[number] if number < len(lines) else ""
            if (cells[-1].strip("` *").lower() == "test"
                    and following.strip().startswith("|")
                    and _is_separator(_cells(following))):
                header = [cell.strip("` *") for cell in cells]
            continue  # the header row itself, or a row of another table
        if _is_separator(cells):
            continue
        row = dict(zip(header, cells, strict=False))
        row["test"] = cells[-1]
        if len(cells) != len(header):
            row["columns"] = f"{len(cells)} cells under {len(header)} headers"
        rows.append((number, row))
    return rows


def test_rows(markdown: str) -> list[tuple[int, str]]:
    """(line number, last cell) of every body row of every table headed ``... | test |``."""
    return [(number, row["test"]) for number, row in table_rows(markdown)]


test_rows.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test


def table_headers(markdown: str) -> list[list[str]]:
    """The header cells of every table whose last column is ``test``."""
    lines = markdown.splitlines()
    headers = []
    for number, line in enumerate(lines, 1):
        following = lines[number] if number < len(lines) else ""
        if (line.strip().startswith("|") and following.strip().startswith("|")
                and _is_separator(_cells(following)) and not _is_separator(_cells(line))):
            cells = [cell.strip("` *") for cell in _cells(line)]
            if cells[-1].lower() == "test":
                headers.append(cells)
    return headers


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


class _RefChecker:
    """Checks ``tests/file.py::name`` references, reading each file once."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.cache: dict[Path, tuple[set[str], dict[str, set[str]]] | None] = {}

    def check(self, ref: str) -> str | None:
        """None if ``ref`` names an existing test, else what is wrong."""
        match = _REF.match(ref)
        if match is None:
            return f"not a test reference or a reason: {ref!r}"
        path = self.root / match["file"]
        if path not in self.cache:
            self.cache[path] = _defined_names(path) if path.is_file() else None
        names = self.cache[path]
        if names is None:
            return f"no such test file {match['file']}"
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
        return None if ok else f"{match['file']} has no test {match['names']}"


_LOOSE_REF = re.compile(r"`(tests/[^`\s]+\.py::[^`\s]+)`")


def problems(markdown: str, root: Path) -> list[str]:
    """Everything wrong with the conformance table in ``markdown``."""
    found: list[str] = []
    refs = _RefChecker(root)
    rows = table_rows(markdown)
    if not rows:
        return ["no table with a 'test' column found"]
    table_lines = set()
    expected_number = 1
    for line, row in rows:
        table_lines.add(line)
        where = f"line {line}"
        if "columns" in row:
            found.append(f"{where}: {row['columns']}")
        if "#" in row:
            if row["#"] != str(expected_number):
                found.append(f"{where}: # is {row['#']!r}, expected {expected_number}")
            if row["#"].isdigit():
                expected_number = int(row["#"])
            expected_number += 1
        if "level" in row and row["level"] not in LEVELS:
            found.append(f"{where}: level {row['level']!r} is not an RFC 2119 key word "
                         "or 'format'")
        behaviour = row.get("our behaviour")
        if behaviour is not None and not behaviour.startswith(BEHAVIOURS):
            found.append(f"{where}: our behaviour must start with one of {BEHAVIOURS}")
        named_something = False
        for part in _BR.split(row["test"]):
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
                error = refs.check(ref)
                if error is None or not error.startswith("not a test reference"):
                    named_something = True
                if error is not None:
                    found.append(f"{where}: {error}")
        if not named_something:
            found.append(f"{where}: names no test and gives no reason")
    # test references outside the tables (notes after the table) must exist too
    for number, text in enumerate(markdown.splitlines(), 1):
        if number in table_lines:
            continue
        for ref in _LOOSE_REF.findall(text):
            error = refs.check(ref)
            if error is not None:
                found.append(f"line {number}: {error}")
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


_HEAD = ("| # | RFC | role | clause (quoted short) | level | our behaviour | test |\n"
         "|---|---|---|---|---|---|---|\n")


def _row(number: int, test: str, level: str = "MUST", behaviour: str = "implemented") -> str:
    return f"| {number} | 7 | broker | c | {level} | {behaviour} | {test} |\n"


def test_checker_accepts_tests_methods_params_several_refs_and_reasons(fake_repo: Path) -> None:
    doc = _HEAD + "".join([
        _row(1, "`tests/test_a.py::test_one`"),
        _row(2, "tests/test_a.py::test_one[MDP01-x, y]<br>tests/test_a.py::TestGroup::test_method",
             "SHALL NOT"),
        _row(3, "tests/test_a.py::test_one, tests/test_a.py::test_method", "SHOULD", "not used"),
        _row(4, "tests/test_a.py::TestMachine::runTest", "MAY"),
        _row(5, "reason: not applicable, broker only \\| really", "format",
             "deliberately different: why"),
        _row(6, "tests/test_a.py::test_one<br>reason: plus a driver test", "RECOMMENDED"),
    ]) + "\nNotes: `tests/test_a.py::test_one` and `tests/test_a.py::TestGroup::test_method`.\n"
    assert problems(doc, fake_repo) == []


def test_checker_rejects_missing_files_tests_and_reasons(fake_repo: Path) -> None:
    doc = "# Title\n\n" + _HEAD + "".join([
        _row(1, "tests/test_b.py::test_one"),
        _row(2, "tests/test_a.py::test_two"),
        _row(3, "tests/test_a.py::TestGroup::test_one"),
        _row(4, " "),
        _row(5, "reason:"),
        _row(6, "see above"),
        _row(7, "tests/test_a.py"),
        _row(8, "tests/test_a.py::Nope::test_x"),
    ])
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


def test_checker_rejects_gaps_in_numbering_bad_levels_and_behaviours(fake_repo: Path) -> None:
    ok = "tests/test_a.py::test_one"
    doc = _HEAD + "".join([
        _row(1, ok),
        _row(3, ok),            # gap: 2 is missing
        _row(3, ok),            # repeated
        _row(4, ok, "must"),    # lowercase is not a level
        _row(5, ok, "—"),
        _row(6, ok, "MUST", "sort of"),
    ]) + "| x | 7 | broker | c | MAY | implemented | " + ok + " |\n" + "| 8 | 7 | " + ok + " |\n"
    assert problems(doc, fake_repo) == [
        "line 4: # is '3', expected 2",
        "line 5: # is '3', expected 4",
        "line 6: level 'must' is not an RFC 2119 key word or 'format'",
        "line 7: level '—' is not an RFC 2119 key word or 'format'",
        "line 8: our behaviour must start with one of "
        "('implemented', 'not used', 'deliberately different')",
        "line 9: # is 'x', expected 7",
        "line 10: 3 cells under 7 headers",
    ]


def test_checker_checks_test_references_outside_the_table(fake_repo: Path) -> None:
    doc = (_HEAD + _row(1, "tests/test_a.py::test_one")
           + "\n- note: `tests/test_a.py::test_gone`, `tests/test_c.py::test_one`\n")
    assert problems(doc, fake_repo) == [
        "line 5: tests/test_a.py has no test test_gone",
        "line 5: no such test file tests/test_c.py",
    ]


def test_checker_ignores_other_tables_and_fails_without_a_test_table(fake_repo: Path) -> None:
    other = "| a | b |\n|---|---|\n| 1 | 2 |\n"
    assert problems(other, fake_repo) == ["no table with a 'test' column found"]
    assert problems(other + "\n" + _HEAD + _row(1, "reason: ok"), fake_repo) == []


# ------------------------------------------------------------ the real document


def test_every_conformance_row_names_an_existing_test_or_a_reason() -> None:
    assert DOC.is_file(), "docs/conformance.md is missing"
    assert problems(DOC.read_text(encoding="utf-8"), ROOT) == []


def test_conformance_doc_is_one_table_with_the_agreed_columns() -> None:
    assert table_headers(DOC.read_text(encoding="utf-8")) == [COLUMNS]
