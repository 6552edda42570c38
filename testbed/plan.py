"""Turns a validated scenario into concrete machines: QEMU ids, taps, MACs, root ports, guest config.

Everything here is derived, pure and deterministic, so the QEMU argv and the network plan can be
printed (--dry-run) and unit-tested without starting anything.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field, replace
from pathlib import Path

from testbed.kexec_disk import CMDLINE_MARK as KEXEC_DISK_MARK
from testbed.primary_kinds import MGMT_MAC_PREFIX, PrimaryKindSpec, derived_mac, kind_of
from testbed.scenario import FailoverPair, PrimaryKind, Scenario, VM

# Every guest kernel's own arguments, before the testbed's and the scenario's. cryptomgr.notests:
# Debian's kernel self-tests each crypto algorithm as it registers (initcall_debug: crypto_algapi_init
# 0.58 s, the certificate list 0.25 s, init_encrypted 0.53 s); without them /init started 2-3 s
# sooner of a TCG boot's 8 s of kernel init (docs/images.md). The algorithms still register and
# work; only their self-tests are skipped.
GUEST_KERNEL_ARGS = ("console=ttyS0", "panic=-1", "quiet", "loglevel=6", "cryptomgr.notests=1")
SSH_PORT_BASE = 2200  # hostfwd ports live in the run's private namespace, so fixed numbers are safe
SLOT_TAP_PREFIX = ("t", "u")  # slot 0 and slot 1: a migration's source and destination taps
SLOT_PORT_STEP = 100


@dataclass(frozen=True)
class NicPlan:
    device_id: str   # QEMU -device id
    netdev_id: str   # QEMU -netdev id
    tap: str         # tap in the run's namespace
    mac: str
    root_port: str   # the pcie-root-port it sits on (its own slot, so it can be hot-plugged)
    driver: str      # QEMU device model
    backend: bool = True            # a tap netdev (False: a passed-through device)
    host_device: str | None = None  # the host PCI address of a passed-through VF, assigned at launch


@dataclass(frozen=True)
class PairPlan:
    pair: FailoverPair
    standby: NicPlan
    primary: NicPlan | None

    @property
    def kind(self) -> PrimaryKindSpec | None:
        return kind_of(self.pair)

    @property
    def primary_kind(self) -> PrimaryKind | None:
        return self.kind.kind if self.kind else None

    @property
    def guest_primary_driver(self) -> str | None:
        """The driver the guest binds to the netdev that should become the failover primary."""
        return self.kind.guest_driver(self.pair) if self.kind else None


@dataclass(frozen=True)
class MachinePlan:
    vm: VM
    index: int
    mgmt_mac: str
    ssh_port: int
    pairs: list[PairPlan]
    root_ports: list[str] = field(default_factory=list)
    slot: int = 0  # which of the VM's two tap sets (a migration alternates between them)
    # A read-only disk for the guest: a cloud-init guest's NoCloud seed (testbed.cloud_seed), made at
    # set-up; every QEMU of the VM (a migration's destination too) has it.
    seed_disk: Path | None = None
    # A read-only disk with the guest's kernel and initrd, for a reset that boots them with other
    # arguments (testbed.kexec_disk); every QEMU of the VM has it.
    kexec_disk: Path | None = None

    @property
    def name(self) -> str:
        return self.vm.name

    def on_slot(self, slot: int) -> "MachinePlan":
        """The same machine on the other set of taps and SSH port, for a migration destination."""
        def move(nic: NicPlan | None) -> NicPlan | None:
            return None if nic is None else replace(nic, tap=SLOT_TAP_PREFIX[slot] + nic.tap[1:])
        pairs = [replace(p, standby=move(p.standby), primary=move(p.primary)) for p in self.pairs]
        return replace(self, pairs=pairs, slot=slot,
                       ssh_port=SSH_PORT_BASE + self.index + SLOT_PORT_STEP * slot)

    @property
    def nics(self) -> list[NicPlan]:
        """The NICs with a tap backend."""
        return [n for p in self.pairs for n in (p.standby, p.primary) if n is not None and n.backend]

    def pair(self, name: str) -> PairPlan:
        return next(p for p in self.pairs if p.pair.name == name)

    def kernel_cmdline(self) -> list[str]:
        sriov = [entry for p in self.pairs if p.kind and (entry := p.kind.guest_config(p))]
        addrs = [f"{p.pair.mac}={'dhcp' if p.pair.dhcp else p.pair.address.with_prefixlen}"
                 for p in self.pairs if p.pair.address]
        args = [*GUEST_KERNEL_ARGS, f"testbed.hostname={self.name}", f"testbed.mgmt={self.mgmt_mac}"]
        if sriov:
            args.append("testbed.sriov=" + ",".join(sriov))
        if addrs:
            args.append("testbed.addr=" + ",".join(addrs))
        if self.vm.netconfig is not None:
            args.append(f"testbed.netconfig={self.vm.netconfig}")
        if self.kexec_disk is not None:
            args.append(KEXEC_DISK_MARK)
        return args + list(self.vm.kernel_args)


def plan_machine(vm: VM, index: int) -> MachinePlan:
    pairs: list[PairPlan] = []
    ports: list[str] = []
    for n, pair in enumerate(vm.pairs):
        sby_port, pri_port = f"rp{n}s", f"rp{n}p"
        standby = NicPlan(device_id=pair.standby_id, netdev_id=f"hn-{pair.name}-sby",
                          tap=f"t{index}{pair.name}s"[:15], mac=pair.mac, root_port=sby_port,
                          driver="virtio-net-pci")
        ports.append(sby_port)
        primary = None
        if (kind := kind_of(pair)) is not None:
            mac, driver = kind.device_mac(pair, index, n), kind.qemu_driver(pair)
            primary = NicPlan(device_id=pair.primary_id, netdev_id=f"hn-{pair.name}-pri",
                              tap=f"t{index}{pair.name}p"[:15], mac=mac, root_port=pri_port,
                              driver=driver, backend=kind.has_backend)
            ports.append(pri_port)
        pairs.append(PairPlan(pair, standby, primary))
    return MachinePlan(vm=vm, index=index, mgmt_mac=derived_mac(MGMT_MAC_PREFIX, index, 0),
                       ssh_port=SSH_PORT_BASE + index, pairs=pairs, root_ports=ports)


def present_at_boot(pair: PairPlan, nic: NicPlan) -> bool:
    """Whether QEMU starts with this NIC of the pair (a scenario may leave either out until a step
    plugs it)."""
    spec = pair.pair.standby if nic is pair.standby else pair.pair.primary
    return getattr(spec, "at_boot", True)


def absent_at_boot(plan: MachinePlan) -> frozenset[str]:
    """The device ids of the NICs QEMU starts without."""
    return frozenset(nic.device_id for p in plan.pairs for nic in (p.standby, p.primary)
                     if nic is not None and not present_at_boot(p, nic))


def plan_machines(scenario: Scenario) -> list[MachinePlan]:
    return [plan_machine(vm, i) for i, vm in enumerate(scenario.vms)]


def peer_addresses(scenario: Scenario) -> list[ipaddress.IPv4Interface]:
    """The peer's addresses: as the scenario says, or the first free host of each pair subnet."""
    if scenario.network.peer_addresses is not None:
        return list(scenario.network.peer_addresses)
    used = {p.address.ip for vm in scenario.vms for p in vm.pairs if p.address}
    out: list[ipaddress.IPv4Interface] = []
    for net in dict.fromkeys(p.address.network for vm in scenario.vms for p in vm.pairs if p.address):
        host = next(h for h in net.hosts() if h not in used)
        out.append(ipaddress.IPv4Interface(f"{host}/{net.prefixlen}"))
    return out
