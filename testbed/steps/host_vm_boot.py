"""The first boot step of a host-VM scenario under `snapshot: auto | required`: the guests are adopted
from a host VM restored at set-up, or booted cold and then saved with it (testbed.host_vm_warm)."""

from __future__ import annotations

import logging
import shutil
import time
from typing import Any, cast

from testbed import host_vm_warm, warm_boot
from testbed.errors import StepFailed, TestbedError
from testbed.host_vm import VmHost
from testbed.host_vm_warm import HostWarmStart
from testbed.nested_machine import NestedMachine
from testbed.run_context import RunContext
from testbed.scenario import BootStep
from testbed.steps.devices import add_primary
from testbed.steps.guest_up import connect_booted, pairs_ready

logger = logging.getLogger(__name__)

UNPLUG_TIMEOUT_S = 60
ZERO_MAC = "00:00:00:00:00:00"
Started = dict[str, tuple[dict[str, Any], warm_boot.WarmStart]]


def _vfio_pairs(ctx: RunContext, name: str) -> list[str]:
    return [p.pair.name for p in ctx.plan(name).pairs if p.primary is not None and not p.primary.backend]


def _release_vfs(ctx: RunContext, host: VmHost, name: str) -> None:
    """Before the save: each VFIO primary leaves its guest, and the PF stops steering its MAC to the VF."""
    machine = ctx.machine(name)
    for pair in _vfio_pairs(ctx, name):
        machine.device_del(ctx.plan(name).pair(pair).primary.device_id,  # type: ignore[union-attr]
                           ctx.timeout(UNPLUG_TIMEOUT_S))
        host.set_vf_mac(ctx.plan(name), pair, ZERO_MAC)


def _pause(ctx: RunContext, name: str) -> None:
    """Before the save: the guest's QEMU is stopped, so no vCPU of the host VM is inside the guest
    when L1 stops. Under TCG a vCPU inside a nested KVM guest is in SVM guest mode, and QEMU 10.0's
    cpu_post_load refuses that state when it loads the file ("vCPU set in guest-mode inconsistent
    with migrated kernel nested state": the check is built with CONFIG_KVM, not asked whether KVM
    runs), so a save taken while the guest ran would fail to load about as often as the guest was
    busy (docs/findings/host-vm-snapshot.md)."""
    ctx.machine(name).qmp.execute("stop")


def _resume(ctx: RunContext, name: str) -> None:
    """After the restore: the guest saved paused runs again (a snapshot saved before the pause was
    added holds a running one)."""
    machine = ctx.machine(name)
    if machine.qmp.execute("query-status").get("status") != "running":
        machine.cont()


def _adopt(ctx: RunContext, host: VmHost, step: BootStep, name: str, started: float, label: str) -> dict[str, Any]:
    """A guest that came back with its restored host VM: QMP and SSH again, its clock set, its VFs
    plugged back, its pairs settled."""
    plan = ctx.plans[name].on_slot(0)
    machine = host.new_machine(plan, ctx.options.artifacts_dir / label, incoming=False,
                               absent_devices=frozenset(plan.pair(p).primary.device_id  # type: ignore[union-attr]
                                                        for p in _vfio_pairs(ctx, name)),
                               socket_dir=ctx.scratch_dir(),
                               run_dir_name=name)  # every cold boot launches the guest in run dir <name>
    ctx.track(name, machine)
    ctx.machines[name] = machine
    machine.adopt(started, ctx.timeout(60))
    _resume(ctx, name)
    timings = connect_booted(ctx, name, step.timeout_s, marker=False)
    warm_boot.settle_restored(ctx, name)
    for pair in _vfio_pairs(ctx, name):
        add_primary(ctx, name, pair)
    pairs_ready(ctx, name, step, timings)
    return timings


def _adopt_all(ctx: RunContext, host: VmHost, step: BootStep, names: list[str], hw: HostWarmStart,
               labels: dict[str, str]) -> Started:
    assert hw.restore_started is not None
    out: Started = {}
    for name in names:
        timings = _adopt(ctx, host, step, name, hw.restore_started, labels[name])
        warm = hw.guest_start(name)
        warm.restore_s = timings.get("pairs_ready_s")
        out[name] = (timings, warm)
    return out


def _forget_guests(ctx: RunContext, names: list[str], why: str) -> None:
    for name in names:
        if name in ctx.shells:
            ctx.shells.pop(name).close()
        if name in ctx.machines:
            machine = cast(NestedMachine, ctx.machines.pop(name))
            machine.detach(why)
            ctx.retired.append(machine)


def _boot_cold(ctx: RunContext, step: BootStep, names: list[str]) -> dict[str, dict[str, Any]]:
    for name in names:
        ctx.start_machine(name)
    out = {}
    for name in names:
        out[name] = connect_booted(ctx, name, step.timeout_s, marker=True)
        pairs_ready(ctx, name, step, out[name])
    return out


def _save_and_resume(ctx: RunContext, host: VmHost, step: BootStep, names: list[str], hw: HostWarmStart) -> Started:
    """After a cold boot: L1 saved with the guests in it, and the run goes on in the same L1, with
    each guest adopted and its VFs plugged back as a restore does."""
    assert hw.key is not None
    ctx.start_deadline(step.timeout_s)  # a budget of its own, as a flat VM's save (steps/boot.py)
    cache = warm_boot.cache(ctx)
    scratch = cache.scratch(hw.key)
    try:
        for name in names:
            _release_vfs(ctx, host, name)
            _pause(ctx, name)
        _forget_guests(ctx, names, "saved-with-the-host-vm")
        hw.saved_s = host.save_to(scratch / "state")
        saved = host_vm_warm.saved_state(host)
        hw.restore_started = host.go_on_after_save(ctx.timeout(120))
        started = _adopt_all(ctx, host, step, names, hw, {name: f"{name}-after-save" for name in names})
    except BaseException as e:  # Ctrl-C too: a half-written state file is as large as the guest's RAM
        shutil.rmtree(scratch, ignore_errors=True)
        if isinstance(e, (TestbedError, StepFailed)):
            raise StepFailed(f"host VM: saving it with its guests and going on from it failed: {e}") from e
        raise
    cache.publish(hw.key, scratch, {"key": hw.key, "vm": "host", "vms": names, "scenario": ctx.scenario.name,
                                    "image": ctx.image.directory.name, "qemu": ctx.qemu.version_text,
                                    "accel": "tcg", "saved_s": hw.saved_s, "host": saved,
                                    "created": time.time()})
    return started


def boot_in_host_vm(ctx: RunContext, step: BootStep, names: list[str]) -> Started:
    host = cast(VmHost, ctx.host)
    hw = host.warm
    assert hw is not None and hw.key is not None
    if hw.fails_on_fallback():  # hw.mode is this, the first, boot step's snapshot
        raise StepFailed(f"host VM: {hw.fallback}")
    if hw.restored_from is not None:
        try:
            started = _adopt_all(ctx, host, step, names, hw, {name: name for name in names})
            if (snap := warm_boot.cache(ctx).get(hw.key)) is not None:
                snap.touch()
            ctx.report.topology = host.describe()
            return started
        except (TestbedError, StepFailed) as e:
            if step.snapshot == "required":
                raise StepFailed(f"host VM: its guests did not come back from snapshot {hw.key}: {e}") from e
            logger.warning("host VM: guests not restored from %s, booting cold: %s", hw.key, e)
            hw.fallback, hw.restored_from = f"the guests of {hw.key} did not come back: {e}", None
            warm_boot.cache(ctx).drop(hw.key, str(e).splitlines()[0])
            _forget_guests(ctx, names, "went-with-the-restored-host-vm")
            host.restart_cold("host-restore-failed")
            ctx.start_deadline(step.timeout_s)  # a budget of its own, as a flat VM's fallback (steps/boot.py)
            host.start(*host.boot_args)
            ctx.watch.add(host.machine)
    cold = _boot_cold(ctx, step, names)
    started = _save_and_resume(ctx, host, step, names, hw)
    for name in names:
        started[name][0]["cold_boot"] = cold[name]
    ctx.report.topology = host.describe()
    return started
