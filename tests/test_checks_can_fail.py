"""Real guests, wrong expectations: every check must be able to fail, and say why."""

from pathlib import Path

import pytest

from testbed.scenario import load_scenario

REPO = Path(__file__).parent.parent
pytestmark = pytest.mark.guest


def test_wrong_expectations_fail_with_what_the_guest_showed(run_testbed_scenario):
    base = load_scenario(REPO / "scenarios/standby-pci.yaml")
    scenario = base.model_copy(update={"steps": [
        base.steps[0],
        *load_scenario_steps([
            {"action": "check-netdevs", "vm": "vm1", "expect": "standby-only"},
            {"action": "check-primary-device", "vm": "vm1", "pair": "net0", "present": False},
        ]),
    ]})
    report = run_testbed_scenario(scenario, name="wrong-expectations")
    assert report.passed is False
    boot, wrong_netdevs = report.steps  # the run stops at the first failed step
    assert boot.ok and not wrong_netdevs.ok
    assert "expected no primary, found enp2s0 (e1000e)" in wrong_netdevs.error
    assert "Guest netdevs: " in wrong_netdevs.error


def load_scenario_steps(steps):
    from pydantic import TypeAdapter

    from testbed.scenario import Step
    return [TypeAdapter(Step).validate_python(s) for s in steps]
