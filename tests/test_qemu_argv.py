import os
from pathlib import Path

import pytest

from testbed.plan import plan_machines
from testbed.qemu_argv import LaunchFiles, build_argv, primary_props
from testbed.scenario import load_scenario

SCENARIOS = Path(__file__).parent.parent / "scenarios"
FILES = LaunchFiles(Path("/k"), Path("/i"), Path("/s.log"), 7, serial_socket=Path("/r/c"), qmp_socket=Path("/r/q"))


def _devices(argv):
    return [argv[i + 1] for i, a in enumerate(argv) if a == "-device"]


def test_pci_primary_is_paired_by_qemu_and_has_no_option_rom():
    (plan,) = plan_machines(load_scenario(SCENARIOS / "standby-pci.yaml"))
    argv = build_argv("qemu", plan, FILES, "tcg")
    devices = _devices(argv)
    assert "virtio-net-pci,id=net0-sby,netdev=hn-net0-sby,mac=52:54:00:00:12:54,bus=rp0s,romfile=,failover=on" in devices
    assert "e1000e,id=net0-pri,netdev=hn-net0-pri,mac=52:54:00:00:12:54,bus=rp0p,romfile=,failover_pair_id=net0-sby" in devices
    assert argv[argv.index("-accel") + 1] == "tcg" and "-S" in argv


def test_a_primary_may_name_another_standby_and_then_boots_cold():
    """Zoo item 18's typo, in the argv; QEMU shows such a primary before STANDBY, so auto boots cold."""
    from testbed.warm_boot import guest_cold_reasons
    scenario = load_scenario(Path(__file__).parent / "data" / "pair-id-typo-pci.yaml")
    (plan,) = plan_machines(scenario)
    assert any(d.startswith("e1000e,id=net0-pri,") and d.endswith(",failover_pair_id=net0-sbx")
               for d in _devices(build_argv("qemu", plan, FILES, "tcg")))
    assert primary_props(plan.pairs[0])["failover_pair_id"] == "net0-sbx"  # a re-plug names it too
    assert guest_cold_reasons(scenario, (10, 0, 2), "vm1", scenario.steps[0]) == [
        "pair net0: the primary names another standby (failover_pair_id), so QEMU shows it before STANDBY "
        "(boot-time behaviour)"]
    own = scenario.vms[0].pairs[0].primary.model_copy(update={"failover_pair_id": "net0-sby"})
    pair = scenario.vms[0].pairs[0].model_copy(update={"primary": own})
    vm = scenario.vms[0].model_copy(update={"pairs": [pair]})
    assert guest_cold_reasons(scenario.model_copy(update={"vms": [vm]}), (10, 0, 2), "vm1", scenario.steps[0]) == []


def test_a_host_vf_primary_names_its_standby_or_the_scenarios_id():
    from testbed.nested_machine import with_host_devices
    scenario = load_scenario(SCENARIOS / "zoo" / "zoo-18-pair-id-typo-vfio-migrates-dead.yaml")
    (plan,) = plan_machines(scenario)
    props = primary_props(with_host_devices(plan, {("vm1", 0, "net0"): "0000:01:10.0"}).pairs[0])
    assert (props["driver"], props["host"], props["failover_pair_id"]) == ("vfio-pci", "0000:01:10.0", "net0-sbx")
    (plan,) = plan_machines(load_scenario(SCENARIOS / "host-vf-failover.yaml"))
    props = primary_props(with_host_devices(plan, {("vm1", 0, "net0"): "0000:01:10.0"}).pairs[0])
    assert props["failover_pair_id"] == "net0-sby"


def test_igb_pf_is_not_a_failover_pair_id_primary_and_the_guest_gets_its_vf_config():
    (plan,) = plan_machines(load_scenario(SCENARIOS / "standby-igb-vf.yaml"))
    argv = build_argv("qemu", plan, FILES, "tcg")
    igb = [d for d in _devices(argv) if d.startswith("igb,")]
    assert igb == ["igb,id=net0-pri,netdev=hn-net0-pri,mac=06:54:00:00:00:01,bus=rp0p"]
    cmdline = argv[argv.index("-append") + 1].split()
    assert "testbed.sriov=06:54:00:00:00:01/2/0/52:54:00:00:12:53" in cmdline
    assert "testbed.addr=52:54:00:00:12:53=192.168.77.2/24" in cmdline


def test_every_nic_sits_on_its_own_root_port_and_the_qmp_fd_is_passed():
    (plan,) = plan_machines(load_scenario(SCENARIOS / "two-pairs.yaml"))
    argv = build_argv("qemu", plan, FILES, "tcg")
    buses = [d.split("bus=")[1].split(",")[0] for d in _devices(argv)
             if d.startswith(("virtio-net-pci,id=", "igb", "e1000e"))]
    assert sorted(buses) == ["rp0p", "rp0s", "rp1p", "rp1s"]
    assert "socket,id=qmp,fd=7" in argv
    assert "socket,id=serial0,path=/r/c,server=on,wait=off,logfile=/s.log" in argv
    assert "socket,id=qmp-user,path=/r/q,server=on,wait=off" in argv


def test_replug_reuses_the_launch_properties():
    (plan,) = plan_machines(load_scenario(SCENARIOS / "standby-pci.yaml"))
    props = primary_props(plan.pairs[0])
    assert props == {"driver": "e1000e", "id": "net0-pri", "netdev": "hn-net0-pri",
                     "mac": "52:54:00:00:12:54", "bus": "rp0p", "romfile": "",
                     "failover_pair_id": "net0-sby"}


def test_legacy_standby_cannot_offer_standby_feature():
    (plan,) = plan_machines(load_scenario(SCENARIOS / "no-standby-negotiation.yaml"))
    (sby,) = [d for d in _devices(build_argv("qemu", plan, FILES, "tcg")) if d.startswith("virtio-net-pci,id=net0-sby")]
    assert "disable-legacy=off" in sby and "disable-modern=on" in sby


def test_a_raw_boot_has_neither_the_testbed_monitor_nor_a_pause():
    (plan,) = plan_machines(load_scenario(SCENARIOS / "standby-pci.yaml"))
    raw = build_argv("qemu", plan, LaunchFiles(Path("/k"), Path("/i"), Path("/s.log"), None), "tcg", paused=False)
    assert "-S" not in raw and not any("id=qmp" in a for a in raw)
    destination = build_argv("qemu", plan, FILES, "tcg", incoming=True, absent_devices=frozenset({"net0-pri"}))
    assert "-S" not in destination and destination[destination.index("-incoming") + 1] == "defer"
    assert not any(d.startswith("e1000e,") for d in _devices(destination))
    assert "tap,id=hn-net0-pri,ifname=t0net0p,script=no,downscript=no,vhost=off" in destination  # for a re-plug
    no_standby = build_argv("qemu", plan, FILES, "tcg", absent_devices=frozenset({"net0-sby"}))
    assert not any(",id=net0-sby" in d for d in _devices(no_standby))
    assert any(d.startswith("e1000e,") and "failover_pair_id=net0-sby" in d for d in _devices(no_standby))
    assert "tap,id=hn-net0-sby,ifname=t0net0s,script=no,downscript=no,vhost=off" in no_standby  # for plug-standby


GOLDEN = Path(__file__).parent / "golden"


@pytest.mark.parametrize("scenario", ["standby-pci", "standby-igb-vf", "two-pairs"])
def test_argv_matches_its_golden_file(scenario):
    """Any change to the QEMU command line (a -cpu, an -smp, a root port's address) shows up in review
    as a diff of tests/golden/. Regenerate with TESTBED_UPDATE_GOLDEN=1 after checking the change."""
    (plan,) = plan_machines(load_scenario(SCENARIOS / f"{scenario}.yaml"))
    text = "\n".join(build_argv("qemu-system-x86_64", plan, FILES, "tcg")) + "\n"
    golden = GOLDEN / f"{scenario}.argv"
    if os.environ.get("TESTBED_UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text(), f"argv of {scenario} differs from {golden}"


def test_a_backend_left_out_drops_its_netdev_and_keeps_the_device():
    """migrate's destination_primary_backend: missing (zoo item 7)."""
    (plan,) = plan_machines(load_scenario(SCENARIOS / "standby-pci.yaml"))
    files = LaunchFiles(Path("k"), Path("i"), Path("s"), 3)
    primary = next(p.primary for p in plan.pairs if p.primary is not None)
    argv = build_argv("qemu", plan, files, "tcg", absent_backends=frozenset({primary.netdev_id}))
    netdevs = [argv[i + 1] for i, a in enumerate(argv) if a == "-netdev"]
    assert not any(f"id={primary.netdev_id}," in n for n in netdevs) and len(netdevs) == 2  # mgmt, standby
    assert any(a.startswith(f"e1000e,id={primary.device_id},netdev={primary.netdev_id}") for a in argv)
