"""`testbed bench`: where the time and memory of a run go, side by side in one run.

Measured: the guest image build (cold, in a fresh cache, and warm), a raw QEMU boot of the same
kernel and initramfs with the same devices (no QMP, no -S, no SSH) to the guest's own milestones,
the testbed's launch-to-SSH and launch-to-pairs-ready, the whole scenario, and peak host memory.
Figures are printed, never asserted: this is a benchmark, not a timed test."""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from testbed.images import ensure_image
from testbed.netns import NetworkNamespace
from testbed.network import NetworkPlan
from testbed.plan import plan_machines
from testbed.procutil import spawn
from testbed.qemu_argv import LaunchFiles, build_argv
from testbed.qemu_host import inspect_qemu
from testbed.runner import RunOptions, run_scenario
from testbed.scenario import load_scenario

MARKERS = {"init": "testbed: init started", "ssh_up": "testbed: ssh up", "ready": "testbed: ready"}


def _raw_boot(scenario_path: Path, accel: str, workdir: Path) -> dict[str, float]:
    """QEMU alone, same argv minus the testbed's QMP and -S: seconds from launch to each marker."""
    image = ensure_image()
    (plan,) = plan_machines(load_scenario(scenario_path))[:1]
    serial = workdir / "raw-serial.log"
    argv = build_argv(inspect_qemu().path, plan, LaunchFiles(image.kernel, image.initrd, serial, None), accel,
                      paused=False)
    netns = NetworkNamespace.create()
    try:
        NetworkPlan.for_machines([plan]).apply(netns)
        started = time.monotonic()
        proc = spawn(netns.argv(argv), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL)
        found: dict[str, float] = {}
        deadline = started + 120
        while len(found) < len(MARKERS) and time.monotonic() < deadline:
            text = serial.read_text(errors="replace") if serial.exists() else ""
            for key, marker in MARKERS.items():
                if key not in found and marker in text:
                    found[key] = round(time.monotonic() - started, 3)
            time.sleep(0.02)
        proc.kill()
        proc.wait()
        return found
    finally:
        netns.close()


def image_build(cold: bool, flavour: str | None = None) -> dict[str, float]:
    """Seconds to build the image in a fresh cache (cold) and to find it built (warm)."""
    out: dict[str, float] = {}
    if cold:
        with tempfile.TemporaryDirectory(prefix="testbed-bench-cache-") as cache:
            started = time.monotonic()
            ensure_image(cache=Path(cache), flavour=flavour)
            out["image_cold_s"] = round(time.monotonic() - started, 2)
            started = time.monotonic()
            ensure_image(cache=Path(cache), flavour=flavour)
            out["image_warm_s"] = round(time.monotonic() - started, 4)
    else:
        started = time.monotonic()
        ensure_image(flavour=flavour)
        out["image_warm_s"] = round(time.monotonic() - started, 4)
    return out


def run_bench(scenario_path: Path, runs: int, accel: str, cold: bool, console: Console) -> dict:
    results: dict = {"scenario": str(scenario_path), "runs": runs}
    console.log("image build" + (" (cold, fresh cache)" if cold else " (warm)"))
    results.update(image_build(cold))
    raw: list[dict[str, float]] = []
    tb: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="testbed-bench-") as tmp:
        for n in range(runs):
            console.log(f"raw QEMU boot {n + 1}/{runs}")
            raw.append(_raw_boot(scenario_path, "tcg" if accel == "auto" else accel, Path(tmp)))
            console.log(f"testbed scenario {n + 1}/{runs}")
            options = RunOptions(artifacts_dir=Path(tmp) / f"run{n}", accel=accel, snapshot="never")
            report = run_scenario(load_scenario(scenario_path), options)
            if not report.passed:
                raise SystemExit(f"scenario failed during the benchmark: {report.error or report.steps}")
            boot = next(iter(report.vms.values())).boot
            tb.append({"ssh_ready_s": boot["ssh_ready_s"], "pairs_ready_s": boot["pairs_ready_s"],
                       "scenario_s": report.duration_s, "qemu_peak_rss_mib": boot["qemu_peak_rss_mib"]})
            results["accel"] = report.host.accel if report.host else accel
    med = lambda rows, key: round(statistics.median(r[key] for r in rows if key in r), 3)  # noqa: E731
    results["raw_to_init_s"] = med(raw, "init")
    results["raw_to_ssh_up_s"] = med(raw, "ssh_up")
    results["raw_to_ready_s"] = med(raw, "ready")
    for key in ("ssh_ready_s", "pairs_ready_s", "scenario_s", "qemu_peak_rss_mib"):
        results[f"testbed_{key}"] = med(tb, key)
    results["testbed_python_peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    results["ssh_ready_over_raw_ssh_up"] = round(results["testbed_ssh_ready_s"] / results["raw_to_ssh_up_s"], 2)
    results["ssh_ready_over_raw_init"] = round(results["testbed_ssh_ready_s"] / results["raw_to_init_s"], 2)
    results["host_mib_per_guest"] = round(results["testbed_qemu_peak_rss_mib"] +
                                          results["testbed_python_peak_rss_mib"], 1)
    results["samples"] = {"raw": raw, "testbed": tb}
    return results


def print_bench(results: dict, console: Console) -> None:
    table = Table(title=f"testbed bench: {results['scenario']} ({results['accel']}, median of {results['runs']})")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("note")
    rows = [
        ("image build, cold", results.get("image_cold_s"), "s; fresh cache: apt lists, mmdebstrap, kernel, initramfs"),
        ("image build, warm", results.get("image_warm_s"), "s; cache hit"),
        ("raw QEMU: launch -> /init", results["raw_to_init_s"], "s; same kernel, initramfs and devices"),
        ("raw QEMU: launch -> guest sshd up", results["raw_to_ssh_up_s"], "s; guest's own serial marker"),
        ("raw QEMU: launch -> guest udev settled", results["raw_to_ready_s"], "s"),
        ("testbed: launch -> SSH session", results["testbed_ssh_ready_s"], "s; includes QMP, -S/cont, paramiko"),
        ("testbed: launch -> failover pairs ready", results["testbed_pairs_ready_s"], "s"),
        ("testbed: whole scenario", results["testbed_scenario_s"], "s; namespace, boot, checks, teardown"),
        ("SSH ready / raw sshd up", results["ssh_ready_over_raw_ssh_up"], "x; goal <= 1.25"),
        ("SSH ready / raw /init", results["ssh_ready_over_raw_init"], "x"),
        ("QEMU peak RSS", results["testbed_qemu_peak_rss_mib"], "MiB (VmHWM)"),
        ("testbed process peak RSS", results["testbed_python_peak_rss_mib"], "MiB"),
        ("host memory for one guest", results["host_mib_per_guest"], "MiB; goal < 1024"),
    ]
    for name, value, note in rows:
        table.add_row(name, "-" if value is None else str(value), note)
    console.print(table)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _cpu_share(pids: dict[str, int], seconds: float) -> dict[str, float]:
    """Percent of one host core each process used over the window."""
    before = {k: _cpu_seconds(p) for k, p in pids.items()}
    time.sleep(seconds)
    return {k: round(100 * (_cpu_seconds(p) - before[k]) / seconds, 1) for k, p in pids.items()}


def run_probe_bench(console: Console, outages_ms: tuple[int, ...] = (5, 10, 20, 50, 100),
                    window_s: float = 5.0) -> dict:
    """Probe resolution and cost on a real guest (scenario standby-pci, 200 echoes/s)."""
    from testbed.runner import live_run
    from testbed.scenario import BootStep, StartTrafficStep
    from testbed.traffic import TcpProbe

    results: dict = {"interval_ms": 5.0}
    scenario = load_scenario(Path(__file__).resolve().parent.parent / "scenarios/standby-pci.yaml")
    with tempfile.TemporaryDirectory(prefix="testbed-probe-bench-") as tmp:
        with live_run(scenario, RunOptions(artifacts_dir=Path(tmp), snapshot="never")) as run:
            ctx = run.ctx
            if not run.step(BootStep(action="boot")).ok:
                raise SystemExit(f"boot failed: {ctx.report.steps[-1].error}")
            qemu_pid = ctx.machine("vm1").pid
            console.log("CPU: no probe")
            results["cpu_idle"] = _cpu_share({"qemu": qemu_pid}, window_s)
            run.step(StartTrafficStep(action="start-traffic", vm="vm1", pair="net0", tcp=False))
            session = ctx.traffic[("vm1", "net0")]
            ping_pid = session.ping.pid
            console.log("CPU: ping at 200/s")
            mark = ctx.clock.now()
            results["cpu_ping"] = _cpu_share({"qemu": qemu_pid, "ping": ping_pid}, window_s)
            steady = [r.t for r in session.ping.replies if r.t >= mark]
            intervals = sorted(b - a for a, b in zip(steady, steady[1:]))
            results["steady_inter_arrival_ms"] = {
                "median": round(1000 * intervals[len(intervals) // 2], 2),
                "p99": round(1000 * intervals[int(len(intervals) * 0.99)], 2),
                "max": round(1000 * intervals[-1], 2)}
            console.log("CPU: ping + TCP echo stream at 64 KiB/s")
            ctx.shell("vm1").run(["/usr/lib/testbed/detach", "/dev/null", "socat", "TCP-LISTEN:5999,reuseaddr",
                                  "EXEC:/bin/cat"])
            time.sleep(0.5)
            assert ctx.peer is not None
            tcp = TcpProbe(ctx.peer, session.target, 5999, ctx.clock)
            tcp.start()
            results["cpu_ping_tcp"] = _cpu_share({"qemu": qemu_pid, "ping": ping_pid}, window_s)
            tcp.stop()
            injected = []
            for ms in outages_ms:
                console.log(f"outage of {ms} ms")
                time.sleep(0.5)
                ctx.netns.run(["bridge", "link", "set", "dev", "vpeer", "state", "2"])  # learning: no forwarding
                start = ctx.clock.now()
                time.sleep(ms / 1000)
                end = ctx.clock.now()
                ctx.netns.run(["bridge", "link", "set", "dev", "vpeer", "state", "3"])  # forwarding
                injected.append((ms, start, end))
            time.sleep(0.5)
            result = session.ping.result([])
            rows = []
            for ms, start, end in injected:
                hits = [g for g in result.gaps if g.start_s <= end + 0.05 and g.end_s >= start]
                rows.append({"requested_ms": ms, "blocked_ms": round((end - start) * 1000, 1),
                             "detected_ms": max((g.ms for g in hits), default=None),
                             "lost": sum(g.lost for g in hits)})
            results["outages"] = rows
    return results


def print_probe_bench(results: dict, console: Console) -> None:
    table = Table(title="probe resolution: outages blocked at the peer's bridge port (200 echoes/s)")
    for col in ("requested ms", "blocked ms (at least)", "gap detected ms", "echoes lost"):
        table.add_column(col, justify="right")
    for r in results["outages"]:
        table.add_row(str(r["requested_ms"]), str(r["blocked_ms"]),
                      "none" if r["detected_ms"] is None else str(r["detected_ms"]), str(r["lost"]))
    console.print(table)
    s = results["steady_inter_arrival_ms"]
    console.print(f"steady state reply spacing: median {s['median']} ms, p99 {s['p99']} ms, max {s['max']} ms")
    cost = Table(title="probe cost, % of one host core")
    for col in ("load", "QEMU (TCG guest)", "fping"):
        cost.add_column(col, justify="right")
    cost.add_row("no probe", str(results["cpu_idle"]["qemu"]), "-")
    cost.add_row("fping 200/s", str(results["cpu_ping"]["qemu"]), str(results["cpu_ping"]["ping"]))
    cost.add_row("fping + TCP 64 KiB/s", str(results["cpu_ping_tcp"]["qemu"]), str(results["cpu_ping_tcp"]["ping"]))
    console.print(cost)


def run_migration_bench(console: Console, memories: tuple[int, ...] = (256, 1024)) -> dict:
    """live-migration-pci (out and back) per guest size, with and without the announce-self step."""
    scenario_path = Path(__file__).resolve().parent.parent / "scenarios/live-migration-pci.yaml"
    rows = []
    with tempfile.TemporaryDirectory(prefix="testbed-migration-bench-") as tmp:
        for memory in memories:
            for announce in (True, False):
                console.log(f"{memory} MiB, announce-self {'on' if announce else 'off'}")
                scenario = load_scenario(scenario_path, {"memory": memory, "announce": announce,
                                                         "migration_gap_ms": 60000})
                report = run_scenario(scenario, RunOptions(artifacts_dir=Path(tmp) / f"{memory}-{announce}", snapshot="never"))
                (tcp,) = report.tcp()
                steps = report.steps
                for m_index, migration in zip([s.index for s in steps if s.action == "migrate"],
                                              report.migrations):
                    until = next(s.index for s in steps[m_index:] if s.action == "check-traffic")
                    gaps = report.gaps_in(m_index, until)
                    step = steps[m_index]
                    rows.append({
                        "memory_mib": memory, "announce_self": announce, "migration": migration.number,
                        "direction": f"{migration.from_slot}->{migration.to_slot}",
                        "status": migration.status, "passed": report.passed,
                        "step_wall_s": round((step.ended_s or 0) - step.started_s, 2),
                        "total_time_ms": migration.total_time_ms, "downtime_ms": migration.downtime_ms,
                        "wait_unplug_ms": migration.wait_unplug_ms,
                        "gap_ms": max((g.ms for g in gaps), default=0.0),
                        "lost": sum(g.lost for g in gaps), "tcp_max_stall_ms": tcp.max_stall_ms})
    return {"rows": rows}


def print_migration_bench(results: dict, console: Console) -> None:
    table = Table(title="live migration (scenarios/live-migration-pci.yaml, e1000e primary, TCG)")
    cols = ["memory_mib", "announce_self", "direction", "status", "step_wall_s", "total_time_ms",
            "downtime_ms", "wait_unplug_ms", "gap_ms", "lost", "tcp_max_stall_ms"]
    for col in cols:
        table.add_column(col.replace("_", " "), justify="right")
    for row in results["rows"]:
        table.add_row(*(str(row[c]) for c in cols))
    console.print(table)
