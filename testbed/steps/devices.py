"""Steps that act on one VM's devices, its host bridge or its guest: hot-unplug and re-plug over
QMP, link state, announce-self, bridge FDB entries, commands in the guest, sleeps and pauses."""

from __future__ import annotations

from typing import Any

from testbed.errors import StepFailed
from testbed.hold import hold
from testbed.plan import NicPlan
from testbed.qemu_argv import primary_props, standby_props
from testbed.run_context import RunContext
from testbed.guest_probe import read_netdevs
from testbed.scenario import (AnnounceSelfStep, ExecStep, FdbStep, MtuStep, Nic, PauseStep, PlugPrimaryStep,
                              PlugStandbyStep, SetLinkStep, SleepStep, UnplugPrimaryStep, UnplugStandbyStep,
                              VfMacStep)
from testbed.steps.pairs import expected_now
from testbed.steps.registry import handles
from testbed.waiting import wait_until, watchful_sleep


def pair_nic(ctx: RunContext, vm: str, pair_name: str, nic: Nic) -> NicPlan:
    pair = ctx.plan(vm).pair(pair_name)
    found = pair.standby if nic == Nic.STANDBY else pair.primary
    if found is None:
        raise StepFailed(f"{vm}/{pair_name} has no {nic.value}")
    return found


@handles(UnplugPrimaryStep)
def unplug_primary(ctx: RunContext, step: UnplugPrimaryStep) -> dict[str, Any]:
    machine = ctx.machine(step.vm)
    device = pair_nic(ctx, step.vm, step.pair, Nic.PRIMARY).device_id
    ctx.absent_devices.setdefault(step.vm, set()).add(device)
    started = ctx.clock.now()
    deleted_after = machine.device_del(device, ctx.timeout(step.timeout_s))
    check = expected_now(ctx, step.vm, [step.pair])
    wait_until(check, ctx.timeout(step.timeout_s), f"{step.vm} to show {step.pair} without a primary")
    return {"device": device, "device_deleted_after_s": deleted_after,
            "guest_settled_after_s": round(ctx.clock.now() - started, 3)}


@handles(UnplugStandbyStep)
def unplug_standby(ctx: RunContext, step: UnplugStandbyStep) -> dict[str, Any]:
    machine = ctx.machine(step.vm)
    nic = pair_nic(ctx, step.vm, step.pair, Nic.STANDBY)
    deleted_after = machine.device_del(nic.device_id, ctx.timeout(step.timeout_s))
    shell = ctx.shell(step.vm)

    def standby_gone() -> str | None:
        left = [n.name for n in read_netdevs(shell) if n.driver == "virtio_net" and n.mac == nic.mac]
        return f"virtio_net netdevs with MAC {nic.mac} still there: {left}" if left else None
    wait_until(standby_gone, ctx.timeout(step.timeout_s), f"{step.vm}'s standby netdev to go")
    ctx.absent_devices.setdefault(step.vm, set()).add(nic.device_id)
    return {"device": nic.device_id, "device_deleted_after_s": deleted_after,
            "netdevs": [n.as_dict() for n in read_netdevs(shell) if n.mac == nic.mac]}


@handles(PlugStandbyStep)
def plug_standby(ctx: RunContext, step: PlugStandbyStep) -> dict[str, Any]:
    machine = ctx.machine(step.vm)
    pair = ctx.plan(step.vm).pair(step.pair)
    started = ctx.clock.now()
    machine.qmp.execute("device_add", {"driver": "virtio-net-pci", **standby_props(pair)})
    ctx.absent_devices.setdefault(step.vm, set()).discard(pair.standby.device_id)
    details: dict[str, Any] = {"device": pair.standby.device_id}
    if step.wait:
        check = expected_now(ctx, step.vm, [step.pair])
        wait_until(check, ctx.timeout(step.timeout_s), f"{step.vm} to show {step.pair} with its standby plugged")
        details["guest_settled_after_s"] = round(ctx.clock.now() - started, 3)
        details["netdevs"] = [n.as_dict() for n in check.last if n.mac == pair.pair.mac]
    return details


def add_primary(ctx: RunContext, vm: str, pair: str, overrides: dict[str, str] | None = None) -> dict[str, Any]:
    """device_add of the pair's primary with its launch properties (and the step's overrides of
    failover_pair_id or mac); a host-vf primary's VF gets the pair's MAC through the PF first, as a
    host does before it hands a VF to a guest."""
    props = {**primary_props(ctx.plan(vm).pair(pair)), **(overrides or {})}
    details: dict[str, Any] = {"device": props["id"], **({"overrides": overrides} if overrides else {})}
    if vf_macs := ctx.host.take_vfs(ctx.plan(vm), [pair]):
        details["vf_mac_set"] = vf_macs[0]
    ctx.machine(vm).qmp.execute("device_add", props)
    ctx.absent_devices.setdefault(vm, set()).discard(str(props["id"]))
    return details


@handles(PlugPrimaryStep)
def plug_primary(ctx: RunContext, step: PlugPrimaryStep) -> dict[str, Any]:
    started = ctx.clock.now()
    overrides = {k: v for k, v in (("failover_pair_id", step.failover_pair_id), ("mac", step.mac)) if v is not None}
    details = add_primary(ctx, step.vm, step.pair, overrides)
    if step.wait:
        check = expected_now(ctx, step.vm, [step.pair])  # paired, or a plain NIC if no standby is plugged
        wait_until(check, ctx.timeout(step.timeout_s), f"{step.vm} to enslave {step.pair}'s primary again")
        details["guest_paired_after_s"] = round(ctx.clock.now() - started, 3)
    return details


@handles(SetLinkStep)
def set_link(ctx: RunContext, step: SetLinkStep) -> dict[str, Any]:
    nic = pair_nic(ctx, step.vm, step.pair, step.nic)
    ctx.machine(step.vm).qmp.execute("set_link", {"name": nic.device_id, "up": step.up})
    return {"device": nic.device_id, "up": step.up}


@handles(AnnounceSelfStep)
def announce_self(ctx: RunContext, step: AnnounceSelfStep) -> dict[str, Any]:
    args = {"initial": step.initial_ms, "max": step.max_ms, "rounds": step.rounds, "step": step.step_ms}
    ctx.machine(step.vm).qmp.execute("announce-self", args)
    return args


@handles(FdbStep)
def fdb(ctx: RunContext, step: FdbStep) -> dict[str, Any]:
    port = ctx.host.bridge_port(ctx.plan(step.vm), step.pair, step.port.value)
    mac = step.mac or ctx.plan(step.vm).pair(step.pair).pair.mac
    before = ctx.host.run(["bridge", "fdb", "show", "dev", port])
    existed = any(line.startswith(f"{mac} ") and " master " in line for line in before.splitlines())
    if step.op == "del":
        if existed:
            ctx.host.run(["bridge", "fdb", "del", mac, "dev", port, "master"])
    else:
        # sticky: learning from the other port must not move a pinned entry (plain static ones move)
        ctx.host.run(["bridge", "fdb", "replace", mac, "dev", port, "master", "static", "sticky"])
    return {"op": step.op, "mac": mac, "port": port, "entry_existed": existed}


@handles(VfMacStep)
def vf_mac(ctx: RunContext, step: VfMacStep) -> dict[str, Any]:
    plan = ctx.plan(step.vm)
    mac = plan.pair(step.pair).pair.mac if step.mac == "pair" else step.mac
    return ctx.host.set_vf_mac(plan, step.pair, mac)


@handles(ExecStep)
def exec_(ctx: RunContext, step: ExecStep) -> dict[str, Any]:
    ctx.machine(step.vm)
    if step.where == "host":
        result = ctx.host.exec(step.command, timeout=ctx.timeout(step.timeout_s))
    else:
        result = ctx.shell(step.vm).run(step.command, timeout=ctx.timeout(step.timeout_s), check=False)
    details = {"exit_status": result.exit_status, "stdout": result.stdout[-4000:], "stderr": result.stderr[-4000:]}
    if result.exit_status != step.expect_status:
        where = "the host" if step.where == "host" else step.vm
        raise StepFailed(f"{where}: {step.command!r} exited {result.exit_status}, expected "
                         f"{step.expect_status}: {(result.stderr or result.stdout).strip()[-500:]}")
    return details


@handles(MtuStep)
def mtu(ctx: RunContext, step: MtuStep) -> dict[str, Any]:
    """The netdev is found by its role and the pair's MAC, as the pairs check finds it: its name is
    udev's."""
    shell = ctx.shell(step.vm)
    mac = ctx.plan(step.vm).pair(step.pair).pair.mac
    netdevs = read_netdevs(shell)
    found = [n for n in netdevs if n.role.value == step.nic and n.mac == mac]
    if len(found) != 1:
        raise StepFailed(f"{step.vm}: expected one {step.nic} netdev with MAC {mac}, found "
                         f"{[n.name for n in found] or 'none'}")
    name = found[0].name
    result = shell.run(["ip", "link", "set", "dev", name, "mtu", str(step.mtu)], check=False,
                       timeout=ctx.timeout(step.timeout_s))
    names = [n.name for n in read_netdevs(shell) if n.mac == mac]
    listed = shell.run(["sh", "-c", 'for n; do echo "$n $(cat "/sys/class/net/$n/mtu")"; done', "sh", *names],
                       timeout=20, check=False).stdout
    after = {fields[0]: int(fields[1]) for fields in (line.split() for line in listed.splitlines())
             if len(fields) == 2 and fields[1].isdigit()}
    details = {"netdev": name, "exit_status": result.exit_status, "stderr": result.stderr.strip()[-500:],
               "mtus": after}
    if step.expect_error is None and result.exit_status != 0:
        raise StepFailed(f"{step.vm}: ip link set dev {name} mtu {step.mtu} failed: {result.stderr.strip()}")
    if step.expect_error is not None and (result.exit_status == 0 or step.expect_error not in result.stderr):
        raise StepFailed(f"{step.vm}: ip link set dev {name} mtu {step.mtu} exited {result.exit_status} "
                         f"({result.stderr.strip() or 'no error'}), expected an error with "
                         f"{step.expect_error!r}")
    return details


@handles(SleepStep)
def sleep(ctx: RunContext, step: SleepStep) -> dict[str, Any]:
    watchful_sleep(step.seconds)
    return {}


@handles(PauseStep)
def pause(ctx: RunContext, step: PauseStep) -> dict[str, Any]:
    if not ctx.options.keep:
        return {"held": False}
    if not hold(ctx, step.message or "pause step", resumable=True):
        raise StepFailed("torn down at the pause step (testbed down)")
    return {"held": True}
