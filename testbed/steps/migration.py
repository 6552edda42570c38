"""Live migration of a VM to a destination QEMU on the other host's taps, following QEMU's failover
sequence (UNPLUG_PRIMARY, wait-unplug, and FAILOVER_NEGOTIATED on the destination)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from testbed.errors import StepFailed, TestbedError
from testbed.guest_shell import GuestShell
from testbed.machine import QemuMachine
from testbed.migration_link import MigrationLink
from testbed.report import MigrationRecord
from testbed.run_context import RunContext
from testbed.scenario import MigrateStep, MigrationStepBase, SaveRestoreStep
from testbed.steps.migration_checks import (check_guest_ejects, check_held_destination, check_primaries,
                                            check_wait_unplug, destination_said)
from testbed.steps.pairs import expected_now
from testbed.steps.registry import handles
from testbed import guest_eject, warm_boot
from testbed.waiting import wait_until

logger = logging.getLogger(__name__)

MIGRATION_EVENTS = {"MIGRATION", "UNPLUG_PRIMARY", "FAILOVER_NEGOTIATED", "DEVICE_DELETED", "MIGRATION_PASS"}
# After migrate_cancel in wait-unplug, QEMU keeps waiting up to 30 s (120 x 250 ms, migration.c
# qemu_savevm_wait_unplug) for an unplug it already started, so that it can plug the card back,
# before it reports 'cancelled'. The testbed allows that plus a margin.
CANCEL_GRACE_S = 30 + 15
TERMINAL = {"completed", "failed", "cancelled"}
FILE_MIGRATION_SINCE = (8, 2)
MODE_CAPABILITIES = {"postcopy": "postcopy-ram", "multifd": "multifd"}  # precopy: neither


def _follow_migration(ctx: RunContext, src: QemuMachine, step: MigrationStepBase, since: int) -> tuple[str, str | None, list]:
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
            logger.warning("%s: migration stuck in %s; migrate_cancel", step.vm, statuses[-1][1] if statuses else "nothing")
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


def _events_since(machine: QemuMachine, since: int) -> list[dict[str, Any]]:
    return [{"t": r.t, "event": r.event, "data": r.data}
            for r in machine.events.records()[since:] if r.event in MIGRATION_EVENTS]


def _reconnect(ctx: RunContext, vm: str, timeout: float) -> None:
    if vm in ctx.shells:
        ctx.shells.pop(vm).close()
    machine = ctx.machine(vm)
    shell = GuestShell(vm, ctx.netns, machine.plan.ssh_port, machine.image.ssh_key, machine.slowdown)
    shell.connect(timeout, alive=machine.alive)
    ctx.shells[vm] = shell


def _run_source(ctx: RunContext, src: QemuMachine, step: MigrationStepBase, entry: MigrationRecord, cursor: int,
                started: float) -> str:
    """Follows the source's migration to its end and writes what it showed into entry."""
    status, cancelled_by, statuses = _follow_migration(ctx, src, step, cursor)
    info = src.qmp.execute("query-migrate")
    wait_unplug_ms = next((round((statuses[i + 1][0] - t) * 1000, 1) for i, (t, s) in enumerate(statuses[:-1])
                           if s == "wait-unplug"), None)
    entry.status, entry.cancelled_by = status, cancelled_by
    entry.started_s, entry.ended_s = round(started, 3), round(ctx.clock.now(), 3)
    entry.statuses = [s for _, s in statuses]
    # QEMU reports no total-time for a migration that did not complete; the events give it
    total = info.get("total-time")
    entry.total_time_ms = total if total is not None else int(round((statuses[-1][0] - started) * 1000))
    entry.downtime_ms = info.get("downtime")
    entry.setup_time_ms, entry.wait_unplug_ms = info.get("setup-time"), wait_unplug_ms
    entry.ram_mbps = info.get("ram", {}).get("mbps")
    entry.events = _events_since(src, cursor)
    return status


def _migrate_once(ctx: RunContext, step: MigrateStep, number: int) -> MigrationRecord:
    ctx.start_deadline(step.timeout_s + CANCEL_GRACE_S)  # timeout_s is per migration, count may be > 1
    src = ctx.machine(step.vm)
    slot = 1 - src.plan.slot
    label = f"{step.vm}-migration{len(ctx.report.migrations) + 1}"
    dst = ctx.new_machine(step.vm, slot, incoming=True, label=label)
    ctx.retired.append(dst)  # torn down whatever happens; swapped in below if the migration completes
    number_in_run = len(ctx.report.migrations) + 1
    uri = ctx.host.migration_uri(ctx.scratch_dir(), f"{step.vm}-{number_in_run}")
    if step.transport == "tcp":
        if ctx.migration_link is None:
            ctx.migration_link = MigrationLink(ctx.host.netns)
        uri = ctx.migration_link.incoming_uri(slot, number_in_run)
    entry = MigrationRecord(vm=step.vm, number=number + 1, from_slot=src.plan.slot, to_slot=slot,
                            destination_artifacts=str(dst.artifacts.directory))
    ctx.report.migrations.append(entry)
    entry.mode = step.mode
    if step.transport == "tcp":
        entry.transport = "tcp"
    if step.destination_primary_backend == "missing":
        dst.absent_backends = frozenset(p.primary.netdev_id for p in dst.plan.pairs
                                        if p.primary is not None and p.primary.backend)
    dst.hold_after_incoming = step.destination_primaries_before_resume is not None
    dst.launch()
    for machine in (src, dst):
        warm_boot.set_capabilities(machine, others={name: step.mode == mode for mode, name in MODE_CAPABILITIES.items()})
        if step.mode == "multifd":
            machine.qmp.execute("migrate-set-parameters", {"multifd-channels": step.multifd_channels})
    if step.destination_primaries_before_incoming is not None:
        entry.primaries_on_destination_before_incoming = check_primaries(
            ctx, dst, step, step.destination_primaries_before_incoming, "on the destination before its incoming state")
    dst.qmp.execute("migrate-incoming", {"uri": uri})
    if step.hold_eject_ms is not None:
        hold = step.hold_eject_ms
        guest_eject.arm(ctx.shell(step.vm), {ctx.plan(step.vm).pair(name).pair.mac: ms for name, ms in hold.items()}
                        if isinstance(hold, dict) else hold)
    src_cursor, dst_cursor = src.events.cursor(), dst.events.cursor()
    started = ctx.clock.now()
    entry.started_s = round(started, 3)
    if step.transport == "tcp":
        assert ctx.migration_link is not None
        connection = ctx.migration_link.connect(slot, number_in_run, ctx.timeout(10))
        with connection:
            src.qmp.send_fd("migration", connection.fileno())
        uri = "fd:migration"
    src.qmp.execute("migrate", {"uri": uri})
    if step.mode == "postcopy":
        # Allowed once the migration exists (setup, wait-unplug): QEMU switches to postcopy after its
        # first RAM pass, so even a migration that would finish in one pass goes through postcopy-active.
        src.qmp.execute("migrate-start-postcopy")
    status = _run_source(ctx, src, step, entry, src_cursor, started)
    if status == "completed":
        if step.source_primaries_after is not None:
            entry.primaries_on_source_after = check_primaries(
                ctx, src, step, step.source_primaries_after, "on the source after the completed migration")
        if dst.hold_after_incoming:
            check_held_destination(ctx, dst, step, entry, dst_cursor)
        ctx.machines[step.vm] = dst
        dst.watched = True  # from now on its death is the VM's death
        ctx.retire(src)
        _reconnect(ctx, step.vm, ctx.timeout(60))
        if step.wait_for_pairs:
            waited = wait_until(expected_now(ctx, step.vm), ctx.timeout(step.timeout_s),
                                f"{step.vm}'s pairs on the destination")
            entry.destination_pairs_ready_after_s = round(waited, 3)
    else:
        ctx.retire(dst)
        if step.wait_for_pairs:
            # QEMU re-plugs a primary it unplugged for the migration; the source must be whole again.
            waited = wait_until(expected_now(ctx, step.vm), ctx.timeout(60),
                                f"{step.vm}'s pairs back on the source after a {status} migration")
            entry.source_pairs_ready_after_s = round(waited, 3)
    entry.destination_events = _events_since(dst, dst_cursor)
    entry.destination_warnings = dst.stderr_warnings()
    return entry


def _migrate_into_a_crash(ctx: RunContext, step: MigrateStep) -> dict[str, Any]:
    """expect: source-died. The source QEMU killed by a signal during the migration is the step's
    result, not the run's failure: it is recorded (signal, QEMU's last words), forgiven by the run's
    watch and retired. A migration that ends with the source alive fails the step's check; any
    other death (a guest panic or shutdown, the host VM's) or failure is an error as usual."""
    src = ctx.machine(step.vm)
    try:
        entry = _migrate_once(ctx, step, 0)
    except TestbedError as e:
        exit = ctx.death_behind_failure()
        if exit is None or src.alive() or exit.vm != src.name or not exit.signal or exit.panic or exit.guest_shutdown:
            raise
        ctx.watch.forgive(exit)
        entry = ctx.report.migrations[-1]
        entry.status, entry.ended_s, entry.source_exit = "source-died", round(ctx.clock.now(), 3), exit.as_dict()
        entry.events = [ev for ev in _events_since(src, 0) if ev["t"] >= (entry.started_s or 0)]
        ctx.retire(src)
        if step.vm in ctx.shells:
            ctx.shells.pop(step.vm).close()
        logger.info("%s: the source QEMU died in the migration, as expected: %s (the step saw: %s)", step.vm,
                    exit.describe(), e)
        return {"status": "source-died", "error": exit.describe(), "statuses": [
            ev["data"]["status"] for ev in entry.events if ev["event"] == "MIGRATION"]}
    raise StepFailed(f"{step.vm}: the migration ended {entry.status!r} (statuses {entry.statuses}) and its source "
                     f"QEMU is alive; expected the source to die")


@handles(MigrateStep)
def migrate(ctx: RunContext, step: MigrateStep) -> dict[str, Any]:
    if step.expect == "source-died":
        return _migrate_into_a_crash(ctx, step)
    entries = []
    for number in range(step.count):
        try:
            entry = _migrate_once(ctx, step, number)
        finally:
            if step.hold_eject_ms is not None and step.vm in ctx.shells:
                guest_eject.release(ctx.shells[step.vm])
        entries.append(entry)
        logger.info("%s: migration %d/%d %s (total %s ms, downtime %s ms, wait-unplug %s ms)", step.vm,
                    number + 1, step.count, entry.status, entry.total_time_ms, entry.downtime_ms,
                    entry.wait_unplug_ms)
        if entry.status != "completed":
            break
    last = entries[-1]
    if last.status != step.expect or (step.expect == "completed" and len(entries) < step.count):
        raise StepFailed(f"{step.vm}: migration {last.number} ended {last.status!r} "
                         f"(cancelled by {last.cancelled_by}), expected {step.expect!r}; statuses "
                         f"{last.statuses}; the destination said: {destination_said(last) or 'nothing'}")
    check_wait_unplug(step, entries)
    held = {}
    if isinstance(step.hold_eject_ms, dict) and last.status == "completed":
        held = {"guest_ejects": check_guest_ejects(ctx, step)}
    return {"migrations": [{k: getattr(e, k) for k in ("number", "mode", "transport", "status", "total_time_ms",
                                                   "downtime_ms", "wait_unplug_ms", "ram_mbps", "cancelled_by")}
                           for e in entries],
            "status": last.status, "wait_unplug_ms": last.wait_unplug_ms, **held,
            **({"destination_warnings": last.destination_warnings} if last.destination_warnings else {}),
            **({"destination_said": said} if (said := destination_said(last)) else {})}


def _running(machine: QemuMachine) -> bool:
    return machine.qmp.execute("query-status").get("status") == "running"


def _save_then_restore(ctx: RunContext, step: SaveRestoreStep, src: QemuMachine, entry: MigrationRecord,
                       state: Path, label: str) -> dict[str, Any]:
    was_running = _running(src)
    entry.saved_paused = not was_running
    warm_boot.set_capabilities(src)
    cursor, started = src.events.cursor(), ctx.clock.now()
    src.qmp.execute("migrate", {"uri": f"file:{state}"})
    status = _run_source(ctx, src, step, entry, cursor, started)
    details: dict[str, Any] = {"status": status, "saved_paused": entry.saved_paused,
                               "total_time_ms": entry.total_time_ms, "wait_unplug_ms": entry.wait_unplug_ms,
                               "cancelled_by": entry.cancelled_by, "statuses": entry.statuses}
    if status != "completed":
        if step.wait_for_pairs and _running(src):
            waited = wait_until(expected_now(ctx, step.vm), ctx.timeout(60),
                                f"{step.vm}'s pairs back after a {status} save")
            entry.source_pairs_ready_after_s = round(waited, 3)
    else:
        ctx.retire(src)  # virsh save ends the domain; its taps go to the restored QEMU
        launched = ctx.clock.now()
        dst = warm_boot.restore(ctx, step.vm, state, label, slot=src.plan.slot, mapped_ram=False, resume=False,
                                timeout=step.timeout_s)
        entry.restore_ms = round((ctx.clock.now() - launched) * 1000, 1)
        running = _running(dst)
        details.update(restore_ms=entry.restore_ms, restored_running=running)
        if running != was_running:
            raise StepFailed(f"{step.vm}: saved {'running' if was_running else 'paused'} but restored "
                             f"{'running' if running else 'paused'}")
        if running:
            _reconnect(ctx, step.vm, ctx.timeout(60))
            if step.wait_for_pairs:
                waited = wait_until(expected_now(ctx, step.vm), ctx.timeout(step.timeout_s),
                                    f"{step.vm}'s pairs after the restore")
                entry.destination_pairs_ready_after_s = round(waited, 3)
        entry.destination_events = _events_since(dst, 0)
    return details


@handles(SaveRestoreStep)
def save_restore(ctx: RunContext, step: SaveRestoreStep) -> dict[str, Any]:
    """virsh save, then virsh restore: a plain migration stream to a file, the QEMU shut down, a new
    QEMU on the same taps loading it. The restored VM runs only if it was running when saved."""
    if tuple(ctx.qemu.version[:2]) < FILE_MIGRATION_SINCE:
        # not a failed check: this QEMU cannot run the step (a bisect skips it)
        raise TestbedError(f"save-restore needs migration to a file (file: URI, QEMU 8.2+); this is "
                           f"QEMU {ctx.qemu.version_text}")
    ctx.start_deadline(step.timeout_s + CANCEL_GRACE_S)
    src = ctx.machine(step.vm)
    number = len(ctx.report.migrations) + 1
    state = ctx.scratch_dir() / f"{step.vm}-save{number}.state"
    label = f"{step.vm}-restore{number}"
    entry = MigrationRecord(vm=step.vm, number=1, from_slot=src.plan.slot, to_slot=src.plan.slot,
                            destination_artifacts=str(ctx.options.artifacts_dir / label), transport="file")
    ctx.report.migrations.append(entry)
    try:
        details = _save_then_restore(ctx, step, src, entry, state, label)
    finally:
        state.unlink(missing_ok=True)  # a whole RAM image: never left behind, whatever happened
    status = details["status"]
    if status != step.expect:
        raise StepFailed(f"{step.vm}: the save ended {status!r} (cancelled by {entry.cancelled_by}), expected "
                         f"{step.expect!r}; statuses {entry.statuses}")
    check_wait_unplug(step, [entry])
    return details
