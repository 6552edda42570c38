"""`testbed bench --warm`: cold boot against warm restore, up to pairs ready, side by side in one run.
Each scenario runs three times. First with its boot step set to `snapshot: never`: today's time
without the cache. Then twice with `snapshot: auto`, in a snapshot cache of its own: the first of
those boots cold, saves and goes on (what an empty cache costs), the second restores. A scenario
that must boot cold says why.
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


def _with_snapshot(path: Path, mode: str):
    scenario = load_scenario(path)
    steps = [s.model_copy(update={"snapshot": mode}) if isinstance(s, BootStep) else s for s in scenario.steps]
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
                runs, durations = [], []
                for n, mode in enumerate(("never", "auto", "auto")):
                    console.log(f"{name}: run {n + 1}/3, snapshot: {mode}")
                    report = run_scenario(_with_snapshot(SCENARIOS / f"{name}.yaml", mode),
                                          RunOptions(artifacts_dir=Path(tmp) / f"{name}-{n}"))
                    if not report.passed:
                        raise SystemExit(f"{name} failed during the benchmark: {report.error}")
                    runs.append(_boot(report))
                    durations.append(report.duration_s)
                _, first, warm = runs
                cold = first.get("cold_boot", first)
                row = {"scenario": name, "cold_ssh_s": cold.get("ssh_ready_s"), "cold_pairs_s": cold.get("pairs_ready_s"),
                       "second_run": warm.get("start"), "second_ssh_s": warm.get("ssh_ready_s"),
                       "second_pairs_s": warm.get("pairs_ready_s"), "saved_s": first.get("saved_s"),
                       "cold_because": warm.get("cold_because"),
                       # from the run's start: a host VM's boot (or restore) comes before its guests' launch
                       "cold_in_run_s": cold.get("pairs_ready_in_run_s"),
                       "second_in_run_s": warm.get("pairs_ready_in_run_s"),
                       # the whole run: without the cache, with an empty one, with a warm one
                       "never_run_s": durations[0], "empty_cache_run_s": durations[1], "warm_run_s": durations[2],
                       "empty_cache_pct": round(100 * (durations[1] - durations[0]) / durations[0], 1),
                       # the same cost within one run, free of the noise between runs: its boot step
                       # from the cold pairs to the pairs after the save (a host VM: its guests'
                       # VFs plugged back after it)
                       "own_save_cost_s": (round(first["pairs_ready_in_run_s"] - cold["pairs_ready_in_run_s"], 3)
                                           if "cold_boot" in first else None)}
                if row["own_save_cost_s"] is not None:
                    row["own_save_cost_pct"] = round(100 * row["own_save_cost_s"] / durations[0], 1)
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
    cost = Table(title="what the cache costs: the whole run without it (snapshot: never), with it empty, with it warm")
    for column in ("scenario", "never s", "empty cache s", "+%", "own save s", "+% of never", "warm s"):
        cost.add_column(column)
    for r in results["rows"]:
        cost.add_row(r["scenario"], *("-" if r.get(k) is None else str(r[k])
                                      for k in ("never_run_s", "empty_cache_run_s", "empty_cache_pct", "own_save_cost_s",
                                                "own_save_cost_pct", "warm_run_s")))
    console.print(cost)
