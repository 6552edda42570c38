"""The scenario's models: VMs, failover pairs and their primaries, the host network, the whole
scenario. Steps are in testbed.scenario_steps, value rules in testbed.scenario_values."""

from __future__ import annotations

import ipaddress
from enum import StrEnum
from typing import Annotated, Any, Literal, Union, get_args

from pydantic import Field, field_validator, model_validator

from testbed.bug_card import BugCard
from testbed.dhcp_plan import check_flavour_options, reserve_dhcp_addresses
from testbed.image_recipe import DEFAULT_FLAVOUR, default_memory_mib, flavours
from testbed.scenario_checks import (check_captures, check_destination_faults, check_eject_holds,
                                     check_failover_pair_ids, check_host, check_host_steps, check_migrations,
                                     check_network, check_primary_overrides, check_steps, check_symptoms,
                                     check_unplugged_standbys, check_uplink_steps, check_vms, first_duplicate)
from testbed.scenario_lifecycle_checks import check_held_boots, check_kexec_resets, check_migrations_into_a_crash
from testbed.scenario_steps import Step
from testbed.scenario_values import (MARKER_RE, MAX_KERNEL_ARGS, MAX_MARKERS, MAX_PAIRS_PER_VM,
                                     MAX_PEER_ADDRESSES, MAX_STEPS, MAX_TEXT, MAX_VMS, NAME_RE, QEMU_ID_RE,
                                     KeyedValueError, Strict, check_host_address, check_kernel_args,
                                     check_mac, check_scenario_name)


class PrimaryKind(StrEnum):
    IGB_VF = "igb-vf"    # an igb PF; the guest turns one of its VFs into the primary
    PCI = "pci"          # a single-function NIC QEMU pairs itself via failover_pair_id
    HOST_VF = "host-vf"  # a VF of the host VM's igb PF, passed through by VFIO (host: {kind: vm})


class IgbVfPrimary(Strict):
    kind: Literal[PrimaryKind.IGB_VF]
    num_vfs: int = Field(2, ge=1, le=7)
    vf_index: int = Field(0, ge=0, le=6)

    @model_validator(mode="after")
    def _index_in_range(self) -> "IgbVfPrimary":
        if self.vf_index >= self.num_vfs:
            raise KeyedValueError("vf_index", f"vf_index {self.vf_index} needs num_vfs > {self.vf_index}")
        return self


# Models QEMU has that the testbed refuses as a `pci` primary, and why.
UNSUPPORTED_PCI_MODELS = {
    "e1000": "the guest image has no driver for it (e1000); supported: e1000e",
    "rtl8139": "the guest image has no driver for it (8139cp); supported: e1000e",
    "virtio-net-pci": "net_failover cannot enslave it: net_failover_slave_pre_register accepts only a "
                      "primary whose parent device is PCI, and a virtio netdev's parent is the virtio "
                      "device; supported: e1000e",
}


class PciPrimary(Strict):
    kind: Literal[PrimaryKind.PCI]
    model: Literal["e1000e"] = "e1000e"  # the only PCI NIC driver in the guest image
    # true: keep the model's option ROM (QEMU's default). A migration then fails: the hidden primary's
    # ROM RAMBlock does not exist on the destination (zoo item 2).
    rom: bool = False
    at_boot: bool = True  # false: QEMU starts without it; a plug-primary step adds it
    # The standby QEMU pairs it with: its pair's (`<pair>-sby`) unless another id is given. Another
    # id is a typo QEMU does not catch (zoo item 18): it pairs the primary with no standby, so QEMU
    # neither hides it before STANDBY nor unplugs it for a migration (nor, for vfio-pci, blocks the
    # migration), while the guest still pairs it with the standby by its MAC.
    failover_pair_id: str | None = Field(None, pattern=QEMU_ID_RE)

    @field_validator("model", mode="before")
    @classmethod
    def _supported(cls, value: Any) -> Any:
        if isinstance(value, str) and value in UNSUPPORTED_PCI_MODELS:
            raise ValueError(f"{value}: {UNSUPPORTED_PCI_MODELS[value]}")
        return value


class HostVfPrimary(Strict):
    """A VF of the host VM's igb PF, bound to vfio-pci on the host and passed to the guest with
    failover_pair_id, as the kernel document's hostdev. The testbed picks the VF."""
    kind: Literal[PrimaryKind.HOST_VF]
    failover_pair_id: str | None = Field(None, pattern=QEMU_ID_RE)  # as a pci primary's


Primary = Annotated[Union[IgbVfPrimary, PciPrimary, HostVfPrimary], Field(discriminator="kind")]
PRIMARY_KINDS: dict[str, type[Strict]] = {
    str(get_args(cls.model_fields["kind"].annotation)[0]): cls for cls in get_args(get_args(Primary)[0])}


class Standby(Strict):
    failover: bool = True
    # Legacy virtio has 32 feature bits, so the guest cannot ack VIRTIO_NET_F_STANDBY (bit 62):
    # a real way to get a guest that never negotiates STANDBY.
    legacy_virtio: bool = False
    # Legacy and modern (disable-legacy=off): a guest negotiates STANDBY as usual, unless its kernel
    # runs with virtio_pci.force_legacy=1 (a reset step's kernel_args), which drives it as legacy.
    transitional: bool = False
    link: Literal["up", "down"] = "up"
    # false: QEMU starts without the virtio-net device (its tap exists); a plug-standby step adds it.
    # A primary present before its standby is not hidden by QEMU (zoo item 10).
    at_boot: bool = True

    @model_validator(mode="after")
    def _one_virtio_mode(self) -> "Standby":
        if self.legacy_virtio and self.transitional:
            raise ValueError("legacy_virtio (legacy only) and transitional (legacy and modern) exclude each other")
        return self


class FailoverPair(Strict):
    name: str = Field(pattern=NAME_RE)
    mac: str
    # A static address, or (written `address: dhcp`) one that the testbed's DHCP server in the peer
    # namespace reserves for the MAC in network.dhcp_subnet; `dhcp` is then true.
    address: ipaddress.IPv4Interface | None = None
    dhcp: bool = False
    standby: Standby = Standby()
    primary: Primary | None = None

    @field_validator("mac", mode="before")
    @classmethod
    def _check_mac(cls, value: Any) -> str:
        return check_mac(value)

    @field_validator("address")
    @classmethod
    def _check_address(cls, value: ipaddress.IPv4Interface | None) -> ipaddress.IPv4Interface | None:
        return None if value is None else check_host_address(value)

    @property
    def standby_id(self) -> str:
        return f"{self.name}-sby"  # the standby's QEMU id (testbed.plan); primary_id likewise

    @property
    def primary_id(self) -> str:
        return f"{self.name}-pri"

    @property
    def qemu_pair_id(self) -> str:
        """The failover_pair_id QEMU's primary gets: its standby's, unless the scenario names another."""
        return getattr(self.primary, "failover_pair_id", None) or self.standby_id

    def primary_names_another_standby(self) -> bool:
        """A primary whose failover_pair_id is not its standby's id (zoo item 18)."""
        return self.qemu_pair_id != self.standby_id


class VM(Strict):
    name: str = Field(pattern=NAME_RE)
    # The guest image flavour (images/): minimal (busybox, the testbed configures the pairs) or a
    # distribution userspace such as networkd.
    image: str = DEFAULT_FLAVOUR
    # How a networkd or ifupdown guest configures its pairs: recommended (the failover master only, as
    # the kernel document asks) or naive (everything with the pair's MAC, as a match-by-MAC config or
    # an installer's allow-hotplug stanzas do).
    netconfig: Literal["recommended", "naive"] | None = None
    memory_mib: int = Field(512, ge=128, le=16384)  # when not given: the flavour's recipe says
    cpus: int = Field(1, ge=1, le=8)
    pairs: list[FailoverPair] = Field(min_length=1, max_length=MAX_PAIRS_PER_VM)
    kernel_args: list[str] = Field([], max_length=MAX_KERNEL_ARGS)
    # How the guest learns of a hot-plug on its PCIe root ports: acpi (q35's default since QEMU 6.1)
    # or native (pciehp: an unplug waits for the attention button's 5 s, zoo item 15).
    pci_hotplug: Literal["acpi", "native"] = "acpi"

    @model_validator(mode="before")
    @classmethod
    def _flavour_memory(cls, data: Any) -> Any:
        if isinstance(data, dict) and "memory_mib" not in data and data.get("image", DEFAULT_FLAVOUR) in flavours():
            return {**data, "memory_mib": default_memory_mib(data.get("image", DEFAULT_FLAVOUR))}
        return data

    @field_validator("image")
    @classmethod
    def _known_flavour(cls, value: str) -> str:
        known = flavours()
        if value not in known:
            raise ValueError(f"no guest image flavour {value!r}; known: {', '.join(known)}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "VM":
        check_flavour_options(self)
        dup = first_duplicate([p.name for p in self.pairs])
        if dup:
            raise KeyedValueError(f"pairs[{dup[1]}].name", f"pair name {self.pairs[dup[1]].name!r} is used twice "
                                  f"(also pairs[{dup[0]}])")
        check_kernel_args(self.kernel_args, len(self.pairs))
        return self

    def pair(self, name: str) -> FailoverPair:
        return next(p for p in self.pairs if p.name == name)


class Network(Strict):
    """The host side: one bridge (the host switch) with a tap per guest NIC, and a peer namespace on
    it through a veth. The peer gets these addresses; by default the first free host address of each
    subnet the pairs use."""
    peer_addresses: list[ipaddress.IPv4Interface] | None = Field(None, max_length=MAX_PEER_ADDRESSES)
    # 2: a second bridge (the migration destination host) joined to the first by an uplink veth.
    hosts: Literal[1, 2] = 1
    # Where `address: dhcp` pairs get their addresses: host .10 onwards, in the order the pairs are
    # written; the peer (and its DHCP server) takes the first free host address.
    dhcp_subnet: ipaddress.IPv4Network = ipaddress.IPv4Network("192.168.100.0/24")

    @field_validator("peer_addresses")
    @classmethod
    def _check_addresses(cls, value: list[ipaddress.IPv4Interface] | None) -> list[ipaddress.IPv4Interface] | None:
        for i, address in enumerate(value or []):
            try:
                check_host_address(address)
            except ValueError as e:
                raise KeyedValueError(f"[{i}]", str(e)) from None
        return value


class HostKind(StrEnum):
    NAMESPACE = "namespace"  # the guests' QEMUs run on this machine, in the run's namespace
    VM = "vm"                # a VM plays the hypervisor host; the guests are nested QEMUs in it


class Host(Strict):
    """Where the guests run. kind: vm boots a host VM (q35, intel-iommu, an igb PF per simulated
    uplink) and runs every guest as a nested QEMU inside it."""
    kind: HostKind = HostKind.NAMESPACE
    # At most 2 GiB is the working size with QEMU < 10.0.6: with more, the VF BARs land above 4 GiB,
    # where QEMU 10.0.0-10.0.5 maps them truncated to 32 bits (zoo/zoo-24-igbvf-bars-above-4g.yaml).
    memory_mib: int = Field(2048, ge=1024, le=4096)
    cpus: int = Field(2, ge=1, le=4)


class Scenario(Strict):
    name: str
    description: str = Field("", max_length=MAX_TEXT)
    # pytest markers for the scenario's test item: "slow" (minutes), "kvm" (skipped where KVM
    # does not boot a guest), or any name registered by the project using it.
    markers: list[Annotated[str, Field(pattern=MARKER_RE)]] = Field([], max_length=MAX_MARKERS)
    network: Network = Network()
    host: Host = Host()
    vms: list[VM] = Field(min_length=1, max_length=MAX_VMS)
    steps: list[Step] = Field(min_length=1, max_length=MAX_STEPS)
    bug: BugCard | None = None  # a bug-zoo scenario (docs/zoo.md)

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        return check_scenario_name(value)

    @model_validator(mode="before")
    @classmethod
    def _dhcp_addresses(cls, data: Any) -> Any:
        return reserve_dhcp_addresses(data)

    @model_validator(mode="after")
    def _references(self) -> "Scenario":
        check_vms(self.vms)
        check_steps(self.vms, self.steps)
        check_network(self.network, self.vms, self.steps)
        check_migrations(self.vms, self.steps)
        check_host(self.host.kind.value, self.vms)
        check_symptoms(self.bug is not None, self.steps)
        check_host_steps(self.host.kind.value, self.steps)
        check_eject_holds(self.host.kind.value, self.vms, self.steps)
        check_destination_faults(self.host.kind.value, self.vms, self.steps)
        check_captures(self.network.hosts, self.steps)
        check_uplink_steps(self.host.kind.value, self.network.hosts, self.steps)
        check_primary_overrides(self.vms, self.steps)
        check_failover_pair_ids(self.vms)
        check_unplugged_standbys(self.steps)
        check_held_boots(self.host.kind.value, self.vms, self.steps)
        check_kexec_resets(self.vms, self.steps)
        check_migrations_into_a_crash(self.steps)
        return self

    def vm(self, name: str) -> VM:
        return next(vm for vm in self.vms if vm.name == name)
