"""Notices the machine that runs the testbed standing still.

Under TCG a guest's clock is the host's: when the host machine stops running the testbed and its
QEMUs for a while (a hypervisor that deschedules the whole VM the testbed runs on), every guest
finds on waking that its timers are that much late, and every timeout of the testbed has run on
meanwhile. (A suspend is not such a pause: CLOCK_MONOTONIC, which QEMU and the testbed both time
with, stops during it.) A guest kernel then reports an RCU stall, and the step fails with
an SSH timeout that says nothing of the cause.

The monitor is a thread of the testbed's own process that sleeps a tenth of a second at a time and
records each wake-up that came late by a second or more, with the steal time that `/proc/stat`
counted meanwhile (the hypervisor's own account of CPU time it gave to others). A step that timed
out or lost its SSH session while the testbed itself stood still for STOOD_STILL_S or more says so:
a failure of the machine, not of the check (pytest's plugin reruns it once, `docs/pytest.md`)."""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import asdict, dataclass

from testbed.clock import RunClock
from testbed.errors import WaitTimeout
from testbed.guest_shell import GuestSessionLost

logger = logging.getLogger(__name__)

PERIOD_S = 0.1
RECORDED_LATE_S = 1.0
# A failed step is blamed on the machine from here: a wake-up 5 s late is no scheduling hiccup of a
# busy 2-core machine (a watcher like this one, outside the testbed, saw none 0.5 s late or more
# through three CI runs of the suite on the project's machine, 2026-12-07: CPUs 85 % busy on average).
STOOD_STILL_S = 5.0


@dataclass(frozen=True)
class HostStall:
    at_s: float       # run clock at the late wake-up
    late_s: float     # how much later than asked it came
    steal_s: float    # steal time /proc/stat counted over that sleep, over all CPUs

    @property
    def started_s(self) -> float:
        return self.at_s - self.late_s


def _steal_s() -> float | None:
    """Steal time so far, summed over the CPUs (the 8th field of /proc/stat's `cpu` line, in clock ticks)."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
        return int(fields[8]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


class HostStallMonitor:
    """A daemon thread that records the run's late wake-ups, from start() to stop()."""

    def __init__(self, clock: RunClock, period_s: float = PERIOD_S, recorded_late_s: float = RECORDED_LATE_S):
        self.clock, self.period_s, self.recorded_late_s = clock, period_s, recorded_late_s
        self.stalls: list[HostStall] = []
        self._last_tick, self._last_steal = time.monotonic(), _steal_s()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="host-stall-monitor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _watch(self) -> None:
        while not self._stop.wait(self.period_s):
            if (stall := self._late_since_last_tick()) is not None:
                self.stalls.append(stall)
                logger.warning("the testbed stood still for %.1f s (steal %.1f s)", stall.late_s, stall.steal_s)
            self._last_tick, self._last_steal = time.monotonic(), _steal_s()

    def _late_since_last_tick(self) -> HostStall | None:
        """The wake-up now, as a stall, if it comes a recorded_late_s or more after it was due."""
        late = time.monotonic() - self._last_tick - self.period_s
        if late < self.recorded_late_s:
            return None
        steal, before = _steal_s(), self._last_steal
        stolen = steal - before if steal is not None and before is not None else 0.0
        return HostStall(at_s=round(self.clock.now(), 3), late_s=round(late, 3), steal_s=round(stolen, 2))

    def during(self, start_s: float, end_s: float) -> list[HostStall]:
        """The stalls that overlap run-clock interval [start_s, end_s], with the one under way if the
        monitor has not woken since (a step that failed as the machine came back may ask first)."""
        stalls = [*self.stalls, *filter(None, [self._late_since_last_tick()])]
        return [s for s in stalls if s.at_s >= start_s and s.started_s <= end_s]

    def blame(self, failure: BaseException | None, start_s: float, end_s: float) -> str | None:
        """What a step that failed over [start_s, end_s] should add to its error, if the testbed
        stood still long enough meanwhile to explain the failure: only a wait that ran out or a
        session that went quiet can be the machine's doing, not a check that saw a wrong answer."""
        if not isinstance(failure, (WaitTimeout, GuestSessionLost)):
            return None
        return describe_standstill(self.during(start_s, end_s))

    def as_report(self) -> list[dict]:
        return [asdict(s) for s in self.stalls]


def describe_standstill(stalls: list[HostStall]) -> str | None:
    worst = max(stalls, key=lambda s: s.late_s, default=None)
    if worst is None or worst.late_s < STOOD_STILL_S:
        return None
    return (f"the testbed itself stood still for {worst.late_s:.1f}s during this step, at {worst.started_s:.1f}s "
            f"(a thread of its own that wakes every {PERIOD_S}s woke that late; steal time meanwhile: "
            f"{worst.steal_s:.1f}s): the machine stalled, and the step's timeouts and its guests' clocks ran on")
