"""`testbed matrix`: one scenario over several QEMU builds and guest kernels, one run per combination,
as a table, JSON and an HTML page. When one machine is not enough, `--emit github` writes the
combinations as a GitHub Actions job matrix, each job runs one (`--only N`), and `testbed matrix merge`
joins their JSON files into one table. The CI system schedules; the testbed does not."""

from __future__ import annotations

import html
import itertools
import json
import logging
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from testbed.errors import TestbedError
from testbed.images import LocalKernel
from testbed.report import RunReport
from testbed.run_context import RunOptions
from testbed.runner import run_scenario
from testbed.scenario import load_scenario

logger = logging.getLogger(__name__)
DEFAULT = "default"  # the system QEMU, or the image recipe's Debian kernel


@dataclass(frozen=True)
class Combination:
    qemu: str    # a path, or "default"
    kernel: str  # "BZIMAGE:MODULES_DIR", "debian:SUITE" (Debian's kernel from that suite), or "default"

    def kernel_suite(self) -> str | None:
        return self.kernel.removeprefix("debian:") if self.kernel.startswith("debian:") else None

    def local_kernel(self) -> LocalKernel | None:
        if self.kernel == DEFAULT or self.kernel_suite() is not None:
            return None
        bzimage, sep, modules = self.kernel.partition(":")
        if not sep or not bzimage or not modules:
            raise TestbedError(f"--kernel {self.kernel!r}: give BZIMAGE:MODULES_DIR (its /lib/modules/<release>)")
        return LocalKernel(Path(bzimage).resolve(), Path(modules).resolve())


def combinations(qemus: list[str], kernels: list[str]) -> list[Combination]:
    return [Combination(q, k) for q, k in itertools.product(qemus or [DEFAULT], kernels or [DEFAULT])]


def _figures(report: RunReport) -> dict[str, Any]:
    """The few numbers worth a column: boot to pairs, migration downtime, the longest traffic gap."""
    figures: dict[str, Any] = {"duration_s": report.duration_s}
    pairs = [vm.boot.get("pairs_ready_s") for vm in report.vms.values() if vm.boot.get("pairs_ready_s")]
    if pairs:
        figures["pairs_ready_s"] = max(pairs)
    downtimes = [m.downtime_ms for m in report.migrations if m.downtime_ms is not None]
    if downtimes:
        figures["max_downtime_ms"] = max(downtimes)
    gaps = [p.max_gap_ms for p in report.pings() if p.max_gap_ms is not None]
    if gaps:
        figures["max_gap_ms"] = max(gaps)
    return figures


def run_one(scenario_path: Path, combo: Combination, variables: dict[str, str], artifacts: Path) -> dict[str, Any]:
    scenario = load_scenario(scenario_path, variables)
    options = RunOptions(artifacts_dir=artifacts, qemu=None if combo.qemu == DEFAULT else combo.qemu,
                         local_kernel=combo.local_kernel(), kernel_suite=combo.kernel_suite(),
                         scenario_file=str(scenario_path))
    report = run_scenario(scenario, options)
    report.write(artifacts / "report.json")
    return {"scenario": scenario.name, **asdict(combo),
            "qemu_version": report.host.qemu_version if report.host else None,
            "guest_kernel": report.host.guest_kernel if report.host else None,
            "outcome": report.verdict or ("passed" if report.passed else "failed"),
            "evidence": report.verdict_evidence or report.error, "figures": _figures(report),
            "report": str(artifacts / "report.json")}


def run_matrix(scenario_path: Path, combos: list[Combination], variables: dict[str, str],
               artifacts_root: Path | None) -> list[dict[str, Any]]:
    root = artifacts_root or Path(tempfile.mkdtemp(prefix="testbed-matrix-"))
    rows = []
    for n, combo in enumerate(combos):
        logger.info("matrix %d/%d: qemu %s, kernel %s", n + 1, len(combos), combo.qemu, combo.kernel)
        rows.append(run_one(scenario_path, combo, variables, root / f"combo{n}"))
    return rows


def github_matrix(combos: list[Combination]) -> dict[str, Any]:
    """For `strategy.matrix` (fromJSON): one job per combination, named by its index."""
    return {"include": [{"index": n, **asdict(c)} for n, c in enumerate(combos)]}


def merge(paths: list[Path]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for path in paths:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise TestbedError(f"{path}: not a matrix result: {e}") from e
        if not (isinstance(data, dict) and isinstance(data.get("rows"), list)
                and all(isinstance(r, dict) for r in data["rows"])):
            # a report.json or any other JSON handed by mistake would vanish from the table
            raise TestbedError(f"{path}: not a matrix result: no list of rows (is it a `testbed matrix --json` "
                               f"file?)")
        rows.extend(data["rows"])
    return sorted(rows, key=lambda r: (r.get("qemu", ""), r.get("kernel", "")))


def write_html(rows: list[dict[str, Any]], path: Path) -> None:
    cells = ["qemu", "qemu_version", "kernel", "guest_kernel", "outcome", "figures", "evidence"]
    body = "\n".join("<tr>" + "".join(f"<td>{html.escape(str(r.get(c) if c != 'figures' else json.dumps(r.get(c))))}"
                                      f"</td>" for c in cells) + "</tr>" for r in rows)
    title = html.escape(rows[0]["scenario"] if rows else "matrix")
    path.write_text(f"<!doctype html><meta charset=utf-8><title>{title}</title><h1>{title}</h1>\n"
                    f"<table border=1><tr>{''.join(f'<th>{c}</th>' for c in cells)}</tr>\n{body}\n</table>\n")
