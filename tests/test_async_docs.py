"""docs/async.md holds a complete trio program and a complete asyncio program, and they run.

Each ```python block of the page is run as a script (loopback, free
ports) and must print what its comments say, so the page cannot drift
from the driver.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parent.parent / "docs" / "async.md"


def _python_blocks() -> list[str]:
    return [m.group(1) for m in re.finditer(r"```python\n(.*?)```", DOC.read_text(), re.S)]


def test_the_page_has_one_trio_and_one_asyncio_program() -> None:
    blocks = _python_blocks()
    assert [("trio.run(main)" in b, "asyncio.run(main())" in b) for b in blocks] == [
        (True, False), (False, True)]


EXPECTED = {
    "trio": [
        "[b'HELLO', b'WORLD']",
        "[b'25%']", "[b'50%']", "[b'75%']", "[b'done: job']",
        "True",
        "[b'JOB 7']",
        "no worker",
    ],
    "asyncio": [
        "[b'ba7816bf8f01cfea']",
        "[b'slept on it']",
        "10 [b'5feceb66ffc86f38']",
        "[b'ba7816bf8f01cfea']",
    ],
}


@pytest.mark.parametrize("which", ["trio", "asyncio"])
def test_the_program_prints_what_its_comments_say(which: str) -> None:
    code = _python_blocks()[0 if which == "trio" else 1]
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == EXPECTED[which]
