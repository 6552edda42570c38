"""One class per kind of failover primary, as virtme-ng has one class per architecture: what QEMU
device it is, which MAC the device gets, which guest driver ends up enslaved, what the guest needs
on its kernel command line, and how the pair comes about. plan.py and qemu_argv.py ask the kind
instead of branching on it."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

from testbed.scenario import FailoverPair, IgbVfPrimary, PciPrimary, PrimaryKind

if TYPE_CHECKING:
    from testbed.plan import PairPlan

# Locally administered prefixes (0x02 bit) for MACs the testbed derives itself, so they never clash
# with the pair MACs scenarios use (the scenario schema refuses these prefixes).
IGB_PF_MAC_PREFIX = 0x06
MGMT_MAC_PREFIX = 0x0A


def derived_mac(prefix: int, vm_index: int, nic_index: int) -> str:
    return f"{prefix:02x}:54:00:{vm_index:02x}:{nic_index:02x}:01"


class PrimaryKindSpec(ABC):
    kind: PrimaryKind
    # "qemu" (failover_pair_id: hidden until STANDBY, unplugged for migration, unless the scenario's
    # failover_pair_id names another id) or "guest"
    paired_by: str
    has_backend = True  # an emulated NIC with a tap; a passed-through VF has none

    @abstractmethod
    def qemu_driver(self, pair: FailoverPair) -> str: ...

    @abstractmethod
    def device_mac(self, pair: FailoverPair, vm_index: int, pair_index: int) -> str: ...

    @abstractmethod
    def guest_driver(self, pair: FailoverPair) -> str:
        """The guest driver of the netdev that net_failover should enslave as the primary."""

    def extra_props(self, pair: "PairPlan") -> dict[str, object]:
        """QEMU properties beyond id, netdev, mac and bus, at launch and on a re-plug alike."""
        return {}

    def guest_config(self, pair: "PairPlan") -> str | None:
        """This pair's entry of the guest's testbed.sriov= kernel argument, if the guest pairs it."""
        return None


class IgbVfKind(PrimaryKindSpec):
    """An emulated igb PF on its own root port. QEMU refuses igb as a failover_pair_id primary (SR-IOV
    makes it multi-function), so the guest pairs one of its VFs itself, as a host would: the PF's
    VFs are enabled, the VF MAC is set through the PF, and igbvf is bound (images/rootfs sriov-pf)."""
    kind = PrimaryKind.IGB_VF
    paired_by = "guest"

    def qemu_driver(self, pair: FailoverPair) -> str:
        return "igb"

    def device_mac(self, pair: FailoverPair, vm_index: int, pair_index: int) -> str:
        return derived_mac(IGB_PF_MAC_PREFIX, vm_index, pair_index)  # the PF's; the VF gets the pair's

    def guest_driver(self, pair: FailoverPair) -> str:
        return "igbvf"

    def guest_config(self, pair: "PairPlan") -> str | None:
        primary = pair.pair.primary
        assert isinstance(primary, IgbVfPrimary) and pair.primary is not None
        return f"{pair.primary.mac}/{primary.num_vfs}/{primary.vf_index}/{pair.pair.mac}"


class PciNicKind(PrimaryKindSpec):
    """A single-function PCIe NIC with failover_pair_id=<standby>: QEMU hides it until the guest acks
    STANDBY (FAILOVER_NEGOTIATED) and unplugs it itself when a migration starts. A failover_pair_id
    that names no standby (zoo item 18) does neither."""
    kind = PrimaryKind.PCI
    paired_by = "qemu"
    GUEST_DRIVERS = {"e1000e": "e1000e"}

    def _model(self, pair: FailoverPair) -> str:
        assert isinstance(pair.primary, PciPrimary)
        return pair.primary.model

    def qemu_driver(self, pair: FailoverPair) -> str:
        return self._model(pair)

    def device_mac(self, pair: FailoverPair, vm_index: int, pair_index: int) -> str:
        return pair.mac

    def guest_driver(self, pair: FailoverPair) -> str:
        return self.GUEST_DRIVERS[self._model(pair)]

    def extra_props(self, pair: "PairPlan") -> dict[str, object]:
        # romfile="": the option ROM's RAMBlock does not exist on a destination where the primary is
        # hidden, so a migration would fail with "Unknown ramblock" (unless the scenario asks for it).
        primary = pair.pair.primary
        assert isinstance(primary, PciPrimary)
        return {**({} if primary.rom else {"romfile": ""}),
                "failover_pair_id": pair.pair.qemu_pair_id}


class HostVfKind(PrimaryKindSpec):
    """A VF of the host VM's igb PF, bound to vfio-pci on the host and given to the guest with
    failover_pair_id: the kernel document's hostdev. QEMU hides it until STANDBY and unplugs it for a
    migration (as PciNicKind's); the VF's MAC is set through the PF on the host (testbed.host_vm)."""
    kind = PrimaryKind.HOST_VF
    paired_by = "qemu"
    has_backend = False

    def qemu_driver(self, pair: FailoverPair) -> str:
        return "vfio-pci"

    def device_mac(self, pair: FailoverPair, vm_index: int, pair_index: int) -> str:
        return pair.mac  # set through the PF, not a QEMU property

    def guest_driver(self, pair: FailoverPair) -> str:
        return "igbvf"

    def extra_props(self, pair: "PairPlan") -> dict[str, object]:
        assert pair.primary is not None and pair.primary.host_device, "the host assigns the VF at launch"
        # rombar=0: a ROM BAR's RAMBlock would not exist on a destination where the VF is hidden.
        return {"host": pair.primary.host_device, "failover_pair_id": pair.pair.qemu_pair_id, "rombar": 0}


KINDS: dict[PrimaryKind, PrimaryKindSpec] = {k.kind: k for k in (IgbVfKind(), PciNicKind(), HostVfKind())}


def kind_of(pair: FailoverPair) -> PrimaryKindSpec | None:
    return None if pair.primary is None else KINDS[pair.primary.kind]
