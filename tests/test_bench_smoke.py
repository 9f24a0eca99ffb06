"""Each bench script runs for about a second with tiny parameters (so they cannot rot).

Loopback only. Every script runs in a session of its own; if one hangs past
its timeout, that session (the script and the brokers/workers it started)
is killed, and nothing else.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"

pytestmark = pytest.mark.slow


def run_script(args: list[str], timeout: float = 60.0) -> str:
    """Run ``python bench/<args>``; return its stdout; fail on a non-zero exit."""
    p = subprocess.Popen(
        [sys.executable, *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)  # the group this test started, only
        p.communicate()
        raise
    text = out.decode(errors="replace")
    assert p.returncode == 0, text
    return text


def test_core_bench_reports_broker_worker_client_and_memory(tmp_path: Path) -> None:
    out = run_script([str(BENCH / "core_broker.py"), "2", "20", "--services", "1", "10",
                      "--seconds", "0.05", "--rounds", "1", "--mem-n", "50",
                      "--json", str(tmp_path / "core.json"), "--chart", str(tmp_path / "c.png")])
    assert "Broker, 20 workers, 10 service(s)" in out and "Client core" in out
    data = json.loads((tmp_path / "core.json").read_text())["core"]
    assert data["memory"]["bytes_per_idle_worker"] > 0
    assert data["medians"]["2w/1s"] > 0


def test_e2e_bench_measures_every_contender_against_the_floor(tmp_path: Path) -> None:
    out = run_script([str(BENCH / "e2e.py"), "--seconds", "0.1", "--rounds", "1",
                      "--workers", "1", "--window", "10", "--json", str(tmp_path / "e2e.json")])
    summary = json.loads((tmp_path / "e2e.json").read_text())["e2e"]["summary"]
    for mode in ("sequential", "concurrent"):
        assert set(summary[mode]) == {"floor", "floor-lru", "floor-lru-mdp", "mdp_zmq",
                                      "mdp_async-trio", "mdp_async-asyncio", "mdp_gevent",
                                      "majortomo", "majortomo-quiet"}
        assert all(m["rps"] > 0 for m in summary[mode].values())
    assert "x floor" in out


def test_e2e_bench_broker_bound_scenario_reports_every_cpu_and_a_baseline(
    tmp_path: Path,
) -> None:
    # The baseline is this checkout itself: mdp_zmq@before runs beside mdp_zmq.
    out = run_script([str(BENCH / "e2e.py"), "--scenario", "broker-bound", "--contenders",
                      "floor-lru", "mdp_zmq", "--baseline", str(ROOT), "--seconds", "0.5",
                      "--rounds", "1", "--json", str(tmp_path / "e2e.json")], timeout=120)
    data = json.loads((tmp_path / "e2e.json").read_text())["e2e"]
    assert data["params"]["workers"] == 8 and data["params"]["window"] == 200
    for mode in ("sequential", "concurrent"):
        assert set(data["summary"][mode]) == {"floor-lru", "mdp_zmq", "mdp_zmq@before"}
        for m in data["summary"][mode].values():
            assert m["rps"] > 0 and m["cpu_us"] > 0
            # CPU is read in clock ticks (10 ms): a short sequential run may
            # give a worker process none; the concurrent one keeps them busy.
            assert m["workers_cpu_us"] >= 0 and m["load_cpu_us"] >= 0
            if mode == "concurrent":
                assert m["workers_cpu_us"] > 0 and m["load_cpu_us"] > 0
    assert "con_cpu_vs_floor_lru" in data["targets"] and "con_vs_before" in data["targets"]
    assert "load CPU us/rt" in out and "over 4 load process(es)" in out


def test_e2e_bench_sweeps_round_trips_against_workers(tmp_path: Path) -> None:
    run_script([str(BENCH / "e2e.py"), "--sweep", "1", "3", "--contenders", "floor-lru",
                "mdp_zmq", "--seconds", "0.1", "--rounds", "1", "--window", "10",
                "--json", str(tmp_path / "s.json"), "--sweep-chart", str(tmp_path / "s.png")],
               timeout=90)
    sweep = json.loads((tmp_path / "s.json").read_text())["e2e_sweep"]["sweep"]
    assert set(sweep) == {"floor-lru", "mdp_zmq"}
    assert all(sweep[n][w]["rps"] > 0 for n in sweep for w in ("1", "3"))
    assert (tmp_path / "s.png").stat().st_size > 0


def test_e2e_bench_compares_metrics_on_and_off(tmp_path: Path) -> None:
    out = run_script([str(BENCH / "e2e.py"), "--contenders", "mdp_zmq", "--metrics",
                      "--seconds", "0.1", "--rounds", "1", "--workers", "1", "--window", "10",
                      "--json", str(tmp_path / "e2e.json")])
    data = json.loads((tmp_path / "e2e.json").read_text())["e2e"]
    assert set(data["summary"]["concurrent"]) == {"mdp_zmq", "mdp_zmq-metrics"}
    overhead = data["metrics_overhead"]
    assert overhead["sequential"] > 0 and overhead["concurrent"] > 0
    assert overhead["delivered_counted"] > 0
    assert "metrics on = " in out


def test_e2e_bench_with_curve_measures_each_broker_with_curve_on_and_off(tmp_path: Path
                                                                         ) -> None:
    out = run_script([str(BENCH / "e2e.py"), "--curve", "--contenders", "mdp_zmq",
                      "mdp_async-trio", "mdp_gevent", "--seconds", "0.1", "--rounds", "1",
                      "--workers", "1", "--window", "10", "--json", str(tmp_path / "e2e.json")])
    data = json.loads((tmp_path / "e2e.json").read_text())["e2e"]
    for mode in ("sequential", "concurrent"):
        assert set(data["summary"][mode]) == {
            name + curve for name in ("mdp_zmq", "mdp_async-trio", "mdp_gevent")
            for curve in ("", "+curve")}
        assert all(m["rps"] > 0 for m in data["summary"][mode].values())
    assert data["targets"]["seq_mdp_zmq+curve_vs_mdp_zmq"] > 0
    assert "with CURVE, mdp_zmq = " in out


def test_recovery_bench_sees_redispatch_and_majortomo_never_replies(tmp_path: Path) -> None:
    run_script([str(BENCH / "recovery.py"), "--kills", "2", "--majortomo-kills", "1",
                "--client-timeout", "0.5", "--json", str(tmp_path / "rec.json")])
    data = json.loads((tmp_path / "rec.json").read_text())["recovery"]
    for name in ("mdp_zmq", "mdp_async-trio", "mdp_async-asyncio", "mdp_gevent"):
        ours = data["runs"][name]
        assert len(ours) == 2 and all(r["requeued"] is not None and r["reply"] for r in ours)
    assert [r["reply"] for r in data["runs"]["majortomo"]] == [None]


def test_run_all_entry_point_parses_its_options() -> None:
    out = run_script([str(BENCH / "run_all.py"), "--help"], timeout=30)
    assert "--quick" in out


def test_hostile_bench_reports_memory_and_log_volume_per_case() -> None:
    out = run_script([str(BENCH / "hostile.py"), "logflood", "services", "--count", "200"])
    lines = out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["logflood", "services"]
    assert all("peak" in line and "lines" in line for line in lines)


def test_brokers_bench_measures_one_and_two_brokers(tmp_path: Path) -> None:
    out = run_script([str(BENCH / "brokers.py"), "--seconds", "0.2", "--rounds", "1",
                      "--workers", "2", "--clients", "2", "--window", "2",
                      "--json", str(tmp_path / "brokers.json")])
    data = json.loads((tmp_path / "brokers.json").read_text())["brokers"]
    assert set(data["summary"]) == {"1 broker", "2 brokers"}
    assert all(m["rps"] > 0 and m["broker_cpu_us"] > 0 for m in data["summary"].values())
    assert "2 brokers / 1 broker" in out


def test_scale_bench_registers_every_worker_and_measures_mmi_and_cpu(tmp_path: Path) -> None:
    out = run_script([str(BENCH / "scale.py"), "--workers", "40", "--procs", "2",
                      "--seconds", "0.5", "--register-timeout", "20",
                      "--json", str(tmp_path / "scale.json")])
    r = json.loads((tmp_path / "scale.json").read_text())["scale"]
    assert r["registered"] == r["final_registered"] == 40 and r["expired"] == 0
    assert r["mmi_probes"] > 0 and r["mmi_timeouts"] == 0 and r["broker_cores"] >= 0
    assert len(r["generator_cores"]) == 2
    assert "all registered after" in out


def test_zmtp_timers_bench_connects_every_dealer_and_reads_io_thread_cpu() -> None:
    out = run_script([str(BENCH / "zmtp_timers.py"), "--connections", "20", "--procs", "2",
                      "--seconds", "0.2", "--ivl", "0.5", "--timeout", "1.5",
                      "--io-threads", "2"])
    assert "20 connections" in out and "20 handshakes" in out and "0 dropped" in out
