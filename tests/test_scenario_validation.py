from pathlib import Path

import pytest

from testbed.errors import ScenarioError
from testbed.scenario import IgbVfPrimary, PrimaryKind, load_scenario

DATA = Path(__file__).parent / "data"
SCENARIOS = Path(__file__).parent.parent / "scenarios"


@pytest.mark.parametrize("path", sorted(SCENARIOS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_scenarios_validate(path):
    scenario = load_scenario(path)
    assert scenario.steps[0].action == "boot"


def test_typo_in_key_names_file_and_key_path():
    with pytest.raises(ScenarioError) as e:
        load_scenario(DATA / "typo-key.yaml")
    assert e.value.file.endswith("typo-key.yaml")
    assert e.value.key == "vms[0].pairs[0].primry"
    assert e.value.reason == "unknown key"


def test_unknown_primary_kind_lists_the_known_ones():
    with pytest.raises(ScenarioError) as e:
        load_scenario(DATA / "unknown-kind.yaml")
    assert e.value.key == "vms[0].pairs[0].primary"
    assert "'mlx5-vf'" in e.value.reason and "igb-vf" in e.value.reason and "pci" in e.value.reason


def test_template_variables_render_and_missing_ones_are_named():
    scenario = load_scenario(DATA / "templated.yaml", {"memory": 1024, "kind": "igb-vf"})
    assert scenario.vms[0].memory_mib == 1024
    assert scenario.vms[0].pairs[0].primary.kind == PrimaryKind.IGB_VF
    with pytest.raises(ScenarioError) as e:
        load_scenario(DATA / "templated.yaml")
    assert "'memory' is undefined" in str(e.value)


def _write(tmp_path, text):
    path = tmp_path / "s.yaml"
    path.write_text(text)
    return path


BASE = """
vms:
  - name: vm1
    pairs:
      - {name: net0, mac: "%s", primary: {kind: pci}}
steps:
  - action: boot
%s
"""


@pytest.mark.parametrize("mac,steps,key,reason", [
    ("52:54:00:00:12:5", "", "vms[0].pairs[0].mac", "not a MAC"),
    ("53:54:00:00:12:53", "", "vms[0].pairs[0].mac", "multicast"),
    ("52:54:00:00:12:53", "  - {action: check-netdevs, vm: vm9}", "(top level)", "names VM 'vm9'"),
    ("52:54:00:00:12:53", "  - {action: check-netdevs, vm: vm1, pairs: [nope]}", "(top level)", "pair 'nope'"),
    ("52:54:00:00:12:53", "  - {action: reboot}", "steps[1]", "unknown action 'reboot'"),
    ("52:54:00:00:12:53", "  - {action: sleep, seconds: -1}", "steps[1].seconds", "greater than 0"),
])
def test_invalid_values_are_rejected_with_key_and_reason(tmp_path, mac, steps, key, reason):
    with pytest.raises(ScenarioError) as e:
        load_scenario(_write(tmp_path, BASE % (mac, steps)))
    assert e.value.key == key
    assert reason in e.value.reason


def test_vf_index_must_fit_num_vfs():
    with pytest.raises(ValueError, match="vf_index 2 needs num_vfs > 2"):
        IgbVfPrimary(kind="igb-vf", num_vfs=2, vf_index=2)
