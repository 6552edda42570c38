"""The host VM's own QEMU (L1): its plan and its command line. An igb PF per simulated uplink, an
intel-iommu with interrupt remapping (vfio in L1 needs it), and a user-mode management NIC whose
forwards carry L1's SSH and every nested guest's SSH and QMP."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from testbed.machine import QemuMachine
from testbed.nested_machine import qmp_port
from testbed.plan import GUEST_KERNEL_ARGS, MachinePlan
from testbed.primary_kinds import derived_mac
from testbed.qemu_argv import _opts

if TYPE_CHECKING:
    from testbed.clock import RunClock
    from testbed.host_image import HostImage
    from testbed.netns import NetworkNamespace
    from testbed.scenario import Host as HostSpec

HOST_SSH_PORT = 2222
HOST_MGMT_PREFIX = 0x0E
HOST_PF_PREFIX = 0x12


@dataclass(frozen=True)
class HostVmPlan:
    name: str
    memory_mib: int
    cpus: int
    ssh_port: int
    mgmt_mac: str
    pf_macs: list[str]            # per slot
    pf_taps: list[str]            # per slot, on the run's bridges
    forwards: list[int]           # ports forwarded from the run's namespace to the same port in L1

    def kernel_cmdline(self) -> list[str]:
        return [*GUEST_KERNEL_ARGS, "intel_iommu=on", "iommu=pt",
                f"testbed.hostname={self.name}", f"testbed.mgmt={self.mgmt_mac}"]


def host_vm_plan(spec: "HostSpec", guests: list[MachinePlan], slots: int) -> HostVmPlan:
    forwards = sorted({port for plan in guests for slot in range(slots)
                       for port in (plan.on_slot(slot).ssh_port, qmp_port(plan.on_slot(slot)))})
    return HostVmPlan(name="host", memory_mib=spec.memory_mib, cpus=spec.cpus, ssh_port=HOST_SSH_PORT,
                      mgmt_mac=derived_mac(HOST_MGMT_PREFIX, 0, 0),
                      pf_macs=[derived_mac(HOST_PF_PREFIX, 0, slot) for slot in range(slots)],
                      pf_taps=[f"hpf{slot}" for slot in range(slots)], forwards=forwards)


def host_vm_argv(qemu: str, plan: HostVmPlan, image: "HostImage", serial_log: Path, qmp_fd: int,
                 serial_socket: Path | None, incoming: bool = False) -> list[str]:
    forwards = ",".join([f"hostfwd=tcp:127.0.0.1:{plan.ssh_port}-:22",
                         *(f"hostfwd=tcp:127.0.0.1:{port}-:{port}" for port in plan.forwards)])
    argv = [
        qemu, "-name", f"{plan.name},debug-threads=on",
        # kernel-irqchip=split: intel-iommu's interrupt remapping needs the IOAPIC in QEMU.
        "-machine", "q35,kernel-irqchip=split", "-accel", "tcg", "-cpu", "max",
        "-smp", str(plan.cpus), "-m", f"{plan.memory_mib}M",
        "-nodefaults", "-no-user-config", "-display", "none", "-vga", "none", "-no-reboot", "-S",
        # caching-mode: vfio in L1 maps guest memory through the emulated IOMMU.
        "-device", "intel-iommu,intremap=on,caching-mode=on",
        "-kernel", str(image.kernel), "-initrd", str(image.initrd), "-append", " ".join(plan.kernel_cmdline()),
        "-chardev", (f"socket,id=serial0,path={serial_socket},server=on,wait=off,logfile={serial_log}"
                     if serial_socket else f"file,id=serial0,path={serial_log}"),
        "-serial", "chardev:serial0",
        "-chardev", f"socket,id=qmp,fd={qmp_fd}", "-mon", "chardev=qmp,mode=control",
        "-netdev", f"user,id=mgmt,restrict=on,{forwards}",
        "-device", _opts("virtio-net-pci", {"netdev": "mgmt", "mac": plan.mgmt_mac, "bus": "pcie.0",
                                            "addr": "0x2", "romfile": ""}),
    ]
    for slot, (mac, tap) in enumerate(zip(plan.pf_macs, plan.pf_taps)):
        argv += ["-device", _opts("pcie-root-port", {"id": f"rph{slot}", "bus": "pcie.0", "chassis": slot + 1,
                                                     "addr": hex(3 + slot)}),
                 "-netdev", _opts("tap", {"id": f"hn-pf{slot}", "ifname": tap, "script": "no", "downscript": "no",
                                          "vhost": False}),
                 "-device", _opts("igb", {"id": f"pf{slot}", "netdev": f"hn-pf{slot}", "mac": mac,
                                          "bus": f"rph{slot}"})]
    return argv + (["-incoming", "defer"] if incoming else [])


class HostVmMachine(QemuMachine):
    """L1's QEMU: launched, watched and shut down like a guest's, with its own command line."""

    def __init__(self, plan: HostVmPlan, image: "HostImage", qemu: str, netns: "NetworkNamespace",
                 artifacts_dir: Path, clock: "RunClock", socket_dir: Path, incoming: bool = False):
        super().__init__(plan, image, qemu, "tcg", netns, artifacts_dir, clock,  # type: ignore[arg-type]
                         socket_dir=socket_dir, incoming=incoming)
        self.host_plan = plan
        self.host_image = image

    def argv(self, qmp_fd: int = 3) -> list[str]:
        return host_vm_argv(self.qemu, self.host_plan, self.host_image, self.artifacts.serial_log, qmp_fd,
                            self.serial_socket, self.incoming)
