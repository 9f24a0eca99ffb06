"""deploy/ cannot drift from the code: the container copies what the wheel is built
from, and the commands the unit file and the container run parse as ``mdp`` commands.

(Nothing here builds an image or starts systemd: see docs/deployment.md.)
"""

from __future__ import annotations

import ast
import json
import re
import shlex
from pathlib import Path

from mdp_zmq.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
CONTAINERFILE = (ROOT / "deploy" / "Containerfile").read_text()
UNIT = (ROOT / "deploy" / "mdp-broker@.service").read_text()


def exec_form(instruction: str) -> list[str]:
    """The JSON array of a Containerfile instruction (ENTRYPOINT, CMD, HEALTHCHECK's CMD)."""
    text = CONTAINERFILE.replace("\\\n", " ")
    (match,) = re.findall(rf"^{instruction}\s+.*?(\[.*\])\s*$", text, re.MULTILINE)
    words: list[str] = json.loads(match)
    return words


def test_the_container_copies_every_path_the_wheel_is_built_from() -> None:
    copied = [line.split()[1] for line in CONTAINERFILE.splitlines()
              if line.startswith("COPY ") and "--from" not in line]
    sources = [src for line in CONTAINERFILE.splitlines()
               if line.startswith("COPY ") and "--from" not in line
               for src in line.split()[1:-1]]
    assert copied and all((ROOT / src).exists() for src in sources)
    pyproject = (ROOT / "pyproject.toml").read_text()
    wheel = pyproject.split("[tool.hatch.build.targets.wheel]", 1)[1]
    (packages,) = re.findall(r"^packages = (\[.*\])$", wheel, re.MULTILINE)[:1]
    assert all(any(pkg == src or pkg.startswith(src + "/") for src in sources)
               for pkg in ast.literal_eval(packages))
    (readme,) = re.findall(r'^readme = "(.*)"$', pyproject, re.MULTILINE)
    assert readme in sources


def test_the_container_runs_a_broker_and_checks_it_with_mdp_commands() -> None:
    entry, cmd = exec_form("ENTRYPOINT"), exec_form("CMD")
    assert entry[0] == "mdp"
    args = build_parser().parse_args([*entry[1:], *cmd])
    assert (args.command, args.bind) == ("broker", ["tcp://0.0.0.0:5555"])
    health = exec_form("HEALTHCHECK")
    assert health[0] == "mdp"
    assert build_parser().parse_args(health[1:]).command == "services"


def test_the_unit_runs_an_mdp_broker() -> None:
    (exec_start,) = re.findall(r"^ExecStart=(.*)$", UNIT, re.MULTILINE)
    argv = [word for word in shlex.split(exec_start) if not word.startswith("$")]
    assert argv[0].endswith("/mdp")
    assert build_parser().parse_args(argv[1:]).command == "broker"
    assert "KillSignal=SIGTERM" in UNIT
