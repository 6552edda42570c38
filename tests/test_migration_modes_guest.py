"""Migration modes and hot-plug options on a real guest: multifd and postcopy migrations of a failover
guest, native PCIe hot-plug (pciehp's 5 s) measured by min/max_wait_unplug_ms, and a primary with its
option ROM, whose migration the destination refuses (zoo item 2)."""

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.guest
ZOO = Path(__file__).parent.parent / "scenarios" / "zoo"

MODES = """
description: multifd, then postcopy, with native PCIe hot-plug
network:
  hosts: 2
vms:
  - name: vm1
    pci_hotplug: native
    pairs:
      - name: net0
        mac: "52:54:00:00:12:60"
        address: 192.168.77.2/24
        primary: {kind: pci}
steps:
  - action: boot
  - action: migrate
    vm: vm1
    mode: multifd
    multifd_channels: 3
    min_wait_unplug_ms: 5000     # pciehp powers the slot off 5 s after the attention button
  - action: migrate
    vm: vm1
    mode: postcopy
    max_wait_unplug_ms: 60000
  - action: check-netdevs
    vm: vm1
    expect: paired
"""


def test_multifd_and_postcopy_migrations_with_native_hotplug(run_testbed_scenario, tmp_path):
    scenario = tmp_path / "modes.yaml"
    scenario.write_text(MODES)
    report = run_testbed_scenario(scenario)
    assert report.passed, report.error
    # native hot-plug with a pci primary never starts from a snapshot: its load made pciehp remove it
    assert any("pci_hotplug: native" in r for r in report.vms["vm1"].boot.get("cold_because", [])), \
        report.vms["vm1"].boot
    multifd, postcopy = report.migrations
    assert (multifd.mode, multifd.status, postcopy.mode, postcopy.status) == \
        ("multifd", "completed", "postcopy", "completed")
    assert "postcopy-active" in postcopy.statuses and "postcopy-active" not in multifd.statuses
    # native hot-plug: pciehp waits 5 s before it powers the slot off (ACPI: about 0.25 s, below)
    assert multifd.wait_unplug_ms >= 5000 and postcopy.wait_unplug_ms >= 5000
    assert [s.ok for s in report.steps] == [True] * 4


def test_an_option_rom_fails_the_migration(run_testbed_scenario):
    # (ACPI hot-plug, the default, is every other migration test's: wait-unplug about 0.25 s.)
    report = run_testbed_scenario(ZOO / "zoo-02-option-rom-breaks-migration.yaml", name="rom")
    assert report.verdict == "reproduced", report.verdict_evidence
    (migration,) = report.migrations
    assert migration.status == "failed" and migration.statuses[-1] == "failed"
    assert 'Unknown ramblock "' in report.verdict_evidence and 'e1000e.rom", cannot accept migration' in \
        report.verdict_evidence
    assert report.passed  # the source plugged its primary back: the guest is whole again


HELD = """
description: the guest holds its eject, as the qtest does
network:
  hosts: 2
vms:
  - name: vm1
    pairs:
      - name: net0
        mac: "52:54:00:00:12:69"
        address: 192.168.77.2/24
        primary: {kind: pci}
steps:
  - action: boot
  - action: migrate              # cancelled in wait-unplug: QEMU stays cancelling until the held eject
    vm: vm1
    hold_eject_ms: 3000
    cancel_in: wait-unplug
    expect: cancelled
  - action: migrate              # the hold, then the migration goes on
    vm: vm1
    hold_eject_ms: 2000
    min_wait_unplug_ms: 2000
    destination_primaries_before_incoming: absent   # hidden until the loaded standby's STANDBY
    source_primaries_after: present
  - action: migrate              # no hold: the guest ejects at once again
    vm: vm1
    max_wait_unplug_ms: 1500
    destination_primaries_before_resume: present    # plugged at FAILOVER_NEGOTIATED, before RESUME
  - action: exec                 # the hot-plug GPE is unmasked again
    vm: vm1
    command: "cat /sys/firmware/acpi/interrupts/gpe01; grep -q unmasked /sys/firmware/acpi/interrupts/gpe01"
"""


def test_a_held_eject_keeps_qemu_in_wait_unplug_and_cancelling(run_testbed_scenario, tmp_path):
    scenario = tmp_path / "held.yaml"
    scenario.write_text(HELD)
    report = run_testbed_scenario(scenario)
    assert report.passed, report.error
    cancelled, held, free = report.migrations
    assert cancelled.statuses == ["setup", "wait-unplug", "cancelling", "cancelled"], cancelled.statuses
    times = {e["data"]["status"]: e["t"] for e in cancelled.events if e["event"] == "MIGRATION"}
    # QEMU was asked to cancel at once, and waited for the eject the guest held for 3 s
    assert times["cancelled"] - times["wait-unplug"] >= 3.0, times
    assert held.status == "completed" and held.wait_unplug_ms >= 2000
    # QEMU's side: the destination had not created the failover primary before its incoming state
    # (hidden until STANDBY); the source keeps it after completing, to plug it back had it failed
    assert held.primaries_on_destination_before_incoming == {"net0-pri": False}
    assert held.primaries_on_source_after == {"net0-pri": True}
    assert free.status == "completed" and free.wait_unplug_ms < 1500
    # the destination held at -S after its load: the primary was there before RESUME, which came
    # only after the testbed's cont
    assert free.primaries_on_destination_before_resume == {"net0-pri": True}
    events = [e["event"] for e in free.destination_events]
    assert "FAILOVER_NEGOTIATED" in events, events
    argv = Path(free.destination_artifacts, "qemu-argv.txt").read_text().split("\n")
    assert argv[argv.index("-incoming") + 1:argv.index("-incoming") + 3] == ["defer", "-S"]


ONE_OF_TWO = """
description: the guest ejects one primary of two, then the other (qtest migrate/multi/out)
network:
  hosts: 2
vms:
  - name: vm1
    pairs:
      - {name: net0, mac: "52:54:00:00:12:6a", address: 192.168.77.2/24, primary: {kind: pci}}
      - {name: net1, mac: "52:54:00:00:12:6b", address: 192.168.77.3/24, primary: {kind: pci}}
steps:
  - action: boot
  - action: migrate
    vm: vm1
    hold_eject_ms: {net1: 4000, net0: 1000}
    min_wait_unplug_ms: 4000
  - action: exec                 # the hot-plug GPE is unmasked again
    vm: vm1
    command: "grep -q unmasked /sys/firmware/acpi/interrupts/gpe01"
"""


EJECT_STAMP_SLACK_MS = 250


def test_a_per_pair_hold_ejects_one_primary_and_qemu_waits_for_the_other(run_testbed_scenario, tmp_path):
    """hold_eject_ms: {pair: ms}: the guest ejects net0's primary through its ACPI slot 1 s after
    QEMU's request and net1's 3 s later; QEMU stays in wait-unplug between the two (the qtest's
    "still wait-unplug after one eject") and goes active only after the second. QEMU sends no event
    for a failover primary's eject (no DEVICE_DELETED: it keeps the device to plug it back), so the
    eject times are the guest job's, measured from the request it saw."""
    scenario = tmp_path / "one-of-two.yaml"
    scenario.write_text(ONE_OF_TWO)
    report = run_testbed_scenario(scenario)
    assert report.passed, report.error
    (migration,) = report.migrations
    # QEMU's own timestamps (the source's event log): the testbed's receive times in the report carry
    # its own scheduling
    source = [json.loads(line) for line in (Path(report.artifacts_dir) / "vm1" / "qmp-events.jsonl").read_text().splitlines()]
    times = {e["data"]["status"]: e["qemu_time"] for e in source if e["event"] == "MIGRATION"}
    requested = min(e["qemu_time"] for e in source if e["event"] == "UNPLUG_PRIMARY")
    first, second = report.steps[1].details["guest_ejects"]
    # the guest ejected net0's primary through its ACPI slot 1 s after QEMU's request, net1's at 4 s
    assert (first["mac"], first["ok"]) == ("52:54:00:00:12:6a", True) and 900 <= first["after_request_ms"] < 2500
    assert (second["mac"], second["ok"]) == ("52:54:00:00:12:6b", True) and second["after_request_ms"] >= 3900
    assert second["after_request_ms"] > first["after_request_ms"] + 2500, (first, second)
    # QEMU stayed in wait-unplug after the first eject, until the second. The guest stamps an eject
    # once the slot's power write has returned (acpiphp removed the device; QEMU took the _EJ0 inside
    # it), from /proc/uptime's 10 ms, so QEMU may go active a little before the second's stamp.
    active_ms = (times["active"] - requested) * 1000
    assert active_ms > first["after_request_ms"] + 2000, (active_ms, first, second)
    assert active_ms >= second["after_request_ms"] - EJECT_STAMP_SLACK_MS, (active_ms, first, second)
    assert migration.wait_unplug_ms >= 4000
