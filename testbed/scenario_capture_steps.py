"""Step models for packet captures on a simulated host's bridge (testbed.packet_capture): what the
guests and QEMU put on the wire, for example the announcements after a migration (zoo item 13)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from testbed.scenario_step_base import StepBase
from testbed.scenario_values import NAME_RE

MAX_FILTER = 500  # characters of a BPF expression
Filter = Annotated[str, Field(max_length=MAX_FILTER)]


class StartCaptureStep(StepBase):
    """Starts tcpdump on host `host`'s bridge (br0 is host 1, br1 host 2 with `network.hosts: 2`)
    in the run's namespace, writing artifacts/capture-<name>.pcap until the run ends. `filter` (a
    BPF expression, tcpdump's syntax) limits what is kept; empty keeps every frame."""
    action: Literal["start-capture"]
    name: str = Field(pattern=NAME_RE)
    host: Literal[1, 2] = 1
    filter: Filter = ""


class CheckCaptureStep(StepBase):
    """Counts the frames of capture `name` so far that match `match` (a BPF expression, read back
    from the pcap with tcpdump; empty: every frame), and checks the count against min_count and
    max_count. The capture goes on."""
    action: Literal["check-capture"]
    name: str = Field(pattern=NAME_RE)
    match: Filter = ""
    min_count: int | None = Field(None, ge=0)
    max_count: int | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _a_bound(self) -> "CheckCaptureStep":
        if self.min_count is None and self.max_count is None:
            raise ValueError("give min_count, max_count or both: a count with no bound checks nothing")
        if self.min_count is not None and self.max_count is not None and self.min_count > self.max_count:
            raise ValueError(f"min_count {self.min_count} is above max_count {self.max_count}")
        return self
