"""QEMU command lines, built as argv lists from a MachinePlan. No process is started here."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from testbed.kexec_disk import SERIAL as KEXEC_SERIAL
from testbed.plan import MachinePlan, NicPlan, PairPlan

FIRST_ROOT_PORT_SLOT = 3
SEED_DISK_SLOT = "0x1e"  # on pcie.0, clear of the root ports and of q35's ICH9 functions at 0x1f
KEXEC_DISK_SLOT = "0x1d"


@dataclass(frozen=True)
class LaunchFiles:
    kernel: Path
    initrd: Path
    serial_log: Path
    qmp_fd: int | None  # None: no testbed QMP monitor (the benchmark's raw boot)
    serial_socket: Path | None = None  # interactive console (testbed console); the log is kept either way
    qmp_socket: Path | None = None     # a second QMP monitor for people (testbed qmp)
    qmp_tcp_port: int | None = None    # QMP on a TCP port (a nested guest, reached through forwards)
    ssh_listen: str = "127.0.0.1"      # where the management NIC's SSH forward listens


def _opts(driver: str, props: dict[str, object]) -> str:
    def fmt(v: object) -> str:
        if isinstance(v, bool):
            return "on" if v else "off"
        return str(v).replace(",", ",,")
    return ",".join([driver, *(f"{k}={fmt(v)}" for k, v in props.items())])


def netdev_props(nic: NicPlan) -> dict[str, object]:
    # vhost is off: this machine has no /dev/vhost-net, and TCG gains little from it anyway.
    return {"id": nic.netdev_id, "ifname": nic.tap, "script": "no", "downscript": "no", "vhost": False}


def standby_props(pair: PairPlan) -> dict[str, object]:
    nic = pair.standby
    props: dict[str, object] = {"id": nic.device_id, "netdev": nic.netdev_id, "mac": nic.mac,
                                "bus": nic.root_port, "romfile": ""}
    if pair.pair.standby.failover:
        props["failover"] = True
    if pair.pair.standby.legacy_virtio:
        props.update({"disable-legacy": False, "disable-modern": True})
    elif pair.pair.standby.transitional:
        props["disable-legacy"] = False
    return props


def primary_props(pair: PairPlan) -> dict[str, object]:
    """Properties of the primary, shared by -device at launch and device_add on a re-plug."""
    nic = pair.primary
    assert nic is not None and pair.kind is not None
    props: dict[str, object] = {"driver": nic.driver, "id": nic.device_id}
    if nic.backend:
        props.update(netdev=nic.netdev_id, mac=nic.mac)
    props["bus"] = nic.root_port
    props.update(pair.kind.extra_props(pair))
    return props


def build_argv(qemu: str, plan: MachinePlan, files: LaunchFiles, accel: str,
               incoming: bool = False, absent_devices: frozenset[str] = frozenset(),
               paused: bool = True, absent_backends: frozenset[str] = frozenset(),
               hold_after_incoming: bool = False) -> list[str]:
    """incoming: a migration destination (-incoming defer, runs as soon as the state arrived).
    absent_devices: ids of standbys and primaries not plugged now (unplugged by a step on the source, or
    not there at boot), which so must not exist here; their backends do, so device_add can use them.
    paused: start with -S, so the testbed can set link states and attach its recorder first.
    absent_backends: netdev ids left out although a device names them (a fault a scenario asks for:
    a hidden failover primary is realized only when QEMU plugs it, so only then does it fail).
    hold_after_incoming: a destination that stays paused once its state is loaded (-S with -incoming,
    as libvirt starts one), until the testbed sends `cont`."""
    vm = plan.vm
    argv = [
        qemu, "-name", f"{vm.name},debug-threads=on",
        "-machine", "q35", "-accel", accel, "-cpu", "max" if accel == "tcg" else "host",
        "-smp", str(vm.cpus), "-m", f"{vm.memory_mib}M",
        "-nodefaults", "-no-user-config", "-display", "none", "-vga", "none", "-no-reboot",
        *(["-global", "ICH9-LPC.acpi-pci-hotplug-with-bridge-support=off"] if vm.pci_hotplug == "native" else []),
        *(["-incoming", "defer", *(["-S"] if hold_after_incoming else [])] if incoming else ["-S"] if paused else []),
        "-kernel", str(files.kernel), "-initrd", str(files.initrd),
        "-append", " ".join(plan.kernel_cmdline()),
        "-chardev", (f"socket,id=serial0,path={files.serial_socket},server=on,wait=off,logfile={files.serial_log}"
                     if files.serial_socket else f"file,id=serial0,path={files.serial_log}"),
        "-serial", "chardev:serial0",
    ]
    if files.qmp_fd is not None:
        argv += ["-chardev", f"socket,id=qmp,fd={files.qmp_fd}", "-mon", "chardev=qmp,mode=control"]
    if files.qmp_tcp_port is not None:
        argv += ["-chardev", f"socket,id=qmp,host=0.0.0.0,port={files.qmp_tcp_port},server=on,wait=off",
                 "-mon", "chardev=qmp,mode=control"]
    if files.qmp_socket:
        argv += ["-chardev", f"socket,id=qmp-user,path={files.qmp_socket},server=on,wait=off",
                 "-mon", "chardev=qmp-user,mode=control"]
    # Management NIC: user-mode networking restricted to the hostfwd for SSH, never the failover pair.
    argv += ["-netdev", f"user,id=mgmt,restrict=on,hostfwd=tcp:{files.ssh_listen}:{plan.ssh_port}-:22",
             "-device", _opts("virtio-net-pci", {"netdev": "mgmt", "mac": plan.mgmt_mac,
                                                 "bus": "pcie.0", "addr": "0x2", "romfile": ""})]
    if plan.seed_disk is not None:
        argv += ["-drive", _opts("if=none", {"id": "seed", "file": plan.seed_disk, "format": "raw",
                                              "readonly": True}),
                 "-device", _opts("virtio-blk-pci", {"drive": "seed", "bus": "pcie.0", "addr": SEED_DISK_SLOT})]
    if plan.kexec_disk is not None:
        argv += ["-drive", _opts("if=none", {"id": "kexec", "file": plan.kexec_disk, "format": "raw",
                                              "readonly": True}),
                 "-device", _opts("virtio-blk-pci", {"drive": "kexec", "serial": KEXEC_SERIAL, "bus": "pcie.0",
                                                     "addr": KEXEC_DISK_SLOT})]
    for i, port in enumerate(plan.root_ports):
        argv += ["-device", _opts("pcie-root-port", {"id": port, "bus": "pcie.0", "chassis": i + 1,
                                                     "addr": hex(FIRST_ROOT_PORT_SLOT + i)})]
    for pair in plan.pairs:
        argv += ["-netdev", _opts("tap", netdev_props(pair.standby))]
        if pair.standby.device_id not in absent_devices:
            argv += ["-device", _opts("virtio-net-pci", standby_props(pair))]
        if pair.primary:
            if pair.primary.backend and pair.primary.netdev_id not in absent_backends:
                argv += ["-netdev", _opts("tap", netdev_props(pair.primary))]
            if pair.primary.device_id not in absent_devices:
                props = primary_props(pair)
                argv += ["-device", _opts(str(props.pop("driver")), props)]
    return argv
