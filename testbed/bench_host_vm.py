"""`testbed bench --host-vm`: the phases of scenarios/host-vf-failover.yaml, the kernel document's
topology on a host VM, each with its time and traffic gap, as the run's report records them.
Figures are printed, never asserted."""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from testbed.report import RunReport
from testbed.runner import RunOptions, run_scenario
from testbed.scenario import load_scenario

SCENARIO = Path(__file__).resolve().parent.parent / "scenarios" / "host-vf-failover.yaml"
# (phase, how the report gives its time, its note)
PHASES = ("host VM: launch -> SSH", "host VM: launch -> VFs on vfio-pci, bridges up",
          "guest (L2): launch -> SSH", "guest (L2): launch -> pairs ready",
          "unplug (device_del -> standby only)", "re-plug (VF MAC, device_add -> enslaved)",
          "migrations (there and back)", "whole scenario")


def _step(report: RunReport, action: str) -> Any:
    return next(s for s in report.steps if s.action == action)


def _gap(report: RunReport, action: str) -> float | None:
    gaps = [g.ms for t in report.pings() for g in t.gaps if g.step_action == action]
    return max(gaps) if gaps else None


def phases(report: RunReport) -> dict[str, dict[str, float | None]]:
    topo, boot = report.topology, next(iter(report.vms.values())).boot
    unplug, plug, migrate = (_step(report, a) for a in ("unplug-primary", "plug-primary", "migrate"))
    secs = [topo.get("host_ssh_ready_s"), topo.get("host_ready_s"), boot.get("ssh_ready_s"),
            boot.get("pairs_ready_s"), unplug.details.get("guest_settled_after_s"),
            plug.details.get("guest_paired_after_s"), round(migrate.ended_s - migrate.started_s, 3),
            report.duration_s]
    gaps = [None, None, None, None, _gap(report, "unplug-primary"), _gap(report, "plug-primary"),
            _gap(report, "migrate"), None]
    return {name: {"s": s, "max_gap_ms": g} for name, s, g in zip(PHASES, secs, gaps)}


def run_host_vm_bench(console: Console, runs: int, artifacts_root: Path | None = None,
                      variables: dict[str, str] | None = None) -> dict[str, Any]:
    """With artifacts_root, each run's artifacts and report.json stay in artifacts_root/run<N>.
    variables: the scenario's template variables (`snapshot`)."""
    samples: list[dict[str, dict[str, float | None]]] = []
    extra: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="testbed-bench-host-vm-") as tmp:
        for n in range(runs):
            console.log(f"host-vf-failover {n + 1}/{runs}")
            artifacts = (artifacts_root or Path(tmp)) / f"run{n}"
            report = run_scenario(load_scenario(SCENARIO, variables), RunOptions(artifacts_dir=artifacts))
            report.write(artifacts / "report.json")
            if not report.passed:
                raise SystemExit(f"scenario failed during the benchmark: {report.error}")
            samples.append(phases(report))
            extra = {"nested_accel": report.topology.get("nested_accel"),
                     "migrations": [m.model_dump(include={"total_time_ms", "downtime_ms", "wait_unplug_ms"})
                                    for m in report.migrations]}

    def med(name: str, key: str) -> float | None:
        values = [s[name][key] for s in samples if s[name][key] is not None]
        return round(statistics.median(values), 3) if values else None
    return {"scenario": str(SCENARIO), "runs": runs, **extra,
            "phases": {name: {"s": med(name, "s"), "max_gap_ms": med(name, "max_gap_ms")} for name in PHASES},
            "samples": samples}


def print_host_vm_bench(results: dict[str, Any], console: Console) -> None:
    table = Table(title=f"testbed bench --host-vm: host-vf-failover.yaml (nested guests: "
                        f"{results.get('nested_accel')}, median of {results['runs']})")
    table.add_column("phase")
    table.add_column("s", justify="right")
    table.add_column("max traffic gap ms", justify="right")
    for name, row in results["phases"].items():
        table.add_row(name, "-" if row["s"] is None else str(row["s"]),
                      "-" if row["max_gap_ms"] is None else str(row["max_gap_ms"]))
    console.print(table)
    for i, m in enumerate(results.get("migrations", []), 1):
        console.print(f"migration {i}: total {m['total_time_ms']} ms, downtime {m['downtime_ms']} ms, "
                      f"wait-unplug {m['wait_unplug_ms']} ms")
