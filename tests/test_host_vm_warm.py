"""The host-VM warm start's plan (pure logic): when a host VM may be saved with its guests, and what
its key covers. The save and the restore themselves run in tests/test_host_vm_guest.py."""

import shutil
from pathlib import Path

from testbed.host_image import HostImage
from testbed.host_vm_warm import plan_host_start
from testbed.images import GuestImage
from testbed.plan import plan_machines
from testbed.qemu_host import QemuBinary
from testbed.scenario import load_scenario

SCENARIO = Path(__file__).parent.parent / "scenarios" / "host-vf-failover.yaml"
QEMU = QemuBinary(shutil.which("qemu-system-x86_64") or "/bin/sh", (10, 0, 2), "10.0.2", frozenset())
IMAGE = GuestImage(Path("/c/images/g1"), Path("/c/g1/vmlinuz"), Path("/c/g1/initrd.img"), Path("/c/k"), "6.12", {})
HOST_IMAGE = HostImage(Path("/c/host-images/h1"), IMAGE.kernel, Path("/c/h1/initrd.img"), IMAGE.ssh_key, {})


def _plan(scenario, slots=2, image=IMAGE):
    return plan_host_start(scenario, plan_machines(scenario), QEMU, image, HOST_IMAGE, slots)


def test_auto_gives_a_key_that_follows_what_shapes_the_host_vm():
    scenario = load_scenario(SCENARIO, {"snapshot": "auto"})
    warm = _plan(scenario)
    assert warm.wants_snapshot() and warm.key and warm.vms == ["vm1"]
    assert _plan(load_scenario(SCENARIO, {"snapshot": "required"})).key == warm.key  # the mode is not state
    assert _plan(scenario, slots=1).key != warm.key            # no migration: no second PF in L1
    other = GuestImage(Path("/c/images/g2"), *list(vars(IMAGE).values())[1:])
    assert _plan(scenario, image=other).key != warm.key         # another guest image
    vm = scenario.vms[0].model_copy(update={"memory_mib": 512})
    assert _plan(scenario.model_copy(update={"vms": [vm]})).key != warm.key  # L2's argv
    # the steps after the boot are not state: the same boot gives the same snapshot
    assert _plan(scenario.model_copy(update={"steps": scenario.steps[:3]})).key == warm.key


def test_never_and_what_forces_a_cold_host_vm():
    assert not _plan(load_scenario(SCENARIO)).wants_snapshot()  # the file's default is never
    scenario = load_scenario(SCENARIO, {"snapshot": "auto"})
    late = _plan(scenario.model_copy(update={"steps": scenario.steps[1:]}))
    assert late.reasons == ["the first step is not a boot step"] and late.key is None
    pair = scenario.vms[0].pairs[0]
    down = pair.model_copy(update={"standby": pair.standby.model_copy(update={"link": "down"})})
    vm = scenario.vms[0].model_copy(update={"pairs": [down]})
    assert _plan(scenario.model_copy(update={"vms": [vm]})).reasons == \
        ["vm1: pair net0: the standby starts with its link down"]


def test_the_host_vm_boots_within_the_boot_steps_budget():
    from testbed.runner import _host_boot_budget_s
    scenario = load_scenario(SCENARIO)
    assert _host_boot_budget_s(scenario) == 300  # the file's boot step: timeout_s 300
    boot = scenario.steps[0].model_copy(update={"timeout_s": 30})
    assert _host_boot_budget_s(scenario.model_copy(update={"steps": [boot]})) == 120  # never under 120 s
