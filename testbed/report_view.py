"""The run report as a person reads it in a terminal: steps with gaps and paths, probes, netdevs.
Every string from a scenario or a guest is printed as plain text, never as rich markup."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from testbed.datapath import path_shares
from testbed.report import RunReport


def print_report(console: Console, report: RunReport) -> None:
    table = Table(title=f"{report.scenario}: {'PASSED' if report.passed else 'FAILED'} in {report.duration_s:.1f}s")
    pings = report.pings()
    columns = ["#", "step", "ok", "start s", "end s"]
    if pings:
        columns += ["max gap ms", "lost", "carried by"]
    for col in columns + ["error"]:
        table.add_column(col)
    for s in report.steps:
        row = [str(s.index), s.action, "yes" if s.ok else "NO", f"{s.started_s:.2f}",
               f"{s.ended_s:.2f}" if s.ended_s is not None else "-"]
        if pings:
            gaps = report.gaps_in(s.index)
            row += [f"{max(g.ms for g in gaps):.0f}" if gaps else "-",
                    str(sum(g.lost for g in gaps)) if gaps else "-", _carried_by(s.counters)]
        table.add_row(*(Text(cell) for cell in row), Text((s.error or "")[:300]))
    console.print(table)
    for p in pings:
        console.print(f"{p.vm}/{p.pair} ping {p.target} every {p.interval_ms:g} ms: sent {p.sent}, "
                      f"received {p.received}, lost {p.lost}, max gap {p.max_gap_ms} ms")
    for t in report.tcp():
        console.print(f"{t.vm}/{t.pair} tcp: {t.bytes_echoed} of {t.bytes_sent} bytes echoed, "
                      f"longest stall {t.max_stall_ms} ms" + (f", error {escape(t.error)}" if t.error else ""))
    for lease in report.leases:
        console.print(f"DHCP: {lease['mac']} acknowledged {lease['address']} at "
                      f"{', '.join(f'{t:.3f}' for t in lease['acked_at_s'])} s")
    for vm, info in report.vms.items():
        t = Table(title=f"{vm} netdevs")
        columns = ("name", "role", "driver", "master", "mac", "perm_addr", "operstate", "ipv4")
        for col in columns:
            t.add_column(col)
        for n in info.netdevs:
            t.add_row(*(Text((", ".join(v) if isinstance(v := n.get(c), (list, tuple)) else str(v or "")) or "-")
                        for c in columns))
        console.print(t)
    if report.error:
        console.print(f"[red]error:[/red] {escape(report.error)}")
    console.print(f"artifacts: {escape(report.artifacts_dir)}")


def _carried_by(counters: dict) -> str:
    """Which slave carried the packets in a step, e.g. 'net0: primary 99%'."""
    out = []
    for vm, pairs in counters.items():
        for pair, roles in pairs.items():
            shares, total = path_shares([counters], vm, pair)
            parts = [f"{role} {100 * share:.0f}%" for role, share in shares.items() if role in roles]
            if parts and total:
                out.append(f"{pair}: " + ", ".join(parts))
    return "; ".join(out) or "-"
