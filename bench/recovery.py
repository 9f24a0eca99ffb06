"""Recovery: SIGKILL a busy worker; time to re-dispatch and to the client's reply.

Per contender: a broker process, one spare echo worker (``raw_worker.py``)
and, per kill, a fresh *victim* worker (``raw_worker.py --role victim``)
that prints ``busy <t>`` when it gets a request and then hangs. The bench
sends a request tagged ``hang`` until the victim (not the spare) has it,
SIGKILLs the victim, and waits for the reply (which the spare sends once
the broker re-dispatches the request).

* ``mdp_zmq``: ``bench/broker_proc.py`` (an ``mdp_zmq.Broker`` with default
  settings whose ``on_event`` prints ``RequestRequeued``/``WorkerLost`` with
  their CLOCK_MONOTONIC time): kill -> ``WorkerLost`` (loss noticed), kill ->
  ``RequestRequeued`` (re-dispatched; the REQUEST to the spare is already
  sent when the event is reported), kill -> reply at the client.
* ``mdp_async-trio``, ``mdp_async-asyncio``: the same with our async broker
  (``bench/async_broker_proc.py``, ``anyio.run(mdp_async.Broker(...).serve)``
  on trio or asyncio), measured the same way, interleaved with ``mdp_zmq``.
* ``mdp_gevent``: the same with our gevent broker (``bench/gevent_broker_proc.py``,
  ``mdp_gevent.Broker(...).serve()``).
* ``majortomo``: ``python -m majortomo.broker`` (defaults, logging at
  WARNING). It never re-dispatches a busy worker's request; each kill is
  reported as "no reply within ``--client-timeout``". Because each costs
  the timeout, it gets ``--majortomo-kills`` kills (default 5), interleaved
  with the first of ours (ABAB), then ours continue alone.

Run: ``python bench/recovery.py --kills 50`` (see ``--help``).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import zmq
from _common import (
    PY,
    Procs,
    free_port,
    md_table,
    med,
    pct,
    pyplot,
    read_line,
    save_json,
    wait_line,
)

C02 = b"MDPC02"
QUIET_YAML = "logging: {handlers: {console: {level: WARNING}}, root: {level: WARNING}}\n"
OURS = {"mdp_zmq": [PY, "bench/broker_proc.py"],
        "mdp_async-trio": [PY, "bench/async_broker_proc.py", "--backend", "trio"],
        "mdp_async-asyncio": [PY, "bench/async_broker_proc.py", "--backend", "asyncio"],
        "mdp_gevent": [PY, "bench/gevent_broker_proc.py"]}


class Setup:
    """One contender: broker, spare worker, client DEALER."""

    def __init__(self, name: str, procs: Procs, tmp: str) -> None:
        self.name = name
        self.procs = procs
        if name in OURS:
            self.broker = procs.start(
                [*OURS[name], "tcp://127.0.0.1:*", "RequestRequeued", "WorkerLost",
                 "WorkerReady"], stdout=True)
            assert self.broker.stdout is not None
            self.ep = wait_line(self.broker.stdout, "listening ", 10).split()[1]
            self.dialect = "mdp02"
        else:
            self.ep = f"tcp://127.0.0.1:{free_port()}"
            cfg = Path(tmp) / "quiet.yaml"
            cfg.write_text(QUIET_YAML)
            self.broker = procs.start([PY, "-m", "majortomo.broker", "-b", self.ep, "-c", str(cfg)])
            self.dialect = "majortomo"
        self.spare = self._worker("echo")
        self.sock = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(self.ep)
        self.seq = 0

    def _worker(self, role: str) -> subprocess.Popen[bytes]:
        w = self.procs.start([PY, "bench/raw_worker.py", self.ep, "--dialect", self.dialect,
                              "--role", role], stdout=True)
        assert w.stdout is not None
        wait_line(w.stdout, "ready", 10)
        return w

    def send(self, body: bytes) -> bytes:
        """Send one request; return its tag."""
        self.seq += 1
        tag = b"%s-%d" % (body, self.seq)
        if self.dialect == "mdp02":
            self.sock.send_multipart([C02, b"\x01", b"echo", tag])
        else:
            self.sock.send_multipart([b"", C02, b"\x02", b"echo", tag])
        return tag

    def wait_reply(self, tag: bytes, timeout: float) -> float | None:
        """Monotonic time the reply to ``tag`` arrived, or None after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not self.sock.poll(max(1, int(left * 1000))):
                return None
            if self.sock.recv_multipart()[-1] == tag:
                return time.monotonic()

    def events(self, timeout: float) -> dict[str, float]:
        """The broker's reported events (name -> first time) until quiet."""
        out: dict[str, float] = {}
        if self.name not in OURS:
            return out
        assert self.broker.stdout is not None
        while True:
            line = read_line(self.broker.stdout, timeout)
            if line is None:
                return out
            _, name, t = line.split()
            out.setdefault(name, float(t))
            timeout = 0.05

    def probe(self) -> None:
        """Wait until the spare answers."""
        for _ in range(100):
            if self.wait_reply(self.send(b"probe"), 0.3) is not None:
                return
        raise RuntimeError(f"{self.name}: broker/spare never answered")

    def kill_once(self, client_timeout: float) -> dict[str, float | None]:
        """One victim, one hang request, one SIGKILL; the times measured (s)."""
        victim = self._worker("victim")
        assert victim.stdout is not None
        self.events(0.0)  # drop WorkerReady etc. seen so far
        for _ in range(50):
            tag = self.send(b"hang")
            line = read_line(victim.stdout, 0.5)
            if line is not None and line.startswith("busy"):
                break
            # the spare took it (LRU order) or the victim is not registered yet
            self.wait_reply(tag, 1.0)
        else:
            raise RuntimeError(f"{self.name}: the victim never got a request")
        self.events(0.0)
        time.sleep(0.005)  # let it be well inside its job
        t_kill = time.monotonic()
        os.kill(victim.pid, signal.SIGKILL)
        t_reply = self.wait_reply(tag, client_timeout)
        ev = self.events(0.2 if t_reply is not None else 0.0)
        self.procs.kill(victim)
        def since(t: float | None) -> float | None:
            return None if t is None else t - t_kill
        return {"lost": since(ev.get("WorkerLost")), "requeued": since(ev.get("RequestRequeued")),
                "reply": since(t_reply)}


def summarize(name: str, runs: list[dict[str, float | None]], timeout: float) -> list[str]:
    """One table row per measured span."""
    rows = []
    for key, what in (("lost", "SIGKILL -> WorkerLost (broker notices)"),
                      ("requeued", "SIGKILL -> RequestRequeued (re-dispatched)"),
                      ("reply", "SIGKILL -> reply at the client")):
        vals = [r[key] for r in runs if r[key] is not None]
        missing = len(runs) - len(vals)
        if name not in OURS and key != "reply":
            continue
        if not vals:
            rows.append([name, what, len(runs), "never", "never",
                         f"no reply within {timeout:g}s in {missing}/{len(runs)} kills"])
            continue
        note = f"{missing} missing" if missing else ""
        rows.append([name, what, len(runs), f"{pct(vals, 50) * 1e3:.2f}",
                     f"{pct(vals, 99) * 1e3:.2f}", note])
    return rows


def chart(path: str, by: dict[str, list[dict[str, float | None]]]) -> None:
    """CDF of kill -> re-dispatch and kill -> reply for each of our brokers."""
    plt = pyplot()
    if plt is None:
        return
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, runs in by.items():
        for key, label in (("requeued", "re-dispatch (broker event)"),
                           ("reply", "reply at client")):
            vals = sorted(r[key] * 1e3 for r in runs if r[key] is not None)  # type: ignore[operator]
            if vals:
                ax.step(vals, [(i + 1) / len(vals) for i in range(len(vals))], where="post",
                        label=f"{name}: SIGKILL -> {label}")
    ax.axvline(50, color="grey", ls="--", lw=1, label="target p99 < 50 ms")
    ax.set_xlabel("ms after SIGKILL of the busy worker")
    ax.set_ylabel("fraction of kills")
    kills = max(len(runs) for runs in by.values())
    ax.set_title(f"recovery over {kills} kills per broker (majortomo: never)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"chart written to {path}")


def main(argv: list[str] | None = None) -> dict[str, object]:
    """Measure and print; return the results."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kills", type=int, default=50, help="kills of our broker's workers [50]")
    p.add_argument("--majortomo-kills", type=int, default=5, help="kills for majortomo [5]")
    p.add_argument("--client-timeout", type=float, default=3.0,
                   help="how long the client waits for a reply, s [3.0]")
    p.add_argument("--json", help="write the results as JSON here")
    p.add_argument("--chart", help="write the recovery CDF PNG here")
    p.add_argument("--contenders", nargs="+", choices=list(OURS), default=list(OURS),
                   help="our brokers to measure [all]")
    a = p.parse_args(argv)
    names = [*a.contenders] + (["majortomo"] if a.majortomo_kills > 0 else [])
    runs: dict[str, list[dict[str, float | None]]] = {n: [] for n in names}
    with Procs() as procs, tempfile.TemporaryDirectory() as tmp:
        setups = {n: Setup(n, procs, tmp) for n in names}
        for s in setups.values():
            s.probe()
        for i in range(max(a.kills, a.majortomo_kills)):
            for n, s in setups.items():
                if len(runs[n]) < (a.kills if n in OURS else a.majortomo_kills):
                    runs[n].append(s.kill_once(a.client_timeout))
            if (i + 1) % 10 == 0:
                print(f"{i + 1} kills done", flush=True)
        for s in setups.values():
            s.sock.close(0)
    rows = []
    for n in names:
        rows += summarize(n, runs[n], a.client_timeout)
    print()
    print(md_table(["broker", "span", "kills", "p50 ms", "p99 ms", "note"], rows))
    p99s: dict[str, float] = {}
    for n in a.contenders:
        ours = [r["requeued"] for r in runs[n] if r["requeued"] is not None]
        p99s[n] = pct(ours, 99) if len(ours) == len(runs[n]) else float("inf")
        print(f"{n}: recovery p99 SIGKILL -> re-dispatch = {p99s[n] * 1e3:.2f} ms "
              f"(target < 50 ms): {'MET' if p99s[n] < 0.050 else 'MISSED'}")
    first = a.contenders[0]
    result: dict[str, object] = {
        "params": vars(a), "runs": runs, "p99_requeued": p99s[first],
        "target_met": all(v < 0.050 for v in p99s.values()), "p99_requeued_by": p99s,
        "median_reply": med([r["reply"] for r in runs[first] if r["reply"] is not None]),
    }
    save_json(a.json, {"recovery": result})
    if a.chart:
        chart(a.chart, {n: runs[n] for n in a.contenders})
    return result


if __name__ == "__main__":
    main()
