"""Host kinds: where the guests' QEMUs run, and where the bridge their taps sit on lives. One class
per kind, as virtme-ng has one class per architecture:

- NamespaceHost: the guests' QEMUs run in the run's private network namespace on this machine, with
  a Linux bridge per simulated host (today's default, and the fast path).
- VmHost (testbed.host_vm): a VM plays the hypervisor host; the guests run as nested QEMUs inside it,
  with igb VFs passed through by VFIO.

The steps reach a host only through this interface: new machines, commands on the host (the
bridge's FDB), and where a migration stream goes."""

from __future__ import annotations

import ipaddress
import subprocess
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING

from testbed.errors import TestbedError, WaitTimeout
from testbed.guest_shell import CommandResult
from testbed.machine import QemuMachine
from testbed.netns import NetworkNamespace
from testbed.network import NetworkPlan
from testbed.plan import MachinePlan

if TYPE_CHECKING:
    from testbed.clock import RunClock
    from testbed.host_vm_warm import HostWarmStart
    from testbed.images import GuestImage


class Host(ABC):
    kind: str
    netns: NetworkNamespace  # where the testbed itself connects from (SSH, QMP)
    peer: NetworkNamespace   # the traffic peer, on the first bridge
    warm: "HostWarmStart | None" = None  # a host VM's own warm start (its guests are saved with it)

    @abstractmethod
    def new_machine(self, plan: MachinePlan, artifacts_dir: Path, incoming: bool,
                    absent_devices: frozenset[str], socket_dir: Path) -> QemuMachine:
        """A guest's QEMU, not launched yet."""

    @abstractmethod
    def run(self, argv: list[str]) -> str:
        """A command on the host that holds the guests' bridges (for `bridge fdb`); raises on failure."""

    @abstractmethod
    def exec(self, command: list[str] | str, timeout: float) -> CommandResult:
        """A command on that host, for an `exec where: host` step: its status, whatever it is."""

    def bridge_port(self, plan: MachinePlan, pair: str, nic: str) -> str:
        """The port of the host's bridge behind a pair's standby or primary (for `bridge fdb`)."""
        p = plan.pair(pair)
        found = p.standby if nic == "standby" else p.primary
        if found is None or not found.backend:
            raise TestbedError(f"{plan.name}/{pair}: its {nic} has no port on the host's bridge")
        return found.tap

    def migration_uri(self, socket_dir: Path, name: str) -> str:
        return f"unix:{socket_dir / f'{name}.sock'}"

    def set_vf_mac(self, plan: MachinePlan, pair: str, mac: str) -> dict[str, object]:
        """`ip link set PF vf N mac MAC` for a host-vf primary's VF on the plan's slot."""
        raise TestbedError(f"{plan.name}/{pair}: only a host VM has VFs of its own ({self.kind} host)")

    def vf_counters(self, plan: MachinePlan, pair: str) -> dict[str, object] | None:
        """A host-vf primary's VF counters as its PF sees them (path proof from the host's side)."""
        return None

    def take_vfs(self, plan: MachinePlan, pairs: list[str]) -> list[dict[str, object]]:
        """Before a QEMU takes VFs (at launch or device_add): what libvirt does for an
        <interface type='hostdev'>, setting each VF's MAC to the pair's through the PF."""
        return []

    def watched_machines(self) -> list[QemuMachine]:
        """The host's own QEMUs, for the run's watch: a host VM that dies takes every guest with it."""
        return []

    def describe(self) -> dict[str, object]:
        """What the report says about the host."""
        return {"kind": self.kind}

    @abstractmethod
    def close(self) -> None: ...


class NamespaceHost(Host):
    kind = "namespace"

    def __init__(self, netns: NetworkNamespace, peer: NetworkNamespace, images: "dict[str, GuestImage]",
                 qemu: str, accel: str, clock: "RunClock"):
        self.netns, self.peer = netns, peer
        self._images, self._qemu, self._accel, self._clock = images, qemu, accel, clock

    @classmethod
    def create(cls, plans: list[MachinePlan], peer_addresses: list[ipaddress.IPv4Interface], hosts: int,
               with_slot1: bool, images: "dict[str, GuestImage]", qemu: str, accel: str,
               clock: "RunClock") -> "NamespaceHost":
        netns = NetworkNamespace.create()
        try:
            peer = NetworkNamespace.create()
        except BaseException:
            netns.close()
            raise
        host = cls(netns, peer, images, qemu, accel, clock)
        try:
            NetworkPlan.for_machines(plans, peer_addresses, hosts, with_slot1=with_slot1).apply(netns, peer)
        except BaseException:
            host.close()
            raise
        return host

    def new_machine(self, plan: MachinePlan, artifacts_dir: Path, incoming: bool,
                    absent_devices: frozenset[str], socket_dir: Path) -> QemuMachine:
        return QemuMachine(plan, self._images[plan.vm.image], self._qemu, self._accel, self.netns, artifacts_dir, self._clock,
                           incoming=incoming, absent_devices=absent_devices, socket_dir=socket_dir)

    def run(self, argv: list[str]) -> str:
        return self.netns.run(argv)

    def exec(self, command: list[str] | str, timeout: float) -> CommandResult:
        argv = ["sh", "-c", command] if isinstance(command, str) else command
        try:
            done = subprocess.run(self.netns.argv(argv), capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            raise WaitTimeout(f"{command!r} in the run's namespace did not finish within {timeout:.0f}s") from e
        except OSError as e:
            raise TestbedError(f"{command!r} in the run's namespace: {e}") from e
        return CommandResult(argv, done.returncode, done.stdout, done.stderr)

    def close(self) -> None:
        self.peer.close()
        self.netns.close()
