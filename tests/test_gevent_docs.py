"""docs/gevent.md holds a complete worker and a complete WSGI app, and they run.

The page's two ```python blocks are run as written, as processes behind
``mdp broker --driver gevent`` on a free loopback port (the app on a free
HTTP port), and HTTP requests to the app on 127.0.0.1 must get the
worker's replies; SIGTERM stops both cleanly. So the page cannot drift
from the driver.
"""

from __future__ import annotations

import re
import signal
import sys
import threading
import urllib.request
from pathlib import Path

import pytest
from zmq_support import ProcSet, free_tcp_endpoint, mdp_cli

DOC = Path(__file__).resolve().parent.parent / "docs" / "gevent.md"

pytestmark = pytest.mark.slow


def _python_blocks() -> list[str]:
    return [m.group(1) for m in re.finditer(r"```python\n(.*?)```", DOC.read_text(), re.S)]


def test_the_wsgi_app_calls_the_worker_through_a_broker(
    procs: ProcSet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker_code, app_code = _python_blocks()
    assert "mdp_gevent.Worker(" in worker_code and "WSGIServer(" in app_code
    (tmp_path / "worker.py").write_text(worker_code)
    (tmp_path / "app.py").write_text(app_code)
    endpoint = free_tcp_endpoint()
    monkeypatch.setenv("MDP_ENDPOINT", endpoint)  # the processes below inherit it
    monkeypatch.setenv("PORT", "0")  # a free HTTP port; the app prints it
    broker = procs.start(mdp_cli("broker", "--bind", endpoint, "--driver", "gevent"))
    broker.wait_line("mdp broker listening")
    worker = procs.start([sys.executable, str(tmp_path / "worker.py")])
    worker.wait_line("worker ready")
    app = procs.start([sys.executable, str(tmp_path / "app.py")])
    url = app.wait_line("serving on ").split()[-1]

    replies: dict[int, tuple[int, bytes]] = {}

    def get(i: int) -> None:
        with urllib.request.urlopen(f"{url}/tea{i}", timeout=20) as response:
            replies[i] = response.status, response.read()

    callers = [threading.Thread(target=get, args=(i,)) for i in range(20)]
    for c in callers:  # 20 HTTP requests at once: 20 greenlets share the app's Client
        c.start()
    for c in callers:
        c.join(30)
    assert replies == {i: (200, b"price of tea%d: 42\n" % i) for i in range(20)}
    for proc in (app, worker):
        proc.popen.send_signal(signal.SIGTERM)
        assert proc.popen.wait(15) == 0
