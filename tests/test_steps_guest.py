"""Steps no shipped scenario needs on its own, each shown to act on a real guest and bridge."""

from pathlib import Path

import pytest

from testbed.machine_watch import MachineDied
from testbed.runner import RunOptions, live_run
from testbed.waiting import wait_until
from testbed.scenario import (AnnounceSelfStep, BootStep, CheckNetdevsStep, ContStep, ExecStep, FdbStep,
                              MtuStep, PlugPrimaryStep, ResetStep, SaveRestoreStep, SleepStep,
                              StartTrafficStep, StopStep, UnplugPrimaryStep, UnplugStandbyStep, load_scenario)

REPO = Path(__file__).parent.parent
pytestmark = pytest.mark.guest
MTU_REFUSED = "mtu greater than device maximum"


def _shares(record):
    roles = record.counters["vm1"]["net0"]
    return {r: roles[r]["rx"] for r in ("standby", "primary")}, {r: roles[r]["tx"] for r in ("standby", "primary")}


def test_exec_fdb_and_announce_self(tmp_path):
    scenario = load_scenario(REPO / "scenarios/standby-pci.yaml")
    with live_run(scenario, RunOptions(artifacts_dir=tmp_path / "art")) as run:
        assert run.step(BootStep(action="boot")).ok

        hostname = run.step(ExecStep(action="exec", vm="vm1", command=["cat", "/proc/sys/kernel/hostname"]))
        assert hostname.ok and hostname.details["stdout"].strip() == "vm1"
        assert run.step(ExecStep(action="exec", vm="vm1", command="exit 3", expect_status=3)).ok
        wrong = run.step(ExecStep(action="exec", vm="vm1", command="echo oops >&2; exit 3"))
        assert not wrong.ok and "exited 3, expected 0: oops" in wrong.error

        # The guest talks to the peer through its primary, so the bridge learns its MAC on the
        # primary's tap; deleting the entry twice shows it gone.
        assert run.step(ExecStep(action="exec", vm="vm1", command=["ping", "-c", "2", "-W", "2", "192.168.77.1"])).ok
        first = run.step(FdbStep(action="fdb", vm="vm1", pair="net0", op="del", port="primary"))
        second = run.step(FdbStep(action="fdb", vm="vm1", pair="net0", op="del", port="primary"))
        assert first.details["entry_existed"] is True and second.details["entry_existed"] is False
        announce = run.step(AnnounceSelfStep(action="announce-self", vm="vm1", rounds=2, initial_ms=20,
                                             max_ms=100, step_ms=20))
        assert announce.ok
        assert run.step(SleepStep(action="sleep", seconds=1)).ok
        relearned = run.ctx.netns.run(["bridge", "fdb", "show", "br", "br0"])
        # A bridge keeps one learned port per MAC: after the announcement it is one of the pair's taps.
        ports = [line.split()[2] for line in relearned.splitlines()
                 if line.startswith("52:54:00:00:12:54 dev ") and "permanent" not in line]
        assert len(ports) == 1 and ports[0] in ("t0net0s", "t0net0p"), relearned
        # exec where: host runs on the host that holds the bridge (here the run's namespace)
        on_host = run.step(ExecStep(action="exec", vm="vm1", where="host", command=["ip", "-o", "link", "show", "master", "br0"]))
        assert on_host.ok and {"t0net0s:", "t0net0p:"} <= set(on_host.details["stdout"].split())
        failing = run.step(ExecStep(action="exec", vm="vm1", where="host", command="exit 4"))
        assert failing.error == "the host: 'exit 4' exited 4, expected 0: "

        # Pinning the MAC to the standby's tap sends the peer's echoes into the standby. While a
        # primary is enslaved, net_failover hands frames from the standby to nobody
        # (net_failover_handle_frame: RX_HANDLER_EXACT), so the guest answers none: a black hole,
        # which is what a stale FDB entry does after a re-plug.
        assert run.step(StartTrafficStep(action="start-traffic", vm="vm1", pair="net0", tcp=False)).ok
        assert run.step(FdbStep(action="fdb", vm="vm1", pair="net0", op="add", port="standby")).ok
        pinned = run.step(SleepStep(action="sleep", seconds=1.5))
        assert run.step(FdbStep(action="fdb", vm="vm1", pair="net0", op="del", port="standby")).ok
        recovered = run.step(SleepStep(action="sleep", seconds=1.5))
        assert run.step(SleepStep(action="sleep", seconds=0.1)).ok  # closes the counters of `recovered`
        rx, tx = _shares(pinned)
        assert rx["standby"] > 100 and rx["primary"] < 10, (rx, tx)
        assert tx["primary"] + tx["standby"] < 10, (rx, tx)
        rx, tx = _shares(recovered)
        assert rx["primary"] > 100 and tx["primary"] > 100, (rx, tx)
        ping = run.ctx.traffic[("vm1", "net0")].ping.result([])
        assert max(g.ms for g in ping.gaps) > 1000  # the black hole shows as a gap


def test_stop_cont_mtu_save_restore_and_reset(tmp_path):
    scenario = load_scenario(REPO / "scenarios/standby-pci.yaml")
    with live_run(scenario, RunOptions(artifacts_dir=tmp_path / "art")) as run:
        assert run.step(BootStep(action="boot")).ok
        vm = run.ctx.machine("vm1")

        stopped = run.step(StopStep(action="stop", vm="vm1"))
        assert stopped.ok and stopped.details["status"] == "paused"
        assert vm.qmp.execute("query-status")["status"] == "paused"
        resumed = run.step(ContStep(action="cont", vm="vm1"))
        assert resumed.ok and resumed.details["status"] == "running"

        # The master's MTU goes to its slaves (net_failover_change_mtu sets the primary's, then the
        # standby's). One above the e1000e primary's maximum is refused, and the step can expect that.
        mtu = run.step(MtuStep(action="mtu", vm="vm1", pair="net0", mtu=1400))
        assert mtu.ok and sorted(mtu.details["mtus"].values()) == [1400, 1400, 1400], mtu.details
        too_big = run.step(MtuStep(action="mtu", vm="vm1", pair="net0", mtu=16000, expect_error=MTU_REFUSED))
        assert too_big.ok and too_big.details["exit_status"] != 0, too_big.details
        wrong = run.step(MtuStep(action="mtu", vm="vm1", pair="net0", mtu=1500, expect_error="anything"))
        assert not wrong.ok and "exited 0 (no error), expected an error with 'anything'" in wrong.error

        # virsh save / virsh restore of a running VM: QEMU's failover unplugs the primary for the save
        # and the restored QEMU plugs it back once the guest's STANDBY is seen.
        first_qemu = vm
        saved = run.step(SaveRestoreStep(action="save-restore", vm="vm1"))
        assert saved.ok, saved.error
        assert saved.details["status"] == "completed" and saved.details["restored_running"] is True
        record = run.ctx.report.migrations[-1]
        assert record.transport == "file" and record.saved_paused is False
        assert [e["event"] for e in record.events].count("UNPLUG_PRIMARY") == 1
        assert [e["event"] for e in record.destination_events].count("FAILOVER_NEGOTIATED") == 1
        assert run.ctx.machine("vm1") is not first_qemu and not first_qemu.alive()
        assert run.step(CheckNetdevsStep(action="check-netdevs", vm="vm1", expect="paired")).ok

        # A stopped VM is saved stopped and restored stopped (its primary unplugged first: QEMU would
        # wait for ever for a stopped guest to eject it, zoo item 1).
        assert run.step(UnplugPrimaryStep(action="unplug-primary", vm="vm1", pair="net0")).ok
        assert run.step(StopStep(action="stop", vm="vm1")).ok
        paused = run.step(SaveRestoreStep(action="save-restore", vm="vm1"))
        assert paused.ok, paused.error
        assert paused.details["saved_paused"] is True and paused.details["restored_running"] is False
        assert run.step(ContStep(action="cont", vm="vm1")).ok
        assert run.step(PlugPrimaryStep(action="plug-primary", vm="vm1", pair="net0")).ok

        # Restarts: QMP system_reset, then a reboot from inside; each ends with SSH and the pairs back.
        hard = run.step(ResetStep(action="reset", vm="vm1"))
        assert hard.ok, hard.error
        assert hard.details["reset_event"] == {"guest": False, "reason": "host-qmp-system-reset"}
        soft = run.step(ResetStep(action="reset", vm="vm1", how="reboot"))
        assert soft.ok, soft.error
        assert soft.details["reset_event"] == {"guest": True, "reason": "guest-reset"}
        uptime = run.step(ExecStep(action="exec", vm="vm1", command=["cat", "/proc/uptime"]))
        assert float(uptime.details["stdout"].split()[0]) < soft.details["pairs_after_s"] + 5
        assert run.step(CheckNetdevsStep(action="check-netdevs", vm="vm1", expect="paired")).ok

        # unplug-standby: the standby leaves, the master with it, and the primary stays, masterless
        gone = run.step(UnplugStandbyStep(action="unplug-standby", vm="vm1", pair="net0"))
        assert gone.ok, gone.error
        left = gone.details["netdevs"]
        assert [(n["driver"], n["master"], n["role"]) for n in left] == [("e1000e", None, "other")], left

        # The reboot action is -no-reboot's again: a guest that reboots by itself now ends its QEMU,
        # and the run's watch names that as the VM's death.
        vm = run.ctx.machine("vm1")
        run.ctx.shell("vm1").run(["sh", "-c", "(sleep 0.3; reboot -f) >/dev/null 2>&1 &"], timeout=20)
        with pytest.raises(MachineDied, match=r"vm1: the guest ended its own run \(guest-reset\)"):
            wait_until(lambda: "QEMU still running" if vm.alive() else None, 60, "vm1's QEMU to exit")
        assert not vm.alive() and vm.guest_shutdown_reason() == "guest-reset"


ORDERING = """
description: a standby and a primary that are not there at boot, plugged by steps
vms:
  - name: vm1
    pairs:
      - name: net0
        mac: "52:54:00:00:12:66"
        standby: {at_boot: false}
        primary: {kind: pci}
      - name: net1
        mac: "52:54:00:00:12:67"
        primary: {kind: pci, at_boot: false}
      - name: net2                 # neither NIC at boot: nothing with its MAC
        mac: "52:54:00:00:12:69"
        standby: {at_boot: false}
        primary: {kind: pci, at_boot: false}
steps:
  - action: boot                 # waits for net0 primary-only and net1 standby-only
  - action: check-netdevs
    vm: vm1
    pairs: [net0]
    expect: primary-only
  - action: check-netdevs
    vm: vm1
    pairs: [net1]
    expect: standby-only
  - action: check-netdevs
    vm: vm1
    pairs: [net2]
    expect: absent
  - action: check-events         # the boot negotiated STANDBY for net1's standby only
    vm: vm1
    sequence: [{event: FAILOVER_NEGOTIATED, data: {device-id: net1-sby}}]
    absent: [{event: FAILOVER_NEGOTIATED, data: {device-id: net0-sby}}]
  - action: qmp                  # qtest params/error/id
    vm: vm1
    command: device_add
    arguments: {driver: e1000e, failover_pair_id: net1-sby}
    expect_error: "Device with failover_pair_id needs to have id"
  - action: qmp                  # qtest params/error/pcie (naming net0-sby, which does not exist yet:
    vm: vm1                      # one naming net1-sby would block net1's real primary, see zoo/)
    command: device_add
    arguments: {driver: e1000e, id: extra0, bus: pcie.0, failover_pair_id: net0-sby}
    expect_error: "Bus 'pcie.0' does not support hotplugging"
  - action: qmp
    vm: vm1
    command: query-status
  - action: plug-primary
    vm: vm1
    pair: net1
  - action: plug-standby         # the primary already there is enslaved
    vm: vm1
    pair: net0
  - action: check-netdevs
    vm: vm1
    pairs: [net0, net1]
    expect: paired
  - action: check-events
    vm: vm1
    since_step: 9
    sequence: [{event: FAILOVER_NEGOTIATED, data: {device-id: net0-sby}}]
  - action: plug-primary         # [12] qtest params/on_mismatch: naming no standby, with its own MAC
    vm: vm1
    pair: net2
    failover_pair_id: standby1
    mac: "52:54:00:00:12:6b"
    wait: false
  - action: check-primary-device # [13] nothing hid it
    vm: vm1
    pair: net2
    present: true
  - action: exec                 # [14] the guest has it as a plain e1000e with its own MAC
    vm: vm1
    command: >-
      for i in $(seq 100); do for d in /sys/class/net/*; do
      [ "$(cat "$d/address")" = 52:54:00:00:12:6b ] || continue;
      [ "$(basename "$(readlink "$d/device/driver")")" = e1000e ] || continue;
      if [ -e "$d/master" ]; then echo "${d##*/} is enslaved" >&2; exit 1; fi;
      echo "${d##*/}: a plain e1000e"; exit 0; done; sleep 0.2; done;
      echo "no e1000e netdev with 52:54:00:00:12:6b" >&2; exit 1
"""


def test_a_standby_and_a_primary_plugged_after_the_boot_and_qmp_commands(run_testbed_scenario, tmp_path):
    path = tmp_path / "ordering.yaml"
    path.write_text(ORDERING)
    report = run_testbed_scenario(path)
    assert report.passed, report.error
    boot_netdevs = {n["name"]: n for n in report.steps[1].details["netdevs"]}
    (plain,) = [n for n in boot_netdevs.values() if n["mac"] == "52:54:00:00:12:66"]
    assert plain["driver"] == "e1000e" and plain["master"] is None  # QEMU did not hide it: no standby
    assert not [n for n in boot_netdevs.values() if n["mac"] == "52:54:00:00:12:69"]  # net2: absent
    errors = [report.steps[i].details["error"] for i in (5, 6)]
    assert errors == ["GenericError: Device with failover_pair_id needs to have id",
                      "GenericError: Bus 'pcie.0' does not support hotplugging"]
    assert report.steps[7].details["return"]["status"] == "running"
    plugged = report.steps[9].details
    assert plugged["device"] == "net0-sby" and sorted(n["role"] for n in plugged["netdevs"]) == \
        ["failover", "primary", "standby"]
    # a primary plugged with another failover_pair_id and MAC: QEMU took those properties, plugged it
    # at once, and the guest has it as a plain e1000e with its own MAC
    assert report.steps[12].details["overrides"] == {"failover_pair_id": "standby1", "mac": "52:54:00:00:12:6b"}
    assert report.steps[13].ok and report.steps[14].details["stdout"].endswith(": a plain e1000e\n")


HELD_BOOT = """
description: QEMU held at -S by the boot step, as the qtest looks before its driver starts
vms:
  - name: vm1
    pairs:
      - {name: net0, mac: "52:54:00:00:12:6c", address: 192.168.77.2/24, primary: {kind: pci}}
steps:
  - action: boot
    hold: true
  - action: qmp
    vm: vm1
    command: query-status
  - action: check-primary-device   # QEMU has not created the failover primary: hidden until STANDBY
    vm: vm1
    pair: net0
    present: false
  - action: check-events
    vm: vm1
    since_step: 0
    absent: [{event: FAILOVER_NEGOTIATED}]
  - action: cont                   # the guest starts; the step waits for SSH and the pairs
    vm: vm1
  - action: check-events
    vm: vm1
    since_step: 4
    sequence:
      - {event: RESUME}
      - {event: FAILOVER_NEGOTIATED, data: {device-id: net0-sby}}
  - action: check-primary-device
    vm: vm1
    pair: net0
    present: true
  - action: check-netdevs
    vm: vm1
    expect: paired
"""


def test_a_held_boot_shows_the_cold_plugged_nics_before_the_guest_runs(run_testbed_scenario, tmp_path):
    scenario = tmp_path / "held-boot.yaml"
    scenario.write_text(HELD_BOOT)
    report = run_testbed_scenario(scenario)
    assert report.passed, report.error
    assert report.steps[1].details["return"]["status"] == "prelaunch", report.steps[1].details
    boot = report.vms["vm1"].boot
    assert boot["held"] is True and boot["start"] == "cold" and boot["held_s"] > 0
    assert boot["pairs_ready_s"] > boot["ssh_ready_s"] > boot["held_s"], boot
    assert report.steps[4].details["boot"]["pairs_ready_s"] == boot["pairs_ready_s"]
