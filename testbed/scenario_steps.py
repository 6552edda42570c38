"""The step models of a scenario. Each step declares the VMs and pairs it names (references()) and
what it needs of those pairs (pair_needs()), so the scenario's cross-checks never probe attributes."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal, Union, get_args

from pydantic import Field, field_validator, model_validator

from testbed.scenario_capture_steps import CheckCaptureStep, StartCaptureStep
from testbed.scenario_run_steps import (CheckEventsStep, ContStep, MigrateStep, QmpStep, ResetStep,
                                        SaveRestoreStep, ShapeUplinkStep, StopStep)
from testbed.scenario_step_base import PairStep, Ref, StepBase, StepModel, VmStep, no_duplicates
from testbed.scenario_values import MAX_TEXT, QEMU_ID_RE, check_mac

MAX_ARGV = 256  # items of an exec argv


class BootStep(StepBase):
    """Start VMs, wait for SSH, then (by default) for every failover pair to be complete."""
    action: Literal["boot"]
    vms: list[str] | None = Field(None, min_length=1, max_length=8)  # None: all of them
    wait_for_pairs: bool = True
    # never: boot cold. auto: resume from a cached post-boot state when nothing in the scenario
    # looks at the boot itself (testbed.warm_boot.cold_reasons), else boot cold and say why.
    # required: like auto, but a VM that cannot run from a snapshot fails the step.
    # None (not given): the run's default, `testbed run --snapshot` (testbed.snapshots.run_default).
    snapshot: Literal["never", "auto", "required"] | None = None
    # QEMU starts paused (-S) and stays so: the step ends once QMP is up, before the firmware or the
    # guest's drivers ran, so that QEMU's cold-plugged NICs can be looked at as the qtest does before
    # its driver starts. A later `cont` of the VM starts it and waits for SSH and the pairs as this
    # step would have (this step's timeout_s and wait_for_pairs). Always a cold boot.
    hold: bool = False
    # A cold TCG boot is the longest wait of a run: 20 to 30 s here on an idle machine, over 70 s for
    # two-pairs beside another worker's guest on a slow day.
    timeout_s: float = Field(120.0, gt=0, le=3600)

    @field_validator("vms")
    @classmethod
    def _unique(cls, value: list[str] | None) -> list[str] | None:
        return no_duplicates(value, "VM")

    @model_validator(mode="after")
    def _a_hold_boots_cold(self) -> "BootStep":
        if self.hold and self.snapshot in ("auto", "required"):
            raise ValueError(f"hold: true boots cold (what it holds is the start itself); snapshot: {self.snapshot} "
                             "cannot be")
        return self

    def references(self) -> tuple[list[Ref], list[Ref]]:
        return [Ref(f"vms[{i}]", name) for i, name in enumerate(self.vms or [])], []


class Expectation(StrEnum):
    PAIRED = "paired"              # failover master + standby + primary
    STANDBY_ONLY = "standby-only"  # failover master + standby, no primary
    NO_FAILOVER = "no-failover"    # the virtio NIC is a plain NIC: no master was created
    PRIMARY_ONLY = "primary-only"  # no standby: the primary is a plain NIC with the pair's MAC, no master
    ABSENT = "absent"              # neither NIC is plugged: no netdev has the pair's MAC


class CheckNetdevsStep(VmStep):
    """Check the guest's netdevs for each pair; with wait, retry until the deadline."""
    action: Literal["check-netdevs"]
    vm: str
    pairs: list[str] | None = Field(None, min_length=1, max_length=8)  # None: all of them
    expect: Expectation = Expectation.PAIRED
    wait: bool = False

    @field_validator("pairs")
    @classmethod
    def _unique(cls, value: list[str] | None) -> list[str] | None:
        return no_duplicates(value, "pair")

    def references(self) -> tuple[list[Ref], list[Ref]]:
        return [Ref("vm", self.vm)], [Ref(f"pairs[{i}]", name) for i, name in enumerate(self.pairs or [])]


class CheckAddressesStep(PairStep):
    """Which of the pair's netdevs hold IPv4 addresses, once the guest's network manager has settled:
    each role in `holders` must hold the pair's address, every other netdev with the pair's MAC none."""
    action: Literal["check-addresses"]
    holders: list[Literal["failover", "standby", "primary", "other"]] = Field(["failover"], max_length=4)
    timeout_s: float = Field(60.0, gt=0, le=3600)

    @field_validator("holders")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        return no_duplicates(value, "role")  # type: ignore[return-value]

    def pair_needs(self) -> frozenset[str]:
        return frozenset({"address"})


class CheckDeviceStep(VmStep):
    """Check on the QEMU side whether a pair's primary device is realized (visible to the guest)."""
    action: Literal["check-primary-device"]
    vm: str
    pair: str
    present: bool

    def references(self) -> tuple[list[Ref], list[Ref]]:
        return [Ref("vm", self.vm)], [Ref("pair", self.pair)]

    def pair_needs(self) -> frozenset[str]:
        return frozenset({"primary"})


class SleepStep(StepModel):
    action: Literal["sleep"]
    seconds: float = Field(gt=0, le=600)


class StartTrafficStep(PairStep):
    """Starts the probes between the peer and the pair's user-facing address; they run until the end."""
    action: Literal["start-traffic"]
    interval_ms: float = Field(5.0, ge=1.0, le=1000.0)
    tcp: bool = True
    tcp_rate_kib_s: int = Field(64, ge=1, le=10240)

    def pair_needs(self) -> frozenset[str]:
        return frozenset({"address"})


class UnplugPrimaryStep(PairStep):
    """device_del of the primary (for igb-vf, the PF with its VFs); waits for DEVICE_DELETED and for
    the guest to show the pair without a primary."""
    action: Literal["unplug-primary"]

    def pair_needs(self) -> frozenset[str]:
        return frozenset({"primary"})


class UnplugStandbyStep(PairStep):
    """device_del of the pair's virtio-net standby; waits for DEVICE_DELETED and for the standby's netdev
    to leave the guest. net_failover destroys the failover master with it; the primary stays, as a
    plain NIC with the pair's MAC (zoo item 16). A later migrate, save-restore or reset of the VM is
    refused: its destination and checks assume the standby."""
    action: Literal["unplug-standby"]


class PlugStandbyStep(PairStep):
    """device_add of the pair's virtio-net standby (absent at boot, or unplugged); with wait, waits for
    the guest to show the pair as it now should (a primary already there is enslaved: paired)."""
    action: Literal["plug-standby"]
    wait: bool = True


class PlugPrimaryStep(PairStep):
    """device_add of the primary with its launch properties; waits for the guest to enslave it.
    A pci primary may name another standby (failover_pair_id: a QEMU device id, e.g. one that does
    not exist, as the qtest's params/on_mismatch) or carry another MAC; QEMU does not treat it as
    this standby's primary, so it needs wait: false and the scenario checks what follows."""
    action: Literal["plug-primary"]
    wait: bool = True
    failover_pair_id: str | None = Field(None, pattern=QEMU_ID_RE)
    mac: str | None = None

    @field_validator("mac", mode="before")
    @classmethod
    def _check_mac(cls, value: Any) -> Any:
        return None if value is None else check_mac(value, own_ok=True)

    @model_validator(mode="after")
    def _not_waited_for(self) -> "PlugPrimaryStep":
        if (self.failover_pair_id is not None or self.mac is not None) and self.wait:
            raise ValueError("a primary with another failover_pair_id or MAC does not pair with this standby: "
                             "set wait: false")
        return self

    def pair_needs(self) -> frozenset[str]:
        return frozenset({"primary"})


class Nic(StrEnum):
    STANDBY = "standby"
    PRIMARY = "primary"


class SetLinkStep(PairStep):
    action: Literal["set-link"]
    nic: Nic = Nic.STANDBY
    up: bool

    def pair_needs(self) -> frozenset[str]:
        return frozenset({"primary"}) if self.nic == Nic.PRIMARY else frozenset()


class AnnounceSelfStep(VmStep):
    """QMP announce-self: the guest's NICs send gratuitous ARP/RARP so switches relearn their MACs."""
    action: Literal["announce-self"]
    vm: str
    rounds: int = Field(3, ge=1, le=20)
    initial_ms: int = Field(50, ge=1, le=100_000)
    max_ms: int = Field(550, ge=1, le=100_000)
    step_ms: int = Field(100, ge=1, le=100_000)


class FdbStep(PairStep):
    """bridge fdb del/add MAC dev PORT master, on the host bridge. PORT is the tap of the pair's
    standby or primary; MAC defaults to the pair's MAC."""
    action: Literal["fdb"]
    op: Literal["del", "add"]
    port: Nic = Nic.PRIMARY
    mac: str | None = None

    @field_validator("mac", mode="before")
    @classmethod
    def _check_mac(cls, value: Any) -> Any:
        return None if value is None else check_mac(value, own_ok=True)

    def pair_needs(self) -> frozenset[str]:
        return frozenset({"primary"}) if self.port == Nic.PRIMARY else frozenset()


ZERO_MAC = "00:00:00:00:00:00"


class VfMacStep(PairStep):
    """`ip link set PF vf N mac MAC` on the host VM: the MAC of the pair's VF (the one on the VM's
    current host) through its PF. `pair` is the pair's MAC; the kernel document's script zeroes it
    (00:00:00:00:00:00) after detaching the VF, so that the PF stops steering the MAC to the VF."""
    action: Literal["vf-mac"]
    mac: str

    @field_validator("mac", mode="before")
    @classmethod
    def _check_mac(cls, value: Any) -> Any:
        if isinstance(value, str) and value.lower() in ("pair", ZERO_MAC):
            return value.lower()
        return check_mac(value, own_ok=True)

    def pair_needs(self) -> frozenset[str]:
        return frozenset({"primary", "host-vf"})


class ExecStep(VmStep):
    """Runs a command in the guest over SSH (where: guest), or on the host that holds the guest's bridge
    (where: host: the host VM over SSH, or the run's namespace); a list is an argv, a string a shell
    command."""
    action: Literal["exec"]
    vm: str
    where: Literal["guest", "host"] = "guest"
    command: list[Annotated[str, Field(max_length=MAX_TEXT)]] | Annotated[str, Field(max_length=MAX_TEXT)]
    expect_status: int = Field(0, ge=0, le=255)

    @field_validator("command")
    @classmethod
    def _check_command(cls, value: list[str] | str) -> list[str] | str:
        argv = [value] if isinstance(value, str) else value
        if not argv or not "".join(argv).strip():
            raise ValueError("the command is empty")
        if len(argv) > MAX_ARGV:
            raise ValueError(f"an argv of {len(argv)} items; at most {MAX_ARGV}")
        if sum(len(a) for a in argv) > 4 * MAX_TEXT:
            raise ValueError(f"the command is longer than {4 * MAX_TEXT} characters")
        if any("\0" in a for a in argv):
            raise ValueError("the command contains a NUL character")
        return value


class Path_(StrEnum):
    PRIMARY = "primary"
    STANDBY = "standby"
    ANY = "any"


class CheckTrafficStep(PairStep):
    """Checks the traffic of the steps since the previous check-traffic of this pair (or since
    start-traffic): gaps that started in them, lost echoes, which slave carried the packets, and the
    TCP connection's health. An outage still open when it starts is waited out (up to timeout_s)."""
    action: Literal["check-traffic"]
    timeout_s: float = Field(30.0, gt=0, le=3600)
    max_gap_ms: float | None = Field(None, ge=0, le=3_600_000)
    # the longest gap must be at least this long: an outage a bug scenario expects to see
    min_gap_ms: float | None = Field(None, gt=0, le=3_600_000)
    max_lost: int | None = Field(None, ge=0, le=10**9)
    path: Path_ = Path_.ANY
    tcp_max_stall_ms: float | None = Field(None, ge=0, le=3_600_000)
    min_packets: int = Field(20, ge=0, le=10**9)

    def pair_needs(self) -> frozenset[str]:
        return frozenset({"address"})


class PauseStep(StepModel):
    """With `testbed run --keep`: hold here, print how to reach the VMs, and go on after
    `testbed resume` (or tear down after `testbed down`). Without --keep it does nothing, so a
    scenario with a pause still runs unattended in CI."""
    action: Literal["pause"]
    message: str = Field("", max_length=MAX_TEXT)


class MtuStep(PairStep):
    """`ip link set dev NETDEV mtu N` in the guest, on the pair's failover master, standby or primary
    (found by role). expect_error: the command must fail, with this text in its error."""
    action: Literal["mtu"]
    nic: Literal["failover", "standby", "primary"] = "failover"
    mtu: int = Field(ge=68, le=65535)
    expect_error: Annotated[str, Field(max_length=MAX_TEXT)] | None = None

    def pair_needs(self) -> frozenset[str]:
        return frozenset({"primary"}) if self.nic == "primary" else frozenset()


Step = Annotated[Union[BootStep, CheckNetdevsStep, CheckAddressesStep, CheckDeviceStep, SleepStep, StartTrafficStep,
                       UnplugPrimaryStep, PlugPrimaryStep, SetLinkStep, AnnounceSelfStep, FdbStep,
                       VfMacStep, ExecStep, CheckTrafficStep, MigrateStep, SaveRestoreStep, StopStep,
                       ContStep, ResetStep, MtuStep, UnplugStandbyStep, PlugStandbyStep, CheckEventsStep,
                       QmpStep, PauseStep, StartCaptureStep, CheckCaptureStep, ShapeUplinkStep],
                 Field(discriminator="action")]

STEP_TYPES: tuple[type[StepModel], ...] = get_args(get_args(Step)[0])
# action -> step model, read from each model's Literal annotation
STEP_ACTIONS: dict[str, type[StepModel]] = {
    str(get_args(cls.model_fields["action"].annotation)[0]): cls for cls in STEP_TYPES}
