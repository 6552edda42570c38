"""The run report: what ran, what the guests showed, and whether it passed. Written as JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, Field

from testbed.artifacts import write_whole


class StepRecord(BaseModel):
    index: int
    action: str
    ok: bool = False
    started_s: float
    ended_s: float | None = None
    error: str | None = None
    # The step's own check failed (StepFailed, or a wait that timed out), with no dead VM behind it;
    # False for a failure of the machinery (QMP, SSH, a QEMU that died, a testbed bug).
    check_failed: bool = False
    details: dict[str, Any] = {}
    # Packets each slave carried during this step: {vm: {pair: {role: {name, rx, tx}}}}; a role is
    # missing when its netdev was not the same at both ends of the step.
    counters: dict[str, Any] = {}
    # A failed step: how long each thread of each QEMU on this machine waited for a CPU during it,
    # {qemu: {"CPU 0/TCG (1234)": seconds}} (testbed.host_stall).
    cpu_wait: dict[str, dict[str, float]] = {}


class HostInfo(BaseModel):
    qemu_version: str
    qemu_path: str
    accel: str
    guest_kernel: str
    image: str  # the first VM's image
    images: dict[str, str] = {}  # flavour -> image key, for every flavour the VMs boot


class VmReport(BaseModel):
    netdevs: list[dict[str, Any]] = []
    boot: dict[str, Any] = {}  # timings in s, and how it started (cold or restored, see warm_boot)
    artifacts: dict[str, str] = {}
    # Set when the VM's QEMU ended while the run still needed it: returncode, signal, the guest's
    # panic line, QEMU's SHUTDOWN reason (testbed.machine_watch.MachineExit).
    exit: dict[str, Any] | None = None
    # How each of the VM's QEMU processes was stopped: quit, SIGTERM, SIGKILL or exited-before.
    shutdowns: list[dict[str, Any]] = []


class GapRecord(BaseModel):
    start_s: float
    end_s: float
    ms: float
    lost: int
    step: int | None          # the step running when the gap started
    step_action: str | None


class TimelineBins(BaseModel):
    start_s: float
    bin_s: float
    received: list[int]


class PingReport(BaseModel):
    probe: Literal["ping"] = "ping"
    vm: str
    pair: str
    target: str
    timeline: TimelineBins
    log: str
    interval_ms: float
    sent: int
    received: int
    lost: int
    duplicates: int
    reordered: int
    max_gap_ms: float
    gaps: list[GapRecord]


class TcpReport(BaseModel):
    probe: Literal["tcp"] = "tcp"
    vm: str
    pair: str
    target: str
    bytes_sent: int
    bytes_echoed: int
    max_stall_ms: float
    error: str | None
    error_s: float | None
    bytes_per_step: dict[int, int]


TrafficReport = Annotated[Union[PingReport, TcpReport], Field(discriminator="probe")]


class MigrationRecord(BaseModel):
    """One migration: QEMU's status sequence and figures, the failover events on both ends."""
    vm: str
    number: int
    from_slot: int
    to_slot: int
    destination_artifacts: str
    transport: str = "socket"           # socket: a live migration; file: save-restore (virsh save/restore)
    mode: str = "precopy"               # precopy, postcopy or multifd
    status: str | None = None           # completed, failed, cancelled, or source-died (migrate expect: source-died)
    cancelled_by: str | None = None
    started_s: float | None = None
    ended_s: float | None = None
    statuses: list[str] = []
    total_time_ms: int | None = None          # query-migrate, QEMU's own milliseconds (from the events when it gives none)
    downtime_ms: int | None = None
    setup_time_ms: int | None = None
    wait_unplug_ms: float | None = None
    events: list[dict[str, Any]] = []
    destination_events: list[dict[str, Any]] = []
    destination_pairs_ready_after_s: float | None = None
    source_pairs_ready_after_s: float | None = None
    restore_ms: float | None = None     # save-restore: the new QEMU's launch to the loaded state
    saved_paused: bool | None = None    # save-restore: the VM was stopped when it was saved
    # QEMU's side of the primaries (created or hidden), when a migrate step checks them:
    # on the destination before its incoming state arrived, on the source after it completed.
    primaries_on_destination_before_incoming: dict[str, bool] | None = None
    primaries_on_source_after: dict[str, bool] | None = None
    primaries_on_destination_before_resume: dict[str, bool] | None = None
    # The destination QEMU's warnings on stderr by the end of the step: where QEMU reports a failed
    # re-plug of a failover primary, and nowhere else (zoo item 7).
    destination_warnings: list[str] = []
    ram_mbps: float | None = None       # query-migrate's RAM throughput (megabits per second) at the end
    source_exit: dict[str, Any] | None = None  # migrate expect: source-died: how the source QEMU ended


class RunReport(BaseModel):
    scenario: str
    scenario_file: str
    passed: bool = False
    duration_s: float = 0.0
    host: HostInfo | None = None
    # The host kind and what it set up: for a host VM, its PFs, the VFs it passed through, its timings.
    topology: dict[str, Any] = {}
    # A bug-zoo scenario: its card, and the run's verdict (reproduced, not-reproduced or error) with
    # the evidence (testbed.bug_verdict).
    bug: dict[str, Any] | None = None
    verdict: str | None = None
    verdict_evidence: str | None = None
    # What a boot step without `snapshot` did (testbed run --snapshot, $TESTBED_SNAPSHOT): auto or never.
    snapshot_default: str | None = None
    vms: dict[str, VmReport] = {}
    steps: list[StepRecord] = []
    traffic: list[TrafficReport] = []
    migrations: list[MigrationRecord] = []
    # The run's DHCP server (address: dhcp pairs): every message it logged, on the run clock, and per
    # MAC the addresses it acknowledged and when (testbed.dhcp_server).
    dhcp: list[dict[str, Any]] = []
    leases: list[dict[str, Any]] = []
    error: str | None = None
    # Each time the testbed itself stood still for a second or more (testbed.host_stall): its
    # machine stalled, and every guest's clock and every timeout ran on meanwhile.
    host_stalls: list[dict[str, Any]] = []
    artifacts_dir: str

    def pings(self) -> list[PingReport]:
        return [t for t in self.traffic if isinstance(t, PingReport)]

    def tcp(self) -> list[TcpReport]:
        return [t for t in self.traffic if isinstance(t, TcpReport)]

    def gaps_in(self, first_step: int, last_step: int | None = None) -> list[GapRecord]:
        """Ping gaps of every pair that started in steps first_step..last_step (inclusive)."""
        last = first_step if last_step is None else last_step
        return [g for p in self.pings() for g in p.gaps if g.step is not None and first_step <= g.step <= last]

    @classmethod
    def load(cls, path: Path) -> "RunReport":
        return cls.model_validate_json(path.read_text())

    def write(self, path: Path) -> None:
        """Whole or not at all (ArtifactsError): a full disk never leaves a truncated report."""
        write_whole(path, json.dumps(self.model_dump(mode="json"), indent=2) + "\n")
