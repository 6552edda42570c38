"""A running QEMU: launched from an argv list inside the run's namespace, driven over QMP, and always
shut down through the ladder quit -> SIGTERM -> SIGKILL, whatever happened before."""

from __future__ import annotations

import signal
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from testbed.clock import RunClock
from testbed.errors import TestbedError
from testbed.machine_watch import MachineDied, read_exit, serial_text
from testbed.images import GuestImage
from testbed.netns import NetworkNamespace
from testbed.plan import MachinePlan
from testbed.procutil import spawn
from testbed.qemu_argv import LaunchFiles, build_argv
from testbed.qmp_channel import EventLog, QmpChannel
from testbed.waiting import wait_until


@dataclass(frozen=True)
class MachineArtifacts:
    directory: Path

    @property
    def serial_log(self) -> Path:
        return self.directory / "serial.log"

    @property
    def qemu_stderr(self) -> Path:
        return self.directory / "qemu.stderr"

    @property
    def qmp_events(self) -> Path:
        return self.directory / "qmp-events.jsonl"

    @property
    def dmesg(self) -> Path:
        return self.directory / "dmesg.txt"

    @property
    def argv(self) -> Path:
        return self.directory / "qemu-argv.txt"


class QemuMachine:
    slowdown = 1.0  # how much slower its guest runs than a guest on this machine (see GuestShell)

    def __init__(self, plan: MachinePlan, image: GuestImage, qemu: str, accel: str,
                 netns: NetworkNamespace, artifacts_dir: Path, clock: RunClock,
                 incoming: bool = False, absent_devices: frozenset[str] = frozenset(),
                 socket_dir: Path | None = None):
        self.plan = plan
        self.socket_dir = socket_dir
        self.incoming = incoming
        self.absent_devices = absent_devices
        self.absent_backends: frozenset[str] = frozenset()  # set before launch (build_argv)
        self.hold_after_incoming = False                    # set before launch (build_argv)
        self.image = image
        self.qemu = qemu
        self.accel = accel
        self.netns = netns
        self.clock = clock
        self.artifacts = MachineArtifacts(artifacts_dir)
        artifacts_dir.mkdir(parents=True, exist_ok=True)
        self.events = EventLog(plan.name, self.artifacts.qmp_events)
        self.qmp = QmpChannel(plan.name, self.events, clock)
        self.proc: subprocess.Popen | None = None
        self.launched_at: float | None = None
        # Whether the run's watch treats an exit as a death (see testbed.machine_watch).
        self.watched = False
        self.shutdown_record: dict[str, object] | None = None
        self.depends_on: QemuMachine | None = None  # a nested guest's host VM (see machine_watch)

    @property
    def name(self) -> str:
        return self.plan.name

    @property
    def qmp_socket(self) -> Path | None:
        return self.socket_dir / f"{self.artifacts.directory.name}.qmp" if self.socket_dir else None

    @property
    def serial_socket(self) -> Path | None:
        return self.socket_dir / f"{self.artifacts.directory.name}.console" if self.socket_dir else None

    def argv(self, qmp_fd: int = 3) -> list[str]:
        files = LaunchFiles(self.image.kernel, self.image.initrd, self.artifacts.serial_log, qmp_fd,
                            serial_socket=self.serial_socket, qmp_socket=self.qmp_socket)
        return build_argv(self.qemu, self.plan, files, self.accel, incoming=self.incoming,
                          absent_devices=self.absent_devices, absent_backends=self.absent_backends,
                          hold_after_incoming=self.hold_after_incoming)

    def launch(self) -> None:
        """Starts QEMU paused (-S) with QMP connected and every event recorded. On any failure the
        process is stopped and the error carries QEMU's stderr."""
        ours, theirs = socket.socketpair()
        argv = self.argv(theirs.fileno())
        self.artifacts.argv.write_text("\n".join(argv) + "\n")
        try:
            with self.artifacts.qemu_stderr.open("wb") as stderr:
                self.proc = spawn(self.netns.argv(argv), pass_fds=[theirs.fileno()],
                                  stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr)
            self.launched_at = self.clock.now()
            theirs.close()
            self.qmp.connect(ours)
            self.watched = not self.incoming  # a destination counts once it has taken over
        except BaseException as e:
            theirs.close()
            self.shutdown()
            if isinstance(e, Exception):
                raise TestbedError(f"{self.name}: QEMU did not start: {e}\n{self.stderr_tail()}") from e
            raise

    def console_size(self) -> int:
        """Where the serial log ends now: a later wait_for_console(after=) sees only what follows."""
        return self.artifacts.serial_log.stat().st_size if self.artifacts.serial_log.exists() else 0

    def _console_text(self, after: int) -> str:
        try:
            with self.artifacts.serial_log.open("rb") as log:
                log.seek(after)
                return log.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for_console(self, marker: str, timeout: float, after: int = 0) -> float:
        """Waits for a line on the serial console (past byte `after`). The guest's init prints markers
        as it comes up; connecting to SSH before its marker only earns slirp's SYN back-off."""
        def check() -> str | None:
            if not self.alive():
                # described as the run's watch describes a death (signal, QEMU's last words), which a
                # host VM's own boot, not yet watched, would otherwise miss
                raise MachineDied(read_exit(self), f"{marker!r} on its serial console")
            text = self._console_text(after)
            if marker in text:
                return None
            return "serial console: " + (" | ".join(text.strip().splitlines()[-3:]) or "(empty)")
        return wait_until(check, timeout, f"{self.name} to print {marker!r} on its serial console", interval=0.05)

    def cont(self) -> None:
        self.qmp.execute("cont")

    def device_del(self, device_id: str, timeout: float) -> float:
        """device_del, then QEMU's DEVICE_DELETED for it (the guest ejected it); the run-clock time it
        took."""
        cursor, started = self.events.cursor(), self.clock.now()
        self.qmp.execute("device_del", {"id": device_id})
        event = self.events.wait_for("DEVICE_DELETED", timeout, since=cursor,
                                     match=lambda d: d.get("device") == device_id)
        return round(event.t - started, 3)

    def peripheral_ids(self) -> set[str]:
        """The ids of the -device/device_add devices QEMU created (qom-list /machine/peripheral). Unlike
        query-pci this does not depend on the firmware having numbered the root ports' buses, so it
        also answers for a QEMU whose guest has not run (an incoming migration's destination). A
        failover primary that QEMU hides is never created, so it is not among them."""
        return {p["name"] for p in self.qmp.execute("qom-list", {"path": "/machine/peripheral"})
                if p.get("type", "").startswith("child<")}

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def exit_status(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def serial_text(self) -> str:
        return serial_text(self.artifacts.serial_log)

    def console_text_now(self) -> str:
        return serial_text(self.artifacts.serial_log)

    def guest_shutdown_reason(self) -> str | None:
        """QEMU's SHUTDOWN reason when the guest asked for it (a reset with -no-reboot, a power-off)."""
        shutdowns = [r.data for r in self.events.records() if r.event == "SHUTDOWN" and r.data.get("guest")]
        return str(shutdowns[-1].get("reason")) if shutdowns else None

    def stderr_tail(self, lines: int = 20) -> str:
        try:
            text = self.artifacts.qemu_stderr.read_text(errors="replace")
        except FileNotFoundError:
            return "(no QEMU stderr)"
        return "QEMU stderr:\n" + "\n".join(text.strip().splitlines()[-lines:]) if text.strip() else "(QEMU stderr empty)"

    def stderr_warnings(self) -> list[str]:
        """QEMU's `warning:` lines on stderr so far."""
        try:
            text = self.artifacts.qemu_stderr.read_text(errors="replace")
        except FileNotFoundError:
            return []
        return [line for line in text.splitlines() if "warning:" in line]

    def peak_rss_mib(self) -> float | None:
        """QEMU's peak resident memory (VmHWM) so far."""
        if not self.alive():
            return None
        assert self.proc is not None
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
        except OSError:
            return None
        return None

    def shutdown(self, grace_s: float = 5.0) -> dict[str, object]:
        """QMP quit, then SIGTERM, then SIGKILL; closes QMP and the event log whatever happens.
        Returns (and keeps in shutdown_record) how it went, as QEMU's own AbnormalShutdown would say:
        `how` is quit, SIGTERM, SIGKILL, or exited-before (it was already gone)."""
        self.watched = False
        if self.shutdown_record is not None:
            return self.shutdown_record
        record: dict[str, object] = {"how": "not-started"}
        try:
            if self.proc is not None and not self.alive():
                record = {"how": "exited-before", "returncode": self.proc.returncode}
            elif self.alive():
                assert self.proc is not None
                try:
                    self.qmp.execute("quit", timeout=3, watch=False)
                    record["quit_error"] = None
                except Exception as e:
                    record["quit_error"] = str(e)  # QEMU may drop the connection before it answers
                for how, sig in (("quit", None), ("SIGTERM", signal.SIGTERM), ("SIGKILL", signal.SIGKILL)):
                    if sig is not None:
                        self.proc.send_signal(sig)
                    try:
                        self.proc.wait(timeout=grace_s)
                        record.update(how=how, returncode=self.proc.returncode)
                        break
                    except subprocess.TimeoutExpired:
                        continue
        finally:
            self.qmp.close()
            self.events.close()
            if self.proc is not None and self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
                record.update(how="SIGKILL", returncode=self.proc.returncode)
            self.shutdown_record = record
        return record
