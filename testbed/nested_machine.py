"""A guest's QEMU running inside the host VM (L2 in L1). The testbed reaches its QMP monitor (TCP)
and its SSH through the host VM's user-mode forwards, and starts, watches and stops the process
over the host VM's SSH. To the steps it looks like any other QemuMachine."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from testbed.errors import TestbedError
from testbed.guest_shell import GuestShell
from testbed.machine import QemuMachine
from testbed.machine_watch import serial_text
from testbed.plan import MachinePlan
from testbed.qemu_argv import LaunchFiles, build_argv
from testbed.waiting import wait_until

if TYPE_CHECKING:
    from testbed.clock import RunClock
    from testbed.images import GuestImage
    from testbed.netns import NetworkNamespace

logger = logging.getLogger(__name__)

L2_IMAGE = Path("/srv/l2")   # where the host image keeps the guest's kernel and initramfs
L2_RUN = Path("/run/tb")     # per guest QEMU: serial log, stderr, pid and exit status
QMP_PORT_BASE = 4400
SLOT_PORT_STEP = 100


def qmp_port(plan: MachinePlan) -> int:
    return QMP_PORT_BASE + plan.index + SLOT_PORT_STEP * plan.slot


def nested_argv(plan: MachinePlan, run_dir: Path, accel: str, incoming: bool = False,
                absent_devices: frozenset[str] = frozenset()) -> list[str]:
    """The nested QEMU's command line as it runs inside the host VM."""
    files = LaunchFiles(L2_IMAGE / "vmlinuz", L2_IMAGE / "initrd.img", run_dir / "serial.log", None,
                        qmp_tcp_port=qmp_port(plan), ssh_listen="0.0.0.0")
    return build_argv("qemu-system-x86_64", plan, files, accel, incoming=incoming, absent_devices=absent_devices)


class NestedMachine(QemuMachine):
    def __init__(self, plan: MachinePlan, image: "GuestImage", netns: "NetworkNamespace", artifacts_dir: Path,
                 clock: "RunClock", host_shell: GuestShell, host_alive, accel: str, incoming: bool = False,
                 absent_devices: frozenset[str] = frozenset(), run_dir_name: str | None = None):
        super().__init__(plan, image, "qemu-system-x86_64", accel, netns, artifacts_dir, clock,
                         incoming=incoming, absent_devices=absent_devices)
        # KVM on L1's emulated SVM runs L2 about as fast as L1; TCG inside TCG is 10 to 20 times slower.
        self.slowdown = 3.0 if accel == "kvm" else 10.0
        self._host = host_shell
        self._host_alive = host_alive
        self._launched = False
        # Where the process keeps its files in L1; a guest adopted after a restore keeps the one it
        # was launched with, whatever the new artifacts directory is called.
        self._run_dir = L2_RUN / (run_dir_name or artifacts_dir.name)

    @property
    def run_dir_name(self) -> str:
        return self._run_dir.name

    # -- where things are inside the host VM
    def _path(self, name: str) -> str:
        return str(self._run_dir / name)

    def argv(self, qmp_fd: int = 3) -> list[str]:
        return nested_argv(self.plan, self._run_dir, self.accel, self.incoming, self.absent_devices)

    def launch(self) -> None:
        argv = self.argv()
        self.artifacts.argv.write_text("\n".join(argv) + "\n")
        try:
            self._host.run(["mkdir", "-p", str(self._run_dir)])
            self._host.run(["/usr/lib/testbed/run-guest", str(self._run_dir), *argv], timeout=20)
            self._launched = True
            self.launched_at = self.clock.now()
            wait_until(self._try_qmp, 60, f"{self.name}: QMP of the nested QEMU on port {qmp_port(self.plan)}",
                       interval=0.2)
            self.watched = not self.incoming
        except BaseException as e:
            self.shutdown()
            if isinstance(e, Exception):
                raise TestbedError(f"{self.name}: nested QEMU did not start: {e}\n{self.stderr_tail()}") from e
            raise

    def adopt(self, started_at: float, timeout: float) -> None:
        """Takes over a nested QEMU that is already running in the host VM (restored with it): its QMP
        is connected again, nothing is launched. started_at: when its host VM's restore began."""
        self.artifacts.argv.write_text("\n".join(self.argv()) + "\n")
        self._launched = True
        self.launched_at = started_at
        try:
            wait_until(self._try_qmp, timeout, f"{self.name}: QMP of the restored nested QEMU on port "
                       f"{qmp_port(self.plan)}", interval=0.2)
        except BaseException:
            self.shutdown()
            raise
        self.watched = True

    def detach(self, why: str) -> None:
        """Lets go of the nested QEMU without stopping it (the host VM is about to be saved with it
        running): its QMP session is closed and it is no longer watched."""
        self.watched = False
        self.qmp.close()
        self.events.close()
        self.shutdown_record = {"how": why}

    def _try_qmp(self) -> str | None:
        if not self._process_running():
            raise TestbedError(f"{self.name}: nested QEMU exited at start\n{self.stderr_tail()}")
        try:
            self.qmp.connect(self.netns.connect_tcp("127.0.0.1", qmp_port(self.plan), timeout=5), timeout=5)
            return None
        except Exception as e:  # slirp accepts before the nested QEMU listens: retry until its greeting
            return f"{type(e).__name__}: {e}"

    def _process_running(self) -> bool:
        result = self._host.run(["/usr/lib/testbed/guest-running", str(self._run_dir)], check=False, timeout=10)
        return result.exit_status == 0

    def console_size(self) -> int:
        result = self._host.run(["stat", "-c", "%s", self._path("serial.log")], check=False, timeout=10)
        if not result.stdout.strip().isdigit():
            raise TestbedError(f"{self.name}: cannot read the size of its serial log in the host VM: "
                               f"{result.stderr.strip() or result.stdout.strip()}")
        return int(result.stdout.strip())

    def wait_for_console(self, marker: str, timeout: float, after: int = 0) -> float:
        def check() -> str | None:
            result = self._host.run(["sh", "-c", 'tail -c "+$(($2 + 1))" "$1" | grep -c -F -e "$3"', "sh",
                                     self._path("serial.log"), str(after), marker], check=False)
            return None if result.stdout.strip() not in ("", "0") else f"no {marker!r} yet"
        return wait_until(check, timeout, f"{self.name} to print {marker!r} on its serial console", interval=0.5)

    def alive(self) -> bool:
        # Cheap, as every wait asks: the QMP session over the forward closes when the process dies.
        return self._launched and self.qmp.connected() and self._host_alive()

    @property
    def pid(self) -> int | None:
        return None

    def exit_status(self) -> int | None:
        if self.alive():
            return None
        try:
            text = self._host.run(["cat", self._path("status")], check=False, timeout=10).stdout.strip()
        except TestbedError:
            text = ""
        return int(text) if text.lstrip("-").isdigit() else 255

    def serial_text(self) -> str:
        self._fetch_logs()
        return serial_text(self.artifacts.serial_log)

    def stderr_tail(self, lines: int = 20) -> str:
        self._fetch_logs()
        return super().stderr_tail(lines)

    def peak_rss_mib(self) -> float | None:
        return None

    def _fetch_logs(self) -> None:
        """Copies the serial log and QEMU's output out of the host VM into the artifacts."""
        for name, dest in (("serial.log", self.artifacts.serial_log), ("qemu.log", self.artifacts.qemu_stderr)):
            try:
                dest.write_text(self._host.run(["cat", self._path(name)], check=False, timeout=15).stdout)
            except (TestbedError, OSError) as e:
                logger.warning("%s: could not copy %s out of the host VM: %s", self.name, name, e)

    def shutdown(self, grace_s: float = 5.0) -> dict[str, object]:
        self.watched = False
        if self.shutdown_record is not None:
            return self.shutdown_record
        record: dict[str, object] = {"how": "not-started"}
        try:
            if self._launched and self._host_alive():
                record = self._stop_in_host_vm(grace_s)
            elif self._launched:
                record = {"how": "went-with-the-host-vm"}
        except TestbedError as e:
            # A host VM that no longer answers (hung, paused) takes its guests with it when it is
            # stopped; teardown goes on to stop it.
            record = {"how": "host-vm-unreachable", "error": str(e)}
        finally:
            self.qmp.close()
            self.events.close()
            self.shutdown_record = record
        return record


    def _stop_in_host_vm(self, grace_s: float) -> dict[str, object]:
        if not self._process_running():
            record: dict[str, object] = {"how": "exited-before"}
        else:
            record = {}
            try:
                self.qmp.execute("quit", timeout=3, watch=False)
            except Exception as e:
                record["quit_error"] = str(e)
            stopped = self._host.run(["/usr/lib/testbed/stop-guest", str(self._run_dir), str(int(grace_s))],
                                     check=False, timeout=grace_s * 3 + 10).stdout.strip()
            record["how"] = stopped or "unknown"
        self._fetch_logs()
        return record


def with_host_devices(plan: MachinePlan, bdfs: dict[tuple[str, int, str], str]) -> MachinePlan:
    """The plan with each passed-through primary's host PCI address for the plan's slot."""
    pairs = []
    for p in plan.pairs:
        if p.primary is not None and not p.primary.backend:
            key = (plan.name, plan.slot, p.pair.name)
            if key not in bdfs:
                raise TestbedError(f"{plan.name}/{p.pair.name}: no VF was assigned on host slot {plan.slot}")
            p = replace(p, primary=replace(p.primary, host_device=bdfs[key]))
        pairs.append(p)
    return replace(plan, pairs=pairs)
