"""Proves and times the production topology, nested: a host VM (L1) with an emulated igb PF passes
one of the PF's VFs to a guest (L2) with vfio-pci, as the failover_pair_id primary of a virtio-net
STANDBY whose tap sits on a bridge in L1 with the PF as its uplink.

    peer ns --veth-- br0 --tap-- [L1: igb PF ==VF 0==> vfio-pci ==> L2 igbvf     (primary)
                                          PF -- brh0 -- tap ==> L2 virtio-net  (standby)]

Stages: L1 boot; VFs, VF MAC, vfio-pci and the bridge in L1; L2 boot with FAILOVER_NEGOTIATED and
the VF hot-plugged; ping from the peer through the VF. Then three unplug/re-plug cycles of the VF
over L2's QMP. The first adds the host steps one at a time, to show which the standby path needs:
QEMU's igb steers a frame for VF 0's MAC to VF 0's pool only, so the PF (and the bridge behind it)
sees it only once the MAC is also in the PF's unicast filter or VF 0's MAC is cleared. The second
and third run a continuous ping through the host sequence of Documentation/networking/
net_failover.rst ("Live Migration ..."), with its tap entry made `static`: in the document's order,
then keeping the FDB entries until L2 has the VF back.

Run as root from the repository: .venv/bin/python benchmarks/nested_proof.py
Everything runs in two private network namespaces (the run's, holding br0 and L1's QEMU, and the
peer's); nothing touches the root namespace. Artifacts go to testbed-artifacts/nested-proof-<time>.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from testbed.artifacts import new_artifacts_dir  # noqa: E402
from testbed.clock import RunClock  # noqa: E402
from testbed.errors import TestbedError  # noqa: E402
from testbed.guest_shell import CommandResult, GuestShell  # noqa: E402
from testbed.host_image import L1_QEMU, L2_INITRD, L2_KERNEL, HostImage, ensure_host_image  # noqa: E402
from testbed.images import ensure_image  # noqa: E402
from testbed.machine_watch import serial_text  # noqa: E402
from testbed.netns import NetworkNamespace  # noqa: E402
from testbed.network import NetworkPlan  # noqa: E402
from testbed.procutil import spawn  # noqa: E402
from testbed.qmp_channel import EventLog, QmpChannel  # noqa: E402
from testbed.traffic import PingProbe, PingResult, StepWindow  # noqa: E402

logger = logging.getLogger("nested_proof")

QEMU = "/usr/bin/qemu-system-x86_64"
PEER_ADDR, L2_ADDR = "192.168.50.1/24", "192.168.50.2/24"
L2_IP = L2_ADDR.split("/")[0]
PAIR_MAC = "52:54:00:00:12:53"          # L2's standby, and VF 0's MAC set through the PF
ZERO_MAC = "00:00:00:00:00:00"
PF_MAC = "06:54:00:00:01:01"
L1_MGMT_MAC, L2_MGMT_MAC = "0a:54:00:00:01:01", "0a:54:00:00:02:01"
L1_PF_TAP = "tl1pf0"                      # in the run's namespace, on br0
L1_BRIDGE, L2_SBY_TAP = "brh0", "tl2sby"  # inside L1
L1_SSH, L2_SSH, L2_QMP = 2200, 2201, 4444  # forwarded ports on the run namespace's 127.0.0.1
L2_SSH_IN_L1 = 2222
SBY_ID, PRI_ID, PRI_PORT = "net0-sby", "net0-pri", "rp0p"
# Enslaved netdevs of L2 with their master, device driver and operstate; sysfs and busybox only,
# since L2's vCPU (TCG inside TCG) makes every process it starts cost a lot.
SLAVES_SCRIPT = ('for d in /sys/class/net/*; do [ -e "$d/master" ] || continue; m=$(readlink "$d/master"); '
                 'v=$(readlink "$d/device/driver"); read -r s < "$d/operstate"; '
                 'echo "${d##*/} ${m##*/} ${v##*/} $s"; done')


def l1_argv(host: HostImage, serial: Path) -> list[str]:
    fwd = [f"hostfwd=tcp:127.0.0.1:{L1_SSH}-:22", f"hostfwd=tcp:127.0.0.1:{L2_SSH}-:{L2_SSH_IN_L1}",
           f"hostfwd=tcp:127.0.0.1:{L2_QMP}-:{L2_QMP}"]
    cmdline = ["console=ttyS0", "panic=-1", "loglevel=6", "intel_iommu=on", "iommu=pt",
               "testbed.hostname=l1", f"testbed.mgmt={L1_MGMT_MAC}"]
    return [
        QEMU, "-name", "l1,debug-threads=on",
        "-machine", "q35,kernel-irqchip=split", "-accel", "tcg", "-cpu", "max", "-m", "2048", "-smp", "2",
        "-nodefaults", "-no-user-config", "-display", "none", "-vga", "none", "-no-reboot",
        "-device", "intel-iommu,intremap=on,caching-mode=on",
        "-kernel", str(host.kernel), "-initrd", str(host.initrd), "-append", " ".join(cmdline),
        "-chardev", f"file,id=serial0,path={serial}", "-serial", "chardev:serial0",
        "-netdev", "user,id=mgmt,restrict=on," + ",".join(fwd),
        "-device", f"virtio-net-pci,netdev=mgmt,mac={L1_MGMT_MAC},bus=pcie.0,addr=0x2,romfile=",
        "-device", "pcie-root-port,id=rp0,bus=pcie.0,chassis=1,addr=0x3",
        "-netdev", f"tap,id=uplink0,ifname={L1_PF_TAP},script=no,downscript=no,vhost=off",
        "-device", f"igb,netdev=uplink0,mac={PF_MAC},bus=rp0",
    ]


def primary_props(vf_bdf: str) -> dict[str, str]:
    """The VF primary, for -device at launch and for device_add on a re-plug."""
    return {"driver": "vfio-pci", "host": vf_bdf, "id": PRI_ID, "failover_pair_id": SBY_ID,
            "bus": PRI_PORT, "romfile": ""}


def l2_argv(vf_bdf: str) -> list[str]:
    cmdline = ["console=ttyS0", "panic=-1", "quiet", "loglevel=6", "testbed.hostname=l2",
               f"testbed.mgmt={L2_MGMT_MAC}", f"testbed.addr={PAIR_MAC}={L2_ADDR}"]
    props = primary_props(vf_bdf)
    primary = ",".join([props.pop("driver"), *(f"{k}={v}" for k, v in props.items())])
    return [
        str(L1_QEMU), "-name", "l2", "-machine", "q35", "-accel", "tcg", "-cpu", "max", "-m", "256M",
        "-smp", "2", "-nodefaults", "-no-user-config", "-display", "none", "-vga", "none", "-no-reboot",
        "-kernel", str(L2_KERNEL), "-initrd", str(L2_INITRD), "-append", " ".join(cmdline),
        "-chardev", "file,id=serial0,path=/run/l2-serial.log", "-serial", "chardev:serial0",
        "-chardev", f"socket,id=qmp,host=0.0.0.0,port={L2_QMP},server=on,wait=off",
        "-mon", "chardev=qmp,mode=control",
        "-netdev", f"user,id=mgmt,restrict=on,hostfwd=tcp:0.0.0.0:{L2_SSH_IN_L1}-:22",
        "-device", f"virtio-net-pci,netdev=mgmt,mac={L2_MGMT_MAC},bus=pcie.0,addr=0x2,romfile=",
        "-device", "pcie-root-port,id=rp0s,bus=pcie.0,chassis=1,addr=0x3",
        "-device", f"pcie-root-port,id={PRI_PORT},bus=pcie.0,chassis=2,addr=0x4",
        "-netdev", f"tap,id=hn-sby,ifname={L2_SBY_TAP},script=no,downscript=no,vhost=off",
        "-device", f"virtio-net-pci,netdev=hn-sby,id={SBY_ID},failover=on,mac={PAIR_MAC},bus=rp0s,romfile=",
        "-device", primary,
    ]


@dataclass
class Report:
    stages: list[tuple[str, bool, float | None, str]] = field(default_factory=list)
    failed_required: list[str] = field(default_factory=list)

    def stage(self, name: str, ok: bool, seconds: float | None, detail: str = "", required: bool = True) -> None:
        """required=False: a diagnostic whose failure is a finding, not a failure of the proof."""
        self.stages.append((name, ok, seconds, detail))
        if required and not ok:
            self.failed_required.append(name)
        logger.info("%-44s %-4s %s %s", name, "ok" if ok else ("FAIL" if required else "no"),
                    "-" if seconds is None else f"{seconds:.2f}s", detail)

    def print(self) -> None:
        print(f"\n{'stage':44} {'ok':4} {'seconds':>8}  detail")
        for name, ok, seconds, detail in self.stages:
            shown = "-" if seconds is None else f"{seconds:.2f}"
            print(f"{name:44} {'yes' if ok else 'NO':4} {shown:>8}  {detail}")


def wait_until(what: str, check: Callable[[], object], timeout: float, interval: float = 1.0) -> float:
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise TestbedError(f"waited {timeout}s for {what}")
        time.sleep(interval)
    return time.monotonic() - started


def slaves(shell: GuestShell) -> list[tuple[str, str, str, str]]:
    out = shell.run(SLAVES_SCRIPT, timeout=120).stdout
    return [(f[0], f[1], f[2], f[3]) for f in (line.split() for line in out.splitlines()) if len(f) == 4]


def paired(shell: GuestShell, need_up: bool = True) -> str | None:
    """'master: primary (igbvf) + standby (virtio_net)' once an igbvf netdev (up, with need_up) and
    a virtio-net standby are enslaved to the same net_failover master, else None."""
    rows = slaves(shell)
    for name, master, driver, state in rows:
        if driver == "igbvf" and (state == "up" or not need_up):
            standby = [r[0] for r in rows if r[1] == master and r[2] == "virtio_net"]
            if standby:
                return f"{master}: {name} (igbvf) + {standby[0]} (virtio_net)"
    return None


def counters(shell: GuestShell) -> dict[str, tuple[str, int, int]]:
    """role ('standby' or 'primary') -> (netdev name, rx_packets, tx_packets) for L2's enslaved
    netdevs. By role, since udev renames them while the checks run."""
    out = shell.run(["/usr/lib/testbed/counters"], timeout=120).stdout
    rows = [line.split("\t") for line in out.splitlines()]
    return {("standby" if r[3] == "sby" else "primary"): (r[0], int(r[4]), int(r[5]))
            for r in rows if len(r) == 6 and r[1] != "-"}


def deltas(before: dict[str, tuple[str, int, int]], after: dict[str, tuple[str, int, int]]) -> str:
    return ", ".join(f"{role} {after[role][0]} rx+{after[role][1] - b[1]} tx+{after[role][2] - b[2]}"
                     for role, b in sorted(before.items()) if role in after)


def ping_summary(result: PingResult) -> str:
    return f"{result.received}/{result.sent} replies, max gap {result.max_gap_ms:.0f} ms"


class NestedRun:
    def __init__(self, artifacts: Path, report: Report):
        self.art = artifacts
        self.report = report
        self.clock = RunClock()
        self.ns = NetworkNamespace.create()
        self.peer = NetworkNamespace.create()
        self.l1_proc: subprocess.Popen | None = None
        self.l1: GuestShell | None = None
        self.l2: GuestShell | None = None
        self.qmp: QmpChannel | None = None
        self.events = EventLog("l2", artifacts / "l2-qmp-events.jsonl")
        self.pf = self.vf_bdf = ""
        self.l2_launched = 0.0
        self.hold_standby_s = 0.0

    def l1_alive(self) -> bool:
        return self.l1_proc is not None and self.l1_proc.poll() is None

    def in_l1(self, argv: list[str] | str, check: bool = True) -> CommandResult:
        assert self.l1
        return self.l1.run(argv, timeout=60, check=check)

    def out_l1(self, argv: list[str] | str) -> str:
        return self.in_l1(argv).stdout.strip()

    def boot_l1(self, host: HostImage) -> None:
        NetworkPlan(["br0"], {L1_PF_TAP: "br0"}, [ipaddress.IPv4Interface(PEER_ADDR)]).apply(self.ns, self.peer)
        argv = l1_argv(host, self.art / "l1-serial.log")
        (self.art / "l1-qemu-argv.txt").write_text("\n".join(argv) + "\n")
        started = time.monotonic()
        with (self.art / "l1-qemu.stderr").open("wb") as err:
            self.l1_proc = spawn(self.ns.argv(argv), stdin=subprocess.DEVNULL, stdout=err, stderr=err)
        wait_until("L1's 'testbed: host ssh up'", lambda: not self.l1_alive() or "testbed: host ssh up" in
                   serial_text(self.art / "l1-serial.log"), 120, 0.1)
        shell = GuestShell("l1", self.ns, L1_SSH, host.ssh_key)
        shell.connect(60, alive=self.l1_alive)
        self.l1 = shell
        self.report.stage("L1 launch -> L1 SSH", True, time.monotonic() - started)

    def prepare_l1(self) -> None:
        """What a host does before it starts a guest with a VF primary (NOTES: production, nested)."""
        self.pf = self.out_l1(f"grep -l {PF_MAC} /sys/class/net/*/address").split("/")[4]
        dev = self.out_l1(["readlink", "-f", f"/sys/class/net/{self.pf}/device"])
        started = time.monotonic()
        self.in_l1(["ip", "link", "set", self.pf, "up"])
        self.in_l1(["sh", "-c", f"echo 0 > {dev}/sriov_drivers_autoprobe && echo 1 > {dev}/sriov_numvfs"])
        self.in_l1(["ip", "link", "set", self.pf, "vf", "0", "mac", PAIR_MAC])
        vf = self.out_l1(["readlink", "-f", f"{dev}/virtfn0"])
        self.vf_bdf = vf.rsplit("/", 1)[1]
        self.in_l1(["sh", "-c", f"echo vfio-pci > {vf}/driver_override && echo {self.vf_bdf} > /sys/bus/pci/drivers_probe"])
        driver = self.out_l1(["readlink", "-f", f"{vf}/driver"]).rsplit("/", 1)[1]
        group = self.out_l1(["readlink", "-f", f"{vf}/iommu_group"]).rsplit("/", 1)[1]
        members = self.out_l1(["ls", f"/sys/kernel/iommu_groups/{group}/devices"]).split()
        for argv in (["ip", "link", "add", L1_BRIDGE, "type", "bridge"], ["ip", "link", "set", L1_BRIDGE, "up"],
                     ["ip", "link", "set", self.pf, "master", L1_BRIDGE],
                     ["ip", "tuntap", "add", "dev", L2_SBY_TAP, "mode", "tap"],
                     ["ip", "link", "set", L2_SBY_TAP, "master", L1_BRIDGE, "up"]):
            self.in_l1(argv)
        vf_line = next((l.strip() for l in self.out_l1(["ip", "link", "show", self.pf]).splitlines() if "vf 0" in l), "")
        self.report.stage("L1: VF, VF MAC, vfio-pci, bridge", driver == "vfio-pci", time.monotonic() - started,
                          f"PF {self.pf}, VF {self.vf_bdf} on {driver}, iommu group {group} = {members}; {vf_line}")

    def boot_l2(self, ssh_key: Path) -> None:
        argv = l2_argv(self.vf_bdf)
        (self.art / "l2-qemu-argv.txt").write_text("\n".join(argv) + "\n")
        started = time.monotonic()
        self.l2_launched = self.clock.now()
        self.in_l1(["/usr/lib/testbed/detach", "/run/l2-qemu.log", *argv])
        self.connect_qmp(60)
        self.report.stage("L2 launch -> QMP connected", True, time.monotonic() - started)
        shell = GuestShell("l2", self.ns, L2_SSH, ssh_key)
        shell.connect(900, alive=self.l1_alive)
        self.l2 = shell
        self.report.stage("L2 launch -> L2 SSH", True, time.monotonic() - started)
        master = ""

        def enslaved() -> bool:
            nonlocal master
            master = paired(shell, need_up=False) or ""
            return bool(master)
        wait_until("L2's failover pair", enslaved, 600, 2.0)
        negotiated = next((r for r in self.events.records() if r.event == "FAILOVER_NEGOTIATED"), None)
        self.report.stage("L2 launch -> VF enslaved", True, time.monotonic() - started,
                          master + (f"; FAILOVER_NEGOTIATED {negotiated.t - self.l2_launched:.1f}s after launch"
                                    if negotiated else "; no FAILOVER_NEGOTIATED event"))
        # The guest's udev rule would do this too, but under TCG inside TCG its coldplug takes
        # minutes; the same script, run now, brings the master up with the scenario's address.
        shell.run(["/usr/lib/testbed/failover-addr", master.split(":")[0]], timeout=120)
        wait_until("the VF's link", lambda: paired(shell), 300, 1.0)
        self.report.stage("L2 launch -> master up, VF link up", True, time.monotonic() - started)

    def connect_qmp(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            channel = QmpChannel("l2", self.events, self.clock)
            try:
                channel.connect(self.ns.connect_tcp("127.0.0.1", L2_QMP), timeout=10)
                self.qmp = channel
                return
            except Exception as e:  # slirp accepts before L2's QEMU listens; retry until the greeting
                channel.close()
                if time.monotonic() > deadline:
                    raise TestbedError(f"L2's QMP through the forwards: {e}") from e
                time.sleep(0.5)

    def ping_check(self, label: str, seconds: float = 4, required: bool = True) -> bool:
        """A few echoes from the peer; L2's per-slave counters say which path carried them."""
        assert self.l2
        before = counters(self.l2)
        probe = PingProbe(self.peer, L2_IP, self.clock, interval_s=0.1)
        probe.start()
        time.sleep(seconds)
        probe.stop()
        result = probe.result([])
        self.report.stage(label, result.received > 0, None,
                          f"{ping_summary(result)}; {deltas(before, counters(self.l2))}", required)
        return result.received > 0

    def unplug(self) -> None:
        assert self.qmp
        cursor = self.events.cursor()
        started = time.monotonic()
        self.qmp.execute("device_del", {"id": PRI_ID}, timeout=30)
        self.events.wait_for("DEVICE_DELETED", 120, since=cursor, match=lambda d: d.get("device") == PRI_ID)
        self.report.stage("device_del -> DEVICE_DELETED", True, time.monotonic() - started)

    def replug(self) -> None:
        assert self.qmp and self.l2
        started = time.monotonic()
        self.qmp.execute("device_add", primary_props(self.vf_bdf), timeout=30)
        shell = self.l2
        wait_until("the VF paired again", lambda: paired(shell), 300, 0.5)
        self.report.stage("device_add -> paired again (VF up)", True, time.monotonic() - started)

    def tap_entry(self, add: bool) -> None:
        """The pair's MAC on the standby's tap in L1's bridge. It must be `static`: bridge's default
        for `fdb add ... master` is `permanent`, a *local* entry, which makes the bridge hand the
        frames to L1's own stack instead of the tap (the kernel document's command does that)."""
        if add:  # replace: the bridge may have learnt the MAC on the tap already
            self.in_l1(["bridge", "fdb", "replace", PAIR_MAC, "dev", L2_SBY_TAP, "master", "static"])
        else:
            self.in_l1(["bridge", "fdb", "del", PAIR_MAC, "dev", L2_SBY_TAP, "master"], check=False)

    def pf_filter(self, add: bool) -> None:
        """The pair's MAC in the PF's own unicast filter (`bridge fdb add MAC dev PF`, i.e. self):
        igb gives it a receive-address register in the PF's pool."""
        self.in_l1(["bridge", "fdb", "add" if add else "del", PAIR_MAC, "dev", self.pf], check=add)

    def set_vf_mac(self, mac: str) -> None:
        self.in_l1(["ip", "link", "set", self.pf, "vf", "0", "mac", mac])

    def to_standby(self) -> None:
        """The kernel document's host steps once the VF is out of the guest, with a static tap entry.
        Either of the first two alone is enough for QEMU's igb (diagnostic_cycle shows it)."""
        self.set_vf_mac(ZERO_MAC)
        self.pf_filter(add=True)
        self.tap_entry(add=True)

    def drop_standby_entries(self) -> None:
        self.tap_entry(add=False)
        self.pf_filter(add=False)

    def diagnostic_cycle(self) -> None:
        """Which host steps the standby path needs with QEMU's igb model, one at a time."""
        self.unplug()
        self.ping_check("standby ping: host as is", required=False)
        self.tap_entry(add=True)
        self.ping_check("standby ping: + static tap entry", required=False)
        self.pf_filter(add=True)
        self.ping_check("standby ping: + MAC in PF filter")
        self.pf_filter(add=False)
        self.set_vf_mac(ZERO_MAC)
        self.ping_check("standby ping: VF MAC cleared instead")
        if self.hold_standby_s:
            logger.info("holding the unplugged state %.0fs: run namespace %d, peer namespace %d, L1 SSH on "
                        "127.0.0.1:%d, L2 SSH on :%d", self.hold_standby_s, self.ns.pid, self.peer.pid,
                        L1_SSH, L2_SSH)
            time.sleep(self.hold_standby_s)
        self.tap_entry(add=False)
        self.set_vf_mac(PAIR_MAC)  # before device_add: L2's igbvf must find the pair's MAC at probe
        self.replug()
        self.ping_check("ping via VF after re-plug 1")

    def measured_cycle(self, name: str, entries_until_paired: bool) -> None:
        """The host steps under a continuous ping (10 echoes/s). entries_until_paired=False is the
        kernel document's order (FDB entries removed, then the VF re-attached); True keeps them until
        L2 has the VF again: with the MAC in both pools, frames reach L2 through the standby until
        the VF takes over, and net_failover drops the standby's copies from then on."""
        probe = PingProbe(self.peer, L2_IP, self.clock, interval_s=0.1)
        probe.start()
        time.sleep(3)
        windows = [StepWindow(0, "device_del + host steps", self.clock.now(), 0.0)]
        self.unplug()
        self.to_standby()
        time.sleep(8)
        windows.append(StepWindow(1, "re-plug", self.clock.now(), 0.0))
        if not entries_until_paired:
            self.drop_standby_entries()
        self.set_vf_mac(PAIR_MAC)
        self.replug()
        if entries_until_paired:
            self.drop_standby_entries()
        time.sleep(5)
        probe.stop()
        (self.art / f"ping-{re.sub(r'[^a-z0-9]+', '-', name).strip('-')}.txt").write_text("".join(probe.raw_lines))
        result = probe.result(windows)
        gaps = "; ".join(f"{g.ms:.0f} ms ({g.lost} lost) in {g.step_action}" for g in result.gaps) or "none"
        self.report.stage(f"continuous ping, {name}", result.received > 0, None,
                          f"{ping_summary(result)}; gaps: {gaps}")
        self.ping_check(f"ping via VF after {name}")

    def collect(self) -> None:
        for name, shell, argv in (("l1-dmesg.txt", self.l1, ["dmesg"]), ("l2-dmesg.txt", self.l2, ["dmesg"]),
                                  ("l2-serial.log", self.l1, ["cat", "/run/l2-serial.log"]),
                                  ("l2-qemu.log", self.l1, ["cat", "/run/l2-qemu.log"]),
                                  ("l1-bridge-fdb.txt", self.l1, ["bridge", "fdb", "show"])):
            if shell is None:
                continue
            try:
                (self.art / name).write_text(shell.run(argv, timeout=60, check=False).stdout)
            except Exception as e:
                logger.warning("could not collect %s: %s", name, e)

    def close(self) -> None:
        for closer in (self.qmp.close if self.qmp else None, self.l2.close if self.l2 else None,
                       self.l1.close if self.l1 else None):
            if closer:
                closer()
        if self.l1_proc is not None and self.l1_proc.poll() is None:
            self.l1_proc.terminate()  # L2's QEMU runs inside L1 and goes with it
            try:
                self.l1_proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.l1_proc.kill()
                self.l1_proc.wait()
        self.events.close()
        self.peer.close()
        self.ns.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifacts", type=Path, default=REPO / "testbed-artifacts")
    parser.add_argument("--hold-standby", type=float, default=0, metavar="S",
                        help="keep the first unplugged state S seconds, for looking around by hand")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("paramiko").setLevel(logging.CRITICAL)  # every early SSH attempt logs a traceback
    # SIGTERM (and SIGINT, which a background job ignores) tear down through the finally below.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    report = Report()
    art = new_artifacts_dir(args.artifacts, "nested-proof")
    started = time.monotonic()
    guest = ensure_image()
    host = ensure_host_image(guest)
    report.stage("images (guest + host)", True, time.monotonic() - started,
                 f"host initrd {host.manifest['initrd_bytes'] / 2**20:.1f} MiB ({host.directory.name})")
    run = NestedRun(art, report)
    run.hold_standby_s = args.hold_standby
    try:
        run.boot_l1(host)
        run.prepare_l1()
        run.boot_l2(guest.ssh_key)
        run.ping_check("ping peer -> L2 via VF")
        run.diagnostic_cycle()
        run.measured_cycle("cycle 2 (document order)", entries_until_paired=False)
        run.measured_cycle("cycle 3 (entries until paired)", entries_until_paired=True)
    except Exception as e:
        logger.exception("nested proof failed")
        report.stage("error", False, None, f"{type(e).__name__}: {e}")
    finally:
        run.collect()
        run.close()
        report.print()
        print(f"artifacts: {art}")
    return 1 if report.failed_required else 0


if __name__ == "__main__":
    sys.exit(main())
