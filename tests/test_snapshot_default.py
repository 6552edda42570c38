"""The run-wide snapshot default (pure logic): where it comes from, which boot steps take it, and what
makes `auto` boot a VM cold. The suite's guest tests run under it; tests/test_warm_boot_guest.py
checks a restored run against a cold one."""

from pathlib import Path

import pytest

from testbed.errors import TestbedError
from testbed.scenario import BootStep, SleepStep, load_scenario
from testbed.snapshots import run_default
from testbed.warm_boot import guest_cold_reasons, with_snapshot_default

SCENARIOS = Path(__file__).parent.parent / "scenarios"
QEMU = (10, 0, 2)


def test_the_flag_wins_then_the_environment_then_auto(monkeypatch):
    monkeypatch.delenv("TESTBED_SNAPSHOT", raising=False)
    assert run_default() == "auto"
    monkeypatch.setenv("TESTBED_SNAPSHOT", "never")
    assert run_default() == "never"
    assert run_default("auto") == "auto"


@pytest.mark.parametrize("flag, env, named", [("required", None, "--snapshot='required'"),
                                              (None, "sometimes", "$TESTBED_SNAPSHOT='sometimes'")])
def test_a_default_other_than_auto_or_never_is_refused_with_its_source(monkeypatch, flag, env, named):
    monkeypatch.delenv("TESTBED_SNAPSHOT", raising=False)
    if env:
        monkeypatch.setenv("TESTBED_SNAPSHOT", env)
    with pytest.raises(TestbedError, match=named.replace("$", r"\$")):
        run_default(flag)


def test_only_boot_steps_that_say_nothing_take_the_default():
    assert with_snapshot_default(BootStep(action="boot"), "auto").snapshot == "auto"
    assert with_snapshot_default(BootStep(action="boot", snapshot="never"), "auto").snapshot == "never"
    assert with_snapshot_default(BootStep(action="boot", snapshot="required"), "never").snapshot == "required"
    sleep = SleepStep(action="sleep", seconds=1)
    assert with_snapshot_default(sleep, "auto") is sleep


def _reasons(path: Path, variables=None) -> list[str]:
    scenario = load_scenario(path, variables)
    boot = next(s for s in scenario.steps if isinstance(s, BootStep))
    return guest_cold_reasons(scenario, QEMU, "vm1", with_snapshot_default(boot, "auto"))


def test_plain_scenarios_may_start_warm():
    for name in ("standby-pci", "unplug-replug-pci", "two-pairs", "standby-igb-vf", "live-migration-pci",
                 "migration-guest-never-acks"):
        assert _reasons(SCENARIOS / f"{name}.yaml") == [], name


def test_what_looks_at_the_boot_keeps_the_vm_cold(tmp_path: Path):
    assert any("never negotiates STANDBY" in r for r in _reasons(SCENARIOS / "no-standby-negotiation.yaml"))
    assert any("address: dhcp" in r for r in _reasons(SCENARIOS / "zoo" / "dhcp-networkd.yaml"))
    assert any("option ROM" in r for r in _reasons(SCENARIOS / "zoo" / "zoo-02-option-rom-breaks-migration.yaml"))
    assert any("image: cloud-init" in r for r in _reasons(SCENARIOS / "zoo" / "dhcp-cloud-init.yaml"))
    events = tmp_path / "events.yaml"
    events.write_text((SCENARIOS / "standby-pci.yaml").read_text() + """
  - action: check-events
    vm: vm1
    sequence: [{event: FAILOVER_NEGOTIATED}]
""")
    assert _reasons(events) == ["steps[3] (check-events since step 0) looks at the boot's QMP events"]
    events.write_text(events.read_text().replace("    vm: vm1\n    sequence", "    vm: vm1\n    since_step: 1\n    sequence"))
    assert _reasons(events) == []


def test_a_held_boot_is_cold_and_needs_a_cont(tmp_path: Path):
    held = tmp_path / "held.yaml"
    text = (SCENARIOS / "standby-pci.yaml").read_text().replace("  - action: boot\n",
                                                                 "  - action: boot\n    hold: true\n", 1)
    held.write_text(text + "  - {action: cont, vm: vm1}\n")
    assert "the boot step holds QEMU before the guest starts (hold: true)" in _reasons(held)
    held.write_text(text)
    with pytest.raises(TestbedError) as e:
        load_scenario(held)
    assert "steps[0].hold" in str(e.value) and "no later cont step starts it" in str(e.value)
    held.write_text(text.replace("    hold: true\n", "    hold: true\n    snapshot: auto\n") + "  - {action: cont, vm: vm1}\n")
    with pytest.raises(TestbedError, match="hold: true boots cold"):
        load_scenario(held)
