"""The cloud-init flavour's pure parts: the network-config made from a pair, and the seed disk in the
QEMU argv (the guest-booting tests are in test_cloud_init_guest.py)."""

from dataclasses import replace
from pathlib import Path

import pytest

from testbed.cloud_seed import meta_data, network_config
from testbed.plan import plan_machine
from testbed.qemu_argv import LaunchFiles, build_argv
from testbed.scenario import Scenario


def _vm(netconfig=None, address="dhcp"):
    data = {"name": "s", "description": "d", "vms": [{"name": "vm1", "image": "cloud-init", "pairs": [
        {"name": "net0", "mac": "52:54:00:00:12:53", "address": address, "primary": {"kind": "pci"}},
        {"name": "net1", "mac": "52:54:00:00:12:54", "address": "10.1.0.2/24"}]}], "steps": [{"action": "boot"}]}
    if netconfig:
        data["vms"][0]["netconfig"] = netconfig
    return Scenario.model_validate(data).vms[0]


def test_the_cloud_default_matches_by_mac_and_names_each_nic():
    config = network_config(plan_machine(_vm(), 0))
    assert config == {"version": 2, "ethernets": {
        "net0": {"match": {"macaddress": "52:54:00:00:12:53"}, "set-name": "eth0", "dhcp4": True},
        "net1": {"match": {"macaddress": "52:54:00:00:12:54"}, "set-name": "eth1", "addresses": ["10.1.0.2/24"]}}}
    assert meta_data(plan_machine(_vm(), 0)) == {"instance-id": "testbed-vm1", "local-hostname": "vm1"}


def test_recommended_matches_the_failover_master_and_renames_nothing():
    config = network_config(plan_machine(_vm("recommended"), 0))
    assert config["ethernets"]["net0"] == {"match": {"macaddress": "52:54:00:00:12:53", "driver": "net_failover"},
                                           "dhcp4": True}


def test_the_seed_is_a_read_only_virtio_disk_on_every_qemu_of_the_vm():
    plan = replace(plan_machine(_vm(), 0), seed_disk=Path("/run dir/a,b/seed.iso"))
    files = LaunchFiles(Path("k"), Path("i"), Path("s"), 3)
    for p in (plan, plan.on_slot(1)):  # a migration's destination too
        argv = build_argv("qemu", p, files, "tcg")
        assert argv[argv.index("-drive") + 1] == "if=none,id=seed,file=/run dir/a,,b/seed.iso,format=raw,readonly=on"
        assert "virtio-blk-pci,drive=seed,bus=pcie.0,addr=0x1e" in argv
    assert "-drive" not in build_argv("qemu", plan_machine(_vm(), 0), files, "tcg")


def test_dhcp_and_netconfig_are_accepted_for_cloud_init_and_refused_for_minimal():
    _vm("naive")
    with pytest.raises(ValueError, match="netconfig"):
        Scenario.model_validate({"name": "s", "description": "d", "vms": [{"name": "vm1", "netconfig": "naive", "pairs": [
            {"name": "net0", "mac": "52:54:00:00:12:53", "address": "10.1.0.2/24"}]}], "steps": [{"action": "boot"}]})

