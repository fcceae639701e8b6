"""Markdown tables, the PNG chart, and the copy of the last table in docs/12-performance.md."""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

from benchmarks.common import DOC, RESULTS

DOC_BEGIN = "<!-- bench:begin (written by `make bench`; edit around it) -->"
DOC_END = "<!-- bench:end -->"
FAMILY_COLORS = {
    "peer": "#6a9f58",
    "ceiling": "#4e79a7",
    "proxy": "#76b7b2",
    "of": "#f28e2b",
    "of-redis": "#edc948",
}
FAMILY_LABELS = {
    "peer": "nginx (peer)",
    "ceiling": "aiohttp ceiling",
    "proxy": "minimal aiohttp proxy",
    "of": "OpenFlare",
    "of-redis": "OpenFlare, cache / limits in Redis",
}


def _family(server: str) -> str:
    if server.startswith("peer"):
        return "peer"
    if server == "ceiling":
        return server
    if server.startswith("proxy-"):
        return "proxy"
    return "of-redis" if server.endswith("redis") else "of"


def _num(value: float, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:,.{digits}f}"


def _ms(value: float) -> str:
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def _other_load(data: dict[str, Any]) -> float | None:
    values = [r["other_load_pct"] for r in data.get("runs", []) if "other_load_pct" in r]
    return statistics.median(values) if values else None


def machine_line(data: dict[str, Any]) -> str:
    m = data["machine"]
    return (
        f"{m['nproc']} CPUs ({m['cpus_usable']} usable), {m['cpu']}, {m['memory']} RAM, "
        f"Linux {m['kernel']}; Python {m['python']}, aiohttp {m['aiohttp']}, "
        f"uvloop {m['uvloop']}; nginx {m['nginx']}; {m['wrk']}"
        + (f"; redis-server {m['redis']}" if m.get("redis", "not found") != "not found" else "")
    )


def markdown(data: dict[str, Any], image: str | None) -> str:
    s = data["settings"]
    lines: list[str] = []
    kind = "quick smoke run" if data["quick"] else "full run"
    lines.append(
        f"**{data['stamp']} UTC** — {kind}: {s['rounds']} round(s) × {len(data['summary'])} "
        f"scenarios × {s['seconds']:g} s, {s['connections']} keep-alive connections, "
        f"interleaved round by round; {data['pinning']}."
    )
    lines.append("")
    lines.append(f"Machine: {machine_line(data)}.")
    lines.append("")
    other = _other_load(data)
    if other is not None:
        lines.append(
            f"Other load on the two cores during the timed runs (processes not ours): median "
            f"{other:.0f} % of a core"
            + (
                " — the machine was busy; trust ratios over absolute figures."
                if other > 25
                else "."
            )
        )
        lines.append("")
    if image:
        lines.append(f"![benchmark chart]({image})")
        lines.append("")
    lines.append(
        "| Scenario | req/s (median) | min – max | p50 ms | p99 ms | server CPU % "
        "| server CPU µs/req | wrk + origin (+ Redis) CPU % | other load % | origin req/run "
        "| check |"
    )
    lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for row in data["summary"]:
        if row["failed_rounds"]:
            check = f"**FAILED** round {', '.join(map(str, row['failed_rounds']))}: " + "; ".join(
                row["failures"]
            )
        else:
            check = (
                "ok (" + ("no origin" if row["origin_expect"] == "none" else "all to origin") + ")"
            )
        lines.append(
            f"| {row['label']} | {_num(row['rps'])} | {_num(row['rps_min'])} – "
            f"{_num(row['rps_max'])} | {_ms(row['p50_ms'])} | {_ms(row['p99_ms'])} | "
            f"{_num(row['server_cpu_pct'])} | {_num(row['cpu_us_per_req'])} | "
            f"{_num(row['loadgen_cpu_pct'])} | "
            f"{_num(row['other_load_pct'])} | "
            f"{_num(row['origin_per_run'])} | {check} |"
        )
    lines.append("")
    lines.append(
        "Ratios: req/s of one over req/s of the other in the same round, median over the rounds"
        " (the figure the targets are about); and from server CPU time per request (the other's"
        " µs/req over this one's: the throughput ratio if each had a quiet core to itself)."
    )
    lines.append("")
    lines.append("| Ratio | req/s ratio (median) | per round | target | CPU-time ratio (median) |")
    lines.append("|---|---:|---|---|---:|")
    for ratio in data["ratios"]:
        rounds = ", ".join(f"{v:.2f}" for v in ratio["per_round"])
        if ratio["skipped_rounds"]:
            rounds += f" ({ratio['skipped_rounds']} round(s) left out: failed check)"
        target = ratio["target"]
        if target is None:
            verdict = "–"
        else:
            verdict = f"≥ {target:.2f}: " + ("**met**" if ratio["met"] else "**not met**")
        lines.append(
            f"| {ratio['label']} | {_num(ratio['median'], 2)} | {rounds} | {verdict} | "
            f"{_num(ratio['cpu_median'], 2)} |"
        )
    lines.append("")
    shared = [row for row in data["summary"] if row.get("redis_per_request") is not None]
    if shared:
        lines.append(shared_state_markdown(shared))
        lines.append("")
    if data.get("memory"):
        lines.append("Memory (fresh proxy, memory store; RSS from /proc):")
        lines.append("")
        lines.append(
            "| Body | entries | body bytes | RSS before → after | growth / bodies "
            "| overhead per entry | target ≤ 1.3× |"
        )
        lines.append("|---|---:|---:|---:|---:|---:|---|")
        for m in data["memory"]:
            verdict = "**met**" if m["met"] else "**not met**"
            if m["failures"]:
                verdict += " — **FAILED**: " + "; ".join(m["failures"])
            lines.append(
                f"| {m['size'].upper().replace('K', ' KB')} | {m['entries']:,} | "
                f"{m['body_bytes'] / 1e6:.1f} MB | {m['rss_before'] / 1e6:.1f} → "
                f"{m['rss_after'] / 1e6:.1f} MB | {m['ratio']:.2f}× | "
                f"{m['overhead_per_entry']:,.0f} B | {verdict} |"
            )
        lines.append("")
    micro = data.get("micro")
    if micro:
        lines.append(micro_markdown(micro))
        lines.append("")
    notes: list[str] = []
    for name, info in data["openflare"].items():
        chain = " → ".join(info["stages"]) or "unknown"
        notes.append(f"OpenFlare `{name}` stage chain: {chain}.")
        notes.extend(f"OpenFlare `{name}`: {note}" for note in info["notes"])
    for row in data["summary"]:
        notes.extend(f"{row['label']}: {note}" for note in row["notes"])
    if notes:
        lines.append("Notes:")
        lines.append("")
        lines.extend(f"- {note}" for note in notes)
        lines.append("")
    return "\n".join(lines)


def shared_state_markdown(rows: list[dict[str, Any]]) -> str:
    """What sharing costs besides the proxy's own CPU: Redis's work for each request (it runs on
    the load generator's core, so the table above does not bill it to the server)."""
    lines = [
        "Shared state: a real redis-server on the load generator's core; per answered request "
        "(median of rounds):",
        "",
        "| Scenario | Redis commands | Redis CPU µs | proxy CPU µs | proxy + Redis CPU µs |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        redis_us = row["redis_cpu_us_per_req"]
        lines.append(
            f"| {row['label']} | {row['redis_per_request']:.2f} | {_num(redis_us)} | "
            f"{_num(row['cpu_us_per_req'])} | {_num(row['cpu_us_per_req'] + redis_us)} |"
        )
    return "\n".join(lines)


def micro_markdown(micro: dict[str, Any]) -> str:
    lines = [
        "Cost per stage (µs of event-loop CPU time per request, min of repeats; one process, "
        "no network; `make bench-micro`; "
        f"Python {micro.get('python', '?')}):",
        "",
        "| Stage | case | µs/request | note |",
        "|---|---|---:|---|",
    ]
    for row in micro["rows"]:
        value = "–" if row["us"] is None else f"{row['us']:.2f}"
        lines.append(f"| {row['stage']} | {row['case']} | {value} | {row.get('note', '')} |")
    return "\n".join(lines)


def chart(data: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    summary = data["summary"]
    ratios = data["ratios"]
    fig, axes = plt.subplots(2, 2, figsize=(20, 12))
    ax_rps, ax_cpu, ax_lat, ax_ratio = axes[0][0], axes[0][1], axes[1][0], axes[1][1]
    rows = summary[::-1]
    labels = [row["label"] for row in rows]
    ys = list(range(len(rows)))
    colors = [FAMILY_COLORS[_family(row["server"])] for row in rows]
    failed = [bool(row["failed_rounds"]) for row in rows]

    def bars(ax: Any, values: list[float], fmt: str, at: list[float] | None = None) -> None:
        drawn = ax.barh(ys, values, color=colors)
        for bar, bad in zip(drawn, failed, strict=True):
            if bad:
                bar.set_hatch("//")
        for y, value, x in zip(ys, values, at or values, strict=True):
            ax.text(x, y, " " + fmt.format(value), va="center", ha="left", fontsize=8)
        ax.set_yticks(ys, labels, fontsize=9)
        ax.margins(x=0.18)

    rps = [row["rps"] for row in rows]
    bars(ax_rps, rps, "{:,.0f}", at=[row["rps_max"] for row in rows])
    ax_rps.errorbar(
        rps,
        ys,
        xerr=[
            [row["rps"] - row["rps_min"] for row in rows],
            [row["rps_max"] - row["rps"] for row in rows],
        ],
        fmt="none",
        ecolor="black",
        capsize=3,
        linewidth=1,
    )
    ax_rps.set_xlabel("requests per second (median of rounds; whiskers: min–max)")
    ax_rps.set_title("Throughput: one server process, 64 keep-alive connections (wrk)")
    families = dict.fromkeys(_family(row["server"]) for row in summary)
    ax_rps.legend(
        handles=[
            *(Patch(color=FAMILY_COLORS[f], label=FAMILY_LABELS[f]) for f in families),
            Patch(facecolor="white", edgecolor="black", hatch="//", label="failed a check"),
        ],
        loc="lower right",
        fontsize=8,
    )

    bars(ax_cpu, [row["cpu_us_per_req"] for row in rows], "{:,.0f} µs")
    ax_cpu.set_xlabel("server CPU time per request, µs (median of rounds)")
    ax_cpu.set_title("Cost: CPU the server spent per answered request")

    p50 = [row["p50_ms"] for row in rows]
    p99 = [row["p99_ms"] for row in rows]
    ax_lat.barh([y + 0.2 for y in ys], p99, height=0.4, color=colors)
    ax_lat.barh([y - 0.2 for y in ys], p50, height=0.4, color=colors, alpha=0.45)
    for y, value in zip(ys, p99, strict=True):
        ax_lat.text(value, y + 0.2, f" p99 {value:.1f}", va="center", fontsize=7)
    ax_lat.set_yticks(ys, labels, fontsize=9)
    ax_lat.set_xlabel("latency, ms (light: p50, dark: p99; median of rounds)")
    ax_lat.set_title("Latency under the same load")
    ax_lat.margins(x=0.18)

    if ratios:
        rlabels = [r["label"] for r in ratios][::-1]
        values = [0.0 if math.isnan(r["median"]) else r["median"] for r in ratios][::-1]
        targets = [r["target"] for r in ratios][::-1]
        ry = list(range(len(values)))
        rcolors = [
            "#bbbbbb" if t is None else ("#59a14f" if v >= t else "#e15759")
            for v, t in zip(values, targets, strict=True)
        ]
        ax_ratio.barh(ry, values, color=rcolors)
        for y, value, target in zip(ry, values, targets, strict=True):
            text = f" {value:.2f}" + (f" (target ≥ {target:.2f})" if target is not None else "")
            ax_ratio.text(value, y, text, va="center", fontsize=8)
            if target is not None:
                ax_ratio.plot([target, target], [y - 0.4, y + 0.4], color="black", linewidth=1.5)
        cpu = [r.get("cpu_median", float("nan")) for r in ratios][::-1]
        shown = [(c, y) for c, y in zip(cpu, ry, strict=True) if not math.isnan(c)]
        if shown:
            ax_ratio.scatter(
                [c for c, _ in shown],
                [y for _, y in shown],
                marker="D",
                s=16,
                color="black",
                zorder=3,
                label="from CPU time per request",
            )
            ax_ratio.legend(loc="lower right", fontsize=8)
        ax_ratio.axvline(1.0, color="grey", linestyle=":", linewidth=1)
        ax_ratio.set_yticks(ry, rlabels, fontsize=8)
        ax_ratio.set_xlabel("ratio of req/s, median of per-round ratios (tick: target)")
        ax_ratio.set_title("OpenFlare against the peer and the Python ceiling")
        # room on the right for the longest annotation ("2.72 (target ≥ 0.75)")
        widest = max([*values, *(t for t in targets if t is not None), *(c for c, _ in shown)])
        ax_ratio.set_xlim(0, max(widest, 1.0) * 1.45)
    s = data["settings"]
    other = _other_load(data)
    fig.suptitle(
        f"OpenFlare benchmark {data['stamp']} UTC, {s['rounds']} round(s) × {s['seconds']:g} s"
        + (f", other load on the machine {other:.0f} % of a core" if other is not None else "")
        + f"\n{machine_line(data)}",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_all(data: dict[str, Any], name: str, latest: bool) -> list[Path]:
    RESULTS.mkdir(parents=True, exist_ok=True)
    png = RESULTS / f"{name}.png"
    chart(data, png)
    md = RESULTS / f"{name}.md"
    md.write_text(f"# OpenFlare benchmark {data['stamp']}\n\n" + markdown(data, png.name) + "\n")
    paths = [md, png]
    if latest:
        (RESULTS / "latest.png").write_bytes(png.read_bytes())
        (RESULTS / "latest.md").write_text(
            f"# OpenFlare benchmark — latest full run\n\n{markdown(data, 'latest.png')}\n"
        )
        paths += [RESULTS / "latest.md", RESULTS / "latest.png"]
    return paths


def update_doc(data: dict[str, Any], doc: Path = DOC) -> None:
    """Replace the measured block of docs/12-performance.md (between the markers)."""
    block = markdown(data, "../benchmarks/results/latest.png")
    text = doc.read_text() if doc.exists() else f"# Performance\n\n{DOC_BEGIN}\n{DOC_END}\n"
    if DOC_BEGIN not in text or DOC_END not in text:
        text = text.rstrip("\n") + f"\n\n{DOC_BEGIN}\n{DOC_END}\n"
    head, rest = text.split(DOC_BEGIN, 1)
    _, tail = rest.split(DOC_END, 1)
    doc.write_text(f"{head}{DOC_BEGIN}\n\n{block}\n{DOC_END}{tail}")


def main() -> int:
    """Render a saved run again: `python -m benchmarks.report results/raw/<stamp>.json`."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("raw", type=Path, help="a run's JSON from benchmarks/results/raw/")
    parser.add_argument("--latest", action="store_true", help="also write latest.md/png")
    parser.add_argument("--docs", action="store_true", help="also update docs/12-performance.md")
    args = parser.parse_args()
    data = json.loads(args.raw.read_text())
    name = data["stamp"] + ("-quick" if data["quick"] else "")
    for path in write_all(data, name, latest=args.latest):
        print(path)
    if args.docs:
        update_doc(data)
        print(DOC)
    return 0


if __name__ == "__main__":
    sys.exit(main())
