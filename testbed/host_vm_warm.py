"""The host-VM topology's warm start: once the first boot step has every nested guest (L2) up and
paired, the host VM (L1) is saved with the guests running in it, and a later run restores L1 and
adopts the guests' QEMUs instead of booting either (docs/findings/host-vm-snapshot.md).

What a save cannot carry is a VF that a guest holds: QEMU's igbvf has no migration state, so such a
VF is dead after the restore (docs/findings/igbvf-no-migration-state.md). Around the save the
testbed therefore does what the kernel document's host script does around a migration: each VFIO
primary is unplugged from its guest (device_del) and its VF MAC zeroed through the PF; after the
restore the VF MAC is set again and the vfio-pci device added back. A run that boots cold and saves
goes on in the same host VM, and gives its guests their VFs back the same way."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from testbed.host_vm_machine import host_vm_argv, host_vm_plan
from testbed.nested_machine import L2_RUN, nested_argv, with_host_devices
from testbed.scenario import BootStep
from testbed.snapshots import snapshot_key
from testbed.warm_boot import MAPPED_RAM_SINCE, SETTLE_DIFFERENCE, WarmStart, guest_cold_reasons

if TYPE_CHECKING:
    from testbed.host_image import HostImage
    from testbed.host_vm import VmHost
    from testbed.images import GuestImage
    from testbed.plan import MachinePlan
    from testbed.qemu_host import QemuBinary
    from testbed.scenario import Scenario

HOST_DIFFERENCE = ("the host VM was saved with this guest running in it: before the save each VFIO primary was "
                   "unplugged (device_del) and its VF MAC zeroed through the PF, and after the restore the VF MAC "
                   "was set and the vfio-pci device added again (the host script of the kernel document, around a "
                   "save); the host VM's clock was set too")


@dataclass
class HostWarmStart:
    """The host VM's way through the first boot step: cold, restored from a snapshot, or saved."""
    mode: str                        # the first boot step's `snapshot`
    vms: list[str]
    reasons: list[str] = field(default_factory=list)
    key: str | None = None
    restored_from: str | None = None  # a snapshot's key
    restore_started: float | None = None  # run clock: L1's restore began, or it resumed after its save
    saved_s: float | None = None
    fallback: str | None = None
    done: bool = False               # the first boot step has run

    def wants_snapshot(self) -> bool:
        return self.mode != "never" and not self.reasons

    def fails_on_fallback(self) -> bool:
        """L1's snapshot did not load under `required`: the first boot step fails, with no cold start."""
        return self.fallback is not None and self.mode == "required"

    def guest_start(self, name: str) -> WarmStart:
        """What the guest's boot report says: the host VM's snapshot is its snapshot too."""
        warm = WarmStart(self.mode, key=self.key, reasons=list(self.reasons), restored_from=self.restored_from,
                         saved_s=self.saved_s, fallback=self.fallback)
        warm.differs_from_cold = f"{HOST_DIFFERENCE}; {SETTLE_DIFFERENCE}"
        warm.saving_run_differs = True  # its VFs were plugged back after the save, as after a restore
        return warm

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"start": "restored" if self.restored_from is not None else "cold", "snapshot_mode": self.mode}
        for name in ("key", "restored_from", "saved_s", "fallback"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        if self.reasons:
            out["cold_because"] = self.reasons
        return out


def plan_host_start(scenario: "Scenario", plans: list["MachinePlan"], qemu: "QemuBinary", image: "GuestImage",
                    host_image: "HostImage", slots: int) -> HostWarmStart:
    """Whether the host VM may start from (and be saved to) a snapshot, and under which key."""
    names = [vm.name for vm in scenario.vms]
    first = scenario.steps[0] if scenario.steps else None
    if not isinstance(first, BootStep):
        return HostWarmStart("never", names, ["the first step is not a boot step"])
    warm = HostWarmStart(first.snapshot, names)
    if first.snapshot == "never":
        return warm
    if tuple(qemu.version[:2]) < MAPPED_RAM_SINCE:  # the host VM is saved by a migration to a file
        warm.reasons.append(f"QEMU {'.'.join(map(str, qemu.version))} has no mapped-ram (9.0+)")
    if first.vms is not None and set(first.vms) != set(names):
        warm.reasons.append("the first boot step does not boot every guest (the host VM is saved with all of them)")
    for name in names:
        warm.reasons += [f"{name}: {r}" for r in guest_cold_reasons(scenario, qemu.version, name, first)]
    if not warm.reasons:
        warm.key = host_key(plans, qemu, image, host_image, host_vm_plan(scenario.host, plans, slots))
    return warm


def host_key(plans: list["MachinePlan"], qemu: "QemuBinary", image: "GuestImage", host_image: "HostImage",
             host_plan: Any) -> str:
    """From L1's argv and every guest's nested argv, built with placeholders where a run's own paths
    and the probed values go (the VFs' addresses and the nested accelerator are L1's own doing, and
    both follow from the host image)."""
    parts = host_vm_argv(qemu.path, host_plan, host_image, Path("<artifacts>/serial.log"), 3, Path("<sockets>/console"))
    for plan in plans:
        vfs = {(plan.name, 0, p.pair.name): f"<vf:{p.pair.name}>" for p in plan.pairs
               if p.primary is not None and not p.primary.backend}
        parts += nested_argv(with_host_devices(plan.on_slot(0), vfs), L2_RUN / plan.name, "<nested-accel>")
    return snapshot_key(f"{host_image.directory.name}+{image.directory.name}", qemu.version_text, qemu.path,
                        parts, "tcg")


def saved_state(host: "VmHost") -> dict[str, object]:
    """What a restored L1 holds but the testbed cannot read back cheaply (its PFs, VFs and verdicts),
    for the snapshot's meta.json."""
    return {"pfs": host.pfs, "pf_bars": host.pf_bars, "vf_drivers": host.vf_drivers,
            "vfs": [[vm, slot, pair, bdf, host.vf_numbers[(vm, slot, pair)]]
                    for (vm, slot, pair), bdf in host.vfs.items()],
            "nested_accel": [host.nested_accel, host.nested_accel_evidence]}


def apply_saved_state(host: "VmHost", saved: dict) -> None:
    host.pfs = {int(k): v for k, v in saved["pfs"].items()}
    host.pf_bars = {int(k): v for k, v in saved["pf_bars"].items()}
    host.vf_drivers = dict(saved["vf_drivers"])
    host.vfs = {(vm, slot, pair): bdf for vm, slot, pair, bdf, _ in saved["vfs"]}
    host.vf_numbers = {(vm, slot, pair): number for vm, slot, pair, _, number in saved["vfs"]}
    host.nested_accel, host.nested_accel_evidence = saved["nested_accel"]
