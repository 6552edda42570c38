"""Steps at the QMP level: check-events (a VM's QMP events against an expected sequence, see
testbed.event_match) and qmp (one command, which may be expected to fail)."""

from __future__ import annotations

from typing import Any

from testbed.errors import StepFailed
from testbed.event_match import SeenEvent, absent_problems, match_sequence
from testbed.run_context import RunContext
from testbed.qmp_channel import QmpCommandError
from testbed.scenario import CheckEventsStep, QmpStep
from testbed.steps.registry import handles

SHOWN = 40  # events quoted in a failure


def vm_events(ctx: RunContext, vm: str, since_s: float) -> list[SeenEvent]:
    """Every QEMU the VM has run in: the first, migration destinations (taken or not), restored ones."""
    machines = dict.fromkeys([*ctx.retired, *ctx.machines.values()])
    events = [SeenEvent(r.t, r.event, r.data, m.artifacts.directory.name)
              for m in machines if m.name == vm for r in m.events.records() if r.t >= since_s]
    return sorted(events, key=lambda e: e.t)


def _brief(events: list[SeenEvent]) -> str:
    def one(e: SeenEvent) -> str:
        key = e.data.get("status") or e.data.get("device-id") or e.data.get("device") or ""
        return f"{e.t:.3f}s {e.event}{f' {key}' if key else ''} ({e.qemu})"
    more = f", ... {len(events) - SHOWN} more" if len(events) > SHOWN else ""
    return ", ".join(one(e) for e in events[:SHOWN]) + more


@handles(CheckEventsStep)
def check_events(ctx: RunContext, step: CheckEventsStep) -> dict[str, Any]:
    since_s = ctx.step_starts[step.since_step]
    events = vm_events(ctx, step.vm, since_s)
    found, problem = match_sequence(step.sequence, events)
    problems = [problem] if problem else []
    problems += absent_problems(step.absent, events)
    if problems:
        raise StepFailed(f"{step.vm}: {'; '.join(problems)}. Its QEMUs' events since step {step.since_step}: "
                         f"{_brief(events) or 'none'}")
    return {"matched": [e.as_dict() for e in found], "events_seen": len(events), "since_s": round(since_s, 3)}


@handles(QmpStep)
def qmp(ctx: RunContext, step: QmpStep) -> dict[str, Any]:
    machine = ctx.machine(step.vm)
    try:
        reply = machine.qmp.execute(step.command, step.arguments, timeout=ctx.timeout(step.timeout_s))
    except QmpCommandError as e:
        if e.error_class is None:  # the connection failed: QEMU said nothing about the command
            raise
        said = f"{e.error_class}: {e.desc}"
        if step.expect_error is None:
            raise StepFailed(f"{step.vm}: QMP {step.command} failed ({said})") from e
        if step.expect_error not in said:
            raise StepFailed(f"{step.vm}: QMP {step.command} failed, but with {said!r}, not "
                             f"{step.expect_error!r}") from e
        return {"command": step.command, "error": said}
    if step.expect_error is not None:
        raise StepFailed(f"{step.vm}: QMP {step.command} succeeded ({reply!r:.200}); expected an error with "
                         f"{step.expect_error!r}")
    return {"command": step.command, "return": reply}

