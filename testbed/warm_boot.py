"""Warm start: a VM resumes from a cached post-boot state instead of booting.

Mechanism (testbed.vm_snapshot): QMP `snapshot-save` after the boot, `snapshot-load` into a QEMU
launched with the same argv at -S, the VM state in a qcow2 file of its own. It does not go through
migration, so failover's migration notifier does not unplug a `pci` primary: the run that saved goes
on in the QEMU that booted, and a restored guest has its primary in place, as a cold one has. An
`igb-vf` primary is the guest's own VF, which QEMU cannot carry (its igbvf has no vmstate: a VF saved
while in use is dead after the restore), so the guest unbinds it from igbvf before the save and
binds it again after it, in the run that saves as in every restore.
What differs from a guest that never was saved is written in the report.

The host-VM topology saves its host VM by a migration to a file (`mapped-ram`, QEMU 9.0+, see
testbed.host_vm_warm): `save` and `load_into` here."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from testbed import vm_snapshot
from testbed.cloud_seed import FLAVOUR as CLOUD_INIT
from testbed.errors import StepFailed, TestbedError
from testbed.qemu_argv import LaunchFiles, build_argv
from testbed.scenario import BootStep, CheckDeviceStep, CheckEventsStep, PrimaryKind
from testbed.snapshots import Snapshot, SnapshotCache, cache_limit_bytes, snapshot_key

if TYPE_CHECKING:
    from testbed.machine import QemuMachine
    from testbed.run_context import RunContext
    from testbed.scenario import Scenario

logger = logging.getLogger(__name__)
StepT = TypeVar("StepT")

MAPPED_RAM_SINCE = (9, 0)
SAVE_TIMEOUT_S = 120
# Part of a flat guest's snapshot key: a snapshot of another format is never loaded as this one.
STATE_FORMAT = "snapshot-save:qcow2"
GUEST_PAIRED_DIFFERENCE = ("the guest unbound its paired igb VFs from igbvf before the save and bound them "
                           "again after it, then set each VF's netdev down and up once (net_failover saw the "
                           "primary go and come back)")
SETTLE_DIFFERENCE = "the guest's clock was set and its neighbour table flushed"


def with_snapshot_default(step: StepT, mode: str) -> StepT:
    """A boot step that gives no `snapshot` takes the run's default; any other step is itself."""
    if isinstance(step, BootStep) and step.snapshot is None:
        return step.model_copy(update={"snapshot": mode})
    return step


def cold_reasons(ctx: "RunContext", name: str, step: BootStep) -> list[str]:
    """Why this VM must boot cold under `snapshot: auto`: what a later step (or the scenario) would see
    of the boot itself, or what a save and restore cannot carry."""
    return guest_cold_reasons(ctx.scenario, ctx.qemu.version, name, step)


def guest_cold_reasons(scenario: "Scenario", qemu_version: tuple[int, ...], name: str, step: BootStep) -> list[str]:
    reasons = []
    if tuple(qemu_version[:2]) < vm_snapshot.SINCE:
        reasons.append(f"QEMU {'.'.join(map(str, qemu_version))} has no snapshot-save job (6.0+)")
    vm = next(v for v in scenario.vms if v.name == name)
    if vm.image == CLOUD_INIT:
        # What cloud-init did with its seed at boot (names, the rendered config) is what a scenario of
        # this image looks at, and a restore would show the previous run's doing.
        reasons.append("image: cloud-init (cloud-init configures the guest from its seed at boot)")
    if vm.pci_hotplug == "native" and any(getattr(p.primary, "kind", None) == PrimaryKind.PCI for p in vm.pairs):
        # snapshot-load adds the hidden primary with a hot-plug event on its root port after the
        # port's state is loaded; the guest's pciehp took it for a removal (DEVICE_DELETED 1.4 s
        # after the resume, CI 2026-11-27). ACPI hot-plug rescans and finds nothing new.
        reasons.append("pci_hotplug: native with a pci primary (the load's hot-plug event makes pciehp remove it)")
    for pair in vm.pairs:
        if not pair.standby.failover or pair.standby.legacy_virtio:
            reasons.append(f"pair {pair.name}: the standby never negotiates STANDBY (boot-time behaviour)")
        if pair.standby.link != "up":
            reasons.append(f"pair {pair.name}: the standby starts with its link down")
        if not pair.standby.at_boot or not getattr(pair.primary, "at_boot", True):
            reasons.append(f"pair {pair.name}: a NIC is plugged after the boot (the order is the scenario's point)")
        if getattr(pair.primary, "rom", False):
            # the restored QEMU adds the primary only while it loads virtio-net's state, after the
            # RAM, so the ROM's RAM block is unknown when the RAM is read (zoo item 2: a migration's
            # destination fails the same way)
            reasons.append(f"pair {pair.name}: the primary has an option ROM (rom: true), which a restore cannot load")
        if pair.primary_names_another_standby():
            reasons.append(f"pair {pair.name}: the primary names another standby (failover_pair_id), so QEMU "
                           "shows it before STANDBY (boot-time behaviour)")
        if pair.dhcp:
            # dnsmasq is started afresh by every run: a restored guest would hold a lease this run's
            # server never gave, and the report's leases would not show it.
            reasons.append(f"pair {pair.name}: address: dhcp (the lease is taken at boot)")
    if not step.wait_for_pairs:
        reasons.append("the boot step does not wait for the pairs (the state before they are whole)")
    if step.hold:
        reasons.append("the boot step holds QEMU before the guest starts (hold: true)")
    boot_index = next((i for i, s in enumerate(scenario.steps)
                       if isinstance(s, BootStep) and (s.vms is None or name in s.vms)), 0)
    for i, later in enumerate(scenario.steps):
        if isinstance(later, CheckEventsStep) and later.vm == name and later.since_step <= boot_index:
            reasons.append(f"steps[{i}] (check-events since step {later.since_step}) looks at the boot's QMP events")
        # present: true after a boot that waited for the pairs holds after a restore too (QEMU adds
        # the primary while it loads); present: false is QEMU keeping it hidden before STANDBY, at boot.
        if isinstance(later, CheckDeviceStep) and later.vm == name and not later.present:
            reasons.append(f"steps[{i}] (check-primary-device present: false) looks at the primary hidden at boot")
    return reasons


@dataclass
class WarmStart:
    """One VM's way through the boot step, for the report."""
    mode: str                          # the boot step's `snapshot`
    key: str | None = None
    reasons: list[str] = field(default_factory=list)
    restored_from: str | None = None
    restore_s: float | None = None
    saved_s: float | None = None
    fallback: str | None = None        # why a restore was abandoned for a cold boot
    differs_from_cold: str = SETTLE_DIFFERENCE
    saving_run_differs: bool = False   # the run that saved differs from cold too (a host VM's guests)

    def wants_snapshot(self) -> bool:
        return self.mode != "never" and not self.reasons

    def report(self) -> dict[str, Any]:
        out: dict[str, Any] = {"start": "restored" if self.restored_from else "cold", "snapshot_mode": self.mode}
        if self.key:
            out["snapshot_key"] = self.key
        if self.restored_from:
            out["restored_from"] = self.restored_from
            out["restore_s"] = self.restore_s
        if self.restored_from or (self.saving_run_differs and self.saved_s is not None):
            out["differs_from_cold"] = self.differs_from_cold
        if self.saved_s is not None:
            out["saved_s"] = self.saved_s
        if self.reasons:
            out["cold_because"] = self.reasons
        if self.fallback:
            out["fallback"] = self.fallback
        return out


def plan_start(ctx: "RunContext", name: str, step: BootStep) -> WarmStart:
    warm = WarmStart(step.snapshot)
    if step.snapshot == "never":
        return warm
    warm.reasons = cold_reasons(ctx, name, step)
    if ctx.host.kind != "namespace":
        # Guests in a host VM are saved only with it, by the first boot step (testbed.host_vm_warm);
        # a boot step that gets here is not that one, or the host VM could not be snapshotted.
        host_warm = ctx.host.warm
        warm.reasons += host_warm.reasons if host_warm is not None and host_warm.reasons else \
            ["a host VM's guests start from a snapshot only in its first boot step, which boots them all"]
    if warm.reasons and step.snapshot == "required":
        raise StepFailed(f"{name}: snapshot: required, but it must boot cold: {'; '.join(warm.reasons)}")
    if not warm.reasons:
        warm.key = key_for(ctx, name)
        kinds = {pair.kind.paired_by for pair in ctx.plan(name).pairs if pair.kind is not None}
        warm.differs_from_cold = "; ".join([*([GUEST_PAIRED_DIFFERENCE] if "guest" in kinds else []),
                                            SETTLE_DIFFERENCE])
    return warm


def key_for(ctx: "RunContext", name: str) -> str:
    """From the VM's cold-boot argv, built with placeholders where a run's own paths and fds go, so
    that every run of the same VM gives the same key."""
    image = ctx.image_of(name)
    files = LaunchFiles(image.kernel, image.initrd, Path("<artifacts>/serial.log"), 3,
                        serial_socket=Path("<sockets>/console"), qmp_socket=Path("<sockets>/qmp"))
    plan = ctx.plans[name].on_slot(0)
    # the run's own copies of read-only disks: their contents follow from the image and the plan
    plan = replace(plan, seed_disk=plan.seed_disk and Path("<artifacts>/seed.iso"),
                   kexec_disk=plan.kexec_disk and Path("<artifacts>/kexec.img"))
    argv = build_argv(ctx.qemu.path, plan, files, ctx.accel)
    return snapshot_key(f"{image.directory.name}+{STATE_FORMAT}", ctx.qemu.version_text, ctx.qemu.path, argv,
                        ctx.accel)


def set_capabilities(machine: "QemuMachine", mapped_ram: bool = False, others: dict[str, bool] | None = None) -> None:
    """Every migration the testbed runs wants MIGRATION events; a snapshot file is also mapped-ram;
    others: more capabilities, each set on or off (a QEMU that arrived by a multifd migration keeps
    multifd on, and postcopy refuses it). Both ends of a migration must agree on them. mapped-ram is
    set off as well as on: a QEMU restored from a snapshot keeps it, and a socket migration then fails
    with "Migration requires seekable transport"."""
    known = {c["capability"] for c in machine.qmp.execute("query-migrate-capabilities")}
    states = {"events": True, **({"mapped-ram": mapped_ram} if mapped_ram or "mapped-ram" in known else {}),
              **(others or {})}
    machine.qmp.execute("migrate-set-capabilities",
                        {"capabilities": [{"capability": name, "state": on} for name, on in states.items()]})


def wait_migration(machine: "QemuMachine", since: int, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    seen = []
    while True:
        # in slices: a QEMU that dies here is not watched yet (a restore), and would leave the wait
        # to run out its whole timeout
        hit = machine.events.next({"MIGRATION"}, since, max(0.0, min(0.5, deadline - time.monotonic())))
        if hit is None:
            if not machine.alive():
                raise TestbedError(f"{machine.name}: QEMU exited (status {machine.exit_status()}) during {what}; "
                                   f"statuses {seen}; {machine.stderr_tail(5).strip()}")
            if time.monotonic() < deadline:
                continue
            raise TestbedError(f"{machine.name}: {what} did not finish in {timeout:.0f}s; statuses {seen}")
        since = hit[0] + 1
        status = hit[1].data.get("status")
        seen.append(status)
        if status == "completed":
            return
        if status in ("failed", "cancelled"):
            try:
                desc = machine.qmp.execute("query-migrate", watch=False).get("error-desc", "no error text")
            except TestbedError:  # a destination that failed to load exits
                desc = machine.stderr_tail(5).strip() or "QEMU exited"
            raise TestbedError(f"{machine.name}: {what} {status}: {desc}")


def save(machine: "QemuMachine", path: Path) -> float:
    """Saves the running VM's state to path; the VM is left paused (postmigrate)."""
    started = time.monotonic()
    set_capabilities(machine, mapped_ram=True)
    cursor = machine.events.cursor()
    machine.qmp.execute("migrate", {"uri": f"file:{path}"})
    wait_migration(machine, cursor, SAVE_TIMEOUT_S, f"saving to {path}")
    return round(time.monotonic() - started, 3)


def load_into(machine: "QemuMachine", state: Path, timeout: float, mapped_ram: bool = True,
              resume: bool = True) -> None:
    """Loads state into a machine launched with `-incoming defer`; the run watches it from now on.
    resume: a VM saved paused is made to run (a warm start); without it, it stays as it was saved."""
    set_capabilities(machine, mapped_ram=mapped_ram)
    cursor = machine.events.cursor()
    machine.qmp.execute("migrate-incoming", {"uri": f"file:{state}"})
    wait_migration(machine, cursor, timeout, f"restoring from {state}")
    machine.watched = True
    if resume and machine.qmp.execute("query-status").get("status") != "running":
        machine.cont()


def restore(ctx: "RunContext", name: str, state: Path, label: str, *, slot: int = 0, mapped_ram: bool = True,
            resume: bool = True, timeout: float = 60) -> "QemuMachine":
    """A new QEMU for the VM on the taps of `slot`, loaded from state; the run's machine from now on."""
    machine = ctx.new_machine(name, slot, incoming=True, label=label)
    ctx.machines[name] = machine
    machine.launch()
    load_into(machine, state, ctx.timeout(timeout), mapped_ram, resume)
    return machine


# What a restore leaves stale in a guest: its wall clock stopped at the save, and neighbour entries
# for the previous run's peer (a new namespace, new MACs).
SETTLE_SCRIPT = 'date -s "@$1" >/dev/null && ip neigh flush all'


def settle_restored(ctx: "RunContext", name: str) -> None:
    ctx.shell(name).run(["sh", "-c", SETTLE_SCRIPT, "sh", str(int(time.time()))], timeout=20)


def _guest_pf_macs(ctx: "RunContext", name: str) -> list[str]:
    """The MACs of the guest's igb PFs whose VFs the guest pairs itself (igb-vf primaries)."""
    return [pair.primary.mac for pair in ctx.plan(name).pairs
            if pair.kind is not None and pair.kind.paired_by == "guest" and pair.primary is not None]


# Finds the PF netdev by its MAC: its name is udev's, and a script must not guess it.
_PF_BY_MAC = 'for d in /sys/class/net/*; do [ "$(cat "$d/address")" = "$1" ] && pf=${d##*/} && break; done; ' \
    '[ -n "$pf" ] || { echo "no netdev with MAC $1" >&2; exit 1; }; '


# The VFs the image's sriov-pf paired are the ones it set driver_override=igbvf on (autoprobe is off).
_UNBIND_VFS = 'n=0; for vf in "/sys/class/net/$pf/device"/virtfn*; do [ -e "$vf/driver" ] || continue; ' \
    'echo "$(basename "$(readlink -f "$vf")")" > "$vf/driver/unbind" && n=$((n + 1)); done; ' \
    '[ "$n" -gt 0 ] || { echo "no VF of $pf is bound to a driver" >&2; exit 1; }'
_BIND_VFS = 'n=0; for vf in "/sys/class/net/$pf/device"/virtfn*; do ' \
    '[ "$(cat "$vf/driver_override")" = igbvf ] && [ ! -e "$vf/driver" ] || continue; ' \
    'echo "$(basename "$(readlink -f "$vf")")" > /sys/bus/pci/drivers/igbvf/bind && n=$((n + 1)); done; ' \
    '[ "$n" -gt 0 ] || { echo "no VF of $pf is waiting for igbvf" >&2; exit 1; }; ' \
    'udevadm settle -t 5 || true; for vf in "/sys/class/net/$pf/device"/virtfn*; do ' \
    '[ "$(cat "$vf/driver_override")" = igbvf ] || continue; for d in "$vf"/net/*; do [ -e "$d" ] || continue; ' \
    'ip link set dev "${d##*/}" down && ip link set dev "${d##*/}" up || exit 1; done; done'


def release_guest_vfs(ctx: "RunContext", name: str) -> None:
    """Before a save: the guest unbinds its paired VFs from igbvf, so that no VF is saved in use (QEMU's
    igbvf has no vmstate: a VF's PCI state, its command register and MSI-X, comes back reset). The
    VF stays, its MAC and queues are the PF's state; net_failover sees its primary go, as on a
    hot-unplug. (Setting sriov_numvfs to 0 did the same in 2.9 s here, resetting the PF twice.)"""
    for mac in _guest_pf_macs(ctx, name):
        ctx.shell(name).run(["sh", "-c", _PF_BY_MAC + _UNBIND_VFS, "sh", mac], timeout=60)


def replug_guest_vfs(ctx: "RunContext", name: str) -> None:
    """After a save or a restore: the guest binds its paired VFs to igbvf again, whose probe enables
    the device and its MSI-X afresh; the boot step then waits for the pairs as usual.

    Once udev has named it, each VF's netdev is set down and up. net_failover opens the VF as it
    registers it, while igbvf's probe is still exchanging messages with the PF, and the link check
    of that first open fails: the link came up at igbvf's next watchdog, 2 s later (2.2–2.5 s after
    the bind, measured here). A second open finds it at once (1.0 s after the bind)."""
    for mac in _guest_pf_macs(ctx, name):
        ctx.shell(name).run(["sh", "-c", _PF_BY_MAC + _BIND_VFS, "sh", mac], timeout=60)


def cache(ctx: "RunContext") -> SnapshotCache:
    return SnapshotCache(limit_bytes=cache_limit_bytes(ctx.options.snapshot_cache_mib))


def publish(warm: WarmStart, scratch: Path, name: str, ctx: "RunContext") -> Snapshot | None:
    assert warm.key is not None
    return cache(ctx).publish(warm.key, scratch, {"key": warm.key, "vm": name, "scenario": ctx.scenario.name,
                                              "image": ctx.image_of(name).directory.name, "qemu": ctx.qemu.version_text,
                                              "accel": ctx.accel, "saved_s": warm.saved_s,
                                              "created": time.time()})
