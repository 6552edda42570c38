"""check-events: the QMP events of a VM's QEMUs against an expected sequence (testbed.event_match)."""

from __future__ import annotations

from typing import Any

from testbed.errors import StepFailed
from testbed.event_match import SeenEvent, absent_problems, match_sequence
from testbed.run_context import RunContext
from testbed.scenario import CheckEventsStep
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
    since_s = ctx.report.steps[step.since_step].started_s
    events = vm_events(ctx, step.vm, since_s)
    found, problem = match_sequence(step.sequence, events)
    problems = [problem] if problem else []
    problems += absent_problems(step.absent, events)
    if problems:
        raise StepFailed(f"{step.vm}: {'; '.join(problems)}. Its QEMUs' events since step {step.since_step}: "
                         f"{_brief(events) or 'none'}")
    return {"matched": [e.as_dict() for e in found], "events_seen": len(events), "since_s": since_s}
