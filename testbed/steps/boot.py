"""Booting VMs and checking what their guests and QEMU show."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from testbed import vm_snapshot, warm_boot
from testbed.errors import StepFailed, TestbedError
from testbed.machine import MachineArtifacts, QemuMachine
from testbed.run_context import RunContext
from testbed.scenario import BootStep, CheckDeviceStep, CheckNetdevsStep
from testbed.snapshots import STATE
from testbed.steps.guest_up import connect_booted, pairs_ready
from testbed.steps.host_vm_boot import boot_in_host_vm
from testbed.steps.pairs import pairs_check
from testbed.steps.registry import handles
from testbed.waiting import wait_until

logger = logging.getLogger(__name__)


def _resume(ctx: RunContext, name: str, step: BootStep, state: Path) -> dict[str, Any]:
    """Restores the VM from state into a new QEMU and checks it as a boot would: SSH, then the pairs."""
    machine = ctx.new_machine(name, 0, incoming=False, label=name)
    ctx.machines[name] = machine
    machine.launch()  # at -S, as every launch
    vm_snapshot.load(machine, state, ctx.scratch_dir(), ctx.timeout(60))
    machine.cont()
    timings = connect_booted(ctx, name, step.timeout_s, marker=False)
    warm_boot.settle_restored(ctx, name)
    warm_boot.replug_guest_vfs(ctx, name)
    pairs_ready(ctx, name, step, timings)
    return timings


def _try_cached(ctx: RunContext, name: str, step: BootStep, warm: warm_boot.WarmStart) -> dict[str, Any] | None:
    snap = warm_boot.cache(ctx).get(warm.key) if warm.wants_snapshot() and warm.key else None
    if snap is None:
        return None
    try:
        timings = _resume(ctx, name, step, snap.state)
    except (TestbedError, StepFailed) as e:
        if step.snapshot == "required":
            raise StepFailed(f"{name}: restoring snapshot {warm.key} failed: {e}") from e
        logger.warning("%s: restoring snapshot %s failed, booting cold: %s", name, warm.key, e)
        warm.fallback = f"restoring {warm.key} failed: {e}"
        warm_boot.cache(ctx).drop(warm.key, str(e).splitlines()[0])
        failed = ctx.machines.pop(name)
        ctx.retire(failed)
        if name in ctx.shells:
            ctx.shells.pop(name).close()
        _set_aside(failed, f"{name}-restore-failed")
        # the cold boot gets a budget of its own: a restore that failed late (its pairs never
        # settled) may have used all of the step's
        ctx.start_deadline(step.timeout_s)
        return None
    snap.touch()
    warm.restored_from, warm.restore_s = warm.key, timings.get("pairs_ready_s", timings["ssh_ready_s"])
    return timings


def _set_aside(machine: QemuMachine, name: str) -> None:
    """Moves a QEMU that is no longer the VM's to its own artifacts directory (a free name beside the
    run's other QEMUs), so that the VM's next QEMU gets the VM's name."""
    target, n = machine.artifacts.directory.with_name(name), 1
    while target.exists():
        n += 1
        target = target.with_name(f"{name}-{n}")
    machine.artifacts.directory.rename(target)
    machine.artifacts = MachineArtifacts(target)


def _save(ctx: RunContext, name: str, step: BootStep, warm: warm_boot.WarmStart) -> dict[str, Any]:
    """After a cold boot: saves the state and goes on in the same QEMU, whose guest the save leaves as
    it was (an igb VF unbound for the save is bound again, as after every restore). The timings of
    the pairs after the save."""
    assert warm.key is not None
    # The cache's own work gets a budget of its own, timeout_s again: a cold boot that used most of
    # the step's budget (seen on a loaded CI machine) must not leave the save 0 s.
    ctx.start_deadline(step.timeout_s)
    scratch = warm_boot.cache(ctx).scratch(warm.key)
    machine = ctx.machine(name)
    try:
        warm_boot.release_guest_vfs(ctx, name)
        warm.saved_s = vm_snapshot.save(machine, ctx.qemu.path, scratch / STATE, ctx.timeout(warm_boot.SAVE_TIMEOUT_S))
        # the VM stood still during the save, as a restored one did since it: the same clock and
        # neighbour table as every restore gives
        warm_boot.settle_restored(ctx, name)
        warm_boot.replug_guest_vfs(ctx, name)
        after: dict[str, Any] = {}
        pairs_ready(ctx, name, step, after)
    except BaseException as e:  # Ctrl-C too: a half-written state file is as large as the guest's RAM
        shutil.rmtree(scratch, ignore_errors=True)
        if isinstance(e, (TestbedError, StepFailed)):
            raise StepFailed(f"{name}: saving the booted state failed: {e}") from e
        raise
    warm_boot.publish(warm, scratch, name, ctx)
    return after


def _boot_each(ctx: RunContext, step: BootStep, names: list[str]) -> dict[str, tuple[dict[str, Any], Any]]:
    """Every VM on its own: restored from its snapshot, or booted cold (and then saved)."""
    warm: dict[str, warm_boot.WarmStart] = {}
    restored: dict[str, dict[str, Any]] = {}
    for name in names:
        warm[name] = warm_boot.plan_start(ctx, name, step)
        if (timings := _try_cached(ctx, name, step, warm[name])) is not None:
            restored[name] = timings
        else:
            ctx.start_machine(name, hold=step.hold)
    out = {}
    for name in names:
        timings = restored.get(name)
        if step.hold:  # the cont step brings the guest up (steps/lifecycle.py)
            ctx.held_boots[name] = step
            out[name] = ({"held": True}, warm[name])
            continue
        if timings is None:
            timings = connect_booted(ctx, name, step.timeout_s, marker=True)
            pairs_ready(ctx, name, step, timings)
            if warm[name].wants_snapshot():
                # the cold boot's own timings stay in cold_boot; pairs_ready_s is after the save
                timings = {**timings, **_save(ctx, name, step, warm[name]), "cold_boot": dict(timings)}
        out[name] = (timings, warm[name])
    return out


@handles(BootStep)
def boot(ctx: RunContext, step: BootStep) -> dict[str, Any]:
    names = step.vms or [vm.name for vm in ctx.scenario.vms]
    for name in names:
        if name in ctx.machines:
            raise StepFailed(f"{name} is already running")
    host_warm = ctx.host.warm
    if host_warm is not None and not host_warm.done and host_warm.wants_snapshot():
        started = boot_in_host_vm(ctx, step, names)
    else:
        started = _boot_each(ctx, step, names)
    if host_warm is not None:
        host_warm.done = True
    details: dict[str, Any] = {}
    for name, (timings, warm) in started.items():
        timings.update(warm.report())
        ctx.report.vms[name].boot = timings
        details[name] = timings
        if step.hold:
            logger.info("%s: held at -S until a cont step", name)
            continue
        pairs = timings.get("pairs_ready_s")
        logger.info("%s: %s, SSH after %ss, %s", name, timings["start"],
                    timings["ssh_ready_s"], "pairs not waited for" if pairs is None else f"pairs after {pairs}s")
    return details


@handles(CheckNetdevsStep)
def check_netdevs(ctx: RunContext, step: CheckNetdevsStep) -> dict[str, Any]:
    # a wait ends on the final names, as the boot's does: after a reset the pair can show as
    # expected before udev renamed ethN, and a step after it then met netdevs renamed under it
    check = pairs_check(ctx, step.vm, step.pairs, step.expect, settle=step.wait)
    if step.wait:
        waited = wait_until(check, ctx.timeout(step.timeout_s), f"{step.vm}'s pairs to be {step.expect.value}")
    else:
        waited = 0.0
        if (problem := check()) is not None:
            raise StepFailed(f"{step.vm}: expected {step.expect.value}: {problem}")
    netdevs = check.last
    ctx.report.vms[step.vm].netdevs = [n.as_dict() for n in netdevs]
    return {"waited_s": round(waited, 3), "netdevs": [n.as_dict() for n in netdevs]}


@handles(CheckDeviceStep)
def check_primary_device(ctx: RunContext, step: CheckDeviceStep) -> dict[str, Any]:
    pair = ctx.plan(step.vm).pair(step.pair)
    assert pair.primary is not None
    machine = ctx.machine(step.vm)
    present = pair.primary.device_id in machine.peripheral_ids()
    negotiated = [r.data for r in machine.events.records() if r.event == "FAILOVER_NEGOTIATED"]
    details = {"device": pair.primary.device_id, "present": present, "failover_negotiated": negotiated}
    if present != step.present:
        raise StepFailed(f"{step.vm}: primary {pair.primary.device_id} is "
                         f"{'present' if present else 'absent'} on the guest's PCI bus, expected "
                         f"{'present' if step.present else 'absent'}; FAILOVER_NEGOTIATED events: {negotiated}")
    return details
