"""Steps that change a VM's run state: stop and cont over QMP, and a restart of its guest (QMP
system_reset or a reboot inside the guest) followed by the same checks a boot makes."""

from __future__ import annotations

import logging
from typing import Any

from testbed.errors import StepFailed, TestbedError
from testbed.kexec_disk import KEXECED_MARK, arm
from testbed.run_context import RunContext
from testbed.scenario import ContStep, ResetStep, StopStep
from testbed.steps.guest_up import connect_booted, pairs_ready
from testbed.steps.pairs import expected_now
from testbed.steps.registry import handles
from testbed.waiting import wait_until

logger = logging.getLogger(__name__)


def _status(ctx: RunContext, vm: str) -> str:
    return ctx.machine(vm).qmp.execute("query-status").get("status", "?")


@handles(StopStep)
def stop(ctx: RunContext, step: StopStep) -> dict[str, Any]:
    ctx.machine(step.vm).qmp.execute("stop")
    if (status := _status(ctx, step.vm)) != "paused":
        raise StepFailed(f"{step.vm}: QMP stop left the VM {status!r}, not 'paused'")
    return {"status": status}


@handles(ContStep)
def cont(ctx: RunContext, step: ContStep) -> dict[str, Any]:
    """A VM held by its boot step (hold: true) is then brought up as that step would have."""
    machine = ctx.machine(step.vm)
    held_s = round(ctx.clock.now() - (machine.launched_at or 0), 3)
    machine.cont()
    if (status := _status(ctx, step.vm)) != "running":
        raise StepFailed(f"{step.vm}: QMP cont left the VM {status!r}, not 'running'")
    details: dict[str, Any] = {"status": status}
    if (boot := ctx.held_boots.pop(step.vm, None)) is not None:
        ctx.start_deadline(boot.timeout_s)
        timings = connect_booted(ctx, step.vm, boot.timeout_s, marker=True)
        pairs_ready(ctx, step.vm, boot, timings)
        timings["held_s"] = held_s  # launch to cont: ssh_ready_s and pairs_ready_s count from the launch
        ctx.report.vms[step.vm].boot.update(timings)
        details["boot"] = timings
    return details


def _check_kexeced(ctx: RunContext, step: ResetStep) -> str:
    """The guest must run with the step's arguments: a guest that booted on as QEMU booted it
    (a failed kexec) would pass for one that ignores them."""
    cmdline = ctx.shell(step.vm).run(["cat", "/proc/cmdline"], timeout=20).stdout.strip()
    args = cmdline.split()
    missing = [a for a in step.kernel_args if a not in args]
    if KEXECED_MARK not in args or missing:
        raise StepFailed(f"{step.vm}: the guest did not boot again with {' '.join(step.kernel_args)!r}: its "
                         f"command line is {cmdline!r} (its init kexecs from the kexec disk; see its console)")
    return cmdline


@handles(ResetStep)
def reset(ctx: RunContext, step: ResetStep) -> dict[str, Any]:
    """QEMU runs with -no-reboot, so that a guest that resets by itself is reported as such. For the
    duration of this step the reboot action is `reset` (QMP set-action), then `shutdown` again."""
    ctx.start_deadline(step.timeout_s)
    machine = ctx.machine(step.vm)
    if (disk := ctx.plans[step.vm].kexec_disk) is not None:
        arm(disk, step.kernel_args or None)
    cursor, console_from = machine.events.cursor(), machine.console_size()
    machine.qmp.execute("set-action", {"reboot": "reset"})
    try:
        started = ctx.clock.now()
        if step.how == "system-reset":
            machine.qmp.execute("system_reset")
        else:
            # in the background, so that the SSH command returns before the guest goes
            ctx.shell(step.vm).run(["sh", "-c", "(sleep 0.3; reboot -f) >/dev/null 2>&1 &"], timeout=20)
        event = machine.events.wait_for("RESET", ctx.timeout(step.timeout_s), since=cursor)
        timings = connect_booted(ctx, step.vm, step.timeout_s, marker=True, console_from=console_from)
    finally:
        if machine.alive():
            try:
                machine.qmp.execute("set-action", {"reboot": "shutdown"})
            except TestbedError as e:
                logger.warning("%s: could not restore the reboot action: %s", step.vm, e)
    details: dict[str, Any] = {"how": step.how, "reset_event": event.data,
                               "reset_after_s": round(event.t - started, 3),
                               "ssh_after_s": round(ctx.clock.now() - started, 3)}
    if step.kernel_args:
        details["kernel_cmdline"] = _check_kexeced(ctx, step)
    # the guest's dmesg (read at the end) is this boot's: place it on the run clock by this offset
    ctx.report.vms[step.vm].boot["guest_clock_offset_s"] = timings["guest_clock_offset_s"]
    if step.wait_for_pairs:
        wait_until(expected_now(ctx, step.vm), ctx.timeout(step.timeout_s), f"{step.vm}'s pairs after the {step.how}")
        details["pairs_after_s"] = round(ctx.clock.now() - started, 3)
    return details
