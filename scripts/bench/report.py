#!/usr/bin/env python3
"""Numbers for scripts/bench-throughput.sh.

    report.py pings FILE            p50 and p99 round trip (µs) of `ping` output: "P50 P99 N"
    report.py table CSV [PNG]       the summary table (ratios to each peer, targets) on stdout,
                                    and a plot of it when PNG is given

The CSV has one row per measurement (see COLUMNS); the shell script writes it and this module
only reads it, so a CSV from an earlier run can be re-tabled and re-plotted.
"""
import csv
import math
import re
import sys

COLUMNS = [
    "date", "load_avg", "sched", "scenario", "dut", "measure", "offered_pps", "duration_s", "sent",
    "delivered", "loss_pct", "fwd_pps", "cpu_user_s", "cpu_sys_s", "cpu_sched_s",
    "us_per_pkt_user", "us_per_pkt_sys", "us_per_pkt_total", "p50_us", "p99_us", "note",
    "frame_bytes",
]

# Peers the xvs interrupt-mode datapath is compared with, per target in the issue.
TARGET_NULL = 1.1   # total CPU per packet <= 1.1x the null forwarder's
TARGET_OVS = 0.8    # total CPU per packet <= 0.8x OVS afxdp-nonpmd's
TARGET_USER = 0.5   # user-space CPU per packet <= half of OVS's
TARGET_P99_US = 100.0


def percentile(sorted_vals, q):
    """Nearest-rank percentile of an ascending list (q in 0..100)."""
    if not sorted_vals:
        return float("nan")
    rank = max(1, math.ceil(q / 100.0 * len(sorted_vals)))
    return sorted_vals[min(rank, len(sorted_vals)) - 1]


def pings(path):
    with open(path) as f:
        vals = sorted(float(m.group(1)) * 1000.0 for m in re.finditer(r"time=([0-9.]+) ms", f.read()))
    print(f"{percentile(vals, 50):.1f} {percentile(vals, 99):.1f} {len(vals)}")


def num(row, key):
    try:
        v = float(row.get(key, ""))
    except ValueError:
        return None
    return None if math.isnan(v) else v


def fmt(v, spec=".2f"):
    return "-" if v is None else format(v, spec)


def ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def table(csv_path, png_path=None):
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    if not rows:
        print("no rows")
        return
    print(f"results: {csv_path} (load average at start: {rows[0]['load_avg']}; device under test "
          f"scheduled {rows[0]['sched']})")

    scenarios = list(dict.fromkeys(r["scenario"] for r in rows))
    by = {}
    for r in rows:
        by.setdefault((r["scenario"], r["dut"], r["measure"], r["offered_pps"]), r)

    print("\n(a) highest offered rate forwarded without loss (xvs-gen, paced; 60-byte frames, 9014 in jumbo)")
    print(f"{'scenario':<8} {'device under test':<18} {'lossless kpps':>13} {'gen full kpps':>13} "
          f"{'fwd at full kpps':>16} {'loss at full %':>14} {'lossless Gbit/s':>15} "
          f"{'fwd at full Gbit/s':>18}")
    full_runs = {(r["scenario"], r["dut"]): r for r in rows if r["measure"] == "full_rate"}

    def kpps(row, key):
        v = row and num(row, key)
        return None if v is None else v / 1e3

    def gbps(row, key):
        """Frames per second in `key` times the frame size (CSVs without it: 60 bytes)."""
        v = row and num(row, key)
        size = (row and num(row, "frame_bytes")) or 60
        return None if v is None else v * size * 8 / 1e9
    for r in rows:
        if r["measure"] != "max_lossless":
            continue
        full = full_runs.get((r["scenario"], r["dut"]))
        print(f"{r['scenario']:<8} {r['dut']:<18} {fmt(kpps(r, 'offered_pps'), '.0f'):>13} "
              f"{fmt(kpps(full, 'offered_pps'), '.0f'):>13} "
              f"{fmt(kpps(full, 'fwd_pps'), '.0f'):>16} "
              f"{fmt(full and num(full, 'loss_pct'), '.3f'):>14} "
              f"{fmt(gbps(r, 'offered_pps'), '.2f'):>15} {fmt(gbps(full, 'fwd_pps'), '.2f'):>18}"
              f"  {r['note']}")

    print("\n(b) fixed offered load, interrupt mode: loss and switch-process CPU per forwarded packet (µs)")
    print(f"{'scenario':<8} {'device under test':<18} {'kpps':>5} {'loss %':>8} {'user':>6} {'sys':>6} "
          f"{'total':>6} {'sched':>6}")
    for r in rows:
        if r["measure"] != "fixed":
            continue
        fwd = num(r, "delivered")
        sched = num(r, "cpu_sched_s")
        sched_pp = sched / fwd * 1e6 if sched is not None and fwd else None
        print(f"{r['scenario']:<8} {r['dut']:<18} {num(r, 'offered_pps') / 1e3:>5.0f} "
              f"{fmt(num(r, 'loss_pct'), '.3f'):>8} {fmt(num(r, 'us_per_pkt_user')):>6} "
              f"{fmt(num(r, 'us_per_pkt_sys')):>6} {fmt(num(r, 'us_per_pkt_total')):>6} "
              f"{fmt(sched_pp):>6}  {r['note']}")

    poll = [r for r in rows if r["measure"] == "poll_work"]
    if poll:
        print("\n(b2) fixed offered load, poll mode: the polling thread's busy time per frame (ns; its"
              " inverse is the rate it can sustain)")
        print(f"{'scenario':<8} {'device under test':<18} {'kpps':>5} {'loss %':>8}  note")
        for r in poll:
            print(f"{r['scenario']:<8} {r['dut']:<18} {num(r, 'offered_pps') / 1e3:>5.0f} "
                  f"{fmt(num(r, 'loss_pct'), '.3f'):>8}  {r['note']}")

    print("\n    ratios of xvs-intr to each peer (same scenario, same offered load; target in brackets)")
    print(f"{'scenario':<8} {'kpps':>5} {'total/null':>15} {'total/ovs-nonpmd':>17} "
          f"{'user/ovs-nonpmd':>16} {'loss':>10}")
    for (sc, dut, meas, load), r in by.items():
        if dut != "xvs-intr" or meas != "fixed":
            continue
        null = by.get((sc, "nullfwd-intr", "fixed", load)) or by.get(("p2p", "nullfwd-intr", "fixed", load))
        ovs = by.get((sc, "ovs-nonpmd", "fixed", load))
        t = num(r, "us_per_pkt_total")
        rn = ratio(t, null and num(null, "us_per_pkt_total"))
        ro = ratio(t, ovs and num(ovs, "us_per_pkt_total"))
        ru = ratio(num(r, "us_per_pkt_user"), ovs and num(ovs, "us_per_pkt_user"))
        loss = num(r, "loss_pct")

        def mark(v, lim):
            return "-" if v is None else f"{v:.2f} {'ok' if v <= lim else 'MISS'}"
        null_src = "" if null is None or null["scenario"] == sc else "*"
        print(f"{sc:<8} {float(load) / 1e3:>5.0f} {mark(rn, TARGET_NULL) + null_src:>15} "
              f"{mark(ro, TARGET_OVS):>17} {mark(ru, TARGET_USER):>16} "
              f"{'-' if loss is None else ('0 ok' if loss == 0 else f'{loss:.3f}% MISS'):>10}")
    print("    targets: total <= 1.1x null, <= 0.8x OVS afxdp-nonpmd, user <= 0.5x OVS, zero loss;"
          " * = null forwarder of the p2p run (it has no pipeline)")

    print("\n(c) ping round trip through the switch (µs); added = p99 minus the direct veth pair's"
          " (jumbo: its 9000-byte pings);"
          " over null = p99 minus the null\n    forwarder's in the same run (the same AF_XDP I/O with"
          " no switching: what the switch itself adds)")
    # Each scenario's pings against the direct pair's of the same size: 9000-byte ones for
    # jumbo (when that baseline was measured), 56-byte ones otherwise.
    bases = {}
    for r in rows:
        if r["scenario"] in ("direct", "direct-jumbo"):
            bases.setdefault(r["scenario"], {})[r["measure"]] = r
    def base_of(sc):
        return bases.get("direct-jumbo" if sc == "jumbo" and "direct-jumbo" in bases else "direct", {})
    print(f"{'scenario':<12} {'device under test':<18} {'idle p50':>9} {'idle p99':>9} {'load p50':>9} "
          f"{'load p99':>9} {'added p99 idle/load':>20} {'over null idle/load':>20}")
    pairs = {}
    for r in rows:
        if r["measure"] in ("ping_idle", "ping_load"):
            pairs.setdefault((r["scenario"], r["dut"]), {})[r["measure"]] = r
    for (sc, dut), m in pairs.items():
        vals = []
        added = []
        for k in ("ping_idle", "ping_load"):
            r = m.get(k)
            vals += [r and num(r, "p50_us"), r and num(r, "p99_us")]
            b = base_of(sc).get(k)
            rv, bv = r and num(r, "p99_us"), b and num(b, "p99_us")
            added.append(rv - bv if rv is not None and bv is not None and sc not in bases else None)
        add_s = "/".join(fmt(a, ".0f") for a in added)
        ok = "" if sc in bases or all(a is None for a in added) else (
            " ok" if all(a is None or a < TARGET_P99_US for a in added) else " MISS")
        null = pairs.get((sc, "nullfwd-intr")) or pairs.get(("p2p", "nullfwd-intr"))
        over = []
        for k in ("ping_idle", "ping_load"):
            r, n = m.get(k), null and null.get(k)
            rv, nv = r and num(r, "p99_us"), n and num(n, "p99_us")
            over.append(rv - nv if rv is not None and nv is not None and dut.startswith("xvs") else None)
        over_s = "-" if all(o is None for o in over) else "/".join(fmt(o, ".0f") for o in over) + (
            " ok" if all(o is None or o < TARGET_P99_US for o in over) else " MISS")
        print(f"{sc:<12} {dut:<18} " + " ".join(f"{fmt(v, '.0f'):>9}" for v in vals)
              + f" {add_s + ok:>20} {over_s:>20}")

    if png_path:
        plot(rows, scenarios, png_path)
        print(f"\nplot: {png_path}")


def plot(rows, scenarios, png_path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(14, 5.5))
    ax = axes[0]
    ml = [r for r in rows if r["measure"] == "max_lossless"]
    labels = [f"{r['scenario']}\n{r['dut']}" for r in ml]
    ax.bar(range(len(ml)), [float(r["offered_pps"] or 0) / 1e3 for r in ml], color="tab:blue")
    ax.set_xticks(range(len(ml)))
    ax.set_xticklabels(labels, rotation=70, fontsize=7)
    ax.set_ylabel("highest lossless offered rate (kpps)")
    ax.set_title("(a) zero-loss throughput, 64-byte UDP (jumbo: 9014 bytes)")

    ax = axes[1]
    fx = [r for r in rows if r["measure"] == "fixed" and num(r, "us_per_pkt_total") is not None]
    labels = [f"{r['scenario']} {float(r['offered_pps']) / 1e3:.0f}k\n{r['dut']}" for r in fx]
    user = [num(r, "us_per_pkt_user") or 0 for r in fx]
    sys_ = [num(r, "us_per_pkt_sys") or 0 for r in fx]
    x = range(len(fx))
    ax.bar(x, user, label="user", color="tab:orange")
    ax.bar(x, sys_, bottom=user, label="system", color="tab:gray")
    ax.set_xticks(list(x))
    ax.set_xticklabels(labels, rotation=70, fontsize=7)
    ax.set_ylabel("switch CPU per forwarded packet (µs)")
    ax.set_title("(b) interrupt mode, fixed offered load")
    ax.legend()
    fig.suptitle(f"xvs vs peers ({rows[0]['date']}, load average {rows[0]['load_avg']})")
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)


def main(argv):
    if len(argv) >= 3 and argv[1] == "pings":
        pings(argv[2])
    elif len(argv) >= 3 and argv[1] == "table":
        table(argv[2], argv[3] if len(argv) > 3 else None)
    elif len(argv) == 2 and argv[1] == "columns":
        print(",".join(COLUMNS))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
