"""`testbed bench --flavours`: every guest image flavour side by side in one run: its image build
(cold, in a fresh cache, and warm, a cache hit) and its boot to SSH and to pairs ready, running the
same scenario with every VM on that flavour. Figures are printed, never asserted."""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from testbed.bench import image_build
from testbed.image_recipe import DEFAULT_FLAVOUR, default_memory_mib, flavours
from testbed.images import ensure_image
from testbed.runner import RunOptions, run_scenario
from testbed.scenario import load_scenario

SCENARIO = Path(__file__).resolve().parent.parent / "scenarios" / "standby-pci.yaml"


def _on_flavour(path: Path, flavour: str):
    scenario = load_scenario(path)
    # Each flavour with the RAM its recipe gives a VM, as a scenario that names it gets.
    vms = [vm.model_copy(update={"image": flavour, "memory_mib": default_memory_mib(flavour)}) for vm in scenario.vms]
    return scenario.model_copy(update={"vms": vms})


def _build_times(flavour: str, cold: bool) -> dict[str, float]:
    out = image_build(cold, flavour)
    image = ensure_image(flavour=flavour)  # the user's cache, which the runs use: built now if it was not
    out["initrd_mib"] = round(image.initrd.stat().st_size / 2**20, 1)
    return out


def run_flavour_bench(console: Console, runs: int, cold: bool, scenario: Path = SCENARIO,
                      only: tuple[str, ...] = ()) -> dict[str, Any]:
    """Every flavour, or those in `only` (the ratio to minimal needs minimal among them)."""
    if unknown := set(only) - set(flavours()):
        raise SystemExit(f"no guest image flavour {', '.join(sorted(unknown))}; known: {', '.join(flavours())}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="testbed-bench-flavours-") as tmp:
        for flavour in [f for f in flavours() if not only or f in only]:
            console.log(f"{flavour}: image build" + (" (cold, fresh cache)" if cold else " (warm)"))
            row: dict[str, Any] = {"flavour": flavour, **_build_times(flavour, cold)}
            boots = []
            for n in range(runs):
                console.log(f"{flavour}: {scenario.name} {n + 1}/{runs}")
                report = run_scenario(_on_flavour(scenario, flavour),
                                      RunOptions(artifacts_dir=Path(tmp) / f"{flavour}-{n}", snapshot="never"))
                if not report.passed:
                    raise SystemExit(f"{scenario.name} on {flavour} failed during the benchmark: {report.error}")
                boots.append(next(iter(report.vms.values())).boot)
            for key in ("ssh_ready_s", "pairs_ready_s", "qemu_peak_rss_mib"):
                row[key] = round(statistics.median(b[key] for b in boots), 2)
            rows.append(row)
    base = next((r for r in rows if r["flavour"] == DEFAULT_FLAVOUR), None)
    for row in rows:
        if base is not None:
            row["pairs_over_minimal"] = round(row["pairs_ready_s"] / base["pairs_ready_s"], 2)
    return {"scenario": str(scenario), "runs": runs, "rows": rows}


def print_flavour_bench(results: dict[str, Any], console: Console) -> None:
    table = Table(title=f"testbed bench --flavours: {Path(results['scenario']).name}, median of {results['runs']}")
    columns = (("flavour", "flavour"), ("image_cold_s", "build cold s"), ("image_warm_s", "load warm s"),
               ("initrd_mib", "initrd MiB"), ("ssh_ready_s", "launch -> SSH s"),
               ("pairs_ready_s", "launch -> pairs s"), ("pairs_over_minimal", "x minimal"),
               ("qemu_peak_rss_mib", "QEMU RSS MiB"))
    for _, title in columns:
        table.add_column(title)
    for row in results["rows"]:
        table.add_row(*("-" if row.get(key) is None else str(row[key]) for key, _ in columns))
    console.print(table)
