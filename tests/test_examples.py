"""The README's examples are the files in examples/, and they run.

Each ``examples/*.py`` must appear verbatim in a ```python block of
README.md, so the README cannot drift from code that is executed here: the
broker and worker examples run as processes on an ipc endpoint in a
temporary folder and the client example must print what its comments say.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
README = ROOT / "README.md"


def _python_blocks(text: str) -> list[str]:
    return [m.group(1) for m in re.finditer(r"```python\n(.*?)```", text, re.S)]


@pytest.mark.parametrize("name", ["broker.py", "worker.py", "client.py", "sans_io.py"])
def test_readme_shows_each_example_verbatim(name: str) -> None:
    code = (EXAMPLES / name).read_text()
    assert code in _python_blocks(README.read_text()), f"README does not show examples/{name}"


@pytest.fixture
def endpoint(tmp_path: Path) -> str:
    return f"ipc://{tmp_path}/mdp.sock"


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for p in procs:  # only what this test started
        p.kill()
        p.wait(10)


def test_examples_run_against_each_other(
    endpoint: str, started: list[subprocess.Popen[bytes]]
) -> None:
    env = {**os.environ, "MDP_ENDPOINT": endpoint}
    for name in ("broker.py", "worker.py"):
        started.append(subprocess.Popen(
            [sys.executable, str(EXAMPLES / name)], env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
        ))
    # No waiting for start-up: a DEALER queues until it connects, and the
    # broker queues requests for a service until a worker registers.
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / "client.py")], env=env, capture_output=True,
        timeout=60, check=True, text=True,
    ).stdout.splitlines()
    assert out == [
        "[b'HELLO', b'WORLD']",
        "[b'25%']", "[b'50%']", "[b'75%']", "[b'done: job']",
        "True",
        # the client asked the broker why (mmi.service): no worker
        "no reply: no reply after 1 attempt: no worker registered for 'nobody'",
        "[b'ABC']",
    ]


def test_sans_io_example_recovers_from_a_killed_busy_worker() -> None:
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / "sans_io.py")], capture_output=True, timeout=60,
        check=True, text=True,
    ).stdout.splitlines()
    assert out[0] in ("busy worker: w1", "busy worker: w2")
    assert out[1:] == [
        "['RequestRequeued']",
        "[(b'echo: ', b'hello')]",
        "broker wakes me next at 2.5",
    ]
