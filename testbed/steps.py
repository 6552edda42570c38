"""Scenario steps. Each handler does one thing, raises TestbedError when it did not happen, and
returns details for the report."""

from __future__ import annotations

import time
from typing import Any, Callable

from testbed.errors import StepFailed, TestbedError, WaitTimeout
from testbed.failover_checks import default_expectation, explain, pair_problems
from testbed.guest_probe import Netdev, read_netdevs
from testbed.guest_shell import GuestShell
from testbed.runner import RunContext
from testbed.waiting import wait_until
from testbed.scenario import (BootStep, CheckDeviceStep, CheckNetdevsStep, Expectation, SleepStep,
                              Step)


def _pairs_check(shell: GuestShell, ctx: RunContext, vm: str, pair_names: list[str] | None,
                 expect: Expectation | None) -> Callable[[], str | None]:
    plan = ctx.plans[vm]
    pairs = [p for p in plan.pairs if pair_names is None or p.pair.name in pair_names]
    last: list[list[Netdev]] = [[]]

    def check() -> str | None:
        netdevs = read_netdevs(shell)
        last[0] = netdevs
        problems = [problem for p in pairs
                    for problem in pair_problems(netdevs, p, expect or default_expectation(p))]
        return explain(problems, netdevs) if problems else None
    check.last = last  # type: ignore[attr-defined]
    return check


def boot(ctx: RunContext, step: BootStep) -> dict[str, Any]:
    names = step.vms or [vm.name for vm in ctx.scenario.vms]
    for name in names:
        ctx.start_machine(name)
    details: dict[str, Any] = {}
    for name in names:
        machine = ctx.machine(name)
        shell = GuestShell(name, ctx.netns, ctx.plans[name].ssh_port, ctx.image.ssh_key)
        ctx.shells[name] = shell
        try:
            machine.wait_for_console("testbed: ssh up", ctx.timeout(step.timeout_s))
            shell.connect(ctx.timeout(step.timeout_s), alive=machine.alive)
        except TestbedError as e:
            raise StepFailed(f"{e}\n{machine.stderr_tail()}") from e
        ssh_ready = ctx.clock.now() - (machine.launched_at or 0)
        timings = {"ssh_ready_s": round(ssh_ready, 3)}
        if step.wait_for_pairs:
            check = _pairs_check(shell, ctx, name, None, None)
            wait_until(check, ctx.timeout(step.timeout_s), f"{name}'s failover pairs to settle")
            timings["pairs_ready_s"] = round(ctx.clock.now() - (machine.launched_at or 0), 3)
            ctx.report.vms[name].netdevs = [n.as_dict() for n in check.last[0]]  # type: ignore[attr-defined]
        ctx.report.vms[name].boot = timings
        details[name] = timings
        ctx.log(f"{name}: SSH after {timings['ssh_ready_s']}s, pairs after {timings.get('pairs_ready_s')}s")
    return details


def check_netdevs(ctx: RunContext, step: CheckNetdevsStep) -> dict[str, Any]:
    check = _pairs_check(ctx.shell(step.vm), ctx, step.vm, step.pairs, step.expect)
    if step.wait:
        waited = wait_until(check, ctx.timeout(step.timeout_s), f"{step.vm}'s pairs to be {step.expect}")
    else:
        waited = 0.0
        if (problem := check()) is not None:
            raise StepFailed(f"{step.vm}: expected {step.expect}: {problem}")
    netdevs = check.last[0]  # type: ignore[attr-defined]
    ctx.report.vms[step.vm].netdevs = [n.as_dict() for n in netdevs]
    return {"waited_s": round(waited, 3), "netdevs": [n.as_dict() for n in netdevs]}


def _realized_devices(ctx: RunContext, vm: str) -> set[str]:
    ids: set[str] = set()

    def walk(devices: list[dict]) -> None:
        for dev in devices:
            if dev.get("qdev_id"):
                ids.add(dev["qdev_id"])
            bridge = dev.get("pci_bridge", {})
            walk(bridge.get("devices", []))
    for bus in ctx.machine(vm).qmp.execute("query-pci"):
        walk(bus["devices"])
    return ids


def check_primary_device(ctx: RunContext, step: CheckDeviceStep) -> dict[str, Any]:
    pair = ctx.plans[step.vm].pair(step.pair)
    assert pair.primary is not None
    machine = ctx.machine(step.vm)
    present = pair.primary.device_id in _realized_devices(ctx, step.vm)
    negotiated = [r.data for r in machine.events.records() if r.event == "FAILOVER_NEGOTIATED"]
    details = {"device": pair.primary.device_id, "present": present, "failover_negotiated": negotiated}
    if present != step.present:
        raise StepFailed(f"{step.vm}: primary {pair.primary.device_id} is "
                         f"{'present' if present else 'absent'} on the guest's PCI bus, expected "
                         f"{'present' if step.present else 'absent'}; FAILOVER_NEGOTIATED events: {negotiated}")
    return details


def sleep(ctx: RunContext, step: SleepStep) -> dict[str, Any]:
    time.sleep(step.seconds)
    return {}


HANDLERS: dict[type, Callable[[RunContext, Any], dict[str, Any] | None]] = {
    BootStep: boot,
    CheckNetdevsStep: check_netdevs,
    CheckDeviceStep: check_primary_device,
    SleepStep: sleep,
}


def run_step(ctx: RunContext, step: Step) -> dict[str, Any] | None:
    return HANDLERS[type(step)](ctx, step)
