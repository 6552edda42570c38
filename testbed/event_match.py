"""Whether a VM's QMP events show an expected sequence (pure: events in, problems out). A pattern
matches an event of its name whose data holds every key it gives with the same value; the sequence
is matched in order, each pattern at the first fitting event after the previous match."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from testbed.scenario_run_steps import EventPattern


@dataclass(frozen=True)
class SeenEvent:
    t: float          # run clock, seconds
    event: str
    data: dict[str, Any]
    qemu: str         # which of the VM's QEMUs sent it (its artifacts directory's name)

    def as_dict(self) -> dict[str, Any]:
        return {"t": round(self.t, 3), "event": self.event, "data": self.data, "qemu": self.qemu}


def matches(pattern: "EventPattern", seen: SeenEvent) -> bool:
    return seen.event == pattern.event and all(seen.data.get(k) == v for k, v in pattern.data.items()) \
        and pattern.qemu in (None, seen.qemu)


def _describe(pattern: "EventPattern") -> str:
    return pattern.event + (f" {pattern.data}" if pattern.data else "") + (f" from {pattern.qemu}" if pattern.qemu else "")


def match_sequence(patterns: list["EventPattern"], events: list[SeenEvent]) -> tuple[list[SeenEvent], str | None]:
    """The events matched so far, and the first problem (None when the whole sequence matched).
    A pattern whose event came too early or too late after the previous match is a problem at once,
    even if a later event would fit: the first fitting event is what the guest and QEMU did."""
    found: list[SeenEvent] = []
    start = 0
    for n, pattern in enumerate(patterns):
        hit = next((i for i in range(start, len(events)) if matches(pattern, events[i])), None)
        if hit is None:
            after = f" after {_describe(patterns[n - 1])} at {found[-1].t:.3f}s" if found else ""
            return found, f"sequence[{n}]: no {_describe(pattern)}{after}"
        if found:
            gap_ms = (events[hit].t - found[-1].t) * 1000
            low, high = pattern.min_ms_after_previous, pattern.max_ms_after_previous
            if low is not None and gap_ms < low:
                return found, f"sequence[{n}]: {_describe(pattern)} came {gap_ms:.0f} ms after the previous match, " \
                              f"less than min_ms_after_previous {low:g}"
            if high is not None and gap_ms > high:
                return found, f"sequence[{n}]: {_describe(pattern)} came {gap_ms:.0f} ms after the previous match, " \
                              f"more than max_ms_after_previous {high:g}"
        found.append(events[hit])
        start = hit + 1
    return found, None


def absent_problems(patterns: list["EventPattern"], events: list[SeenEvent]) -> list[str]:
    return [f"absent[{n}]: {_describe(p)} came at {hit.t:.3f}s from {hit.qemu}"
            for n, p in enumerate(patterns) if (hit := next((e for e in events if matches(p, e)), None))]
