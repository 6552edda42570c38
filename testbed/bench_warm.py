"""`testbed bench --warm`: cold boot against warm restore, up to pairs ready, side by side in one run.
Each scenario runs twice with its boot step set to `snapshot: auto`, in a snapshot cache of its own:
the first run boots cold (and saves), the second restores. A scenario that must boot cold says why.
Times are from the VM's launch (or restore), and from the run's start: for a host-VM scenario the
host VM's own boot comes before its guest's launch, and its restore is what a warm run saves.
Figures are printed, never asserted."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from testbed.runner import RunOptions, run_scenario
from testbed.scenario import BootStep, load_scenario

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"
DEFAULT = ("standby-pci", "standby-igb-vf", "two-pairs", "host-vf-failover")


def _with_auto(path: Path):
    scenario = load_scenario(path)
    steps = [s.model_copy(update={"snapshot": "auto"}) if isinstance(s, BootStep) else s for s in scenario.steps]
    return scenario.model_copy(update={"steps": steps})


def _boot(report) -> dict[str, Any]:
    return next(iter(report.vms.values())).boot


def run_warm_bench(console: Console, names: tuple[str, ...] = DEFAULT) -> dict[str, Any]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="testbed-bench-warm-") as tmp:
        previous = os.environ.get("TESTBED_SNAPSHOT_DIR")
        os.environ["TESTBED_SNAPSHOT_DIR"] = str(Path(tmp) / "snapshots")
        try:
            for name in names:
                runs = []
                for n in range(2):
                    console.log(f"{name}: run {n + 1}/2")
                    report = run_scenario(_with_auto(SCENARIOS / f"{name}.yaml"),
                                          RunOptions(artifacts_dir=Path(tmp) / f"{name}-{n}"))
                    if not report.passed:
                        raise SystemExit(f"{name} failed during the benchmark: {report.error}")
                    runs.append(_boot(report))
                cold = runs[0].get("cold_boot", runs[0])
                warm = runs[1]
                row = {"scenario": name, "cold_ssh_s": cold.get("ssh_ready_s"), "cold_pairs_s": cold.get("pairs_ready_s"),
                       "second_run": warm.get("start"), "second_ssh_s": warm.get("ssh_ready_s"),
                       "second_pairs_s": warm.get("pairs_ready_s"), "saved_s": runs[0].get("saved_s"),
                       "cold_because": warm.get("cold_because"),
                       # from the run's start: a host VM's boot (or restore) comes before its guests' launch
                       "cold_in_run_s": cold.get("pairs_ready_in_run_s"),
                       "second_in_run_s": warm.get("pairs_ready_in_run_s")}
                if warm.get("start") == "restored" and row["cold_pairs_s"] and row["second_pairs_s"]:
                    row["speedup"] = round(row["cold_pairs_s"] / row["second_pairs_s"], 1)
                    row["speedup_in_run"] = round(row["cold_in_run_s"] / row["second_in_run_s"], 1)
                rows.append(row)
        finally:
            if previous is None:
                os.environ.pop("TESTBED_SNAPSHOT_DIR", None)
            else:
                os.environ["TESTBED_SNAPSHOT_DIR"] = previous
    return {"rows": rows}


def print_warm_bench(results: dict[str, Any], console: Console) -> None:
    table = Table(title="testbed bench --warm: launch to SSH and to pairs ready, cold against the second run")
    for column in ("scenario", "cold SSH s", "cold pairs s", "save s", "second run", "SSH s", "pairs s", "x",
                   "run start -> pairs: cold s", "second s", "x", "why cold"):
        table.add_column(column)
    for r in results["rows"]:
        table.add_row(r["scenario"], *("-" if r.get(k) is None else str(r[k])
                                       for k in ("cold_ssh_s", "cold_pairs_s", "saved_s", "second_run", "second_ssh_s",
                                                 "second_pairs_s", "speedup", "cold_in_run_s", "second_in_run_s",
                                                 "speedup_in_run")),
                      "; ".join(r.get("cold_because") or []) or "-")
    console.print(table)
