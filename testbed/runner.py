"""Runs a scenario: image, namespace and network first, then the steps, then a report. Teardown always
runs: every QEMU goes through its shutdown ladder and the namespace (with its taps and bridge) goes
with its holder, after a failure, a timeout or Ctrl-C alike."""

from __future__ import annotations

import contextlib
import shutil
import signal
import tempfile
import threading
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

from testbed.clock import RunClock
from testbed.datapath import Snapshot, delta, read_counters
from testbed.errors import TestbedError
from testbed.guest_probe import read_netdevs
from testbed.guest_shell import GuestShell
from testbed.images import GuestImage, LocalKernel, ensure_image
from testbed.machine import QemuMachine
from testbed.netns import NetworkNamespace
from testbed.network import NetworkPlan
from testbed.plan import MachinePlan, peer_addresses, plan_machines
from testbed.qemu_host import QemuBinary, choose_accel, inspect_qemu
from testbed.report import HostInfo, RunReport, StepRecord, VmReport
from testbed.scenario import Scenario, Step

if TYPE_CHECKING:
    from testbed.traffic import TrafficSession


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


Log = Callable[[str], None]


@dataclass
class RunContext:
    """The live parts of a run, handed to every step."""
    scenario: Scenario
    plans: dict[str, MachinePlan]
    image: GuestImage
    qemu: QemuBinary
    accel: str
    netns: NetworkNamespace
    clock: RunClock
    options: RunOptions
    report: RunReport
    log: Log
    peer: NetworkNamespace | None = None
    machines: dict[str, QemuMachine] = field(default_factory=dict)
    shells: dict[str, GuestShell] = field(default_factory=dict)
    traffic: dict[tuple[str, str], "TrafficSession"] = field(default_factory=dict)
    snapshots: dict[int, Snapshot] = field(default_factory=dict)  # step index -> counters at its start
    absent_primaries: dict[str, set[str]] = field(default_factory=dict)  # vm -> pairs unplugged by a step
    down_requested: bool = False  # a person said `testbed down` while the run was held
    retired: list[QemuMachine] = field(default_factory=list)  # migration sources, for teardown

    def timeout(self, seconds: float) -> float:
        return seconds * self.options.timeout_scale

    def machine(self, name: str) -> QemuMachine:
        if name not in self.machines or not self.machines[name].alive():
            raise TestbedError(f"VM {name} is not running")
        return self.machines[name]

    def shell(self, name: str) -> GuestShell:
        if name not in self.shells:
            raise TestbedError(f"VM {name} has no SSH session (was it booted?)")
        return self.shells[name]

    def plan(self, name: str) -> MachinePlan:
        """The VM's plan as it runs now (after migrations, on the other slot's taps)."""
        return self.machines[name].plan if name in self.machines else self.plans[name]

    def new_machine(self, name: str, slot: int, incoming: bool, label: str) -> QemuMachine:
        machine = QemuMachine(self.plans[name].on_slot(slot), self.image, self.qemu.path, self.accel,
                              self.netns, self.options.artifacts_dir / label, self.clock,
                              incoming=incoming,
                              absent_primaries=frozenset(self.absent_primaries.get(name, ())),
                              socket_dir=self.scratch_dir())
        vm_report = self.report.vms.setdefault(name, VmReport())
        vm_report.artifacts = {k: str(getattr(machine.artifacts, k)) for k in
                               ("serial_log", "qemu_stderr", "qmp_events", "dmesg", "argv")}
        return machine

    def start_machine(self, name: str) -> QemuMachine:
        machine = self.new_machine(name, 0, incoming=False, label=name)
        self.machines[name] = machine
        machine.launch()
        for pair in self.plans[name].pairs:
            if pair.pair.standby.link == "down":
                machine.qmp.execute("set_link", {"name": pair.standby.device_id, "up": False})
        machine.cont()
        return machine

    _scratch: Path | None = None

    def scratch_dir(self) -> Path:
        """A short private directory for unix sockets (sun_path allows only 108 bytes)."""
        if self._scratch is None:
            self._scratch = Path(tempfile.mkdtemp(prefix="tb-"))
        return self._scratch

    def snapshot_counters(self) -> Snapshot:
        vms = {vm for vm, _ in self.traffic}
        out: Snapshot = {}
        for vm in vms:
            if vm in self.shells and self.machines[vm].alive():
                out[vm] = read_counters(self.shells[vm], self.plan(vm))
        return out

    def take_snapshot(self, index: int) -> None:
        """Counters at the start of step `index` close the previous step's datapath record."""
        if not self.traffic:
            return
        try:
            self.snapshots[index] = self.snapshot_counters()
        except TestbedError as e:
            self.log(f"counter snapshot before step {index} failed: {e}")
            return
        if index - 1 in self.snapshots:
            self.report.steps[index - 1].counters = delta(self.snapshots[index - 1], self.snapshots[index])

    def stop_traffic(self) -> None:
        from testbed.steps import traffic_report
        for (vm, pair), session in self.traffic.items():
            session.stop()
            log = self.options.artifacts_dir / f"traffic-{vm}-{pair}.log"
            log.write_text("".join(session.ping.raw_lines))
        self.report.traffic = [entry for session in self.traffic.values()
                               for entry in traffic_report(self, session)]

    def teardown(self) -> None:
        if self.traffic:
            with contextlib.suppress(Exception):
                self.take_snapshot(len(self.report.steps))
            self.stop_traffic()
        for name, machine in self.machines.items():
            if (rss := machine.peak_rss_mib()) is not None:
                self.report.vms[name].boot["qemu_peak_rss_mib"] = rss
        for name, shell in list(self.shells.items()):
            machine = self.machines.get(name)
            with contextlib.suppress(Exception):
                if machine and machine.alive():
                    machine.artifacts.dmesg.write_text(shell.run(["dmesg"], timeout=10).stdout)
                    self.report.vms[name].netdevs = [n.as_dict() for n in read_netdevs(shell)]
            shell.close()
        for machine in [*self.machines.values(), *self.retired]:
            machine.shutdown()
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)


def _sigterm_as_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


class LiveRun:
    """A run in progress, for Python callers: steps run one at a time, and the live parts (QMP,
    SSH, namespaces) are reachable through `ctx` in between. Made by `live_run()`."""

    def __init__(self, ctx: RunContext):
        self.ctx = ctx

    def step(self, step: Step) -> StepRecord:
        """Runs one step and records it in the report; a failure is recorded, not raised."""
        from testbed.steps import run_step  # steps import RunContext from here
        ctx = self.ctx
        index = len(ctx.report.steps)
        ctx.take_snapshot(index)
        record = StepRecord(index=index, action=step.action, started_s=round(ctx.clock.now(), 3))
        ctx.report.steps.append(record)
        ctx.log(f"step {index}: {step.action}")
        try:
            record.details = run_step(ctx, step) or {}
            record.ok = True
        except TestbedError as e:
            record.error = str(e)
            ctx.log(f"step {index} ({step.action}) failed: {e}")
        except Exception as e:  # a testbed bug: fail the step, keep the evidence, still tear down
            trace = ctx.options.artifacts_dir / f"step{index}-traceback.txt"
            trace.write_text(traceback.format_exc())
            record.error = f"internal error: {type(e).__name__}: {e} (traceback in {trace})"
            ctx.log(f"step {index} ({step.action}) crashed: {record.error}")
        finally:
            record.ended_s = round(ctx.clock.now(), 3)
        return record


@contextlib.contextmanager
def live_run(scenario: Scenario, options: RunOptions, log: Log = lambda msg: None) -> Iterator[LiveRun]:
    """Sets up image, QEMU checks, namespaces and network for the scenario, yields a LiveRun, and
    always tears everything down. The report is complete when the block exits (even by an error)."""
    clock = RunClock()
    options.artifacts_dir.mkdir(parents=True, exist_ok=True)
    report = RunReport(scenario=scenario.name, scenario_file=options.scenario_file,
                       artifacts_dir=str(options.artifacts_dir))
    previous_sigterm = signal.signal(signal.SIGTERM, _sigterm_as_interrupt) \
        if _in_main_thread() else None
    holder: list[LiveRun] = []
    try:
        with contextlib.ExitStack() as stack:
            qemu = inspect_qemu(options.qemu).require()
            image = ensure_image(local_kernel=options.local_kernel, log=log)
            accel = choose_accel(options.accel, qemu, image.kernel, log=log)
            report.host = HostInfo(qemu_version=qemu.version_text, qemu_path=qemu.path, accel=accel,
                                   guest_kernel=image.kernel_release, image=image.directory.name)
            plans = {p.name: p for p in plan_machines(scenario)}
            netns = NetworkNamespace.create()
            stack.callback(netns.close)
            peer = NetworkNamespace.create()
            stack.callback(peer.close)
            (options.artifacts_dir / "netns-inode").write_text(f"{netns.inode}\n{peer.inode}\n")
            migrates = any(step.action == "migrate" for step in scenario.steps)
            NetworkPlan.for_machines(list(plans.values()), peer_addresses(scenario), scenario.network.hosts,
                                     with_slot1=migrates).apply(netns, peer)
            ctx = RunContext(scenario, plans, image, qemu, accel, netns, clock, options, report, log,
                             peer=peer)
            stack.callback(ctx.teardown)
            holder.append(LiveRun(ctx))
            yield holder[0]
    except KeyboardInterrupt:
        report.error = "interrupted"
        raise
    except TestbedError as e:
        if holder:
            raise
        report.error = str(e)  # set-up failed: no step ran
        raise SetupFailed(report) from e
    finally:
        report.duration_s = round(clock.now(), 3)
        if previous_sigterm is not None:
            signal.signal(signal.SIGTERM, previous_sigterm)


class SetupFailed(TestbedError):
    """The run could not be set up (QEMU, image, namespaces); no step ran. Carries the report."""

    def __init__(self, report: RunReport):
        self.report = report
        super().__init__(report.error or "set-up failed")


def run_scenario(scenario: Scenario, options: RunOptions, log: Log = lambda msg: None) -> RunReport:
    """Runs every step until the first failure; returns the report (passed or not). With
    options.keep, a failed run holds its VMs (see testbed.hold) before tearing down."""
    from testbed.hold import hold
    report: RunReport | None = None
    try:
        with live_run(scenario, options, log) as run:
            report = run.ctx.report
            for step in scenario.steps:
                if not run.step(step).ok:
                    if options.keep and not run.ctx.down_requested:
                        hold(run.ctx, f"step {report.steps[-1].index} ({step.action}) failed")
                    break
        report.passed = len(report.steps) == len(scenario.steps) and all(s.ok for s in report.steps)
    except SetupFailed as e:
        report = e.report
    assert report is not None
    return report


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()
