"""Runs a scenario: image, namespace and network first, then the steps, then a report. Teardown always
runs: every QEMU goes through its shutdown ladder and the namespace (with its taps and bridge) goes
with its holder, after a failure, a timeout or Ctrl-C alike."""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import threading
import traceback
from pathlib import Path
from typing import Iterator

from testbed.artifacts import check_room, make_scratch_dir, sweep_dead_scratch
from testbed.clock import RunClock
from testbed.bug_verdict import decide
from testbed.errors import StepFailed, TestbedError, WaitTimeout
from testbed.hold import hold
from testbed.cpu_wait import cpu_wait_during, describe_cpu_wait, qemu_thread_waits
from testbed.host_stall import HostStallMonitor
from testbed.dhcp_plan import dhcp_pairs
from testbed.dhcp_server import DhcpServer
from testbed.guest_memory import check_images_fit
from testbed.images import ensure_image
from testbed.network import PEER_IFNAME
from testbed.machine_watch import MachineDied, watching
from testbed.hosts import Host, NamespaceHost
from testbed.cloud_seed import with_seed
from testbed.kexec_disk import with_kexec_disk
from testbed.plan import MachinePlan, peer_addresses, plan_machines
from testbed.qemu_host import QemuBinary, choose_accel, inspect_qemu
from testbed.report import HostInfo, RunReport, StepRecord
from testbed.run_context import RunContext, RunOptions
from testbed.scenario import HostKind, Scenario, Step
from testbed.snapshots import SnapshotCache, cache_limit_bytes, run_default
from testbed.warm_boot import with_snapshot_default
from testbed.steps import run_step

logger = logging.getLogger(__name__)

__all__ = ["LiveRun", "RunOptions", "SetupFailed", "live_run", "run_scenario"]


def _progress(ctx: RunContext, entry: dict) -> None:
    """steps.jsonl: a line as each step starts and ends, for whoever watches a run from outside."""
    try:
        with (ctx.options.artifacts_dir / "steps.jsonl").open("a") as f:
            f.write(json.dumps(entry) + "\n")
    except OSError as e:
        logger.warning("could not append to steps.jsonl: %s", e)


def _sigterm_as_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


class LiveRun:
    """A run in progress, for Python callers: steps run one at a time, and the live parts (QMP,
    SSH, namespaces) are reachable through `ctx` in between. Made by `live_run()`."""

    def __init__(self, ctx: RunContext, stalls: HostStallMonitor):
        self.ctx, self.stalls = ctx, stalls

    def step(self, step: Step) -> StepRecord:
        """Runs one step and records it in the report; a failure is recorded, not raised. A VM that
        died is named as the cause, whatever the step was waiting for when it noticed."""
        ctx = self.ctx
        step = with_snapshot_default(step, ctx.report.snapshot_default or "never")
        index = len(ctx.report.steps)
        ctx.take_snapshot(index)
        ctx.step_starts.append(ctx.clock.now())
        record = StepRecord(index=index, action=step.action, started_s=round(ctx.step_starts[-1], 3))
        ctx.report.steps.append(record)
        logger.info("step %d: %s", index, step.action)
        _progress(ctx, {"index": index, "action": step.action, "event": "start", "t": record.started_s})
        ctx.start_deadline(getattr(step, "timeout_s", None))
        waits_before = qemu_thread_waits(ctx.watch.local_pids())
        failure: TestbedError | None = None
        try:
            if (dead := ctx.watch.dead()) is not None:
                raise MachineDied(dead)
            record.details = run_step(ctx, step) or {}
            record.ok = True
        except TestbedError as e:
            record.error = str(e)
            record.check_failed = isinstance(e, (StepFailed, WaitTimeout))
            failure = e
        except Exception as e:  # a testbed bug: fail the step, keep the evidence, still tear down
            trace = ctx.options.artifacts_dir / f"step{index}-traceback.txt"
            with contextlib.suppress(OSError):
                trace.write_text(traceback.format_exc())
            record.error = f"internal error: {type(e).__name__}: {e} (traceback in {trace})"
        finally:
            ctx.deadline = None
            record.ended_s = round(ctx.clock.now(), 3)
        if not record.ok:
            self._explain_failure(record, step, failure, waits_before)
            logger.error("step %d (%s) failed: %s", index, step.action, record.error)
        _progress(ctx, {"index": index, "action": step.action, "event": "end", "t": record.ended_s,
                        "ok": record.ok, "error": record.error})
        return record

    def _explain_failure(self, record: StepRecord, step: Step, failure: TestbedError | None,
                         waits_before: dict) -> None:
        """Adds to a failed step's error what explains it besides the step: a VM that died (named as
        the cause), a guest kernel's stall, the testbed standing still, a guest starved of CPU."""
        ctx, index = self.ctx, record.index
        assert record.error is not None
        record.cpu_wait = cpu_wait_during(waits_before, qemu_thread_waits(ctx.watch.local_pids()))
        if (dead := ctx.death_behind_failure()) is not None:
            record.check_failed = False
            if not record.error.startswith(dead.describe()):
                # The step saw a broken connection or a timeout; the cause is the VM's death.
                record.error = f"{dead.describe()} during step {index} ({step.action}); the step saw: {record.error}"
            else:
                record.error = f"{record.error} during step {index} ({step.action})"
            return
        if (trouble := ctx.watch.kernel_trouble()) is not None:
            record.check_failed = False  # the machine, not the check, failed
            record.error = f"{record.error}; {trouble}"
        if (standstill := self.stalls.blame(failure, record.started_s, record.ended_s or 0.0)) is not None:
            record.check_failed = False
            record.error = f"{record.error}; {standstill}"
        if (busy := describe_cpu_wait(record.cpu_wait, (record.ended_s or 0.0) - record.started_s)) is not None:
            record.error = f"{record.error}; {busy}"

@contextlib.contextmanager
def live_run(scenario: Scenario, options: RunOptions) -> Iterator[LiveRun]:
    """Sets up image, QEMU checks, namespaces and network for the scenario, yields a LiveRun, and
    always tears everything down. The report is complete when the block exits (even by an error)."""
    clock = RunClock()
    report = RunReport(scenario=scenario.name, scenario_file=options.scenario_file,
                       artifacts_dir=str(options.artifacts_dir))
    previous_sigterm = signal.signal(signal.SIGTERM, _sigterm_as_interrupt) \
        if _in_main_thread() else None
    holder: list[LiveRun] = []
    stalls = HostStallMonitor(clock)
    stalls.start()
    try:
        with contextlib.ExitStack() as stack:
            check_room(options.artifacts_dir)
            sweep_dead_scratch()
            mode = report.snapshot_default = run_default(options.snapshot)
            scenario = scenario.model_copy(update={"steps": [with_snapshot_default(s, mode) for s in scenario.steps]})
            qemu = inspect_qemu(options.qemu).require()
            images = {flavour: ensure_image(local_kernel=options.local_kernel, kernel_suite=options.kernel_suite,
                                            flavour=flavour) for flavour in dict.fromkeys(vm.image for vm in scenario.vms)}
            check_images_fit(scenario, images)
            image = images[scenario.vms[0].image]
            accel = choose_accel(options.accel, qemu, image.kernel)
            report.host = HostInfo(qemu_version=qemu.version_text, qemu_path=qemu.path, accel=accel,
                                   guest_kernel=image.kernel_release, image=image.directory.name,
                                   images={f: i.directory.name for f, i in images.items()})
            plans = {p.name: _with_disks(p, scenario, images, options.artifacts_dir, stack)
                     for p in plan_machines(scenario)}
            migrates = any(step.action == "migrate" for step in scenario.steps)
            host = _make_host(scenario, list(plans.values()), migrates, images, qemu, accel, clock, options)
            stack.callback(host.close)
            report.topology = host.describe()
            if pairs := dhcp_pairs(scenario.vms):
                dhcp = DhcpServer.start(host.peer, PEER_IFNAME, pairs, options.artifacts_dir, clock)
                stack.callback(_record_dhcp, dhcp, report)
            (options.artifacts_dir / "netns-inode").write_text(  # each with its holder (testbed.leftovers)
                f"{host.netns.inode} {host.netns.pid}\n{host.peer.inode} {host.peer.pid}\n")
            ctx = RunContext(scenario, plans, image, qemu, accel, host, clock, options, report, images)
            for machine in host.watched_machines():  # first: its death explains its guests'
                ctx.watch.add(machine)
            stack.enter_context(watching(ctx.watch))
            stack.callback(ctx.teardown)
            holder.append(LiveRun(ctx, stalls))
            yield holder[0]
    except KeyboardInterrupt:
        report.error = "interrupted"
        raise
    except TestbedError as e:
        if holder:
            raise
        report.error = str(e)  # set-up failed: no step ran
        raise SetupFailed(report) from e
    except OSError as e:
        if holder:
            raise
        report.error = f"set-up failed: {e}"
        raise SetupFailed(report) from e
    finally:
        stalls.stop()
        report.duration_s, report.host_stalls = round(clock.now(), 3), stalls.as_report()
        if previous_sigterm is not None:
            signal.signal(signal.SIGTERM, previous_sigterm)


def _with_disks(plan: MachinePlan, scenario: Scenario, images: dict, artifacts_dir: Path,
                stack: contextlib.ExitStack) -> MachinePlan:
    """The plan with the read-only disks its guest reads: a cloud-init seed, a kexec disk (a copy of
    the kernel and initrd, removed with the run: it is not evidence)."""
    image = images[plan.vm.image]
    plan = with_kexec_disk(with_seed(plan, artifacts_dir), scenario.steps, image.kernel, image.initrd, artifacts_dir)
    if plan.kexec_disk is not None:
        stack.callback(plan.kexec_disk.unlink, missing_ok=True)
    return plan


def _record_dhcp(server: DhcpServer, report: RunReport) -> None:
    server.stop()
    report.dhcp, report.leases = server.events, server.leases()


def _make_host(scenario: Scenario, plans: list, migrates: bool, images: dict, qemu: QemuBinary, accel: str,
               clock: RunClock, options: RunOptions) -> Host:
    """The scenario's host kind: the run's namespace (default) or a host VM with nested guests."""
    if scenario.host.kind == HostKind.VM:
        from testbed.host_image import ensure_host_image
        from testbed.host_vm import VmHost
        from testbed.host_vm_warm import plan_host_start
        local = options.local_kernel
        image = images["minimal"]  # scenario validation: a host VM's guests run the minimal image
        host_image = ensure_host_image(image, modules_dir=local.modules_dir if local else None)
        # A second simulated host is a second PF in the host VM, whether or not a step migrates: the
        # host VM (and so its snapshot) is then the same for every scenario on the same topology.
        two_pfs = migrates or scenario.network.hosts > 1
        warm = plan_host_start(scenario, plans, qemu, image, host_image, 2 if two_pfs else 1)
        snapshot = SnapshotCache(limit_bytes=cache_limit_bytes(options.snapshot_cache_mib)).get(warm.key) \
            if warm.wants_snapshot() and warm.key else None
        return VmHost.create(scenario.host, plans, peer_addresses(scenario), scenario.network.hosts, two_pfs,
                             image, host_image, qemu.path, clock, options.artifacts_dir, make_scratch_dir(),
                             timeout_s=_host_boot_budget_s(scenario) * options.timeout_scale, warm=warm,
                             snapshot=snapshot)
    return NamespaceHost.create(plans, peer_addresses(scenario), scenario.network.hosts, migrates, images,
                                qemu.path, accel, clock)


def _host_boot_budget_s(scenario: Scenario) -> float:
    """A host VM boots before the first boot step runs, but within its budget: that step's timeout_s
    is what the author gave for the host and its guests to come up (a cold host VM under TCG on a
    loaded 2-core machine took more than 120 s to reach sshd, with RCU stalls on its console)."""
    boots = [step.timeout_s for step in scenario.steps if step.action == "boot"]
    return max(120.0, boots[0]) if boots else 120.0


class SetupFailed(TestbedError):
    """The run could not be set up (QEMU, image, namespaces, artifacts); no step ran. Carries the report."""

    def __init__(self, report: RunReport):
        self.report = report
        super().__init__(report.error or "set-up failed")


def run_scenario(scenario: Scenario, options: RunOptions) -> RunReport:
    """Runs every step until the first failure; returns the report (passed or not). With
    options.keep, a failed run holds its VMs (see testbed.hold) before tearing down."""
    report: RunReport | None = None
    try:
        with live_run(scenario, options) as run:
            report = run.ctx.report
            for step in scenario.steps:
                record = run.step(step)
                if not record.ok:
                    report.error = f"step {record.index} ({step.action}) failed: {record.error}"
                    if options.keep and not run.ctx.down_requested and not run.ctx.watch.dead():
                        hold(run.ctx, f"step {record.index} ({step.action}) failed")
                    break
        report.passed = len(report.steps) == len(scenario.steps) and all(s.ok for s in report.steps)
    except SetupFailed as e:
        report = e.report
    assert report is not None
    if scenario.bug is not None:
        verdict, report.verdict_evidence = decide(scenario, report)
        report.verdict, report.bug = verdict.value, scenario.bug.model_dump()
    return report


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()
