"""The kernel document's topology on a host VM, end to end: `testbed bench --host-vm` runs
scenarios/host-vf-failover.yaml (so the suite runs it once, here, with the checks that the issue's
"must show" asks of its report) and turns the report into its phase table."""

import json
from pathlib import Path

import pytest
from rich.console import Console

from testbed.bench_host_vm import PHASES, run_host_vm_bench
from testbed.pytest_plugin import host_vm_flake_rerun
from testbed.report import RunReport

pytestmark = [pytest.mark.guest, pytest.mark.slow, host_vm_flake_rerun()]


def test_host_vf_failover_through_unplug_replug_and_migration(tmp_path: Path):
    root = tmp_path / f"attempt-{len(list(tmp_path.glob('attempt-*'))) + 1}"  # a rerun keeps the first
    results = run_host_vm_bench(Console(file=open("/dev/null", "w")), runs=1, artifacts_root=root)
    report = RunReport.model_validate(json.loads((root / "run0" / "report.json").read_text()))
    check_host_vf_failover(results, report)


def check_host_vf_failover(results: dict, report: RunReport) -> None:
    assert report.passed, report.error

    # the phases the bench prints, each with its figure
    assert set(results["phases"]) == set(PHASES)
    assert all(row["s"] is not None and row["s"] > 0 for row in results["phases"].values()), results["phases"]
    for phase in ("unplug (device_del -> standby only)", "re-plug (VF MAC, device_add -> enslaved)",
                  "migrations (there and back)"):
        assert results["phases"][phase]["max_gap_ms"] is not None, phase

    # L2's primary is igbvf, enslaved to the failover master, with the pair's MAC
    (primary,) = [n for n in report.vms["vm1"].netdevs if n["role"] == "primary"]
    (master,) = [n for n in report.vms["vm1"].netdevs if n["role"] == "failover"]
    assert primary["driver"] == "igbvf" and primary["master"] == master["name"]
    assert primary["mac"] == "52:54:00:00:12:53"
    # on the host VM, each slot's VF was bound to vfio-pci
    topo = report.topology
    assert topo["kind"] == "vm" and set(topo["vfs"]) == {"vm1/net0@0", "vm1/net0@1"}
    assert all(topo["vf_drivers"][bdf] == "vfio-pci" for bdf in topo["vfs"].values())

    # QEMU's own failover migration, there and back: UNPLUG_PRIMARY of the vfio-pci device on the
    # source, wait-unplug, and FAILOVER_NEGOTIATED of the standby on the destination
    assert [(m.from_slot, m.to_slot, m.status) for m in report.migrations] == [(0, 1, "completed"), (1, 0, "completed")]
    for m in report.migrations:
        assert {"event": "UNPLUG_PRIMARY", "data": {"device-id": "net0-pri"}}.items() <= \
            next(e for e in m.events if e["event"] == "UNPLUG_PRIMARY").items()
        assert "wait-unplug" in m.statuses and m.wait_unplug_ms is not None
        assert any(e["event"] == "FAILOVER_NEGOTIATED" and e["data"]["device-id"] == "net0-sby"
                   for e in m.destination_events)

    # a gap figure for every step that moved the traffic, attributed to its step
    (ping,) = report.pings()
    gapped = {g.step_action for g in ping.gaps}
    assert {"unplug-primary", "plug-primary", "migrate"} <= gapped, gapped

    # path proof from the host's side: while the primary carries the traffic, the VF's own counters
    # in the PF's registers move; while the standby does, they do not
    sleeps = [s for s in report.steps if s.action == "sleep"]
    before, during = sleeps[0], sleeps[1]
    assert before.counters["vm1"]["net0"]["vf_on_pf"]["rx"] > 50
    assert during.counters["vm1"]["net0"]["vf_on_pf"]["rx"] == 0
    assert during.counters["vm1"]["net0"]["standby"]["rx"] > 50
