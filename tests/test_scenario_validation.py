import re
from pathlib import Path

import pytest

from testbed.errors import ScenarioError
from testbed.scenario import IgbVfPrimary, PrimaryKind, load_scenario

DATA = Path(__file__).parent / "data"
SCENARIOS = Path(__file__).parent.parent / "scenarios"


SHIPPED = sorted([*SCENARIOS.glob("*.yaml"), *SCENARIOS.glob("zoo/*.yaml"), *SCENARIOS.glob("qtest/*.yaml")])


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(SCENARIOS)))
def test_shipped_scenarios_validate(path):
    scenario = load_scenario(path)
    assert scenario.steps[0].action == "boot"


QTEST_CASES = ["params/error/id", "params/error/pcie", "params/on", "params/on_mismatch", "params/off",
               "params/enabled", "params/guest_off", "hotplug/1", "hotplug/1_reverse", "hotplug/2",
               "hotplug/2_reverse", "migrate/on/out", "migrate/on/in", "migrate/off/out", "migrate/off/in",
               "migrate/off/abort", "migrate/guest_off/out", "migrate/guest_off/in", "migrate/guest_off/abort",
               "migrate/abort/wait-unplug", "migrate/abort/active", "migrate/abort/timeout", "migrate/multi/out",
               "migrate/multi/in"]


def test_every_case_of_qemus_failover_qtest_has_a_scenario():
    """tests/qtest/virtio-net-failover.c's 24 case paths, each named in a scenarios/qtest/ file's description."""
    text = "\n".join(load_scenario(p).description for p in SCENARIOS.glob("qtest/*.yaml"))
    assert len(QTEST_CASES) == 24
    assert [c for c in QTEST_CASES if not re.search(rf"(?<![\w/]){re.escape(c)}(?![\w/])", text)] == []


def test_typo_in_key_names_file_and_key_path():
    with pytest.raises(ScenarioError) as e:
        load_scenario(DATA / "typo-key.yaml")
    assert e.value.file.endswith("typo-key.yaml")
    assert e.value.key == "vms[0].pairs[0].primry"
    assert e.value.reason == "unknown key 'primry' (did you mean 'primary'?)"


def test_unknown_primary_kind_lists_the_known_ones():
    with pytest.raises(ScenarioError) as e:
        load_scenario(DATA / "unknown-kind.yaml")
    assert e.value.key == "vms[0].pairs[0].primary"
    assert e.value.reason == "unknown kind 'mlx5-vf'; expected one of 'igb-vf', 'pci', 'host-vf'"


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
    ("52:54:00:00:12:53", "  - {action: check-netdevs, vm: vm9}", "steps[1].vm", "names VM 'vm9'"),
    ("52:54:00:00:12:53", "  - {action: check-netdevs, vm: vm1, pairs: [nope]}", "steps[1].pairs[0]", "pair 'nope'"),
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


# --- A valid scenario, and one change at a time that must be refused with this key and reason ---

VALID = """\
name: base
vms:
  - name: vm1
    pairs:
      - name: net0
        mac: "52:54:00:00:12:53"
        address: 192.168.77.2/24
        primary: {kind: pci}
  - name: vm2
    pairs:
      - name: net0
        mac: "52:54:00:00:12:54"
        address: 192.168.77.3/24
steps:
  - action: boot
    vms: [vm1]
  - {action: start-traffic, vm: vm1, pair: net0}
"""


def _load_changed(tmp_path, old, new, name="s.yaml"):
    assert old in VALID
    path = tmp_path / name
    path.write_text(VALID.replace(old, new, 1))
    return load_scenario(path)


def test_the_base_of_the_change_table_is_valid(tmp_path):
    scenario = _load_changed(tmp_path, "name: base", "name: base")
    assert scenario.name == "base" and [vm.name for vm in scenario.vms] == ["vm1", "vm2"]


@pytest.mark.parametrize("old,new,key,reason", [
    # misspelt keys and values: the misspelt key is named, with what it probably meant
    ("action: start-traffic", "action: start-trafic", "steps[1]", "unknown action 'start-trafic' (did you mean 'start-traffic'?)"),
    ("{action: start-traffic", "{actoin: start-traffic", "steps[1].actoin", "unknown key 'actoin' (did you mean 'action'?)"),
    ("vm: vm1, pair", "vmm: vm1, pair", "steps[1].vmm", "unknown key 'vmm' (did you mean 'vm'?)"),
    ("vm: vm1, pair", "pair", "steps[1].vm", "missing key 'vm'"),
    ("kind: pci}", "knd: pci}", "vms[0].pairs[0].primary.knd", "unknown key 'knd' (did you mean 'kind'?)"),
    ("kind: pci}", "kind: pcii}", "vms[0].pairs[0].primary", "unknown kind 'pcii' (did you mean 'pci'?)"),
    ("    vms: [vm1]", "    vsm: [vm1]", "steps[0].vsm", "unknown key 'vsm' (did you mean 'vms'?)"),
    ("name: base", "nmae: base", "nmae", "unknown key 'nmae' (did you mean 'name'?)"),
    # primary models the guest cannot use
    ("kind: pci}", "kind: pci, model: e1000}", "vms[0].pairs[0].primary.model",
     "the guest image has no driver for it (e1000); supported: e1000e"),
    ("kind: pci}", "kind: pci, model: rtl8139}", "vms[0].pairs[0].primary.model", "(8139cp); supported: e1000e"),
    ("kind: pci}", "kind: pci, model: virtio-net-pci}", "vms[0].pairs[0].primary.model",
     "net_failover_slave_pre_register accepts only a primary whose parent device is PCI"),
    ("kind: pci}", "kind: pci, failover_pair_id: 'net0 sby'}", "vms[0].pairs[0].primary.failover_pair_id",
     "should match pattern"),
    ("kind: pci}", "kind: igb-vf, failover_pair_id: net0-sbx}", "vms[0].pairs[0].primary.failover_pair_id",
     "unknown key 'failover_pair_id'"),
    ("kind: pci}", "kind: pci, failover_pair_id: net0-pri}", "vms[0].pairs[0].primary.failover_pair_id",
     "net0-pri is a device of VM vm1; name its own standby (net0-sby) or an id of none"),
    # MACs
    ('"52:54:00:00:12:53"', '"52:54:00:00:12:53\\n"', "vms[0].pairs[0].mac", "is not a MAC address"),
    ('"52:54:00:00:12:53"', '"00:00:00:00:00:00"', "vms[0].pairs[0].mac", "not a usable MAC"),
    ('"52:54:00:00:12:53"', '"ff:ff:ff:ff:ff:ff"', "vms[0].pairs[0].mac", "broadcast"),
    ('"52:54:00:00:12:53"', '"06:54:00:00:00:01"', "vms[0].pairs[0].mac", "the testbed's own MACs"),
    ('"52:54:00:00:12:53"', '"0A:54:00:00:00:01"', "vms[0].pairs[0].mac", "the management NICs"),
    ('"52:54:00:00:12:53"', '52:54:00:00:12:53', "vms[0].pairs[0].mac", "write the MAC in quotes"),
    ('"52:54:00:00:12:54"', '"52:54:00:00:12:53"', "vms[1].pairs[0].mac", "used twice"),
    # addresses
    ("192.168.77.2/24", "192.168.77.2/31", "vms[0].pairs[0].address", "no room for the peer"),
    ("192.168.77.2/24", "192.168.77.2/32", "vms[0].pairs[0].address", "no room for the peer"),
    ("192.168.77.2/24", "192.168.77.0/24", "vms[0].pairs[0].address", "the network address"),
    ("192.168.77.2/24", "192.168.77.255/24", "vms[0].pairs[0].address", "the broadcast address"),
    ("192.168.77.2/24", "127.0.0.2/8", "vms[0].pairs[0].address", "loopback"),
    ("192.168.77.2/24", "224.0.0.5/24", "vms[0].pairs[0].address", "multicast"),
    ("192.168.77.2/24", "0.0.0.0/24", "vms[0].pairs[0].address", "not a host address"),
    ("192.168.77.2/24", "169.254.1.2/16", "vms[0].pairs[0].address", "link-local"),
    ("192.168.77.2/24", "240.0.0.2/24", "vms[0].pairs[0].address", "reserved"),
    ("192.168.77.2/24", "10.0.2.3/24", "vms[0].pairs[0].address", "management network"),
    ("192.168.77.3/24", "192.168.77.2/24", "vms[1].pairs[0].address", "used twice"),
    ("name: base", "name: base\nnetwork: {peer_addresses: [192.168.77.3/24]}", "network.peer_addresses[0]",
     "the address of pair vm2/net0"),
    ("name: base", "name: base\nnetwork: {peer_addresses: [192.168.77.0/24]}", "network.peer_addresses[0]",
     "the network address"),
    ("name: base", "name: base\nnetwork: {peer_addresses: [192.168.78.1/24]}", "network.peer_addresses",
     "no peer address is in 192.168.77.0/24"),
    # duplicate keys
    ("    vms: [vm1]", "    vms: [vm1]\n    vms: [vm2]", "line 17", "duplicate key 'vms' (also on line 16)"),
    # the order of steps
    ("    vms: [vm1]", "    vms: [vm2]", "steps[1].vm", "names VM 'vm1', which no earlier boot step starts"),
    ("  - {action: start", "  - {action: boot}\n  - {action: start", "steps[1]", "boots VM 'vm1' again"),
    ("  - {action: start", "  - {action: boot, vms: [vm2, vm2]}\n  - {action: start", "steps[1].vms",
     "VM 'vm2' is listed twice"),
    ("  - {action: start", "  - {action: check-netdevs, vm: vm1, pairs: []}\n  - {action: start",
     "steps[1].pairs", "at least 1 item"),
    # sizes and names
    ("    pairs:", "    kernel_args: [" + ", ".join(["x" * 100] * 20) + "]\n    pairs:", "vms[0].kernel_args",
     "must fit the kernel's 2048 bytes"),
    ("    pairs:", "    kernel_args: [" + ", ".join(["q"] * 65) + "]\n    pairs:", "vms[0].kernel_args",
     "at most 64 items"),
    ("    pairs:", "    kernel_args: [testbed.mgmt=1]\n    pairs:", "vms[0].kernel_args[0]", "the testbed's own"),
    # a reset into other kernel arguments: the minimal image's init kexecs, within the command line's size
    ("  - {action: start", "  - {action: reset, vm: vm1, kernel_args: [testbed.kexeced]}\n  - {action: start",
     "steps[1].kernel_args[0]", "the testbed's own"),
    ("  - {action: start", "  - {action: reset, vm: vm1, kernel_args: [" + ", ".join(["x" * 100] * 20) + "]}\n  - {action: start",
     "steps[1].kernel_args", "2020 bytes of kernel arguments"),
    ("  - {action: start", "  - {action: reset, vm: vm1, kernel_args: [" + ", ".join(["x" * 100] * 17) + "]}\n  - {action: start",
     "steps[1].kernel_args", "with vm1's own kernel_args: 1717 bytes of kernel arguments"),
    ("        primary: {kind: pci}", "        standby: {legacy_virtio: true, transitional: true}\n        primary: {kind: pci}",
     "vms[0].pairs[0].standby", "exclude each other"),
    ("name: base", "name: ../escape", "name", "not a usable scenario name"),
    ("name: base", "name: " + "a" * 65, "name", "not a usable scenario name"),
    ("name: base", "name: base\ndescription: " + "d" * 5000, "description", "at most 4096 characters"),
])
def test_one_change_is_refused_with_key_and_reason(tmp_path, old, new, key, reason):
    with pytest.raises(ScenarioError) as e:
        _load_changed(tmp_path, old, new)
    assert (e.value.key, reason in e.value.reason) == (key, True), e.value


def test_a_reset_into_other_kernel_arguments_needs_the_minimal_images_init(tmp_path):
    text = VALID.replace("  - name: vm1\n", "  - name: vm1\n    image: networkd\n", 1) + \
        "  - {action: reset, vm: vm1, kernel_args: [virtio_pci.force_legacy=1], wait_for_pairs: false}\n"
    (tmp_path / "s.yaml").write_text(text)
    with pytest.raises(ScenarioError) as e:
        load_scenario(tmp_path / "s.yaml")
    assert e.value.key == "steps[2].kernel_args" and "only the 'minimal' image's init" in e.value.reason
    (tmp_path / "s.yaml").write_text(text.replace("    image: networkd\n", "", 1))
    assert load_scenario(tmp_path / "s.yaml").steps[2].kernel_args == ["virtio_pci.force_legacy=1"]


def test_many_vms_and_steps_are_refused(tmp_path):
    vm = "  - name: vm{n}\n    pairs:\n      - {{name: net0, mac: \"52:54:00:00:13:{n:02x}\"}}\n"
    text = "vms:\n" + "".join(vm.format(n=n) for n in range(9)) + "steps:\n  - action: boot\n"
    (tmp_path / "vms.yaml").write_text(text)
    with pytest.raises(ScenarioError, match="vms: List should have at most 8 items"):
        load_scenario(tmp_path / "vms.yaml")
    (tmp_path / "steps.yaml").write_text(VALID + "  - {action: sleep, seconds: 1}\n" * 500)
    with pytest.raises(ScenarioError, match="steps: List should have at most 500 items"):
        load_scenario(tmp_path / "steps.yaml")


def test_total_guest_memory_is_bounded(tmp_path):
    vm = "  - name: vm{n}\n    memory_mib: 12288\n    pairs:\n      - {{name: net0, mac: \"52:54:00:00:13:{n:02x}\"}}\n"
    (tmp_path / "big.yaml").write_text("vms:\n" + "".join(vm.format(n=n) for n in range(3)) + "steps:\n  - action: boot\n")
    with pytest.raises(ScenarioError, match="vms: the VMs ask for 36864 MiB of memory together; at most 32768"):
        load_scenario(tmp_path / "big.yaml")


def test_default_name_is_the_stem_made_safe(tmp_path):
    text = VALID.replace("name: base\n", "")
    for stem, name in (("plain", "plain"), ("we ird..na$me", "we-ird.na-me"), ("..hidden", "hidden"),
                       ("ü" * 3, "scenario"), ("x" * 200, "x" * 64)):
        (tmp_path / f"{stem}.yaml").write_text(text)
        assert load_scenario(tmp_path / f"{stem}.yaml").name == name


def test_step_actions_and_references_come_from_the_step_models():
    from testbed.scenario import STEP_ACTIONS, BootStep, CheckNetdevsStep, SleepStep, UnplugPrimaryStep
    assert STEP_ACTIONS["unplug-primary"] is UnplugPrimaryStep and len(STEP_ACTIONS) == 28
    vms, pairs = CheckNetdevsStep(action="check-netdevs", vm="vm1", pairs=["a", "b"]).references()
    assert [tuple(r) for r in vms] == [("vm", "vm1")]
    assert [tuple(r) for r in pairs] == [("pairs[0]", "a"), ("pairs[1]", "b")]
    assert BootStep(action="boot").references() == ([], [])
    assert SleepStep(action="sleep", seconds=1).references() == ([], [])
    assert UnplugPrimaryStep(action="unplug-primary", vm="v", pair="p").pair_needs() == {"primary"}


def test_templates_are_sandboxed_and_cannot_read_files(tmp_path):
    marker = tmp_path / "pwned"
    for n, attack in enumerate([
            "{{ cycler.__init__.__globals__.os.popen('touch %s').read() }}" % marker,
            "{{ lipsum.__globals__['os'].system('touch %s') }}" % marker,
            "{% include 'other.yaml' %}"]):
        path = tmp_path / f"t{n}.yaml"
        path.write_text(VALID + f"description: \"{attack}\"\n")
        with pytest.raises(ScenarioError) as e:
            load_scenario(path)
        assert e.value.key == "line 18" and ("unsafe" in e.value.reason or "cannot read other files" in e.value.reason)
    assert not marker.exists()


IGB_VF = """
vms:
  - name: vm1
    pairs:
      - {name: net0, mac: "52:54:00:00:12:53", primary: {kind: igb-vf}}
steps:
  - action: boot
%s
  - {action: migrate, vm: vm1}
"""


def test_migrating_with_an_in_guest_igb_vf_plugged_is_refused_with_the_reason(tmp_path):
    with pytest.raises(ScenarioError) as e:
        load_scenario(_write(tmp_path, IGB_VF % ""))
    assert e.value.key == "steps[1]"
    assert e.value.reason.startswith("migrates vm1 with the igb-vf primary of net0 plugged: an in-guest igb VF "
                                     "does not survive a migration or a save: QEMU's igbvf device has no migration state")
    replugged = "  - {action: unplug-primary, vm: vm1, pair: net0}\n  - {action: plug-primary, vm: vm1, pair: net0}"
    with pytest.raises(ScenarioError, match="igb-vf primary of net0 plugged"):
        load_scenario(_write(tmp_path, IGB_VF % replugged))
    unplugged = load_scenario(_write(tmp_path, IGB_VF % "  - {action: unplug-primary, vm: vm1, pair: net0}"))
    assert unplugged.steps[-1].action == "migrate"
    saved = IGB_VF.replace("{action: migrate, vm: vm1}", "{action: save-restore, vm: vm1}")
    with pytest.raises(ScenarioError, match="saves vm1 with the igb-vf primary of net0 plugged"):
        load_scenario(_write(tmp_path, saved % ""))


HOST_VM = """
host: {kind: vm}
vms:
  - name: vm1
    pairs:
      - {name: net0, mac: "52:54:00:00:12:53", primary: {kind: %s}}
steps:
  - action: boot
  - {action: vf-mac, vm: vm1, pair: net0, mac: %s}
"""


@pytest.mark.parametrize("mac, expected", [('"00:00:00:00:00:00"', "00:00:00:00:00:00"), ("pair", "pair"),
                                           ('"52:54:00:AA:00:01"', "52:54:00:aa:00:01")])
def test_vf_mac_takes_zero_pair_or_a_mac(tmp_path, mac, expected):
    (tmp_path / "s.yaml").write_text(HOST_VM % ("host-vf", mac))
    assert load_scenario(tmp_path / "s.yaml").steps[1].mac == expected


def test_vf_mac_is_refused_for_a_pair_without_a_host_vf(tmp_path):
    (tmp_path / "s.yaml").write_text(HOST_VM.replace("host: {kind: vm}\n", "") % ("pci", "pair"))
    with pytest.raises(ScenarioError) as e:
        load_scenario(tmp_path / "s.yaml")
    assert e.value.key == "steps[1].pair" and "has a pci primary" in e.value.reason


def test_vf_mac_refuses_a_broadcast_mac(tmp_path):
    (tmp_path / "s.yaml").write_text(HOST_VM % ("host-vf", '"ff:ff:ff:ff:ff:ff"'))
    with pytest.raises(ScenarioError) as e:
        load_scenario(tmp_path / "s.yaml")
    assert e.value.key == "steps[1].mac"


HOLD = """
host: {kind: %s}
vms:
  - name: vm1
    pci_hotplug: %s
    pairs:
      - {name: net0, mac: "52:54:00:00:12:53", primary: {kind: %s}}
steps:
  - action: boot
  - {action: migrate, vm: vm1, hold_eject_ms: 3000}
"""


def test_an_eject_hold_needs_acpi_hotplug_on_the_namespace_host(tmp_path):
    assert load_scenario(_write(tmp_path, HOLD % ("namespace", "acpi", "pci"))).steps[1].hold_eject_ms == 3000
    with pytest.raises(ScenarioError) as e:
        load_scenario(_write(tmp_path, HOLD % ("namespace", "native", "pci")))
    assert (e.value.key, e.value.reason) == ("steps[1].hold_eject_ms", "holds the ACPI hot-plug event; VM vm1 has "
                                             "pci_hotplug: native, where the eject is pciehp's")
    with pytest.raises(ScenarioError, match="not supported on a host VM yet"):
        load_scenario(_write(tmp_path, HOLD % ("vm", "acpi", "host-vf")))


def test_a_per_pair_eject_hold_names_pairs_with_pci_primaries(tmp_path):
    text = (HOLD % ("namespace", "acpi", "pci")).replace("hold_eject_ms: 3000", "hold_eject_ms: {net0: 2000}")
    assert load_scenario(_write(tmp_path, text)).steps[1].longest_hold_ms() == 2000
    with pytest.raises(ScenarioError) as e:
        load_scenario(_write(tmp_path, text.replace("{net0: 2000}", "{net0: 2000, net7: 100}")))
    assert e.value.key == "steps[1].hold_eject_ms.net7" and "no pair 'net7' with a pci primary" in e.value.reason
    with pytest.raises(ScenarioError) as e:  # QEMU does not unplug a primary that names no standby
        load_scenario(_write(tmp_path, text.replace("{kind: pci}", "{kind: pci, failover_pair_id: net0-sbx}")))
    assert e.value.key == "steps[1].hold_eject_ms.net0" and "paired with its standby" in e.value.reason
    with pytest.raises(ScenarioError) as e:
        load_scenario(_write(tmp_path, text.replace("{net0: 2000}", "{net0: 31000}")))
    assert "hold_eject_ms 31000 is not shorter than wait_unplug_timeout_s" in e.value.reason
    with pytest.raises(ScenarioError) as e:
        load_scenario(_write(tmp_path, text.replace("{net0: 2000}", "{net0: 0}")))
    assert "hold_eject_ms" in e.value.key
    with pytest.raises(ScenarioError) as e:
        load_scenario(_write(tmp_path, text.replace("{net0: 2000}", "{}")))
    assert e.value.key == "steps[1].hold_eject_ms" and "an empty mapping holds no pair's eject" in e.value.reason


@pytest.mark.parametrize("keys, reason", [
    ("source_primaries_after: present, cancel_in: active, expect: cancelled",
     "source_primaries_after looks at the source after a completed migration: it needs expect: completed"),
    ("hold_eject_ms: 30000", "hold_eject_ms 30000 is not shorter than wait_unplug_timeout_s 30 s: the testbed "
                             "would cancel the migration first"),
])
def test_migrate_checks_that_could_not_run_are_refused(tmp_path, keys, reason):
    text = (HOLD % ("namespace", "acpi", "pci")).replace("hold_eject_ms: 3000", keys)
    with pytest.raises(ScenarioError) as e:
        load_scenario(_write(tmp_path, text))
    assert e.value.key == "steps[1]" and reason in e.value.reason


def test_a_missing_destination_backend_needs_a_pci_primary_on_the_namespace_host(tmp_path):
    fault = "destination_primary_backend: missing"
    text = (HOLD % ("namespace", "acpi", "pci")).replace("hold_eject_ms: 3000", fault)
    assert load_scenario(_write(tmp_path, text)).steps[1].destination_primary_backend == "missing"
    with pytest.raises(ScenarioError) as e:
        load_scenario(_write(tmp_path, text.replace(", primary: {kind: pci}", "")))  # a standby alone
    assert e.value.key == "steps[1].destination_primary_backend" and "no primary that QEMU pairs" in e.value.reason
    with pytest.raises(ScenarioError, match="not supported on a host VM"):
        load_scenario(_write(tmp_path, (HOLD % ("vm", "acpi", "host-vf")).replace("hold_eject_ms: 3000", fault)))


CAPTURE = """
network: {hosts: %d}
vms:
  - name: vm1
    pairs:
      - {name: net0, mac: "52:54:00:00:12:53", address: 192.168.77.2/24}
steps:
  - action: boot
%s
"""


@pytest.mark.parametrize("hosts, steps, key, reason", [
    (1, "  - {action: check-capture, name: a, max_count: 0}", "steps[1].name",
     "no earlier start-capture step starts capture 'a'"),
    (1, "  - {action: start-capture, name: a, host: 2}", "steps[1].host", "host 2 needs network.hosts: 2"),
    (2, "  - {action: start-capture, name: a}\n  - {action: start-capture, name: a, host: 2}", "steps[2].name",
     "capture 'a' is already started by steps[1]"),
    (1, "  - {action: start-capture, name: a}\n  - {action: check-capture, name: a}", "steps[2]",
     "give min_count, max_count or both"),
    (1, "  - {action: start-capture, name: a, filter: 'arp and ('}", "steps[1].filter",
     "not a filter tcpdump accepts: can't parse filter expression: syntax error"),
    (1, "  - {action: start-capture, name: a}\n  - {action: check-capture, name: a, match: 'ether hst x', min_count: 1}",
     "steps[2].match", "not a filter tcpdump accepts"),
])
def test_capture_steps_are_refused_where_they_cannot_work(tmp_path, hosts, steps, key, reason):
    with pytest.raises(ScenarioError) as e:
        load_scenario(_write(tmp_path, CAPTURE % (hosts, steps)))
    assert e.value.key == key and reason in e.value.reason, (e.value.key, e.value.reason)


def test_a_capture_on_a_host_vm_is_refused(tmp_path):
    text = (HOLD % ("vm", "acpi", "host-vf")).replace("  - {action: migrate, vm: vm1, hold_eject_ms: 3000}",
                                                      "  - {action: start-capture, name: a}")
    with pytest.raises(ScenarioError, match="start-capture is not supported on a host VM"):
        load_scenario(_write(tmp_path, text))


@pytest.mark.parametrize("hosts, steps, key, reason", [
    (1, "  - {action: shape-uplink, rate_mbit: 100}", "steps[1]", "needs network.hosts: 2"),
    (1, "  - {action: migrate, vm: vm1, transport: tcp}", "steps[1].transport", "needs network.hosts: 2"),
    (2, "  - {action: migrate, vm: vm1, transport: tcp, mode: multifd}", "steps[1].transport",
     "multifd opens several connections"),
    (2, "  - {action: shape-uplink}", "steps[1]", "give rate_mbit, delay_ms or loss_percent (or clear: true)"),
    (2, "  - {action: shape-uplink, clear: true, delay_ms: 5}", "steps[1]", "give no rate_mbit, delay_ms or loss_percent"),
    (2, "  - {action: shape-uplink, loss_percent: 101}", "steps[1].loss_percent", "less than or equal to 100"),
])
def test_uplink_steps_are_refused_where_they_cannot_work(tmp_path, hosts, steps, key, reason):
    with pytest.raises(ScenarioError) as e:
        load_scenario(_write(tmp_path, CAPTURE % (hosts, steps)))
    assert e.value.key == key and reason in e.value.reason, (e.value.key, e.value.reason)


def test_uplink_steps_load_on_two_hosts(tmp_path):
    steps = "  - {action: shape-uplink, rate_mbit: 100, delay_ms: 20}\n  - {action: migrate, vm: vm1, transport: tcp}"
    scenario = load_scenario(_write(tmp_path, CAPTURE % (2, steps)))
    assert scenario.steps[1].rate_mbit == 100 and scenario.steps[2].transport == "tcp"


@pytest.mark.parametrize("kind, keys, key, reason", [
    ("pci", "failover_pair_id: standby1", "steps[1]", "set wait: false"),
    ("igb-vf", "failover_pair_id: standby1, wait: false", "steps[1].failover_pair_id", "is not kind: pci"),
    ("igb-vf", "mac: '52:54:00:00:13:07', wait: false", "steps[1].mac", "is not kind: pci"),
    ("pci", "mac: '01:00:5e:00:00:01', wait: false", "steps[1].mac", "multicast"),
])
def test_a_primary_plugged_with_other_properties_is_checked(tmp_path, kind, keys, reason, key):
    text = (HOLD % ("namespace", "acpi", kind)).replace("{action: migrate, vm: vm1, hold_eject_ms: 3000}",
                                                        "{action: plug-primary, vm: vm1, pair: net0, %s}" % keys)
    with pytest.raises(ScenarioError) as e:
        load_scenario(_write(tmp_path, text))
    assert e.value.key == key and reason in e.value.reason, (e.value.key, e.value.reason)


def test_a_primary_plugged_with_another_standby_loads(tmp_path):
    text = (HOLD % ("namespace", "acpi", "pci")).replace(
        "{action: migrate, vm: vm1, hold_eject_ms: 3000}",
        "{action: plug-primary, vm: vm1, pair: net0, failover_pair_id: standby1, mac: '52:54:00:00:13:07', wait: false}")
    step = load_scenario(_write(tmp_path, text)).steps[1]
    assert (step.failover_pair_id, step.mac, step.wait) == ("standby1", "52:54:00:00:13:07", False)
