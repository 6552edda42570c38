"""The kernel document's topology on a host VM, end to end: `testbed bench --host-vm` runs
scenarios/host-vf-failover.yaml (so the suite runs it once, here, with the checks that the issue's
"must show" asks of its report) and turns the report into its phase table; it starts on a broken
snapshot under its own key, so it shows the cold fallback too; then the host VM's warm start from
the snapshot that run saved, whose host VM the test kills (the testbed must name it as the cause)."""

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from rich.console import Console

from testbed import host_vm_warm, warm_boot
from testbed.bench_host_vm import PHASES, SCENARIO, run_host_vm_bench
from testbed.leftovers import run_leftovers
from testbed.pytest_plugin import host_vm_flake_rerun
from testbed.report import RunReport
from testbed.runner import RunOptions, run_scenario
from testbed.scenario import Scenario, load_scenario
from testbed.steps import host_vm_boot
from testbed_process import kill_and_time, qemu_pid, start_run, step_started, stop, wait_for  # tests/

pytestmark = [pytest.mark.guest, pytest.mark.slow, pytest.mark.alone, host_vm_flake_rerun()]


def test_host_vf_failover_through_unplug_replug_and_migration_then_a_warm_start(tmp_path: Path, monkeypatch):
    """A broken snapshot under the host VM's key fails the boot step under `snapshot: required`.
    Under `snapshot: auto` the next run finds a snapshot under its key that does not load, drops
    it, boots cold, saves the host VM with its guest in it, and goes on in the same host VM, its guest
    adopted again and its VF plugged back as after a restore: every check below holds for that guest.
    A second run then starts from that snapshot, and its VF carries the traffic. Then the test kills
    the host VM's QEMU: the testbed names the host VM, not its guest, at once, and leaves nothing.

    The nested guest spins a CPU when the host VM is saved: a vCPU of the host VM is then inside the
    nested KVM guest, and a save taken so (without the testbed's pause of the guest's QEMU) does not
    load (docs/findings/host-vm-snapshot.md, "A vCPU inside the nested guest")."""
    root = tmp_path / f"attempt-{len(list(tmp_path.glob('attempt-*'))) + 1}"  # a rerun keeps the first
    monkeypatch.setenv("TESTBED_SNAPSHOT_DIR", str(root / "snapshots"))
    spun = _spin_the_guest_at_the_save(monkeypatch)
    planted = _plant_a_broken_snapshot_under_the_runs_key(monkeypatch, root / "snapshots", runs=2)

    # under `required`, a host snapshot that does not load fails the boot step, and is dropped
    boot_only = _warm_steps("required")
    failed = run_scenario(boot_only.model_copy(update={"steps": boot_only.steps[:1]}),
                          RunOptions(artifacts_dir=root / "required"))
    failed.write(root / "required" / "report.json")
    assert not failed.passed and not failed.steps[0].ok
    assert failed.steps[0].error.startswith(f"host VM: restoring {planted[0]} failed"), failed.steps[0].error
    assert "Configuration section missing" in failed.steps[0].error  # QEMU's own word on the stream cut short
    assert not (root / "snapshots" / planted[0]).exists()
    assert "host_ssh_ready_s" not in failed.topology  # no cold L1 booted just to fail the step
    assert (root / "required" / "host-restore-failed" / "serial.log").is_file()
    # nor made: no artifacts of an L1 that never ran, and no nested KVM verdict that was never probed
    assert not (root / "required" / "host").exists() and "nested_accel" not in failed.topology, failed.topology

    results = run_host_vm_bench(Console(file=open("/dev/null", "w")), runs=1, artifacts_root=root,
                                variables={"snapshot": "auto"})
    report = RunReport.model_validate(json.loads((root / "run0" / "report.json").read_text()))
    check_host_vf_failover(results, report)
    boot = report.vms["vm1"].boot
    assert boot["start"] == "cold" and "restored_from" not in boot and boot["saved_s"] > 0, boot
    # a host snapshot that does not load: L1 boots cold with its guest, the run passes, the report
    # says why, and the failed QEMU's artifacts are kept
    warm = report.topology["warm_start"]
    assert planted == [boot["snapshot_key"]] * 2
    assert warm["start"] == "cold" and warm["fallback"].startswith(f"restoring {planted[1]} failed"), warm
    assert (root / "run0" / "host-restore-failed" / "serial.log").is_file()
    assert report.topology["host_ssh_ready_s"] > 0
    # the host VM ran on in the QEMU that saved it: never a second QEMU launched for a restore
    assert report.topology["host_resumed_s"] > 0 and "host_restored_s" not in report.topology
    assert not (root / "run0" / "host-restored").exists()
    assert warm["key"] == boot["snapshot_key"]
    assert "vfio-pci device added again" in boot["differs_from_cold"]
    assert spun == ["vm1"]
    # the broken snapshot was dropped, so this run's own save took its key
    state = root / "snapshots" / boot["snapshot_key"] / "state"
    assert warm["saved_s"] > 0 and state.stat().st_size > len(BROKEN_STATE)

    # A second run starts from that snapshot, its VF carries the traffic, then its host VM is killed
    killed = _start_then_kill_the_host_vm(root)
    assert killed.returncode == 1, killed.err
    assert killed.took_s < 10, f"the testbed took {killed.took_s:.1f}s to report the host VM's death"
    # the host VM, not its guest, is named: its death explains the guest's
    assert "host: QEMU exited (signal 9, SIGKILL) during step 5 (sleep)" in killed.err, killed.err
    second = RunReport.model_validate(json.loads((root / "second" / "report.json").read_text()))
    assert second.topology["exit"]["signal"] == "SIGKILL"
    assert second.vms["vm1"].shutdowns[0]["how"] == "went-with-the-host-vm", second.vms["vm1"].shutdowns
    assert run_leftovers(root / "second") == []
    assert [s.ok for s in second.steps] == [True, True, True, True, True, False], second.steps
    boot2 = second.vms["vm1"].boot
    assert boot2["start"] == "restored" and boot2["restored_from"] == boot["snapshot_key"]
    assert "cold_boot" not in boot2 and "host_ssh_ready_s" not in second.topology
    assert second.topology["warm_start"]["start"] == "restored" and second.topology["host_restored_s"] > 0
    # the VF that was unplugged for the save and plugged back after the restore carries the traffic
    sleep = second.steps[3]
    assert sleep.action == "sleep" and second.steps[4].action == "check-traffic"
    assert sleep.counters["vm1"]["net0"]["vf_on_pf"]["rx"] > 50
    assert sleep.counters["vm1"]["net0"]["primary"]["rx"] > 50
    # the restored host VM knows both PFs' VFs from the snapshot, though this run never migrates
    assert set(second.topology["vfs"]) == {"vm1/net0@0", "vm1/net0@1"}


# The scenario's own topology (its key is the one the first run saved under), restored, the busy
# loop that the guest ran at the save stopped (the exec fails if the restore did not carry it), its
# VF's traffic checked, then a long sleep during which the test kills the host VM's QEMU.
WARM_THEN_KILLED_STEPS = """steps:
  - action: boot
    timeout_s: 300
    snapshot: required
  - action: exec
    vm: vm1
    command: 'kill "$(cat /run/spin.pid)" && rm /run/spin.pid'
  - action: start-traffic
    vm: vm1
    pair: net0
  - action: sleep
    seconds: 2
  - action: check-traffic
    vm: vm1
    pair: net0
    path: primary
    max_gap_ms: 500
    max_lost: 0
  - action: sleep
    seconds: 120
"""


@dataclass
class Killed:
    returncode: int
    took_s: float
    err: str


def _start_then_kill_the_host_vm(root: Path) -> Killed:
    """`testbed run` in a process of its own (a kill of L1's QEMU is what it must report), killed
    once its long sleep has started."""
    head, _ = SCENARIO.read_text().split("\nsteps:\n")
    scenario = root / "warm-then-killed.yaml"
    scenario.write_text(head + "\n" + WARM_THEN_KILLED_STEPS)
    artifacts = root / "second"
    proc = start_run(scenario, artifacts)
    try:
        wait_for("the long sleep", lambda: step_started(artifacts, 5, "sleep"), proc, timeout=300)
        took, err = kill_and_time(proc, qemu_pid(artifacts, "host"))
        return Killed(proc.returncode, took, err)
    finally:
        stop(proc)


SPIN = "setsid sh -c 'echo $$ >/run/spin.pid; while :; do :; done' </dev/null >/dev/null 2>&1 & sleep 2; " \
       "kill -0 \"$(cat /run/spin.pid)\""
STOP_SPIN = '[ ! -f /run/spin.pid ] || { kill "$(cat /run/spin.pid)"; rm /run/spin.pid; }'


def _spin_the_guest_at_the_save(monkeypatch) -> list[str]:
    """Starts a busy loop in each nested guest just before the testbed pauses it for the save, and
    ends it once the guest is back in this run (a later run, in a process of its own, ends it with
    an exec step)."""
    spun: list[str] = []
    pause, settle = host_vm_boot._pause, warm_boot.settle_restored

    def spin_then_pause(ctx, name):
        ctx.shell(name).run(["sh", "-c", SPIN], timeout=20)  # raises unless the loop is running
        spun.append(name)
        pause(ctx, name)

    def settle_then_stop_spinning(ctx, name):
        settle(ctx, name)
        ctx.shell(name).run(["sh", "-c", STOP_SPIN], timeout=20)

    monkeypatch.setattr(host_vm_boot, "_pause", spin_then_pause)
    monkeypatch.setattr(warm_boot, "settle_restored", settle_then_stop_spinning)
    return spun


# A migration stream's header (QEMU_VM_FILE_MAGIC, version 3) and nothing after it: a save cut short.
BROKEN_STATE = b"QEVM" + (3).to_bytes(4, "big")


def _plant_a_broken_snapshot_under_the_runs_key(monkeypatch, cache: Path, runs: int) -> list[str]:
    """Puts a snapshot that cannot load under the key that each of the first `runs` runs computes for
    its host VM, before the run looks it up (a cold boot with its guest costs 90 s, so the fallback is
    shown on the run that boots cold anyway)."""
    planted: list[str] = []
    plan = host_vm_warm.plan_host_start

    def plan_then_plant(*args, **kwargs):
        warm = plan(*args, **kwargs)
        if len(planted) == runs:
            return warm
        assert warm.key is not None, warm.reasons
        (cache / warm.key).mkdir(parents=True)
        (cache / warm.key / "state").write_bytes(BROKEN_STATE)
        (cache / warm.key / "meta.json").write_text(json.dumps({"key": warm.key, "vm": "host", "host": {}}))
        planted.append(warm.key)
        return warm

    monkeypatch.setattr(host_vm_warm, "plan_host_start", plan_then_plant)
    return planted


def _warm_steps(snapshot: str) -> Scenario:
    """The scenario's boot and its first traffic check. Its host VM is the same without the migrations
    (two hosts: two PFs), so the key is. Migrations after a restore ran in the first run."""
    scenario = load_scenario(SCENARIO, {"snapshot": snapshot})
    keep = [s for s in scenario.steps if s.action in ("boot", "start-traffic", "sleep")][:3]
    check = next(s for s in scenario.steps if s.action == "check-traffic" and s.path is not None)
    return scenario.model_copy(update={"steps": [*keep, check]})


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
