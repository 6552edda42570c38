"""The checks a migrate step makes of QEMU's side: the primaries QEMU created on either end, a
destination held at -S before its RESUME, the wait-unplug bounds, and what a failed destination said."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from testbed import guest_eject
from testbed.errors import StepFailed
from testbed.machine import QemuMachine
from testbed.report import MigrationRecord
from testbed.run_context import RunContext
from testbed.scenario import MigrateStep, MigrationStepBase


def check_primaries(ctx: RunContext, machine: QemuMachine, step: MigrateStep, expected: str,
                     where: str) -> dict[str, bool]:
    """Whether QEMU created each plugged primary of the VM (a hidden one it did not), as expected."""
    plugged = [p.primary.device_id for p in ctx.plan(step.vm).pairs
               if p.primary is not None and p.primary.device_id not in ctx.absent_devices.get(step.vm, set())]
    if not plugged:
        raise StepFailed(f"{step.vm}: no plugged primary to look for {where}")
    realized = machine.peripheral_ids()
    seen = {device: device in realized for device in plugged}
    wrong = [f"{d} is {'present' if present else 'absent'}" for d, present in seen.items()
             if present != (expected == "present")]
    if wrong:
        raise StepFailed(f"{step.vm}: expected the primaries {expected} {where}: {', '.join(wrong)}")
    return seen


def check_held_destination(ctx: RunContext, dst: QemuMachine, step: MigrateStep, entry: MigrationRecord,
                           cursor: int) -> None:
    """The destination, held at -S, has loaded the state: its primaries are checked before `cont`."""
    dst.events.wait_for("MIGRATION", ctx.timeout(30), since=cursor, match=lambda d: d.get("status") == "completed")
    status = dst.qmp.execute("query-status").get("status")
    if status == "running":
        raise StepFailed(f"{step.vm}: the destination runs though it was started with -S")
    assert step.destination_primaries_before_resume is not None
    entry.primaries_on_destination_before_resume = check_primaries(
        ctx, dst, step, step.destination_primaries_before_resume, f"on the destination before it resumed ({status})")
    dst.cont()


def destination_said(entry: MigrationRecord) -> str:
    """A failed load's reason is on the destination's stderr (e.g. "Unknown ramblock")."""
    if entry.status != "failed":
        return ""
    try:
        said = (Path(entry.destination_artifacts) / "qemu.stderr").read_text().strip().splitlines()
    except OSError:
        return ""
    return " / ".join(said[-3:])


def check_wait_unplug(step: MigrationStepBase, entries: list[MigrationRecord]) -> None:
    if step.min_wait_unplug_ms is None and step.max_wait_unplug_ms is None:
        return
    for entry in entries:
        waited = entry.wait_unplug_ms
        if waited is None:
            raise StepFailed(f"{step.vm}: migration {entry.number} had no wait-unplug phase (statuses "
                             f"{entry.statuses}); min/max_wait_unplug_ms check one")
        if step.max_wait_unplug_ms is not None and waited > step.max_wait_unplug_ms:
            raise StepFailed(f"{step.vm}: migration {entry.number} waited {waited} ms in wait-unplug for the "
                             f"guest's eject, more than max_wait_unplug_ms {step.max_wait_unplug_ms}")
        if step.min_wait_unplug_ms is not None and waited < step.min_wait_unplug_ms:
            raise StepFailed(f"{step.vm}: migration {entry.number} waited {waited} ms in wait-unplug for the "
                             f"guest's eject, less than min_wait_unplug_ms {step.min_wait_unplug_ms}")


def check_guest_ejects(ctx: RunContext, step: MigrateStep) -> list[dict[str, Any]]:
    """Every primary a per-pair hold named was ejected by the guest through its slot: one that was
    not would have gone only when the GPE was unmasked, and the migration would look the same."""
    assert isinstance(step.hold_eject_ms, dict)
    ejects = guest_eject.ejects(ctx.shell(step.vm))
    done = {str(e["mac"]) for e in ejects if e["ok"]}
    missing = [name for name in step.hold_eject_ms if ctx.plan(step.vm).pair(name).pair.mac not in done]
    if missing:
        raise StepFailed(f"{step.vm}: the guest did not eject the primaries of {missing} through their ACPI slots "
                         f"(its eject log: {ejects})")
    return ejects
