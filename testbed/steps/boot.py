"""Booting VMs and checking what their guests and QEMU show."""

from __future__ import annotations

import logging
from typing import Any

from testbed.errors import StepFailed, TestbedError
from testbed.guest_shell import GuestShell
from testbed.run_context import RunContext
from testbed.scenario import BootStep, CheckDeviceStep, CheckNetdevsStep
from testbed.steps.pairs import pairs_check
from testbed.steps.registry import handles
from testbed.waiting import wait_until

logger = logging.getLogger(__name__)


@handles(BootStep)
def boot(ctx: RunContext, step: BootStep) -> dict[str, Any]:
    names = step.vms or [vm.name for vm in ctx.scenario.vms]
    for name in names:
        if name in ctx.machines:
            raise StepFailed(f"{name} is already running")
        ctx.start_machine(name)
    details: dict[str, Any] = {}
    for name in names:
        machine = ctx.machine(name)
        shell = GuestShell(name, ctx.netns, machine.plan.ssh_port, ctx.image.ssh_key, machine.slowdown)
        ctx.shells[name] = shell
        try:
            machine.wait_for_console("testbed: ssh up", ctx.timeout(step.timeout_s))
            shell.connect(ctx.timeout(step.timeout_s), alive=machine.alive)
        except TestbedError as e:
            raise StepFailed(f"{e}\n{machine.stderr_tail()}") from e
        ssh_ready = ctx.clock.now() - (machine.launched_at or 0)
        timings = {"ssh_ready_s": round(ssh_ready, 3)}
        # Places the guest's dmesg timestamps on the run clock (to a few ms: half an SSH round trip).
        before = ctx.clock.now()
        uptime = float(shell.run(["cat", "/proc/uptime"]).stdout.split()[0])
        timings["guest_clock_offset_s"] = round((before + ctx.clock.now()) / 2 - uptime, 3)
        if step.wait_for_pairs:
            # settle: a boot is done when udev has renamed every NIC, not merely when the pairs
            # showed up once under names that are about to change.
            check = pairs_check(ctx, name, None, None, settle=True)
            wait_until(check, ctx.timeout(step.timeout_s), f"{name}'s failover pairs to settle")
            timings["pairs_ready_s"] = round(ctx.clock.now() - (machine.launched_at or 0), 3)
            ctx.report.vms[name].netdevs = [n.as_dict() for n in check.last]
        ctx.report.vms[name].boot = timings
        details[name] = timings
        pairs = timings.get("pairs_ready_s")
        logger.info("%s: SSH after %ss, %s", name, timings["ssh_ready_s"],
                    "pairs not waited for" if pairs is None else f"pairs after {pairs}s")
    return details


@handles(CheckNetdevsStep)
def check_netdevs(ctx: RunContext, step: CheckNetdevsStep) -> dict[str, Any]:
    check = pairs_check(ctx, step.vm, step.pairs, step.expect)
    if step.wait:
        waited = wait_until(check, ctx.timeout(step.timeout_s), f"{step.vm}'s pairs to be {step.expect.value}")
    else:
        waited = 0.0
        if (problem := check()) is not None:
            raise StepFailed(f"{step.vm}: expected {step.expect.value}: {problem}")
    netdevs = check.last
    ctx.report.vms[step.vm].netdevs = [n.as_dict() for n in netdevs]
    return {"waited_s": round(waited, 3), "netdevs": [n.as_dict() for n in netdevs]}


def realized_devices(ctx: RunContext, vm: str) -> set[str]:
    ids: set[str] = set()

    def walk(devices: list[dict]) -> None:
        for dev in devices:
            if dev.get("qdev_id"):
                ids.add(dev["qdev_id"])
            walk(dev.get("pci_bridge", {}).get("devices", []))
    for bus in ctx.machine(vm).qmp.execute("query-pci"):
        walk(bus["devices"])
    return ids


@handles(CheckDeviceStep)
def check_primary_device(ctx: RunContext, step: CheckDeviceStep) -> dict[str, Any]:
    pair = ctx.plan(step.vm).pair(step.pair)
    assert pair.primary is not None
    machine = ctx.machine(step.vm)
    present = pair.primary.device_id in realized_devices(ctx, step.vm)
    negotiated = [r.data for r in machine.events.records() if r.event == "FAILOVER_NEGOTIATED"]
    details = {"device": pair.primary.device_id, "present": present, "failover_negotiated": negotiated}
    if present != step.present:
        raise StepFailed(f"{step.vm}: primary {pair.primary.device_id} is "
                         f"{'present' if present else 'absent'} on the guest's PCI bus, expected "
                         f"{'present' if step.present else 'absent'}; FAILOVER_NEGOTIATED events: {negotiated}")
    return details
