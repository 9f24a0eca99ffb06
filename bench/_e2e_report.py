"""What ``bench/e2e.py`` reports besides its tables: the targets met or
missed (paired per-round ratios), the cost of metrics, and its charts.

Only reads the contenders' results; starts and measures nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from _common import med, pyplot

if TYPE_CHECKING:
    from e2e import Contender

ASYNC = {"mdp_async-trio": "trio", "mdp_async-asyncio": "asyncio"}
METERED = "mdp_zmq-metrics"
BEFORE = "mdp_zmq@before"  # mdp_zmq from --baseline DIR
#: Our brokers other than the blocking one, each compared with it in the same run.
DRIVERS = [*ASYNC, "mdp_gevent"]
CURVE = "+curve"  # suffix of a contender run with CURVE on (--curve)


def chart(path: str, cs: list[Contender], summary: dict[str, dict[str, dict[str, float]]],
          window: int, workers: int) -> None:
    """Sequential latency CDF per contender, and round trips/s per mode."""
    plt = pyplot()
    if plt is None:
        return
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    lat_min, lat_max = float("inf"), 0.0
    for c in cs:
        lat = sorted(x * 1e6 for r in c.results["sequential"] for x in r["lat"])  # type: ignore[union-attr]
        if not lat:
            continue
        lat_min, lat_max = min(lat_min, lat[0]), max(lat_max, lat[-1])
        n = len(lat)
        step = max(1, n // 2000)
        xs = [*lat[::step], lat[-1]]
        ys = [i / n for i in range(0, n, step)] + [1.0]
        ax1.plot(xs, ys, label=c.name)
    ax1.set_xscale("log")
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    ax1.xaxis.set_major_formatter(ScalarFormatter())
    ax1.xaxis.set_minor_formatter(NullFormatter())
    ax1.set_xticks([t for t in (100, 200, 300, 500, 1000, 2000, 5000, 10000)
                    if lat_min <= t <= lat_max] or [lat_min, lat_max])
    ax1.set_xlabel("round-trip latency, us (log)")
    ax1.set_ylabel("fraction of requests")
    ax1.set_title("sequential (1 in flight): latency distribution")
    ax1.grid(True, alpha=0.3, which="both")
    ax1.legend(fontsize=8)
    names = [c.name for c in cs]
    x = range(len(names))
    seq = [summary["sequential"][n]["rps"] for n in names]
    con = [summary["concurrent"][n]["rps"] for n in names]
    ax2.bar([i - 0.2 for i in x], seq, 0.4, label="sequential")
    ax2.bar([i + 0.2 for i in x], con, 0.4, label=f"concurrent ({window} in flight)")
    ax2.set_xticks(list(x), names, fontsize=8)
    ax2.set_ylabel("round trips/s (median)")
    ax2.set_title(f"throughput, loopback tcp, {workers} echo workers")
    ax2.grid(True, axis="y", alpha=0.3)
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"chart written to {path}")


def metrics_overhead(cs: list[Contender]) -> dict[str, object]:
    """Round trips/s with metrics on vs off (paired per-round ratios), and the
    deliveries the metered broker counted (it must have seen the load)."""
    lines: list[str] = []
    out: dict[str, object] = {"lines": lines}
    names = {c.name for c in cs}
    if METERED not in names or "mdp_zmq" not in names:
        return out
    for mode in ("sequential", "concurrent"):
        r = paired(cs, mode, METERED, "mdp_zmq")
        out[mode] = r
        lines.append(f"{mode}: metrics on = {r:.3f} x off, overhead {100 * (1 - r):.1f}% "
                     f"(target < 5%): {'MET' if r > 0.95 else 'MISSED'}")
    metered = next(c for c in cs if c.name == METERED)
    out["delivered_counted"] = delivered = metered.delivered_counted
    lines.append(f"{METERED} counted {delivered:,} requests delivered on its /metrics")
    return out


def paired(cs: list[Contender], mode: str, a: str, b: str) -> float:
    """Median over rounds of ``a``'s round trips/s divided by ``b``'s, same round."""
    return paired_key(cs, mode, a, b, "rps")


def paired_key(cs: list[Contender], mode: str, a: str, b: str, key: str) -> float:
    """Median over rounds of ``a``'s figure ``key`` divided by ``b``'s, same round."""
    by = {c.name: c for c in cs}
    pairs = zip(by[a].results[mode], by[b].results[mode], strict=True)
    return med([x[key] / y[key] for x, y in pairs])


def targets(cs: list[Contender]) -> dict[str, object]:
    """The e2e targets of issue 6, met or missed (paired per-round ratios)."""
    lines: list[str] = []
    out: dict[str, object] = {"lines": lines}
    names = {c.name for c in cs}
    # --curve: what CURVE costs each of our brokers, same run.
    for name in sorted(n for n in names if n.endswith(CURVE)):
        base = name.removesuffix(CURVE)
        for mode, short in (("sequential", "seq"), ("concurrent", "con")):
            r = paired(cs, mode, name, base)
            out[f"{short}_{name}_vs_{base}"] = r
            lines.append(f"{mode}: with CURVE, {base} = {r:.2f} x {base} without (for "
                         "reference)")
    if "mdp_zmq" not in names:
        return out

    def check(key: str, mode: str, ref: str, goal: float, strict: bool = False,
              who: str = "mdp_zmq") -> None:
        r = paired(cs, mode, who, ref)
        ok = r > goal if strict else r >= goal
        out[key] = r
        lines.append(f"{mode}: {who} = {r:.2f} x {ref} (target {'>' if strict else '>='} "
                     f"{goal:g}): {'MET' if ok else 'MISSED'}")

    # issues 10 and 11: the async and gevent brokers against the blocking one, same run.
    for name in DRIVERS:
        if name in names:
            for mode, short in (("sequential", "seq"), ("concurrent", "con")):
                check(f"{short}_{name}_vs_mdp_zmq", mode, "mdp_zmq", 0.8, who=name)

    if "floor" in names:
        check("seq_vs_floor", "sequential", "floor", 0.85)
        check("con_vs_floor", "concurrent", "floor", 0.60)
    if "floor-lru" in names:
        check("con_vs_floor_lru", "concurrent", "floor-lru", 0.60)
    for maj in ("majortomo", "majortomo-quiet"):
        if maj in names:
            check(f"seq_vs_{maj}", "sequential", maj, 1.0, strict=True)
            check(f"con_vs_{maj}", "concurrent", maj, 2.0)
    if "floor-lru-mdp" in names:
        for mode, short in (("sequential", "seq"), ("concurrent", "con")):
            r = paired(cs, mode, "mdp_zmq", "floor-lru-mdp")
            cpu = paired_key(cs, mode, "mdp_zmq", "floor-lru-mdp", "cpu_us")
            out[f"{short}_vs_floor_lru_mdp"] = r
            lines.append(f"{mode}: for reference, mdp_zmq = {r:.2f} x floor-lru-mdp round "
                         f"trips/s, broker CPU per round trip {cpu:.2f} x")
    if "floor-lru" in names:
        # issue 14: close to the floor, and no more broker CPU per round trip.
        check("seq_vs_floor_lru_0.9", "sequential", "floor-lru", 0.9)
        check("con_vs_floor_lru_0.9", "concurrent", "floor-lru", 0.9)
        for mode, short in (("sequential", "seq"), ("concurrent", "con")):
            r = paired_key(cs, mode, "mdp_zmq", "floor-lru", "cpu_us")
            out[f"{short}_cpu_vs_floor_lru"] = r
            lines.append(f"{mode}: broker CPU per round trip, mdp_zmq = {r:.2f} x floor-lru "
                         f"(target <= 1): {'MET' if r <= 1 else 'MISSED'}")
    if BEFORE in names:
        for mode, short in (("sequential", "seq"), ("concurrent", "con")):
            r = paired(cs, mode, "mdp_zmq", BEFORE)
            cpu = paired_key(cs, mode, "mdp_zmq", BEFORE, "cpu_us")
            out[f"{short}_vs_before"] = r
            out[f"{short}_cpu_vs_before"] = cpu
            lines.append(f"{mode}: mdp_zmq = {r:.2f} x {BEFORE} round trips/s, broker CPU "
                         f"per round trip {cpu:.2f} x (for reference)")
    if "floor-lru" in names and "majortomo-quiet" in names:
        cpu = paired_key(cs, "concurrent", "majortomo-quiet", "floor-lru", "cpu_us")
        out["con_cpu_majortomo_quiet_vs_floor_lru"] = cpu
        lines.append(f"concurrent: for reference, majortomo-quiet's broker CPU per round trip "
                     f"= {cpu:.2f} x floor-lru's")
        r = paired(cs, "concurrent", "floor-lru", "majortomo-quiet")
        out["con_floor_lru_vs_majortomo_quiet"] = r
        lines.append(f"concurrent: for reference, floor-lru = {r:.2f} x majortomo-quiet "
                     "(the most any broker with MDP's one-request-per-worker rule could reach)")
    return out


def sweep_chart(path: str, points: dict[str, dict[int, dict[str, float]]],
                counts: list[int], window: int) -> None:
    """Round trips/s and broker CPU per round trip against workers, per contender."""
    plt = pyplot()
    if plt is None:
        return
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, p in points.items():
        ax1.plot(counts, [p[w]["rps"] for w in counts], marker="o", label=name)
        ax2.plot(counts, [p[w]["cpu_us"] for w in counts], marker="o", label=name)
    for ax in (ax1, ax2):
        ax.set_xscale("log")
        ax.set_xticks(counts, [str(w) for w in counts])
        ax.set_xlabel("echo workers (log)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    ax1.set_ylabel("round trips/s (median)")
    ax1.set_title(f"concurrent ({window} in flight): throughput")
    ax2.set_ylabel("broker CPU us per round trip (median)")
    ax2.set_title("broker CPU per round trip")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"chart written to {path}")
