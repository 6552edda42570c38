"""The verdict of a bug-zoo run, for people and for `git bisect run`.

A zoo scenario's steps assert the bug's symptom; the steps marked `symptom: true` are the assertion.
- every step passed: the symptom was seen, `reproduced`;
- the first failing step is a symptom step whose own check failed: `not-reproduced`, with its error
  as the evidence;
- any other failure (the set-up, a QEMU that died, a lost SSH session or a QMP command this QEMU does
  not have, even in a symptom step): `error`, which says nothing about the bug."""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from testbed.report import RunReport
    from testbed.scenario import Scenario


class Verdict(StrEnum):
    REPRODUCED = "reproduced"
    NOT_REPRODUCED = "not-reproduced"
    ERROR = "error"


# git bisect run: 0 good, 1 bad, 125 skip (this build cannot be tested).
BISECT_SKIP = 125


def decide(scenario: "Scenario", report: "RunReport") -> tuple[Verdict, str]:
    """The verdict and its evidence."""
    failed = next((s for s in report.steps if not s.ok), None)
    if failed is None:
        if report.passed:
            symptoms = [s for s, step in zip(report.steps, scenario.steps) if step.symptom]
            return Verdict.REPRODUCED, "; ".join(f"step {s.index} ({s.action}) passed{_seen(s.details)}"
                                                 for s in symptoms)
        return Verdict.ERROR, report.error or "the run did not reach its steps"
    step = scenario.steps[failed.index]
    if step.symptom and failed.check_failed:
        return Verdict.NOT_REPRODUCED, f"step {failed.index} ({failed.action}): {failed.error}"
    if step.symptom:
        return Verdict.ERROR, f"symptom step {failed.index} ({failed.action}) could not make its check: " \
                              f"{failed.error}"
    return Verdict.ERROR, f"step {failed.index} ({failed.action}) failed before the symptom could be " \
                          f"checked: {failed.error}"


def exit_status(verdict: Verdict, reproduced_is_good: bool = False) -> int:
    """reproduced is `bad` (1) by default: bisecting for the change that brought the bug in. With
    reproduced_is_good, for the change that fixed it (git bisect --term-old=broken --term-new=fixed)."""
    if verdict == Verdict.ERROR:
        return BISECT_SKIP
    reproduced = verdict == Verdict.REPRODUCED
    return int(reproduced != reproduced_is_good)


# What a symptom step saw, in its own details: a command's output, a migration's end.
EVIDENCE_KEYS = ("stdout", "error", "status", "cancelled_by", "statuses", "mtus", "max_gap_ms", "lost", "wait_unplug_ms",
                 "destination_said")


def _seen(details: dict[str, Any]) -> str:
    seen = []
    for key in EVIDENCE_KEYS:
        value = details.get(key)
        if value not in (None, "", [], {}):
            text = " | ".join(value.strip().splitlines()[-2:]) if isinstance(value, str) else str(value)
            seen.append(f"{key}: {text[:200]}")
    return f" ({'; '.join(seen)})" if seen else ""
