"""The state of a run in progress, handed to every step: the plans, the live machines and shells, the
traffic probes, the step deadline and the watch over the VMs. It knows how to start a machine and
how to tear everything down; it knows nothing of scenario steps."""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from testbed.artifacts import make_scratch_dir
from testbed.clock import RunClock
from testbed.datapath import Snapshot, delta, read_counters
from testbed.errors import TestbedError
from testbed.guest_probe import read_netdevs
from testbed.guest_shell import GuestShell
from testbed.hosts import Host
from testbed.images import GuestImage, LocalKernel
from testbed.machine import QemuMachine
from testbed.machine_watch import MachineExit, RunWatch
from testbed.migration_link import MigrationLink
from testbed.netns import NetworkNamespace
from testbed.packet_capture import PacketCapture
from testbed.plan import MachinePlan, absent_at_boot
from testbed.qemu_host import QemuBinary
from testbed.report import RunReport, VmReport
from testbed.scenario import BootStep, Scenario
from testbed.traffic import StepWindow, TrafficSession
from testbed.traffic_verdict import ping_entry, tcp_entry

logger = logging.getLogger(__name__)


@dataclass
class RunOptions:
    artifacts_dir: Path
    qemu: str | None = None
    accel: str = "auto"
    local_kernel: LocalKernel | None = None
    timeout_scale: float = 1.0
    scenario_file: str = ""
    keep: bool = False          # on failure or at a pause step, hold the VMs for a person
    keep_timeout_s: float = 24 * 3600
    kernel_suite: str | None = None  # Debian's kernel from this suite of the image recipe (None: the recipe's)
    snapshot_cache_mib: int | None = None  # the warm-start cache's size limit; None: $TESTBED_SNAPSHOT_CACHE_MIB
    snapshot: str | None = None  # boot steps without `snapshot`: auto or never; None: $TESTBED_SNAPSHOT, else auto


@dataclass
class RunContext:
    scenario: Scenario
    plans: dict[str, MachinePlan]
    image: GuestImage
    qemu: QemuBinary
    accel: str
    host: Host
    clock: RunClock
    options: RunOptions
    report: RunReport
    images: dict[str, GuestImage] = field(default_factory=dict)  # flavour -> image, for every VM's flavour
    machines: dict[str, QemuMachine] = field(default_factory=dict)
    shells: dict[str, GuestShell] = field(default_factory=dict)
    traffic: dict[tuple[str, str], TrafficSession] = field(default_factory=dict)
    snapshots: dict[int, Snapshot] = field(default_factory=dict)  # step index -> counters at its start
    # vm -> ids of the standbys and primaries not plugged now: absent at boot (`at_boot: false`), or
    # unplugged by a step; a migration's destination is made without them too
    absent_devices: dict[str, set[str]] = field(default_factory=dict)
    held_boots: dict[str, BootStep] = field(default_factory=dict)  # VM -> its boot step, until its cont
    # each step's start on the run clock, unrounded: the report's started_s is rounded to the ms, and
    # an event less than 0.5 ms after a step's start (QEMU's RESUME after a cont) would fall before it
    step_starts: list[float] = field(default_factory=list)
    captures: dict[str, PacketCapture] = field(default_factory=dict)  # start-capture's tcpdumps
    migration_link: MigrationLink | None = None  # made by the first `migrate transport: tcp`
    down_requested: bool = False  # a person said `testbed down` while the run was held
    retired: list[QemuMachine] = field(default_factory=list)  # migration sources, for teardown
    watch: RunWatch = field(default_factory=RunWatch)
    deadline: float | None = None  # run clock: when the current step's timeout_s runs out
    _scratch: Path | None = None

    def __post_init__(self) -> None:
        for name, plan in self.plans.items():
            self.absent_devices[name] = set(absent_at_boot(plan))

    def image_of(self, vm: str) -> GuestImage:
        """The image the VM boots (its flavour's)."""
        return self.images.get(self.plans[vm].vm.image, self.image)

    @property
    def netns(self) -> NetworkNamespace:
        """The namespace the testbed connects to guests from."""
        return self.host.netns

    @property
    def peer(self) -> NetworkNamespace:
        return self.host.peer

    def start_deadline(self, timeout_s: float | None) -> None:
        """The step's whole budget: every wait inside it gets what is left of timeout_s."""
        self.deadline = None if timeout_s is None else self.clock.now() + timeout_s * self.options.timeout_scale

    def timeout(self, seconds: float) -> float:
        """A wait's timeout: `seconds` (scaled), but never past the current step's deadline."""
        scaled = seconds * self.options.timeout_scale
        if self.deadline is None:
            return scaled
        return max(0.0, min(scaled, self.deadline - self.clock.now()))

    def machine(self, name: str) -> QemuMachine:
        if name not in self.machines:
            raise TestbedError(f"VM {name} is not running (was it booted?)")
        self.watch.check()
        return self.machines[name]

    def shell(self, name: str) -> GuestShell:
        if name not in self.shells:
            raise TestbedError(f"VM {name} has no SSH session (was it booted?)")
        return self.shells[name]

    def plan(self, name: str) -> MachinePlan:
        """The VM's plan as it runs now (after migrations, on the other slot's taps)."""
        return self.machines[name].plan if name in self.machines else self.plans[name]

    def new_machine(self, name: str, slot: int, incoming: bool, label: str) -> QemuMachine:
        machine = self.host.new_machine(self.plans[name].on_slot(slot), self.options.artifacts_dir / label,
                                        incoming=incoming,
                                        absent_devices=frozenset(self.absent_devices.get(name, ())),
                                        socket_dir=self.scratch_dir())
        return self.track(name, machine)

    def track(self, name: str, machine: QemuMachine) -> QemuMachine:
        """A new QEMU of the VM: watched by the run, its artifacts in the report."""
        self.watch.add(machine)
        vm_report = self.report.vms.setdefault(name, VmReport())
        vm_report.artifacts = {k: str(getattr(machine.artifacts, k)) for k in
                               ("serial_log", "qemu_stderr", "qmp_events", "dmesg", "argv")}
        return machine

    def start_machine(self, name: str, hold: bool = False) -> QemuMachine:
        """hold: left at -S (the boot step's hold), for a cont step to start."""
        machine = self.new_machine(name, 0, incoming=False, label=name)
        self.machines[name] = machine
        machine.launch()
        for pair in self.plans[name].pairs:
            if pair.pair.standby.link == "down":
                machine.qmp.execute("set_link", {"name": pair.standby.device_id, "up": False})
        if not hold:
            machine.cont()
        return machine

    def death_behind_failure(self, grace_s: float = 0.5) -> MachineExit | None:
        """A step that lost its SSH or QMP connection may notice before the kernel has reaped QEMU:
        gives a dying VM half a second to show up as dead. The run watch's exit, or None."""
        deadline = self.clock.now() + grace_s
        while (dead := self.watch.dead()) is None and self.clock.now() < deadline:
            if not any(m.watched for m in self.machines.values()):
                break
            time.sleep(0.05)
        return dead

    def retire(self, machine: QemuMachine) -> None:
        """Shuts a machine down on purpose (a migration's source, or a destination not taken)."""
        if machine not in self.retired:
            self.retired.append(machine)
        machine.shutdown()

    def scratch_dir(self) -> Path:
        if self._scratch is None:
            self._scratch = make_scratch_dir()
        return self._scratch

    def step_windows(self) -> list[StepWindow]:
        now = self.clock.now()
        return [StepWindow(s.index, s.action, s.started_s, s.ended_s if s.ended_s is not None else now)
                for s in self.report.steps]

    def snapshot_counters(self) -> Snapshot:
        out: Snapshot = {}
        for vm in {vm for vm, _ in self.traffic}:
            if vm in self.shells and self.machines[vm].alive():
                out[vm] = read_counters(self.shells[vm], self.plan(vm))
                for pair in self.plan(vm).pairs:
                    on_pf = self.host.vf_counters(self.plan(vm), pair.pair.name)
                    if on_pf is not None:
                        out[vm].setdefault(pair.pair.name, {})["vf_on_pf"] = on_pf
        return out

    def take_snapshot(self, index: int) -> None:
        """Counters at the start of step `index` close the previous step's datapath record."""
        if not self.traffic or self.watch.dead():
            return
        try:
            self.snapshots[index] = self.snapshot_counters()
        except TestbedError as e:
            logger.warning("counter snapshot before step %d failed: %s", index, e)
            return
        if index - 1 in self.snapshots:
            self.report.steps[index - 1].counters = delta(self.snapshots[index - 1], self.snapshots[index])

    def stop_traffic(self) -> None:
        windows = self.step_windows()
        entries = []
        for (vm, pair), session in self.traffic.items():
            session.stop()
            log = self.options.artifacts_dir / f"traffic-{vm}-{pair}.log"
            with contextlib.suppress(OSError):  # a full disk loses the raw log, not the report
                log.write_text("".join(session.ping.raw_lines))
            ping = session.ping
            entries.append(ping_entry(vm, pair, session.target, ping.interval_s * 1000, ping.started_s,
                                      sorted(r.t for r in ping.replies if not r.duplicate), ping.result(windows),
                                      str(log)))
            if session.tcp is not None:
                entries.append(tcp_entry(vm, pair, session.target, session.tcp.result(), windows))
        self.report.traffic = entries

    def teardown(self) -> None:
        for capture in self.captures.values():
            capture.stop()
        if self.migration_link is not None:
            self.migration_link.close()
        if self.traffic:
            with contextlib.suppress(Exception):
                self.take_snapshot(len(self.report.steps))
            self.stop_traffic()
        for name, machine in self.machines.items():
            if (rss := machine.peak_rss_mib()) is not None:
                self.report.vms[name].boot["qemu_peak_rss_mib"] = rss
        for name, shell in list(self.shells.items()):
            machine = self.machines.get(name)
            try:
                if machine and machine.alive():
                    # Not stretched by a slow guest's slowdown (10x for TCG inside TCG): after a
                    # Ctrl-C this runs before the VMs go, and a person is waiting.
                    machine.artifacts.dmesg.write_text(shell.run(["dmesg"], timeout=10, scaled=False).stdout)
                    self.report.vms[name].netdevs = [n.as_dict() for n in read_netdevs(shell, scaled=False)]
            except (TestbedError, OSError) as e:
                logger.warning("%s: could not collect dmesg and netdevs at teardown: %s", name, e)
            shell.close()
        for exit in self.watch.exits:
            if exit.vm in self.plans:
                self.report.vms.setdefault(exit.vm, VmReport()).exit = exit.as_dict()
            else:  # the host VM
                self.report.topology["exit"] = exit.as_dict()
        for machine in dict.fromkeys([*self.machines.values(), *self.retired]):
            record = machine.shutdown()
            self.report.vms.setdefault(machine.name, VmReport()).shutdowns.append(
                {"qemu": machine.artifacts.directory.name, **record})
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
