#!/usr/bin/env python3
"""Turns benches/compare.sh's per-run CSV into compare.md (medians and ratios) and compare.png.

Standard library only, except matplotlib for the plot: without it the PNG is skipped (or, with
--require-plot, the script fails).
"""

import argparse
import csv
import statistics
import sys
import textwrap
from collections import OrderedDict

TARGET_NAMES = {
    "direct": "PostgreSQL direct",
    "pgbouncer": "PgBouncer",
    "pgbouncer-reset": "PgBouncer, DISCARD ALL at every release (server_reset_query_always = 1)",
    "relay": "bare relay (examples/null_relay: copies bytes, no pooling)",
    "pgward": "pgward",
    "pgward-noreset": "pgward, reset_on_handover = false",
    "pgward-policy": "pgward, policy enforce (allowlist)",
    "pgward-audit": 'pgward, audit statements = "all"',
}
# Shorter names under the plot's bars, where the long ones run into each other.
PLOT_NAMES = {
    "pgbouncer-reset": "PgBouncer,\nDISCARD ALL at release",
    "relay": "bare relay\n(no pooling)",
}
COLORS = {
    "direct": "#8c8c8c",
    "pgbouncer": "#4c72b0",
    "pgbouncer-reset": "#8fa8d6",
    "relay": "#b0b0b0",
    "pgward": "#dd8452",
    "pgward-noreset": "#f2b482",
    "pgward-policy": "#55a868",
    "pgward-audit": "#c44e52",
}


def num(s):
    try:
        return float(s)
    except (TypeError, ValueError):
        return None


def fmt_int(x):
    return "—" if x is None else f"{x:,.0f}"


def fmt_ms(x):
    if x is None:
        return "—"
    return f"{x:.2f}" if x < 100 else f"{x:,.0f}"


def fmt_ratio(a, b):
    if a is None or b is None or b == 0:
        return "—"
    return f"{a / b:.2f}"


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def load(path):
    """Groups runs by scenario (in file order) and target (in run order)."""
    groups = OrderedDict()
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            groups.setdefault(row["scenario"], OrderedDict()).setdefault(row["target"], []).append(row)
    return groups


def summarize(runs):
    ok = [r for r in runs if r["status"] == "ok"]
    failed = [r for r in runs if r["status"] != "ok"]
    return {
        "tps": median(num(r["tps"]) for r in ok),
        "lat": median(num(r["latency_avg_ms"]) for r in ok),
        "p99": median(num(r["latency_p99_ms"]) for r in ok),
        "max": max((v for v in (num(r.get("latency_max_ms")) for r in ok) if v is not None), default=None),
        "conn": median(num(r["connection_ms"]) for r in ok),
        "runs": [num(r["tps"]) for r in ok],
        "failed": failed,
        "total": len(runs),
        "expected": all(r["status"] == "expected-fail" for r in failed),
    }


def tps_cell(s):
    if not s["failed"]:
        return fmt_int(s["tps"])
    err = s["failed"][0]["error"].strip() or "no error text"
    if len(err) > 110:
        err = err[:107] + "…"
    err = err.replace("|", "\\|")
    if s["tps"] is None:
        return f"fails: `{err}`"
    return f"{fmt_int(s['tps'])} ({len(s['failed'])} of {s['total']} runs failed: `{err}`)"


def write_markdown(groups, meta, path, smoke):
    out = []
    out.append("# pgward vs PgBouncer vs PostgreSQL direct")
    out.append("")
    if smoke:
        out.append("**Smoke pass** (`--smoke`): runs too short and too few to mean anything; it only")
        out.append("checks that every target works in every scenario.")
        out.append("")
    out.append("Made by `bash benches/compare.sh`.")
    out.append("")
    for key, value in meta:
        out.append(f"- **{key}**: {value}")
    out.append("")
    out.append("TPS is pgbench's (without the initial connection time; with `-C`, including the")
    out.append("reconnections), the median over the rounds. Latency: pgbench's average and the 99th")
    out.append("percentile of its per-transaction log (`--log`, nearest rank), medians over the rounds. Ratios")
    out.append("compare median TPS. TPS per run lists the rounds in order. pgbench's `-T` counts the")
    out.append("time its clients take to connect, so each run (but `-C` ones) gets 1 s more, and 1 s per 30")
    out.append("clients (500 clients: +17 s), to measure about the nominal duration; compare.csv has each")
    out.append("run's `measured_s`.")
    out.append("")

    # The short table: pgward against the others, and pgward's variants against pgward.
    out.append("## Summary: median TPS ratios")
    out.append("")
    out.append("| scenario | pgward / direct | pgward / PgBouncer | PgBouncer / direct | pgward / PgBouncer with reset | variant / pgward |")
    out.append("|---|---:|---:|---:|---:|---|")
    for scenario, targets in groups.items():
        s = {t: summarize(r) for t, r in targets.items()}
        pw = s.get("pgward", {}).get("tps")
        d = s.get("direct", {}).get("tps")
        b = s.get("pgbouncer", {}).get("tps")
        variants = [
            f"{TARGET_NAMES.get(t, t).removeprefix('pgward, ')}: {fmt_ratio(v['tps'], pw)}"
            for t, v in s.items()
            if t.startswith("pgward-")
        ]
        bcell = fmt_ratio(pw, b) if b is not None else "PgBouncer fails"
        # Only where the scenario ran it: the same hand-over guarantee as pgward's default.
        br = s.get("pgbouncer-reset", {}).get("tps")
        rcell = fmt_ratio(pw, br) if "pgbouncer-reset" in s else ""
        out.append(
            f"| {scenario} | {fmt_ratio(pw, d)} | {bcell} | {fmt_ratio(b, d)} | {rcell} | {'; '.join(variants) or ''} |"
        )
    out.append("")
    out.append("PgBouncer with reset: `server_reset_query = DISCARD ALL` and `server_reset_query_always = 1`,")
    out.append("so that, as with pgward's default `reset_on_handover = true`, no client finds the session state")
    out.append("another client left on a server connection (PgBouncer's default in transaction mode skips it).")
    out.append("")

    out.append("## All results")
    out.append("")
    out.append(
        "| scenario | target | median TPS | avg latency ms | p99 latency ms | max latency ms | connect ms | × direct | × PgBouncer | TPS per run |"
    )
    out.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for scenario, targets in groups.items():
        s = {t: summarize(r) for t, r in targets.items()}
        d = s.get("direct", {}).get("tps")
        b = s.get("pgbouncer", {}).get("tps")
        first = True
        for t, v in s.items():
            runs = " / ".join(fmt_int(x) for x in v["runs"]) or "—"
            out.append(
                f"| {scenario if first else ''} | {TARGET_NAMES.get(t, t)} | {tps_cell(v)} | {fmt_ms(v['lat'])} | "
                f"{fmt_ms(v['p99'])} | {fmt_ms(v['max'])} | {fmt_ms(v['conn'])} | {fmt_ratio(v['tps'], d)} | {fmt_ratio(v['tps'], b)} | {runs} |"
            )
            first = False
    out.append("")
    out.append("max latency: the slowest transaction of all rounds. connect ms: pgbench's initial")
    out.append("connection time (all clients), or with `-C` its average connection time.")
    out.append("")
    with open(path, "w") as f:
        f.write("\n".join(out))


def plot(groups, path, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(groups)
    cols = 3 if n > 4 else n
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.9 * rows), squeeze=False)
    for ax, (scenario, targets) in zip(axes.flat, groups.items()):
        names, heights, colors, labels = [], [], [], []
        for t, runs in targets.items():
            s = summarize(runs)
            names.append(PLOT_NAMES.get(t) or TARGET_NAMES.get(t, t).replace(", ", ",\n", 1))
            heights.append(s["tps"] or 0)
            colors.append(COLORS.get(t, "#777777"))
            labels.append("fails" if s["tps"] is None else fmt_int(s["tps"]))
        x = range(len(names))
        bars = ax.bar(x, heights, color=colors)
        top = max(heights) if any(heights) else 1
        for bar, label in zip(bars, labels):
            ax.text(
                bar.get_x() + bar.get_width() / 2,
                bar.get_height() + top * 0.01,
                label,
                ha="center",
                va="bottom",
                fontsize=7,
                color="#c00000" if label == "fails" else "black",
            )
        ax.set_ylim(0, top * 1.15)
        ax.set_xticks(list(x))
        ax.set_xticklabels(names, fontsize=6.5, rotation=30, ha="right")
        ax.set_title("\n".join(textwrap.wrap(scenario, 42)), fontsize=9)
        ax.set_ylabel("median TPS", fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--csv", required=True)
    ap.add_argument("--md", required=True)
    ap.add_argument("--png")
    ap.add_argument("--meta", action="append", default=[], help="key=value, shown in the header")
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--require-plot", action="store_true")
    args = ap.parse_args()

    groups = load(args.csv)
    meta = [tuple(m.split("=", 1)) if "=" in m else (m, "") for m in args.meta]
    write_markdown(groups, meta, args.md, args.smoke)
    if args.png:
        try:
            title = "pgbench through PostgreSQL direct, PgBouncer and pgward (median TPS)"
            if args.smoke:
                title += " — smoke pass"
            plot(groups, args.png, title)
        except ImportError:
            msg = "matplotlib is not available: no plot"
            if args.require_plot:
                sys.exit(f"compare_report.py: {msg}")
            print(f"compare_report.py: {msg}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
