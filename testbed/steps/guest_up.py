"""A guest coming up, after a launch or a restore: SSH into it, then its failover pairs settled."""

from __future__ import annotations

from typing import Any

from testbed.errors import StepFailed, TestbedError
from testbed.guest_shell import GuestShell
from testbed.run_context import RunContext
from testbed.scenario import BootStep
from testbed.steps.pairs import expected_now
from testbed.waiting import wait_until


def connect_booted(ctx: RunContext, name: str, timeout_s: float, marker: bool,
                   console_from: int = 0) -> dict[str, Any]:
    """SSH into a VM whose guest is booting; its seconds since launch, and where its clock sits on
    the run's. console_from: where on the serial console this boot's marker is to be looked for."""
    machine = ctx.machine(name)
    if name in ctx.shells:
        ctx.shells.pop(name).close()
    shell = GuestShell(name, ctx.netns, machine.plan.ssh_port, machine.image.ssh_key, machine.slowdown)
    ctx.shells[name] = shell
    try:
        if marker:  # a restored guest printed its marker in the run that saved it
            machine.wait_for_console("testbed: ssh up", ctx.timeout(timeout_s), after=console_from)
        shell.connect(ctx.timeout(timeout_s), alive=machine.alive)
    except TestbedError as e:
        raise StepFailed(f"{e}\n{machine.stderr_tail()}") from e
    timings = {"ssh_ready_s": round(ctx.clock.now() - (machine.launched_at or 0), 3)}
    # Places the guest's dmesg timestamps on the run clock (to a few ms: half an SSH round trip).
    before = ctx.clock.now()
    uptime = float(shell.run(["cat", "/proc/uptime"]).stdout.split()[0])
    timings["guest_clock_offset_s"] = round((before + ctx.clock.now()) / 2 - uptime, 3)
    return timings


def pairs_ready(ctx: RunContext, name: str, step: BootStep, timings: dict[str, Any]) -> None:
    if step.wait_for_pairs:
        # settle: a boot is done when udev has renamed every NIC, not merely when the pairs
        # showed up once under names that are about to change.
        check = expected_now(ctx, name, settle=True)
        wait_until(check, ctx.timeout(step.timeout_s), f"{name}'s failover pairs to settle")
        timings["pairs_ready_s"] = round(ctx.clock.now() - (ctx.machine(name).launched_at or 0), 3)
        # on the run's clock: what a host VM's own boot (or restore) before the guest's launch costs too
        timings["pairs_ready_in_run_s"] = round(ctx.clock.now(), 3)
        ctx.report.vms[name].netdevs = [n.as_dict() for n in check.last]
