"""Migration modes and hot-plug options on a real guest: multifd and postcopy migrations of a failover
guest, native PCIe hot-plug (pciehp's 5 s) measured by min/max_wait_unplug_ms, and a primary with its
option ROM, whose migration the destination refuses (zoo item 2)."""

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
