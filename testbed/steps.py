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
from testbed.datapath import path_shares, stable
from testbed.plan import PairPlan
from testbed.qemu_argv import primary_props
from testbed.scenario import (AnnounceSelfStep, BootStep, CheckDeviceStep, CheckNetdevsStep,
                              CheckTrafficStep, ExecStep, Expectation, FdbStep, MigrateStep, Nic, Path_,
                              PauseStep,
                              PlugPrimaryStep, SetLinkStep, SleepStep, StartTrafficStep, Step,
                              UnplugPrimaryStep)
from testbed.traffic import PingProbe, StepWindow, TcpProbe, TrafficSession

TCP_ECHO_PORT_BASE = 5001


class PairsCheck:
    """Reads the guest's netdevs and describes what differs from each pair's expectation (None when
    everything is as expected). `last` keeps the netdevs of the latest reading for the report."""

    def __init__(self, shell: GuestShell, pairs: list[PairPlan], expect: Callable[[PairPlan], Expectation]):
        self.shell, self.pairs, self.expect = shell, pairs, expect
        self.last: list[Netdev] = []

    def __call__(self) -> str | None:
        self.last = read_netdevs(self.shell)
        problems = [problem for p in self.pairs for problem in pair_problems(self.last, p, self.expect(p))]
        return explain(problems, self.last) if problems else None


def _pairs_check(shell: GuestShell, ctx: RunContext, vm: str, pair_names: list[str] | None,
                 expect: Expectation | None) -> PairsCheck:
    pairs = [p for p in ctx.plan(vm).pairs if pair_names is None or p.pair.name in pair_names]
    return PairsCheck(shell, pairs, lambda p: expect or default_expectation(p))


def boot(ctx: RunContext, step: BootStep) -> dict[str, Any]:
    names = step.vms or [vm.name for vm in ctx.scenario.vms]
    for name in names:
        ctx.start_machine(name)
    details: dict[str, Any] = {}
    for name in names:
        machine = ctx.machine(name)
        shell = GuestShell(name, ctx.netns, machine.plan.ssh_port, ctx.image.ssh_key)
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
            check = _pairs_check(shell, ctx, name, None, None)
            wait_until(check, ctx.timeout(step.timeout_s), f"{name}'s failover pairs to settle")
            timings["pairs_ready_s"] = round(ctx.clock.now() - (machine.launched_at or 0), 3)
            ctx.report.vms[name].netdevs = [n.as_dict() for n in check.last]
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
    netdevs = check.last
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
    pair = ctx.plan(step.vm).pair(step.pair)
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


def start_traffic(ctx: RunContext, step: StartTrafficStep) -> dict[str, Any]:
    key = (step.vm, step.pair)
    if key in ctx.traffic:
        raise StepFailed(f"traffic for {step.vm}/{step.pair} is already running")
    plan = ctx.plan(step.vm)
    pair = plan.pair(step.pair)
    assert pair.pair.address is not None and ctx.peer is not None
    target = str(pair.pair.address.ip)
    tcp = None
    if step.tcp:
        port = TCP_ECHO_PORT_BASE + plan.pairs.index(pair)
        # socat echoes every byte back, so the peer sees both directions of one connection.
        log = f"/tmp/tcp-echo-{port}.log"
        shell = ctx.shell(step.vm)
        shell.run(["/usr/lib/testbed/detach", log, "socat", f"TCP-LISTEN:{port},bind={target},reuseaddr",
                   "EXEC:/bin/cat"], timeout=10)
        tcp = TcpProbe(ctx.peer, target, port, ctx.clock, rate_bytes_s=step.tcp_rate_kib_s * 1024)
        try:
            wait_until(lambda: _try_start(tcp), ctx.timeout(min(step.timeout_s, 15)),
                       f"TCP echo server {target}:{port}", interval=0.1)
        except WaitTimeout as e:
            raise StepFailed(f"{e}; guest's {log}: {shell.run(['cat', log], check=False).stdout.strip()!r}") from e
    ping = PingProbe(ctx.peer, target, ctx.clock, interval_s=step.interval_ms / 1000)
    ping.start()
    index = len(ctx.report.steps) - 1
    ctx.traffic[key] = TrafficSession(step.vm, step.pair, target, ping, tcp, index, index + 1)
    # The window of the first check starts with the step after this one, once ping is flowing.
    wait_until(lambda: None if ping.replies else "no echo reply yet", ctx.timeout(step.timeout_s),
               f"the first echo reply from {target}", interval=0.05)
    return {"target": target, "interval_ms": step.interval_ms, "tcp": bool(tcp)}


def _try_start(tcp: TcpProbe) -> str | None:
    try:
        tcp.start()
        return None
    except OSError as e:
        return str(e)


def _pair_nic(ctx: RunContext, vm: str, pair_name: str, nic: Nic):
    pair = ctx.plan(vm).pair(pair_name)
    return pair.standby if nic == Nic.STANDBY else pair.primary


def unplug_primary(ctx: RunContext, step: UnplugPrimaryStep) -> dict[str, Any]:
    machine = ctx.machine(step.vm)
    device = ctx.plan(step.vm).pair(step.pair).primary.device_id  # type: ignore[union-attr]
    ctx.absent_primaries.setdefault(step.vm, set()).add(step.pair)
    cursor = machine.events.cursor()
    started = ctx.clock.now()
    machine.qmp.execute("device_del", {"id": device})
    event = machine.events.wait_for("DEVICE_DELETED", ctx.timeout(step.timeout_s), since=cursor,
                                    match=lambda d: d.get("device") == device)
    check = _pairs_check(ctx.shell(step.vm), ctx, step.vm, [step.pair], Expectation.STANDBY_ONLY)
    wait_until(check, ctx.timeout(step.timeout_s), f"{step.vm} to show {step.pair} without a primary")
    return {"device": device, "device_deleted_after_s": round(event.t - started, 3),
            "guest_settled_after_s": round(ctx.clock.now() - started, 3)}


def plug_primary(ctx: RunContext, step: PlugPrimaryStep) -> dict[str, Any]:
    machine = ctx.machine(step.vm)
    props = primary_props(ctx.plan(step.vm).pair(step.pair))
    started = ctx.clock.now()
    machine.qmp.execute("device_add", props)
    ctx.absent_primaries.setdefault(step.vm, set()).discard(step.pair)
    details: dict[str, Any] = {"device": props["id"]}
    if step.wait:
        check = _pairs_check(ctx.shell(step.vm), ctx, step.vm, [step.pair], Expectation.PAIRED)
        wait_until(check, ctx.timeout(step.timeout_s), f"{step.vm} to enslave {step.pair}'s primary again")
        details["guest_paired_after_s"] = round(ctx.clock.now() - started, 3)
    return details


def set_link(ctx: RunContext, step: SetLinkStep) -> dict[str, Any]:
    nic = _pair_nic(ctx, step.vm, step.pair, step.nic)
    ctx.machine(step.vm).qmp.execute("set_link", {"name": nic.device_id, "up": step.up})
    return {"device": nic.device_id, "up": step.up}


def announce_self(ctx: RunContext, step: AnnounceSelfStep) -> dict[str, Any]:
    args = {"initial": step.initial_ms, "max": step.max_ms, "rounds": step.rounds, "step": step.step_ms}
    ctx.machine(step.vm).qmp.execute("announce-self", args)
    return args


def fdb(ctx: RunContext, step: FdbStep) -> dict[str, Any]:
    nic = _pair_nic(ctx, step.vm, step.pair, step.port)
    mac = step.mac or ctx.plan(step.vm).pair(step.pair).pair.mac
    before = ctx.netns.run(["bridge", "fdb", "show", "dev", nic.tap])
    existed = any(line.startswith(f"{mac} ") and " master " in line for line in before.splitlines())
    if step.op == "del":
        if existed:
            ctx.netns.run(["bridge", "fdb", "del", mac, "dev", nic.tap, "master"])
    else:
        # sticky: learning from the other port must not move a pinned entry (plain static ones move)
        ctx.netns.run(["bridge", "fdb", "replace", mac, "dev", nic.tap, "master", "static", "sticky"])
    return {"op": step.op, "mac": mac, "port": nic.tap, "entry_existed": existed}


def exec_(ctx: RunContext, step: ExecStep) -> dict[str, Any]:
    result = ctx.shell(step.vm).run(step.command, timeout=ctx.timeout(step.timeout_s), check=False)
    details = {"exit_status": result.exit_status, "stdout": result.stdout[-4000:], "stderr": result.stderr[-4000:]}
    if result.exit_status != step.expect_status:
        raise StepFailed(f"{step.vm}: {step.command!r} exited {result.exit_status}, expected "
                         f"{step.expect_status}: {(result.stderr or result.stdout).strip()[-500:]}")
    return details


def step_windows(ctx: RunContext) -> list[StepWindow]:
    now = ctx.clock.now()
    return [StepWindow(s.index, s.action, s.started_s, s.ended_s if s.ended_s is not None else now)
            for s in ctx.report.steps]


def check_traffic(ctx: RunContext, step: CheckTrafficStep) -> dict[str, Any]:
    session = ctx.traffic.get((step.vm, step.pair))
    if session is None:
        raise StepFailed(f"no traffic is running for {step.vm}/{step.pair}")
    current = len(ctx.report.steps) - 1
    window = list(range(session.window_start, current))
    session.window_start = current + 1
    # Judge completed gaps: an outage still open when the check starts is waited out first.
    fresh = max(0.2, 3 * session.ping.interval_s)

    def flowing() -> str | None:
        last = session.ping.replies[-1].t if session.ping.replies else session.ping.started_s
        silent = ctx.clock.now() - last
        return None if silent < fresh else f"no echo reply for the last {silent * 1000:.0f} ms"
    try:
        recovered_after = wait_until(flowing, ctx.timeout(step.timeout_s), f"echo replies from {session.target}",
                                     interval=0.02)
    except WaitTimeout as e:
        raise StepFailed(f"{step.vm}/{step.pair}: outage in progress: {e}") from e
    result = session.ping.result(step_windows(ctx))
    gaps = [g for g in result.gaps if g.step in window]
    problems: list[str] = []
    details: dict[str, Any] = {"window_steps": window, "waited_for_recovery_s": round(recovered_after, 3),
                               "gaps": [{"start_s": g.start_s, "end_s": g.end_s, "ms": g.ms, "lost": g.lost,
                                         "step": g.step, "step_action": g.step_action} for g in gaps]}
    worst = max(gaps, key=lambda g: g.ms, default=None)
    lost = sum(g.lost for g in gaps)
    details.update({"max_gap_ms": worst.ms if worst else 0.0, "lost": lost})
    if step.max_gap_ms is not None and worst is not None and worst.ms > step.max_gap_ms:
        problems.append(f"gap of {worst.ms} ms ({worst.lost} echoes lost) in step {worst.step} "
                        f"({worst.step_action}) exceeds max_gap_ms {step.max_gap_ms}")
    if step.max_lost is not None and lost > step.max_lost:
        problems.append(f"{lost} echoes lost in steps {window}, more than max_lost {step.max_lost}")
    # Datapath: only steps whose slaves were the same netdevs at both ends tell who carried what.
    deltas = [ctx.report.steps[i].counters for i in window
              if i in ctx.snapshots and i + 1 in ctx.snapshots
              and stable(ctx.snapshots[i], ctx.snapshots[i + 1], step.vm, step.pair)]
    shares, packets = path_shares(deltas, step.vm, step.pair)
    details["path"] = {"steps_measured": len(deltas), "slave_packets": packets,
                       "shares": {k: round(v, 3) for k, v in shares.items()}}
    if step.path != Path_.ANY:
        if not deltas:
            problems.append(f"path {step.path}: no step in {window} kept the same slaves from start to end")
        elif packets < step.min_packets:
            problems.append(f"path {step.path}: only {packets} packets crossed the slaves in steps {window}")
        elif shares[step.path.value] < 0.9:
            problems.append(f"path {step.path}: the {step.path} carried {shares[step.path.value]:.0%} of "
                            f"{packets} packets (standby {shares['standby']:.0%}, primary {shares['primary']:.0%})")
    if session.tcp is not None:
        tcp = session.tcp.result()
        details["tcp"] = {"bytes_echoed": tcp.bytes_echoed, "max_stall_ms": tcp.max_stall_ms, "error": tcp.error}
        if tcp.error:
            problems.append(f"TCP connection failed at {tcp.error_s:.3f}s: {tcp.error}")
        if step.tcp_max_stall_ms is not None and tcp.max_stall_ms > step.tcp_max_stall_ms:
            problems.append(f"TCP stalled for {tcp.max_stall_ms} ms, more than tcp_max_stall_ms {step.tcp_max_stall_ms}")
    if problems:
        raise StepFailed(f"{step.vm}/{step.pair}: " + "; ".join(problems))
    return details


def traffic_report(ctx: RunContext, session: TrafficSession) -> list[dict[str, Any]]:
    windows = step_windows(ctx)
    ping = session.ping.result(windows)
    bin_s = 0.01
    replies = sorted(r.t for r in session.ping.replies if not r.duplicate)
    counts: list[int] = []
    if replies:
        counts = [0] * (int((replies[-1] - session.ping.started_s) / bin_s) + 1)
        for t in replies:
            counts[max(0, int((t - session.ping.started_s) / bin_s))] += 1
    entries: list[dict[str, Any]] = [{
        "vm": session.vm, "pair": session.pair, "probe": "ping", "target": session.target,
        "timeline": {"start_s": round(session.ping.started_s, 4), "bin_s": bin_s, "received": counts},
        "log": str(ctx.options.artifacts_dir / f"traffic-{session.vm}-{session.pair}.log"),
        "interval_ms": session.ping.interval_s * 1000, "sent": ping.sent, "received": ping.received,
        "lost": ping.lost, "duplicates": ping.duplicates, "reordered": ping.reordered,
        "max_gap_ms": ping.max_gap_ms,
        "gaps": [{"start_s": g.start_s, "end_s": g.end_s, "ms": g.ms, "lost": g.lost, "step": g.step,
                  "step_action": g.step_action} for g in ping.gaps]}]
    if session.tcp is not None:
        tcp = session.tcp.result()
        entries.append({
            "vm": session.vm, "pair": session.pair, "probe": "tcp", "target": session.target,
            "bytes_sent": tcp.bytes_sent, "bytes_echoed": tcp.bytes_echoed, "max_stall_ms": tcp.max_stall_ms,
            "error": tcp.error, "error_s": tcp.error_s,
            "bytes_per_step": {w.index: tcp.bytes_between(w.started_s, w.ended_s) for w in windows}})
    return entries


MIGRATION_EVENTS = {"MIGRATION", "UNPLUG_PRIMARY", "FAILOVER_NEGOTIATED", "DEVICE_DELETED", "MIGRATION_PASS"}
# After migrate_cancel in wait-unplug, QEMU keeps waiting up to 30 s (120 x 250 ms, migration.c
# qemu_savevm_wait_unplug) for an unplug it already started, so that it can plug the card back,
# before it reports 'cancelled'. The testbed allows that plus a margin.
CANCEL_GRACE_S = 30 + 15
TERMINAL = {"completed", "failed", "cancelled"}


def _follow_migration(ctx: RunContext, src, step: MigrateStep, since: int) -> tuple[str, str | None, list]:
    """Follows the source's MIGRATION events to a terminal status. Cancels in wait-unplug after
    wait_unplug_timeout_s (QEMU would wait forever), or where cancel_in says."""
    statuses: list[tuple[float, str]] = []
    cancelled_by: str | None = None
    deadline = ctx.clock.now() + ctx.timeout(step.timeout_s)
    unplug_deadline: float | None = None
    index = since
    while True:
        now = ctx.clock.now()
        limit = min(deadline, unplug_deadline or deadline) - now
        hit = src.events.next({"MIGRATION"}, index, limit)
        if hit is None:
            if cancelled_by is not None:
                raise StepFailed(f"{step.vm}: migrate_cancel issued ({cancelled_by}) but no 'cancelled' came; "
                                 f"statuses: {statuses}")
            cancelled_by = "wait-unplug timeout" if unplug_deadline and ctx.clock.now() >= unplug_deadline \
                else "step timeout"
            ctx.log(f"{step.vm}: migration stuck in {statuses[-1][1] if statuses else 'nothing'}; migrate_cancel")
            src.qmp.execute("migrate_cancel")
            unplug_deadline, deadline = None, ctx.clock.now() + CANCEL_GRACE_S
            continue
        index = hit[0] + 1
        status = hit[1].data["status"]
        statuses.append((hit[1].t, status))
        if status in TERMINAL:
            return status, cancelled_by, statuses
        unplug_deadline = hit[1].t + ctx.timeout(step.wait_unplug_timeout_s) if status == "wait-unplug" else None
        if step.cancel_in == status and cancelled_by is None:
            cancelled_by = f"cancel_in {status}"
            src.qmp.execute("migrate_cancel")


def _events_since(machine, since: int) -> list[dict[str, Any]]:
    return [{"t": r.t, "event": r.event, "data": r.data}
            for r in machine.events.records()[since:] if r.event in MIGRATION_EVENTS]


def _reconnect(ctx: RunContext, vm: str, timeout: float) -> None:
    if vm in ctx.shells:
        ctx.shells.pop(vm).close()
    machine = ctx.machine(vm)
    shell = GuestShell(vm, ctx.netns, machine.plan.ssh_port, ctx.image.ssh_key)
    shell.connect(timeout, alive=machine.alive)
    ctx.shells[vm] = shell


def _expected_after_migration(ctx: RunContext, vm: str) -> PairsCheck:
    """Pairs whose primary a step unplugged stay standby-only; the others as they boot."""
    absent = ctx.absent_primaries.get(vm, set())
    return PairsCheck(ctx.shell(vm), ctx.plan(vm).pairs,
                      lambda p: Expectation.STANDBY_ONLY if p.pair.name in absent else default_expectation(p))


def _migrate_once(ctx: RunContext, step: MigrateStep, number: int) -> dict[str, Any]:
    src = ctx.machine(step.vm)
    slot = 1 - src.plan.slot
    label = f"{step.vm}-migration{len(ctx.report.migrations) + 1}"
    dst = ctx.new_machine(step.vm, slot, incoming=True, label=label)
    ctx.retired.append(dst)  # torn down whatever happens; swapped in below if the migration completes
    sock = ctx.scratch_dir() / f"{step.vm}-{len(ctx.report.migrations) + 1}.sock"
    entry: dict[str, Any] = {"vm": step.vm, "number": number + 1, "from_slot": src.plan.slot, "to_slot": slot,
                             "destination_artifacts": str(dst.artifacts.directory)}
    ctx.report.migrations.append(entry)
    dst.launch()
    capabilities = {"capabilities": [{"capability": "events", "state": True}]}
    for machine in (src, dst):
        machine.qmp.execute("migrate-set-capabilities", capabilities)
    dst.qmp.execute("migrate-incoming", {"uri": f"unix:{sock}"})
    src_cursor, dst_cursor = src.events.cursor(), dst.events.cursor()
    started = ctx.clock.now()
    src.qmp.execute("migrate", {"uri": f"unix:{sock}"})
    status, cancelled_by, statuses = _follow_migration(ctx, src, step, src_cursor)
    info = src.qmp.execute("query-migrate")
    wait_unplug_ms = next((round((statuses[i + 1][0] - t) * 1000, 1) for i, (t, s) in enumerate(statuses[:-1])
                           if s == "wait-unplug"), None)
    entry.update({
        "status": status, "cancelled_by": cancelled_by, "started_s": round(started, 3),
        "ended_s": round(ctx.clock.now(), 3), "statuses": [s for _, s in statuses],
        "total_time_ms": info.get("total-time"), "downtime_ms": info.get("downtime"),
        "setup_time_ms": info.get("setup-time"), "wait_unplug_ms": wait_unplug_ms,
        "events": _events_since(src, src_cursor)})
    if status == "completed":
        ctx.retired.append(src)
        ctx.machines[step.vm] = dst
        src.shutdown()
        _reconnect(ctx, step.vm, ctx.timeout(60))
        if step.wait_for_pairs:
            waited = wait_until(_expected_after_migration(ctx, step.vm), ctx.timeout(step.timeout_s),
                                f"{step.vm}'s pairs on the destination")
            entry["destination_pairs_ready_after_s"] = round(waited, 3)
    else:
        dst.shutdown()
        if step.wait_for_pairs:
            # QEMU re-plugs a primary it unplugged for the migration; the source must be whole again.
            waited = wait_until(_expected_after_migration(ctx, step.vm), ctx.timeout(60),
                                f"{step.vm}'s pairs back on the source after a {status} migration")
            entry["source_pairs_ready_after_s"] = round(waited, 3)
    entry["destination_events"] = _events_since(dst, dst_cursor)
    return entry


def migrate(ctx: RunContext, step: MigrateStep) -> dict[str, Any]:
    entries = []
    for number in range(step.count):
        entry = _migrate_once(ctx, step, number)
        entries.append(entry)
        ctx.log(f"{step.vm}: migration {number + 1}/{step.count} {entry['status']} "
                f"(total {entry['total_time_ms']} ms, downtime {entry['downtime_ms']} ms, "
                f"wait-unplug {entry['wait_unplug_ms']} ms)")
        if entry["status"] != "completed":
            break
    last = entries[-1]
    if last["status"] != step.expect or (step.expect == "completed" and len(entries) < step.count):
        raise StepFailed(f"{step.vm}: migration {last['number']} ended {last['status']!r} "
                         f"(cancelled by {last['cancelled_by']}), expected {step.expect!r}; statuses "
                         f"{last['statuses']}")
    return {"migrations": [{k: e.get(k) for k in ("number", "status", "total_time_ms", "downtime_ms",
                                                   "wait_unplug_ms", "cancelled_by")} for e in entries]}


def pause(ctx: RunContext, step: PauseStep) -> dict[str, Any]:
    if not ctx.options.keep:
        return {"held": False}
    from testbed.hold import hold
    resumed = hold(ctx, step.message or "pause step", resumable=True)
    if not resumed:
        raise StepFailed("torn down at the pause step (testbed down)")
    return {"held": True}


HANDLERS: dict[type, Callable[[RunContext, Any], dict[str, Any] | None]] = {
    BootStep: boot,
    CheckNetdevsStep: check_netdevs,
    CheckDeviceStep: check_primary_device,
    SleepStep: sleep,
    StartTrafficStep: start_traffic,
    UnplugPrimaryStep: unplug_primary,
    PlugPrimaryStep: plug_primary,
    SetLinkStep: set_link,
    AnnounceSelfStep: announce_self,
    FdbStep: fdb,
    ExecStep: exec_,
    CheckTrafficStep: check_traffic,
    MigrateStep: migrate,
    PauseStep: pause,
}


def run_step(ctx: RunContext, step: Step) -> dict[str, Any] | None:
    return HANDLERS[type(step)](ctx, step)
