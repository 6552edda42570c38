"""Scenario files: YAML rendered by jinja2, validated into typed models before anything starts."""

from __future__ import annotations

import ipaddress
import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import jinja2
import yaml
from pydantic import (BaseModel, ConfigDict, Field, ValidationError, field_validator,
                      model_validator)

from testbed.errors import ScenarioError

NAME_RE = r"^[a-z][a-z0-9]{0,7}$"  # short: names end up in QEMU ids and tap names
MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _mac(value: str) -> str:
    value = value.lower()
    if not MAC_RE.match(value):
        raise ValueError(f"{value!r} is not a MAC address like 52:54:00:00:12:53")
    if int(value[:2], 16) & 1:
        raise ValueError(f"{value} is a multicast MAC; a NIC needs a unicast one")
    return value


class PrimaryKind(StrEnum):
    IGB_VF = "igb-vf"  # an igb PF; the guest turns one of its VFs into the primary
    PCI = "pci"        # a single-function NIC QEMU pairs itself via failover_pair_id


class IgbVfPrimary(Strict):
    kind: Literal[PrimaryKind.IGB_VF]
    num_vfs: int = Field(2, ge=1, le=7)
    vf_index: int = Field(0, ge=0, le=6)

    @model_validator(mode="after")
    def _index_in_range(self) -> "IgbVfPrimary":
        if self.vf_index >= self.num_vfs:
            raise ValueError(f"vf_index {self.vf_index} needs num_vfs > {self.vf_index}")
        return self


class PciPrimary(Strict):
    kind: Literal[PrimaryKind.PCI]
    model: Literal["e1000e", "e1000", "rtl8139", "virtio-net-pci"] = "e1000e"


Primary = Annotated[Union[IgbVfPrimary, PciPrimary], Field(discriminator="kind")]


class Standby(Strict):
    failover: bool = True
    # Legacy virtio has 32 feature bits, so the guest cannot ack VIRTIO_NET_F_STANDBY (bit 62):
    # a real way to get a guest that never negotiates STANDBY.
    legacy_virtio: bool = False
    link: Literal["up", "down"] = "up"


class FailoverPair(Strict):
    name: str = Field(pattern=NAME_RE)
    mac: str
    address: ipaddress.IPv4Interface | None = None
    standby: Standby = Standby()
    primary: Primary | None = None

    @field_validator("mac")
    @classmethod
    def _check_mac(cls, value: str) -> str:
        return _mac(value)


class VM(Strict):
    name: str = Field(pattern=NAME_RE)
    memory_mib: int = Field(512, ge=128, le=16384)
    cpus: int = Field(1, ge=1, le=8)
    pairs: list[FailoverPair] = Field(min_length=1)
    kernel_args: list[str] = []

    @model_validator(mode="after")
    def _unique_pairs(self) -> "VM":
        _unique([p.name for p in self.pairs], "pair name")
        return self

    def pair(self, name: str) -> FailoverPair:
        return next(p for p in self.pairs if p.name == name)


class StepBase(Strict):
    timeout_s: float = Field(60.0, gt=0, le=3600)


class BootStep(StepBase):
    """Start VMs, wait for SSH, then (by default) for every failover pair to be complete."""
    action: Literal["boot"]
    vms: list[str] | None = None
    wait_for_pairs: bool = True


class Expectation(StrEnum):
    PAIRED = "paired"              # failover master + standby + primary
    STANDBY_ONLY = "standby-only"  # failover master + standby, no primary
    NO_FAILOVER = "no-failover"    # the virtio NIC is a plain NIC: no master was created


class CheckNetdevsStep(StepBase):
    """Check the guest's netdevs for each pair; with wait, retry until the deadline."""
    action: Literal["check-netdevs"]
    vm: str
    pairs: list[str] | None = None
    expect: Expectation = Expectation.PAIRED
    wait: bool = False


class CheckDeviceStep(StepBase):
    """Check on the QEMU side whether a pair's primary device is realized (visible to the guest)."""
    action: Literal["check-primary-device"]
    vm: str
    pair: str
    present: bool


class SleepStep(Strict):
    action: Literal["sleep"]
    seconds: float = Field(gt=0, le=600)


class PairStep(StepBase):
    vm: str
    pair: str


class StartTrafficStep(PairStep):
    """Starts the probes between the peer and the pair's user-facing address; they run until the end."""
    action: Literal["start-traffic"]
    interval_ms: float = Field(5.0, ge=1.0, le=1000.0)
    tcp: bool = True
    tcp_rate_kib_s: int = Field(64, ge=1, le=10240)


class UnplugPrimaryStep(PairStep):
    """device_del of the primary (for igb-vf, the PF with its VFs); waits for DEVICE_DELETED and for
    the guest to show the pair without a primary."""
    action: Literal["unplug-primary"]


class PlugPrimaryStep(PairStep):
    """device_add of the primary with its launch properties; waits for the guest to enslave it."""
    action: Literal["plug-primary"]
    wait: bool = True


class Nic(StrEnum):
    STANDBY = "standby"
    PRIMARY = "primary"


class SetLinkStep(PairStep):
    action: Literal["set-link"]
    nic: Nic = Nic.STANDBY
    up: bool


class AnnounceSelfStep(StepBase):
    """QMP announce-self: the guest's NICs send gratuitous ARP/RARP so switches relearn their MACs."""
    action: Literal["announce-self"]
    vm: str
    rounds: int = Field(3, ge=1, le=20)
    initial_ms: int = Field(50, ge=1)
    max_ms: int = Field(550, ge=1)
    step_ms: int = Field(100, ge=1)


class FdbStep(PairStep):
    """bridge fdb del/add MAC dev PORT master, on the host bridge. PORT is the tap of the pair's
    standby or primary; MAC defaults to the pair's MAC."""
    action: Literal["fdb"]
    op: Literal["del", "add"]
    port: Nic = Nic.PRIMARY
    mac: str | None = None

    @field_validator("mac")
    @classmethod
    def _check_mac(cls, value: str | None) -> str | None:
        return None if value is None else _mac(value)


class ExecStep(StepBase):
    """Runs a command in the guest over SSH; a list is an argv, a string a shell command."""
    action: Literal["exec"]
    vm: str
    command: list[str] | str
    expect_status: int = 0


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
    max_gap_ms: float | None = Field(None, ge=0)
    max_lost: int | None = Field(None, ge=0)
    path: Path_ = Path_.ANY
    tcp_max_stall_ms: float | None = Field(None, ge=0)
    min_packets: int = Field(20, ge=0)


class PauseStep(Strict):
    """With `testbed run --keep`: hold here, print how to reach the VMs, and go on after
    `testbed resume` (or tear down after `testbed down`). Without --keep it does nothing, so a
    scenario with a pause still runs unattended in CI."""
    action: Literal["pause"]
    message: str = ""


class MigrateStep(StepBase):
    """Live-migrates a VM to a destination QEMU (same devices, -incoming defer, its own taps on the
    other host's bridge) over a unix socket, then carries on with the destination. count > 1 goes
    back and forth. QEMU itself unplugs failover_pair_id primaries (wait-unplug) and waits forever
    for the guest; the testbed cancels after wait_unplug_timeout_s."""
    action: Literal["migrate"]
    vm: str
    count: int = Field(1, ge=1, le=50)
    timeout_s: float = Field(120.0, gt=0, le=3600)
    wait_unplug_timeout_s: float = Field(30.0, gt=0, le=3600)
    cancel_in: Literal["wait-unplug", "active"] | None = None
    expect: Literal["completed", "cancelled"] = "completed"
    wait_for_pairs: bool = True  # after completion: wait for the destination guest's pairs

    @model_validator(mode="after")
    def _cancel_means_cancelled(self) -> "MigrateStep":
        if self.cancel_in and self.expect != "cancelled":
            raise ValueError("cancel_in cancels the migration: set expect: cancelled")
        return self


Step = Annotated[Union[BootStep, CheckNetdevsStep, CheckDeviceStep, SleepStep, StartTrafficStep,
                       UnplugPrimaryStep, PlugPrimaryStep, SetLinkStep, AnnounceSelfStep, FdbStep,
                       ExecStep, CheckTrafficStep, MigrateStep, PauseStep],
                 Field(discriminator="action")]


class Network(Strict):
    """The host side: one bridge (the host switch) with a tap per guest NIC, and a peer namespace on
    it through a veth. The peer gets these addresses; by default the first free host address of each
    subnet the pairs use."""
    peer_addresses: list[ipaddress.IPv4Interface] | None = None
    # 2: a second bridge (the migration destination host) joined to the first by an uplink veth.
    hosts: Literal[1, 2] = 1


class Scenario(Strict):
    name: str
    description: str = ""
    # pytest markers for the scenario's test item: "slow" (minutes), "kvm" (skipped where KVM
    # does not boot a guest), or any name registered by the project using it.
    markers: list[str] = []
    network: Network = Network()
    vms: list[VM] = Field(min_length=1)
    steps: list[Step] = Field(min_length=1)

    @model_validator(mode="after")
    def _references(self) -> "Scenario":
        _unique([vm.name for vm in self.vms], "VM name")
        _unique([p.mac for vm in self.vms for p in vm.pairs], "pair MAC")
        vms = {vm.name: vm for vm in self.vms}
        for i, step in enumerate(self.steps):
            names = getattr(step, "vms", None) or ([step.vm] if hasattr(step, "vm") else [])
            for name in names:
                if name not in vms:
                    raise ValueError(f"steps[{i}] names VM {name!r}; the scenario has {sorted(vms)}")
            pair_names = (getattr(step, "pairs", None) or []) + \
                ([step.pair] if hasattr(step, "pair") else [])
            for pair in pair_names:
                if pair not in {p.name for p in vms[step.vm].pairs}:
                    raise ValueError(f"steps[{i}] names pair {pair!r}, which VM {step.vm!r} does not have")
            if isinstance(step, CheckNetdevsStep) and step.expect == Expectation.PAIRED:
                for pair in vms[step.vm].pairs:
                    if (step.pairs is None or pair.name in step.pairs) and pair.primary is None:
                        raise ValueError(f"steps[{i}] expects pair {pair.name!r} paired, but it has no primary")
            needs_primary = isinstance(step, (CheckDeviceStep, UnplugPrimaryStep, PlugPrimaryStep)) or \
                (isinstance(step, (SetLinkStep,)) and step.nic == Nic.PRIMARY) or \
                (isinstance(step, FdbStep) and step.port == Nic.PRIMARY)
            if needs_primary and vms[step.vm].pair(step.pair).primary is None:
                raise ValueError(f"steps[{i}] ({step.action}) needs the primary of pair {step.pair!r}, which has none")
            if isinstance(step, (StartTrafficStep, CheckTrafficStep)) and vms[step.vm].pair(step.pair).address is None:
                raise ValueError(f"steps[{i}] ({step.action}) needs an address on pair {step.pair!r}")
            if isinstance(step, CheckTrafficStep) and not any(
                    isinstance(s, StartTrafficStep) and (s.vm, s.pair) == (step.vm, step.pair)
                    for s in self.steps[:i]):
                raise ValueError(f"steps[{i}] checks traffic of {step.vm}/{step.pair} before any start-traffic for it")
        if not isinstance(self.steps[0], BootStep):
            raise ValueError("steps[0] must be a boot step")
        return self

    def vm(self, name: str) -> VM:
        return next(vm for vm in self.vms if vm.name == name)


def _unique(values: list[Any], what: str) -> None:
    seen = set()
    for v in values:
        if v in seen:
            raise ValueError(f"{what} {v!r} is used twice")
        seen.add(v)


def _key_path(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in {k.value for k in PrimaryKind} or str(part) in _STEP_ACTIONS:
            continue  # pydantic puts the discriminator's value in the path; the user never wrote it
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


_STEP_ACTIONS = {"boot", "check-netdevs", "check-primary-device", "sleep", "start-traffic",
                 "unplug-primary", "plug-primary", "set-link", "announce-self", "fdb", "exec",
                 "check-traffic", "migrate", "pause"}


def render(path: Path, variables: dict[str, Any] | None = None) -> str:
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                             loader=jinja2.FileSystemLoader(str(path.parent)))
    try:
        return env.get_template(path.name).render(**(variables or {}))
    except jinja2.TemplateSyntaxError as e:
        raise ScenarioError(str(path), f"line {e.lineno}", f"template syntax: {e.message}") from e
    except jinja2.UndefinedError as e:
        raise ScenarioError(str(path), "template", f"{e.message} (set it with --set NAME=VALUE)") from e


def load_scenario(path: str | Path, variables: dict[str, Any] | None = None) -> Scenario:
    """Renders, parses and validates a scenario file; any problem is a ScenarioError naming file and key."""
    path = Path(path)
    if not path.is_file():
        raise ScenarioError(str(path), "(file)", "no such file")
    text = render(path, variables)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "(yaml)"
        raise ScenarioError(str(path), where, f"invalid YAML: {getattr(e, 'problem', e)}") from e
    if not isinstance(data, dict):
        raise ScenarioError(str(path), "(top level)", "expected a mapping with name, vms and steps")
    data.setdefault("name", path.stem)
    try:
        return Scenario.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        reason = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            reason = "unknown key"
        elif first["type"] == "union_tag_invalid":
            reason = f"unknown {first['ctx']['discriminator'].strip(chr(39))} {first['ctx']['tag']!r}; " \
                     f"expected one of {first['ctx']['expected_tags']}"
        more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
        raise ScenarioError(str(path), _key_path(first["loc"]), reason + more) from e
