"""The host-VM host kind: a VM (L1) plays the hypervisor host of the kernel's net_failover document.

L1 is q35 with an intel-iommu and one emulated igb PF per simulated uplink (PF 0 for the guests'
first slot, PF 1 for a migration's destination). Inside L1, each PF gets VFs, each host-vf primary
gets a VF whose MAC is set through the PF and which is bound to vfio-pci, and a bridge brh<N> has
the PF as its uplink port and the guests' standby taps on it (the document's
`<interface type='bridge'>`). The guests (L2) are nested QEMUs started in L1 with
`vfio-pci,host=<VF>,failover_pair_id=<standby>`; their QMP and SSH come out through L1's
user-mode forwards. Outside, each PF's tap sits on the run's bridge br<N>, with the peer."""

from __future__ import annotations

import ipaddress
import logging
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from testbed import host_vm_warm, warm_boot
from testbed.errors import TestbedError
from testbed.guest_shell import CommandResult, GuestShell
from testbed.host_vm_machine import HostVmMachine, host_vm_plan
from testbed.hosts import Host
from testbed.nested_kvm import nested_kvm_verdict
from testbed.nested_machine import L2_RUN, NestedMachine, with_host_devices
from testbed.netns import NetworkNamespace
from testbed.network import NetworkPlan
from testbed.plan import MachinePlan
from testbed.snapshots import SnapshotCache
from testbed.waiting import wait_until

if TYPE_CHECKING:
    from testbed.clock import RunClock
    from testbed.host_image import HostImage
    from testbed.host_vm_warm import HostWarmStart
    from testbed.images import GuestImage
    from testbed.scenario import Host as HostSpec
    from testbed.snapshots import Snapshot

logger = logging.getLogger(__name__)

PVFGPRC = 0x10010  # 82576: per-VF good packets received; PVFGPTC (transmitted) follows at +4
SYSFS_WRITE = 'echo "$1" > "$2"'  # a constant script; the value and the path are its arguments


class VmHost(Host):
    kind = "vm"

    def __init__(self, netns: NetworkNamespace, peer: NetworkNamespace, machine: HostVmMachine,
                 guest_image: "GuestImage", clock: "RunClock"):
        self.netns, self.peer, self.machine = netns, peer, machine
        self._guest_image, self._clock = guest_image, clock
        self.shell: GuestShell | None = None
        self.pfs: dict[int, str] = {}                       # slot -> PF netdev name in L1
        self.pf_bars: dict[int, int] = {}                   # slot -> the PF's BAR 0 (guest-physical)
        self.vf_drivers: dict[str, str] = {}                # VF PCI address -> host driver once bound
        self.vfs: dict[tuple[str, int, str], str] = {}      # (vm, slot, pair) -> VF PCI address
        self.vf_numbers: dict[tuple[str, int, str], int] = {}
        self.timings: dict[str, float] = {}
        self.socket_dir: Path | None = None
        self.nested_accel: str | None = None  # probed when L1 boots cold, or restored with its snapshot
        self.nested_accel_evidence = ""
        self.artifacts_root = machine.artifacts.directory.parent
        self.boot_args: tuple = ()  # start()'s, for a cold start after a restore that failed

    @classmethod
    def create(cls, spec: "HostSpec", plans: list[MachinePlan], peer_addresses: list[ipaddress.IPv4Interface],
               hosts: int, with_slot1: bool, guest_image: "GuestImage", host_image: "HostImage", qemu: str,
               clock: "RunClock", artifacts_dir: Path, socket_dir: Path, timeout_s: float,
               warm: "HostWarmStart | None" = None, snapshot: "Snapshot | None" = None) -> "VmHost":
        slots = 2 if with_slot1 else 1
        netns = NetworkNamespace.create()
        peer = None
        host = None
        try:
            peer = NetworkNamespace.create()
            plan = host_vm_plan(spec, plans, slots)
            # Outside: a bridge per simulated uplink, the PF's tap on it, the peer on the first.
            NetworkPlan(bridges=[f"br{i}" for i in range(hosts)],
                        taps={tap: f"br{min(slot, hosts - 1)}" for slot, tap in enumerate(plan.pf_taps)},
                        peer_addresses=list(peer_addresses)).apply(netns, peer)
            machine = HostVmMachine(plan, host_image, qemu, netns, artifacts_dir / "host", clock, socket_dir,
                                    incoming=snapshot is not None)
            host = cls(netns, peer, machine, guest_image, clock)
            host.socket_dir, host.warm = socket_dir, warm
            host.boot_args = (plans, slots, timeout_s, host_image.directory.name)
            restored = snapshot is not None and host._restored_at_start(snapshot, timeout_s)
            if not restored and not (warm is not None and warm.fails_on_fallback()):  # a cold L1 would only delay it
                host.start(*host.boot_args)
            return host
        except BaseException:
            if host is not None:
                host.close()
            else:
                if peer is not None:
                    peer.close()
                netns.close()
                shutil.rmtree(socket_dir, ignore_errors=True)
            raise

    # -- bringing L1 up
    def start(self, plans: list[MachinePlan], slots: int, timeout_s: float, host_image_key: str) -> None:
        machine = self.machine
        machine.launch()
        machine.watched = True
        machine.cont()
        machine.wait_for_console("testbed: host ssh up", timeout_s)
        self._connect(timeout_s)
        self.timings["host_ssh_ready_s"] = round(self._clock.now() - (machine.launched_at or 0), 3)
        self.nested_accel, self.nested_accel_evidence = nested_kvm_verdict(self, host_image_key)
        for slot in range(slots):
            self._configure_pf(slot, plans)
        self.timings["host_ready_s"] = round(self._clock.now() - (machine.launched_at or 0), 3)
        logger.info("host VM: SSH after %ss, VFs and bridges ready after %ss", self.timings["host_ssh_ready_s"],
                    self.timings["host_ready_s"])

    def _connect(self, timeout_s: float) -> None:
        self.shell = GuestShell("host", self.netns, self.machine.plan.ssh_port, self._guest_image.ssh_key)
        self.shell.connect(timeout_s, alive=self.machine.alive)

    # -- the warm start (testbed.host_vm_warm): L1 saved and restored with its nested guests running
    def save_to(self, path: Path) -> float:
        """Saves L1 with everything running in it, and leaves it paused. The SSH session into L1 is
        closed first: a connection open across the save would be a stale one in the restored L1."""
        if self.shell is not None:
            self.shell.close()
            self.shell = None
        return warm_boot.save(self.machine, path)

    def go_on_after_save(self, timeout_s: float) -> float:
        """L1 runs on in the QEMU that saved it: it has no failover pair of its own, so the migration
        to a file changed nothing in it. Returns when it resumed, on the run clock."""
        started = self._clock.now()
        self.machine.cont()
        self._connect_after_pause(timeout_s)
        self.timings["host_resumed_s"] = round(self._clock.now() - started, 3)
        return started

    def _resume_from(self, state: Path, saved: dict, timeout_s: float) -> float:
        """L1 loaded from a saved state into its QEMU launched with `-incoming defer`: running, SSH
        up, clock set. Returns when the restore began, on the run clock."""
        started = self._clock.now()
        self.machine.launch()
        warm_boot.load_into(self.machine, state, timeout_s)
        self._connect_after_pause(timeout_s)
        host_vm_warm.apply_saved_state(self, saved)
        self.timings["host_restored_s"] = round(self._clock.now() - started, 3)
        return started

    def _connect_after_pause(self, timeout_s: float) -> None:
        self._connect(timeout_s)
        self._sh(["date", "-s", f"@{int(time.time())}"])  # L1's clock stopped at the save

    def _restored_at_start(self, snapshot: "Snapshot", timeout_s: float) -> bool:
        assert self.warm is not None
        try:
            self.warm.restore_started = self._resume_from(snapshot.state, snapshot.meta()["host"], timeout_s)
            self.warm.restored_from = snapshot.key
            return True
        except (TestbedError, KeyError, TypeError, ValueError) as e:
            logger.warning("host VM: restoring snapshot %s failed: %s", snapshot.key, e)
            self.warm.fallback = f"restoring {snapshot.key} failed: {e}"
            # as a flat VM's (steps/boot.py): a snapshot that does not load would fail every later
            # run too, and keep this run's new save from taking its key
            SnapshotCache(snapshot.directory.parent).drop(snapshot.key, str(e).splitlines()[0])
            self.restart_cold("host-restore-failed", relaunch=not self.warm.fails_on_fallback())
            return False

    def restart_cold(self, failed_label: str, relaunch: bool = True) -> None:
        """Stops L1 (and every guest in it), keeps its artifacts under failed_label and, with relaunch,
        makes a new QEMU for a cold boot, with the artifacts directory `host` (start() launches it)."""
        if self.shell is not None:
            self.shell.close()
            self.shell = None
        old = self.machine
        old.shutdown()
        if old.artifacts.directory.name == "host":
            shutil.rmtree(self.artifacts_root / failed_label, ignore_errors=True)
            old.artifacts.directory.rename(self.artifacts_root / failed_label)
            old.artifacts = replace(old.artifacts, directory=self.artifacts_root / failed_label)
        if relaunch:
            self.machine = HostVmMachine(old.host_plan, old.host_image, old.qemu, self.netns,
                                         self.artifacts_root / "host", self._clock, old.socket_dir or Path("."))
        self.vfs.clear()
        self.vf_numbers.clear()

    def _sh(self, argv: list[str], timeout: float = 30) -> str:
        assert self.shell is not None
        return self.shell.run(argv, timeout=timeout).stdout

    def _write(self, path: str, value: str) -> None:
        self._sh(["sh", "-c", SYSFS_WRITE, "sh", value, path])

    def _pf_name(self, mac: str) -> str:
        found: list[str] = []

        def find() -> str | None:
            for line in self._sh(["ip", "-o", "link", "show"]).splitlines():
                if f"link/ether {mac}" in line:
                    found.append(line.split()[1].rstrip(":").split("@")[0])
                    return None
            return f"no netdev with MAC {mac} yet"
        wait_until(find, 30, f"the host VM's PF with MAC {mac}")
        return found[-1]

    def _configure_pf(self, slot: int, plans: list[MachinePlan]) -> None:
        pf = self._pf_name(self.machine.plan.pf_macs[slot])
        self.pfs[slot] = pf
        wanted = [(plan.name, pair.pair.name, pair.pair.mac) for plan in plans for pair in plan.pairs
                  if pair.primary is not None and not pair.primary.backend]
        device = f"/sys/class/net/{pf}/device"
        self.pf_bars[slot] = int(self._sh(["head", "-n", "1", f"{device}/resource"]).split()[0], 16)
        self._sh(["ip", "link", "set", pf, "up"])  # igb: a VF MAC set while the PF is down is not used
        if wanted:
            self._write(f"{device}/sriov_drivers_autoprobe", "0")
            self._write(f"{device}/sriov_numvfs", str(len(wanted)))
        # A VF's MAC is set when a QEMU takes it (take_vfs), as libvirt does for an <interface
        # type='hostdev'>: igb steers a MAC in a VF's filter to that VF's pool only, so a VF
        # holding the pair's MAC with no guest behind it would swallow the standby's traffic.
        for number, (vm, pair, _) in enumerate(wanted):
            bdf = Path(self._sh(["readlink", f"{device}/virtfn{number}"]).strip()).name
            self._write(f"/sys/bus/pci/devices/{bdf}/driver_override", "vfio-pci")
            self._write("/sys/bus/pci/drivers_probe", bdf)
            self.vfs[(vm, slot, pair)] = bdf
            self.vf_drivers[bdf] = self.vf_driver(bdf)
            self.vf_numbers[(vm, slot, pair)] = number
        bridge = f"brh{slot}"
        batch = [f"link add {bridge} type bridge", f"link set {bridge} up", f"link set {pf} master {bridge}",
                 f"link set {pf} up"]
        for plan in plans:
            for nic in plan.on_slot(slot).nics:
                batch += [f"tuntap add dev {nic.tap} mode tap", f"link set {nic.tap} master {bridge}",
                          f"link set {nic.tap} up"]
        for line in batch:
            self._sh(["ip", *line.split()])

    # -- the Host interface
    def new_machine(self, plan: MachinePlan, artifacts_dir: Path, incoming: bool,
                    absent_devices: frozenset[str], socket_dir: Path, run_dir_name: str | None = None) -> NestedMachine:
        """A nested QEMU to launch; or, with run_dir_name, one already running in a restored L1 (with
        the VFs it held released before the save, in absent_devices), to adopt."""
        if self.shell is None:
            raise TestbedError("the host VM is not up")
        if run_dir_name is None:
            self.take_vfs(plan, [p.pair.name for p in plan.pairs if p.primary is not None
                                 and not p.primary.backend and p.primary.device_id not in absent_devices])
        machine = NestedMachine(with_host_devices(plan, self.vfs), self._guest_image, self.netns, artifacts_dir,
                                self._clock, self.shell, self.machine.alive, self.nested_accel, incoming=incoming,
                                absent_devices=absent_devices, run_dir_name=run_dir_name)
        machine.depends_on = self.machine
        return machine

    def run(self, argv: list[str]) -> str:
        return self._sh(argv)

    def set_vf_mac(self, plan: MachinePlan, pair: str, mac: str) -> dict[str, object]:
        key = (plan.name, plan.slot, pair)
        if key not in self.vf_numbers:
            raise TestbedError(f"{plan.name}/{pair}: no VF on host slot {plan.slot}")
        pf, number = self.pfs[plan.slot], self.vf_numbers[key]
        self._sh(["ip", "link", "set", pf, "vf", str(number), "mac", mac])
        return {"pf": pf, "vf": number, "bdf": self.vfs[key], "mac": mac}

    def vf_counters(self, plan: MachinePlan, pair: str) -> dict[str, object] | None:
        # igb's PF driver has no ndo_get_vf_stats, so `ip -s link show PF` prints no VF counters;
        # the 82576 keeps them per pool in the PF's BAR (PVFGPRC/PVFGPTC at 0x10010 + 0x100 * VF).
        # /dev/mem is closed in L1 (STRICT_DEVMEM), so they are read as the host VM's memory.
        key = (plan.name, plan.slot, pair)
        if key not in self.vf_numbers or plan.slot not in self.pf_bars:
            return None
        number = self.vf_numbers[key]
        address = self.pf_bars[plan.slot] + PVFGPRC + 0x100 * number
        text = self.machine.qmp.execute("human-monitor-command", {"command-line": f"xp /2wx {address:#x}"})
        words = str(text).split(":", 1)[-1].split()
        if len(words) != 2:
            raise TestbedError(f"reading VF {number}'s counters on PF {self.pfs[plan.slot]}: {text!r}")
        return {"name": f"vf{number}@{self.pfs[plan.slot]}", "rx": int(words[0], 16), "tx": int(words[1], 16)}

    def take_vfs(self, plan: MachinePlan, pairs: list[str]) -> list[dict[str, object]]:
        return [self.set_vf_mac(plan, pair, plan.pair(pair).pair.mac) for pair in pairs]

    def exec(self, command: list[str] | str, timeout: float) -> CommandResult:
        assert self.shell is not None
        return self.shell.run(command, timeout=timeout, check=False)

    def bridge_port(self, plan: MachinePlan, pair: str, nic: str) -> str:
        p = plan.pair(pair)
        if nic == "primary" and p.primary is not None and not p.primary.backend:
            return self.pfs[plan.slot]  # a VF's frames reach the bridge through its PF, the uplink port
        return super().bridge_port(plan, pair, nic)

    def migration_uri(self, socket_dir: Path, name: str) -> str:
        return f"unix:{L2_RUN / f'{name}.migration'}"

    def watched_machines(self) -> list[HostVmMachine]:
        return [self.machine]

    def describe(self) -> dict[str, object]:
        return {"kind": self.kind, **({"warm_start": self.warm.describe()} if self.warm else {}), "pfs": {str(k): v for k, v in self.pfs.items()},
                "vfs": {f"{vm}/{pair}@{slot}": bdf for (vm, slot, pair), bdf in self.vfs.items()},
                "vf_drivers": dict(self.vf_drivers), **self.timings,
                **({"nested_accel": self.nested_accel, "nested_accel_evidence": self.nested_accel_evidence} if self.nested_accel else {})}

    def vf_driver(self, bdf: str) -> str:
        """The host driver bound to a VF (vfio-pci when it is passed through)."""
        return Path(self._sh(["readlink", f"/sys/bus/pci/devices/{bdf}/driver"]).strip()).name

    def close(self) -> None:
        try:
            if self.shell is not None:
                self.shell.close()
            self.machine.shutdown()
        finally:
            self.peer.close()
            self.netns.close()
            if self.socket_dir is not None:
                shutil.rmtree(self.socket_dir, ignore_errors=True)

