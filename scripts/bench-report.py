#!/usr/bin/env python3
"""Renders the side-by-side benchmark of scripts/bench-compare.sh.

Reads the load generator's JSON (results-*.json) and the run's commands and
machine notes, then writes:
  - a markdown report (REPORT_PATH, overwritten): first the rows of the
    table in docs/performance.md, as this run measured them, to be copied
    into the doc by hand; then every number of the run, the machine, the
    versions and each command as it ran;
  - two PNG plots: latency against rate, memory against connections.

Nothing here writes into docs/: the results stay under target/.

Usage: bench-report.py RESULTS_DIR REPORT_PATH PLOTS_DIR
"""

import glob
import json
import os
import re
import sys

# Display order and names of the servers.
ORDER = ["chatsubo", "chatsubo-matchbox", "chatsubo-peerjs", "matchbox_server", "peerjs-server"]

LATENCY_PNG = "perf-relay-latency.png"
MEMORY_PNG = "perf-idle-memory.png"


def load(results_dir):
    runs = []
    for path in sorted(glob.glob(os.path.join(results_dir, "results-*.json"))):
        with open(path) as f:
            doc = json.load(f)
        doc["_file"] = os.path.basename(path)
        runs.append(doc)
    return runs


def servers_of(runs):
    seen = {r["server"] for r in runs}
    return [s for s in ORDER if s in seen] + sorted(seen - set(ORDER))


def by(runs, workload):
    return [r for r in runs if r["workload"] == workload]


def fmt(x, digits=2):
    if x is None:
        return "–"
    if isinstance(x, int):
        return f"{x:,}"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) >= 100:
        return f"{x:.0f}"
    return f"{x:.{digits}f}"


def get(d, *path):
    for p in path:
        if d is None:
            return None
        d = d.get(p) if isinstance(d, dict) else None
    return d


def idle_rows(runs):
    """{server: [(connections, row)]} sorted by connections."""
    out = {}
    for r in by(runs, "idle"):
        for row in r["results"]:
            out.setdefault(r["server"], []).append((row["connections"], row))
    for rows in out.values():
        rows.sort(key=lambda t: t[0])
    return out


def relay_rows(runs):
    out = {}
    for r in by(runs, "relay"):
        out[r["server"]] = r["results"]
    return out


def churn_rows(runs):
    out = {}
    for r in by(runs, "churn"):
        out[r["server"]] = r["results"][0], r
    return out


def idle_table(runs, servers):
    idle = idle_rows(runs)
    ns = sorted({n for rows in idle.values() for n, _ in rows})
    lines = [
        "| connections | " + " | ".join(f"{s}: KiB/conn (RSS after)" for s in servers) + " |",
        "|---:|" + "---:|" * len(servers),
    ]
    for n in ns:
        cells = []
        for s in servers:
            row = next((row for m, row in idle.get(s, []) if m == n), None)
            if row is None:
                cells.append("–")
                continue
            per = row.get("server_bytes_per_connection")
            after = row.get("server_rss_after_bytes")
            note = ""
            if row.get("failed"):
                note = f", {row['failed']:,} failed"
            if not row.get("settled", True):
                note += ", not settled"
            cells.append(
                f"{fmt(per / 1024 if per is not None else None, 1)} "
                f"({fmt(after / 1e6 if after else None, 0)} MB{note})"
            )
        lines.append(f"| {n:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def relay_table(runs, servers):
    relay = relay_rows(runs)
    lines = [
        "| rate/s | server | delivered | p50 ms | p99 ms | p99.9 ms | server µs/msg | of it kernel | server cores | loadgen cores | send lag p99 ms | errors |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    rates = sorted({row["rate"] for rows in relay.values() for row in rows})
    for rate in rates:
        for s in servers:
            row = next((row for row in relay.get(s, []) if row["rate"] == rate), None)
            if row is None:
                continue
            ratio = row.get("delivered_ratio")
            lines.append(
                f"| {rate:,} | {s} | {ratio * 100:.2f}% | "
                f"{fmt(get(row, 'latency_ms', 'p50'))} | {fmt(get(row, 'latency_ms', 'p99'))} | "
                f"{fmt(get(row, 'latency_ms', 'p999'))} | {fmt(row.get('server_cpu_us_per_msg'), 1)} | "
                f"{fmt(row.get('server_system_us_per_msg'), 1)} | "
                f"{fmt(row.get('server_cpu_cores'))} | {fmt(row.get('loadgen_cpu_cores'))} | "
                f"{fmt(get(row, 'send_lag_ms', 'p99'))} | {row.get('errors', 0):,} |"
            )
    return "\n".join(lines)


def churn_table(runs, servers):
    churn = churn_rows(runs)
    lines = [
        "| server | cycles/s | join p50 ms | join p99 ms | cycle p99 ms | server µs/cycle | of it kernel | server cores | loadgen cores | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in servers:
        if s not in churn:
            continue
        row, _ = churn[s]
        lines.append(
            f"| {s} | {fmt(row.get('cycles_per_sec'))} | {fmt(get(row, 'join_latency_ms', 'p50'))} | "
            f"{fmt(get(row, 'join_latency_ms', 'p99'))} | {fmt(get(row, 'cycle_latency_ms', 'p99'))} | "
            f"{fmt(row.get('server_cpu_us_per_cycle'), 1)} | {fmt(row.get('server_system_us_per_cycle'), 1)} | "
            f"{fmt(row.get('server_cpu_cores'))} | "
            f"{fmt(row.get('loadgen_cpu_cores'))} | {row.get('errors', 0):,} |"
        )
    return "\n".join(lines)


def kernel_part(us):
    """ ", of it 9.0 µs in the kernel", when the run measured it."""
    return "" if us is None else f", of it {fmt(us, 1)} µs in the kernel"


def targets(runs):
    """Chatsubo's performance targets, each with the measured number."""
    out = []

    def verdict(ok):
        return "met" if ok else "**missed**"

    idle = dict(idle_rows(runs).get("chatsubo", []))
    row = idle.get(10000)
    if row and row.get("server_bytes_per_connection") is not None:
        # The target's KB are 1,000 bytes (it was set against
        # matchbox_server's "137 KB", the load generator's 137 KB, 134 KiB).
        per = row["server_bytes_per_connection"]
        out.append((
            "idle memory ≤ 8 KB (8,000 bytes) per joined connection at 10,000",
            f"{per / 1000:.2f} KB ({per / 1024:.2f} KiB)",
            verdict(per <= 8000),
        ))
    relay = {row["rate"]: row for row in relay_rows(runs).get("chatsubo", [])}
    r40 = relay.get(40000)
    if r40:
        us = r40.get("server_cpu_us_per_msg")
        p99 = get(r40, "latency_ms", "p99")
        out.append(("≤ 6 µs server CPU per message at 40k/s", f"{fmt(us, 1)} µs{kernel_part(r40.get('server_system_us_per_msg'))}", verdict(us is not None and us <= 6)))
        out.append(("p99 ≤ 2 ms at 40k/s", f"{fmt(p99)} ms", verdict(p99 is not None and p99 <= 2)))
    r80 = relay.get(80000)
    if r80:
        p99 = get(r80, "latency_ms", "p99")
        ratio = r80.get("delivered_ratio") or 0
        out.append(
            (
                "p99 < 10 ms at 80k/s, every message delivered",
                f"{fmt(p99)} ms, {ratio * 100:.3f}% delivered",
                verdict(p99 is not None and p99 < 10 and r80.get("delivered") == r80.get("sent")),
            )
        )
    churn = churn_rows(runs).get("chatsubo")
    if churn:
        row = churn[0]
        cps, us = row.get("cycles_per_sec"), row.get("server_cpu_us_per_cycle")
        out.append(("≥ 20,000 churn cycles/s", f"{fmt(cps)}/s", verdict(cps is not None and cps >= 20000)))
        out.append(("≤ 50 µs server CPU per churn cycle", f"{fmt(us, 1)} µs{kernel_part(row.get('server_system_us_per_cycle'))}", verdict(us is not None and us <= 50)))
    lines = ["| target | measured | |", "|---|---:|---|"]
    lines += [f"| {t} | {m} | {v} |" for t, m, v in out]
    return "\n".join(lines)


def ms(x):
    """A latency in the doc's style: 0.34, 28.4, 1,362."""
    if x is None:
        return "–"
    if x < 10:
        return f"{x:.2f}"
    if x < 1000:
        return f"{x:.1f}"
    return f"{x:,.0f}"


def ratio(a, b):
    return f"{a / b:.2f}×" if a is not None and b else ""


def commit_of(versions):
    """Chatsubo's commit as versions.txt names it ("- chatsubo: 2d4addd, ...")."""
    m = re.search(r"^- chatsubo: ([0-9a-f]+)", versions, re.M)
    return f"`{m.group(1)}`" if m else "?"


def doc_rows(runs, commit):
    """The rows of docs/performance.md's table that this run measures, in its
    columns: workload | chatsubo | compared with (same run) | ratio | at | command.
    Idle memory is compared with peerjs-server, relay and churn with
    matchbox_server (and Chatsubo's PeerJS endpoint with peerjs-server); a
    row is left out when either server was not run."""
    cmd = "`scripts/bench-compare.sh`"
    rows = []

    def row(workload, ours, theirs, r=""):
        rows.append(f"| {workload} | {ours} | {theirs} | {r} | {commit} | {cmd} |")

    idle = idle_rows(runs)
    ours, theirs = dict(idle.get("chatsubo", [])), dict(idle.get("peerjs-server", []))
    for n in sorted(set(ours) & set(theirs)):
        a = ours[n].get("server_bytes_per_connection")
        b = theirs[n].get("server_bytes_per_connection")
        if a is None or b is None:
            continue
        row(f"idle memory per joined connection, {n:,} connections",
            f"{a / 1024:.1f} KiB", f"peerjs-server {b / 1024:.1f} KiB", ratio(a, b))

    relay, churn = relay_rows(runs), churn_rows(runs)
    # Chatsubo's own protocol against matchbox_server, then Chatsubo through
    # its matchbox and PeerJS endpoints against the server whose client bytes
    # it then gets.
    pairs = (
        ("chatsubo", "", "matchbox_server"),
        ("chatsubo-matchbox", " (matchbox protocol)", "matchbox_server"),
        ("chatsubo-peerjs", " (PeerJS protocol)", "peerjs-server"),
    )
    for ours_name, tag, them in pairs:
        ours = {r["rate"]: r for r in relay.get(ours_name, [])}
        theirs = {r["rate"]: r for r in relay.get(them, [])}
        rates = sorted(set(ours) & set(theirs))
        for rate in rates:
            a, b = ours[rate].get("server_cpu_us_per_msg"), theirs[rate].get("server_cpu_us_per_msg")
            row(f"relay{tag}, server CPU per message at {rate // 1000}k/s",
                f"{fmt(a, 1)} µs", f"{them} {fmt(b, 1)} µs", ratio(a, b))
        for rate in rates:
            a, b = get(ours[rate], "latency_ms", "p99"), get(theirs[rate], "latency_ms", "p99")
            row(f"relay{tag} latency p99 at {rate // 1000}k/s",
                f"{ms(a)} ms", f"{them} {ms(b)} ms", ratio(a, b))

        if ours_name not in churn or them not in churn:
            continue
        a, b = churn[ours_name][0], churn[them][0]

        def cycle_cpu(r):
            us, sys_us = r.get("server_cpu_us_per_cycle"), r.get("server_system_us_per_cycle")
            return f"{fmt(us, 0)} µs" + ("" if sys_us is None else f" ({sys_us:.0f} kernel)")

        row(f"churn{tag}, cycles a second", fmt(a.get("cycles_per_sec")),
            f"{them} {fmt(b.get('cycles_per_sec'))}",
            ratio(a.get("cycles_per_sec"), b.get("cycles_per_sec")))
        row(f"churn{tag}, server CPU per cycle", cycle_cpu(a), f"{them} {cycle_cpu(b)}",
            ratio(a.get("server_cpu_us_per_cycle"), b.get("server_cpu_us_per_cycle")))
        row(f"churn{tag}, join latency p50", f"{ms(get(a, 'join_latency_ms', 'p50'))} ms",
            f"{them} {ms(get(b, 'join_latency_ms', 'p50'))} ms")
        row(f"churn{tag}, server cores busy", fmt(a.get("server_cpu_cores")),
            f"{them} {fmt(b.get('server_cpu_cores'))}")
    return "\n".join(rows)


def loadgen_check(runs):
    """Whether the load generator kept up, in one sentence per server."""
    lines = []
    for s, rows in relay_rows(runs).items():
        worst_cores = max((row.get("loadgen_cpu_cores") or 0) for row in rows)
        saturated = [f"{row['rate']:,}/s" for row in rows if (row.get("loadgen_cpu_cores") or 0) >= 0.9]
        worst_lag = max((get(row, "send_lag_ms", "p99") or 0) for row in rows)
        under = [
            f"{row['rate']:,}/s" for row in rows if row.get("send_rate", 0) < 0.99 * row["rate"]
        ]
        lines.append(
            f"- {s}: the load generator used at most {worst_cores:.2f} of its core; its send lag "
            f"p99 was at most {worst_lag:.2f} ms"
            + (f"; it fell short of the target rate at {', '.join(under)}." if under else "; it sent every step at its full rate.")
            + (
                f" It was itself saturated (≥ 0.9 of its core while sending) at {', '.join(saturated)}: "
                "numbers at those rates are bounded by the load generator as much as by the server."
                if saturated
                else ""
            )
        )
    return "\n".join(lines)


def plots(runs, servers, plots_dir):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    relay = relay_rows(runs)
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    for s in servers:
        rows = sorted(relay.get(s, []), key=lambda r: r["rate"])
        if not rows:
            continue
        rates = [r["rate"] / 1000 for r in rows]
        (line,) = ax.plot(rates, [get(r, "latency_ms", "p99") for r in rows], marker="o", label=f"{s} p99")
        ax.plot(rates, [get(r, "latency_ms", "p50") for r in rows], marker=".", linestyle="--",
                color=line.get_color(), label=f"{s} p50")
    ax.set_yscale("log")
    ax.set_xlabel("offered rate (thousand messages/s)")
    ax.set_ylabel("relay latency (ms, log scale)")
    ax.set_title("Relay latency against rate (100 rooms of 10, 400-byte payload)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(plots_dir, LATENCY_PNG))
    plt.close(fig)

    idle = idle_rows(runs)
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    for s in servers:
        rows = idle.get(s, [])
        if not rows:
            continue
        ax.plot([n for n, _ in rows], [(r.get("server_rss_after_bytes") or 0) / 1e6 for _, r in rows],
                marker="o", label=s)
    ax.set_xlabel("joined idle connections (rooms of 10)")
    ax.set_ylabel("server RSS (MB)")
    ax.set_title("Server memory against connections")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(plots_dir, MEMORY_PNG))
    plt.close(fig)


def read_text(path, default=""):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return default


def report(runs, results_dir, report_path, plots_dir):
    servers = servers_of(runs)
    machine = read_text(os.path.join(results_dir, "machine.txt"), "(machine not recorded)")
    commands = read_text(os.path.join(results_dir, "commands.txt"), "(commands not recorded)")
    versions = read_text(os.path.join(results_dir, "versions.txt"), "")
    conditions = read_text(os.path.join(results_dir, "conditions.txt"), "")
    rel_plots = os.path.relpath(plots_dir, os.path.dirname(report_path) or ".")
    rel_results = os.path.relpath(results_dir, os.path.dirname(report_path) or ".")
    where = "beside this report" if rel_results == "." else f"in `{rel_results}/`"
    relay_args = next((r["args"] for r in by(runs, "relay")), {})
    churn_args = next((r["args"] for r in by(runs, "churn")), {})
    join_notes = "\n".join(
        f"  - {r['server']}: {r.get('join_note', '')}" for r in by(runs, "churn") if r.get("join_note")
    )
    parts = [
        "# Comparison with matchbox_server and peerjs-server",
        "",
        "All three servers on the same machine in one run of `scripts/bench-compare.sh`, "
        "with the same load generator (`chatsubo-loadgen`) and the same workloads. "
        "Each server is started fresh for each workload (and for each idle N), pinned to CPU 0; "
        "the load generator is pinned to CPU 1. All traffic is on 127.0.0.1. "
        f"The raw results are the JSON files {where}.",
        "",
        "## Rows for docs/performance.md",
        "",
        "This run's rows of the table in `docs/performance.md`, in its columns "
        "(workload, chatsubo, compared with, ratio, at, command). Copy the ones the "
        "table has over its old ones by hand; the doc is not rewritten.",
        "",
        "```",
        doc_rows(runs, commit_of(versions)),
        "```",
        "",
        "## Machine and conditions",
        "",
        "```",
        machine,
        "```",
        "",
    ]
    if conditions:
        parts += [conditions, ""]
    if versions:
        parts += ["Servers:", "", versions, ""]
    parts += [
        "## Targets",
        "",
        targets(runs),
        "",
        "## Idle memory",
        "",
        "N connections in rooms of 10, all joined and settled (every member told of every other); "
        "server RSS after, minus RSS of the fresh server before, divided by N.",
        "",
        idle_table(runs, servers),
        "",
        f"![Server memory against connections]({rel_plots}/{MEMORY_PNG})",
        "",
        "## Relay",
        "",
        f"{relay_args.get('rooms', 100)} rooms of {relay_args.get('room_size', 10)} peers; open loop: "
        f"each peer sends on its own fixed schedule to a random room mate, whatever arrives; "
        f"{relay_args.get('payload_bytes', 400)}-byte data carrying the send time; "
        f"{fmt(relay_args.get('step_secs', 15), 0)} s per step plus {fmt(relay_args.get('drain_secs', 2), 0)} s "
        "for the last messages to arrive. Latency is from building the frame in the sender to reading it "
        "in the receiver (same process, same clock). Server CPU is utime+stime over the step and its drain, "
        "divided by the messages delivered; \"of it kernel\" is the stime part (the server's syscalls, and "
        "over loopback also the receiving side of each message it sends); \"cores\" are the share of one "
        "core used while sending.",
        "",
        relay_table(runs, servers),
        "",
        f"![Relay latency against rate]({rel_plots}/{LATENCY_PNG})",
        "",
        "Was the load generator the bottleneck?",
        "",
        loadgen_check(runs),
        "",
        "## Churn",
        "",
        f"{churn_args.get('workers', 100)} workers, each repeating: connect, WebSocket upgrade, welcome, "
        f"join, close (waiting for the closing handshake), for {fmt(churn_args.get('secs', 15), 0)} s after "
        f"{fmt(churn_args.get('warmup_secs', 1), 0)} s of warm-up. Join latency counts from the TCP connect "
        "to being in the room, so it is comparable across the three protocols:",
        "",
        join_notes,
        "",
        churn_table(runs, servers),
        "",
        "## Notes on fairness",
        "",
        "- The same client code drives all three servers; only the protocol adapter differs "
        "(`loadgen/src/protocols/`). Client sockets have Nagle's algorithm off.",
        "- Chatsubo runs as shipped (JSON logs, metrics, and whatever analytics its build has), with "
        "its per-address connection cap and per-connection rate limit raised, since all load comes "
        "from one address at up to 80 messages a second per peer.",
        "- matchbox_server and peerjs-server run with their defaults, except peerjs-server's "
        "`--concurrent_limit` (5,000 by default), raised for the idle runs. Both log every connection "
        "by default (to a file here), as Chatsubo logs every join and leave.",
        "- peerjs-server has no rooms: the load generator's rooms only decide who sends to whom, and a "
        "peer is in when the server says `OPEN`. matchbox_server's room is the URL path; the peer is in "
        "when `IdAssigned` arrives. Chatsubo's join is a round trip of its own after the welcome, so its "
        "churn cycle has one more round trip than the others'.",
        "- peerjs clients send `HEARTBEAT` every 20 s (the server's CLI drops a client after 60 s "
        "without one); Chatsubo's pings are answered by the client library.",
        "",
        "## Commands",
        "",
        "The whole run: `scripts/bench-compare.sh` (it installs the two other servers into `target/peers/` "
        "when missing, builds in release, runs everything below and writes this report). "
        "Each command as it ran:",
        "",
        "```",
        commands,
        "```",
    ]
    return "\n".join(parts) + "\n"


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    results_dir, report_path, plots_dir = sys.argv[1:]
    runs = load(results_dir)
    if not runs:
        sys.exit(f"no results-*.json in {results_dir}")
    os.makedirs(plots_dir, exist_ok=True)
    os.makedirs(os.path.dirname(report_path) or ".", exist_ok=True)
    plots(runs, servers_of(runs), plots_dir)
    with open(report_path, "w") as f:
        f.write(report(runs, results_dir, report_path, plots_dir))
    print(f"wrote {report_path}, {plots_dir}/{LATENCY_PNG}, {plots_dir}/{MEMORY_PNG}")


if __name__ == "__main__":
    main()
