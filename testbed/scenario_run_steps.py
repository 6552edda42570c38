"""Step models that change how a VM runs: live migration, save and restore through a file, stop and
cont, and a restart of the guest."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from testbed.scenario_step_base import StepBase, VmStep
from testbed.scenario_values import MAX_KERNEL_ARGS, MAX_PAIRS_PER_VM, MAX_TEXT, Strict, check_kernel_args

HoldMs = Annotated[float, Field(gt=0, le=600_000)]


class MigrationStepBase(VmStep):
    """What a live migration and a save to a file share: QEMU itself unplugs failover_pair_id
    primaries (wait-unplug) and waits forever for the guest; the testbed cancels after
    wait_unplug_timeout_s."""
    vm: str
    timeout_s: float = Field(120.0, gt=0, le=3600)
    wait_unplug_timeout_s: float = Field(30.0, gt=0, le=3600)
    cancel_in: Literal["wait-unplug", "active"] | None = None
    # failed: the destination refused the state (its stderr says why, in the step's details)
    expect: Literal["completed", "cancelled", "failed"] = "completed"
    wait_for_pairs: bool = True  # after completion: wait for the resumed guest's pairs
    # checks: the wait-unplug phase (QEMU waiting for the guest's eject) lasted at least / at most this
    min_wait_unplug_ms: float | None = Field(None, ge=0)
    max_wait_unplug_ms: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _cancel_means_cancelled(self) -> "MigrationStepBase":
        if self.cancel_in and self.expect != "cancelled":
            raise ValueError("cancel_in cancels the migration: set expect: cancelled")
        return self


class MigrateStep(MigrationStepBase):
    """Live-migrates a VM to a destination QEMU (same devices, -incoming defer, its own taps on the
    other host's bridge) over a unix socket, then carries on with the destination. count > 1 goes
    back and forth."""
    action: Literal["migrate"]
    count: int = Field(1, ge=1, le=50)
    # precopy: QEMU's default. postcopy: postcopy-ram on both ends and migrate-start-postcopy at once
    # (QEMU switches after its first pass). multifd: RAM over `multifd_channels` extra connections.
    mode: Literal["precopy", "postcopy", "multifd"] = "precopy"
    multifd_channels: int = Field(2, ge=1, le=16)
    # The guest holds its eject of the primaries this long after QEMU's unplug request (the ACPI
    # hot-plug GPE masked until then; testbed.guest_eject), as the qtest ejects when it chooses.
    # A mapping of pair names holds each pair's primary for its own time (the guest ejects it through
    # its ACPI slot), as qtest migrate/multi/out ejects one primary of two; a primary not named is
    # ejected when the longest hold ends.
    hold_eject_ms: HoldMs | Annotated[dict[str, HoldMs], Field(min_length=1, max_length=MAX_PAIRS_PER_VM)] | None = None
    # Checks of QEMU's side of the VM's plugged primaries (created, or hidden: qom-list), as the
    # qtest's in and out halves make them: on the destination QEMU before its incoming state arrives
    # (QEMU hides a failover primary until STANDBY is seen), and on the source once the migration
    # completed, before the testbed shuts it down.
    destination_primaries_before_incoming: Literal["absent", "present"] | None = None
    source_primaries_after: Literal["absent", "present"] | None = None
    # The destination starts with -S as well: once its state is loaded (FAILOVER_NEGOTIATED came
    # with it) it stays paused, its primaries are checked, and only then does the testbed `cont` it
    # (RESUME). The guest's downtime includes the check.
    destination_primaries_before_resume: Literal["absent", "present"] | None = None
    # A fault on the destination (zoo item 7): its QEMU starts without the backend (-netdev) of each
    # QEMU-paired primary, so the re-plug that QEMU makes on FAILOVER_NEGOTIATED fails at realize.
    destination_primary_backend: Literal["present", "missing"] = "present"
    # unix: a unix socket in the run's directory. tcp: a TCP connection that crosses the uplink
    # between the two hosts' bridges (network.hosts: 2), where shape-uplink's shaping applies.
    transport: Literal["unix", "tcp"] = "unix"
    # source-died: the source QEMU is expected to die during the migration (zoo item 16: QEMU up to
    # 6.0 segfaulted on a migrate after the standby's device_del). The step passes when it dies, with
    # its exit in the details, and fails its check when the migration ends with the source alive.
    expect: Literal["completed", "cancelled", "failed", "source-died"] = "completed"

    @field_validator("hold_eject_ms", mode="before")
    @classmethod
    def _names_a_pair(cls, value: Any) -> Any:
        if value == {}:
            raise ValueError("an empty mapping holds no pair's eject: name pairs, or give one number for all")
        return value

    @model_validator(mode="after")
    def _checks_that_can_run(self) -> "MigrateStep":
        if self.expect == "source-died" and self.count > 1:
            raise ValueError("expect: source-died ends the VM with the first migration: count must be 1")
        if self.expect == "source-died" and (self.min_wait_unplug_ms is not None or self.max_wait_unplug_ms is not None):
            raise ValueError("expect: source-died ends the migration with the source: there is no wait-unplug "
                             "phase to bound")
        if self.source_primaries_after is not None and self.expect != "completed":
            raise ValueError("source_primaries_after looks at the source after a completed migration: it needs "
                             "expect: completed")
        if self.hold_eject_ms is not None and self.cancel_in is None and \
                self.longest_hold_ms() >= self.wait_unplug_timeout_s * 1000:
            raise ValueError(f"hold_eject_ms {self.longest_hold_ms():g} is not shorter than wait_unplug_timeout_s "
                             f"{self.wait_unplug_timeout_s:g} s: the testbed would cancel the migration first")
        return self

    def longest_hold_ms(self) -> float:
        hold = self.hold_eject_ms
        return max(hold.values()) if isinstance(hold, dict) else (hold or 0.0)


class ShapeUplinkStep(StepBase):
    """Shapes the uplink between the two hosts' bridges (network.hosts: 2), the same way in each
    direction: rate_mbit alone is tc tbf; delay_ms or loss_percent is tc netem (with the rate, if
    given). Guest traffic between the hosts and `migrate transport: tcp` cross it. clear: true
    takes the shaping off."""
    action: Literal["shape-uplink"]
    rate_mbit: float | None = Field(None, gt=0, le=100_000)
    delay_ms: float = Field(0, ge=0, le=10_000)
    loss_percent: float = Field(0, ge=0, le=100)
    clear: bool = False

    @model_validator(mode="after")
    def _something(self) -> "ShapeUplinkStep":
        shaped = self.rate_mbit is not None or self.delay_ms or self.loss_percent
        if self.clear and shaped:
            raise ValueError("clear: true takes the shaping off: give no rate_mbit, delay_ms or loss_percent with it")
        if not self.clear and not shaped:
            raise ValueError("give rate_mbit, delay_ms or loss_percent (or clear: true)")
        return self


class SaveRestoreStep(MigrationStepBase):
    """What `virsh save` then `virsh restore` do: migrates the VM to a file (a plain migration
    stream), shuts its QEMU down, then starts a new QEMU on the same taps with -incoming and loads the
    file. A VM stopped by an earlier `stop` step is saved stopped, as libvirt saves a paused domain."""
    action: Literal["save-restore"]


class StopStep(VmStep):
    """QMP stop: the VM's vCPUs halt (the guest sees nothing; its clock jumps on cont)."""
    action: Literal["stop"]
    vm: str


class ContStep(VmStep):
    """QMP cont: a stopped VM runs again."""
    action: Literal["cont"]
    vm: str


class ResetStep(VmStep):
    """Restarts the guest and waits until it is back as after boot (SSH, then its pairs unless
    wait_for_pairs is false). how: system-reset is QMP system_reset (a hard reset, no shutdown in the
    guest); reboot is `reboot -f` in the guest. Traffic probes running across it see the gap, and the
    guest's own end of a TCP probe does not survive it: start the traffic again afterwards."""
    action: Literal["reset"]
    vm: str
    how: Literal["system-reset", "reboot"] = "system-reset"
    timeout_s: float = Field(120.0, gt=0, le=3600)
    wait_for_pairs: bool = True
    # The guest comes back in its own kernel with these arguments added to its command line, as a
    # boot menu entry with other arguments would give: its init kexecs into them (testbed.kexec_disk).
    kernel_args: list[str] = Field([], max_length=MAX_KERNEL_ARGS)

    @model_validator(mode="after")
    def _kernel_args(self) -> "ResetStep":
        check_kernel_args(self.kernel_args, 0)
        return self


class EventPattern(Strict):
    """One QMP event the VM's QEMUs must have sent: its name, a subset of its data, and optionally
    how long after the previous pattern's match it came."""
    event: str = Field(pattern=r"^[A-Z][A-Z0-9_]{0,63}$")
    data: dict[str, str | int | bool] = Field({}, max_length=8)
    # only from this QEMU, named as its artifacts directory: vm1 (the first), vm1-migration1 (the
    # first migration's destination), ... Both ends of a migration send MIGRATION events.
    qemu: str | None = Field(None, pattern=r"^[a-z][a-z0-9-]{0,63}$")
    min_ms_after_previous: float | None = Field(None, ge=0)
    max_ms_after_previous: float | None = Field(None, gt=0)


class CheckEventsStep(VmStep):
    """Checks the QMP events of every QEMU the VM has run in (sources, destinations and restored
    ones, merged in time order) since the start of step `since_step`: `sequence` must appear in
    that order (other events may come between), and nothing that matches an `absent` pattern."""
    action: Literal["check-events"]
    vm: str
    since_step: int = Field(0, ge=0)
    sequence: list[EventPattern] = Field([], max_length=32)
    absent: list[EventPattern] = Field([], max_length=8)

    @model_validator(mode="after")
    def _something(self) -> "CheckEventsStep":
        if not self.sequence and not self.absent:
            raise ValueError("give a sequence or absent patterns (or both)")
        return self


class QmpStep(VmStep):
    """Sends one QMP command to the VM's QEMU. With expect_error the command must fail, and QEMU's
    error (class and description) must contain that text; without it the command must succeed. QEMU's
    reply, or its error, goes into the step's details."""
    action: Literal["qmp"]
    vm: str
    command: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,63}$")
    arguments: dict[str, Any] = Field({}, max_length=32)
    expect_error: str | None = Field(None, min_length=1, max_length=MAX_TEXT)

