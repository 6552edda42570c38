"""Notices a VM that died: every wait of a run asks this watch first, so a QEMU killed by a signal or
a guest kernel panic is reported for what it is within one poll, instead of as the timeout of
whatever the step happened to be waiting for.

The watch of the running scenario is found through a context variable that the runner sets, the way
a cancellation scope works: waits deep inside steps need no extra argument to honour it."""

from __future__ import annotations

import contextlib
import re
import signal
import time
from contextvars import ContextVar
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Protocol

from testbed.errors import TestbedError

# The kernel's own words (panic(), and the oops that usually precedes it).
PANIC_RE = re.compile(r"Kernel panic - not syncing:.*|BUG: kernel NULL pointer dereference.*")
# What a kernel says when a CPU stopped making progress without dying: on a host VM under TCG, a
# vCPU that runs a nested guest has been seen to take no timer interrupt for 20 s and more.
KERNEL_TROUBLE_RE = re.compile(r"rcu: INFO: rcu_\w+ detected stalls on CPUs/tasks|"
                               r"watchdog: BUG: soft lockup - CPU#\d+ stuck for \d+s!|"
                               r"INFO: task \S+ blocked for more than \d+ seconds")


class WatchedMachine(Protocol):
    name: str
    watched: bool
    # The machine whose death takes this one with it (a nested guest's host VM), or None.
    depends_on: "WatchedMachine | None"

    def alive(self) -> bool: ...
    def exit_status(self) -> int | None: ...
    def serial_text(self) -> str: ...
    def console_text_now(self) -> str: ...  # what the console printed so far, read locally (no SSH)
    def stderr_tail(self, lines: int = 20) -> str: ...
    def guest_shutdown_reason(self) -> str | None: ...


@dataclass(frozen=True)
class MachineExit:
    """How a VM's QEMU ended without the testbed asking it to."""
    vm: str
    returncode: int
    signal: str | None        # e.g. "SIGKILL" when QEMU was killed by a signal
    panic: str | None         # the guest's panic line from the serial console
    guest_shutdown: str | None  # QEMU's SHUTDOWN reason when the guest itself shut down or reset
    stderr_tail: str

    def describe(self) -> str:
        if self.panic:
            return f"{self.vm}: guest kernel panic (serial: {self.panic})"
        if self.signal:
            said = qemu_last_words(self.stderr_tail) if self.signal == "SIGABRT" else None
            return f"{self.vm}: QEMU exited (signal {-self.returncode}, {self.signal}" + \
                (f"; QEMU said: {said})" if said else ")")
        if self.guest_shutdown:
            return f"{self.vm}: the guest ended its own run ({self.guest_shutdown}); QEMU exited with status " \
                   f"{self.returncode}"
        return f"{self.vm}: QEMU exited with status {self.returncode}: {self.stderr_tail}"

    def as_dict(self) -> dict:
        return asdict(self)


# QEMU's own messages start with the program's name ("qemu-system-x86_64: ..."). An abort() from an
# assert leaves one such line last, and it says more about the crash than the signal does; any other
# signal leaves no last words, and the lines before it are launch-time warnings.
QEMU_MESSAGE_RE = re.compile(r"^qemu-(?:system-)?[\w-]+: (.+)$", re.MULTILINE)


def qemu_last_words(stderr_tail: str) -> str | None:
    """The last line of QEMU's stderr, if QEMU wrote it and it is not a (launch-time) warning."""
    lines = [line for line in stderr_tail.splitlines() if line.strip()]
    found = QEMU_MESSAGE_RE.match(lines[-1].strip()) if lines else None
    if found is None or found.group(1).startswith("warning:"):
        return None
    return found.group(1).strip()


def read_exit(machine: WatchedMachine) -> MachineExit:
    code = machine.exit_status()
    assert code is not None
    sig = None
    if code < 0:
        try:
            sig = signal.Signals(-code).name
        except ValueError:
            sig = f"signal {-code}"
    match = PANIC_RE.search(machine.serial_text())
    return MachineExit(vm=machine.name, returncode=code, signal=sig, panic=match.group(0).strip() if match else None,
                       guest_shutdown=machine.guest_shutdown_reason(), stderr_tail=machine.stderr_tail(5))


# How long a guest's death waits for its host VM's to show: a nested guest's QMP session drops the
# moment the host VM resets, a little before the host VM's own QEMU has exited.
HOST_DEATH_GRACE_S = 3.0


def _culprit(machine: WatchedMachine) -> WatchedMachine:
    """The machine to name for a death: the host VM when it died too (its death explains the guest's)."""
    host = machine.depends_on
    if host is None:
        return machine
    deadline = time.monotonic() + HOST_DEATH_GRACE_S
    while host.alive():
        if time.monotonic() > deadline:
            return machine
        time.sleep(0.05)
    return host


class MachineDied(TestbedError):
    """A VM's QEMU exited while the run still needed it. waiting_for: what the wait that noticed was
    for, when it was not the run's watch (a machine's own boot, before the watch has it)."""

    def __init__(self, exit: MachineExit, waiting_for: str | None = None):
        self.exit = exit
        super().__init__(exit.describe() + (f", while waiting for {waiting_for}" if waiting_for else ""))


class RunWatch:
    """The machines of one run. A machine counts only while `watched` is set: the testbed clears it
    before it shuts a machine down, and a migration destination is watched only once it took over."""

    def __init__(self) -> None:
        self._machines: list[WatchedMachine] = []
        self.exits: list[MachineExit] = []

    def add(self, machine: WatchedMachine) -> None:
        self._machines.append(machine)

    def dead(self) -> MachineExit | None:
        """The first watched machine found dead (recorded once), or None."""
        if self.exits:
            return self.exits[0]
        for machine in self._machines:
            if machine.watched and not machine.alive():
                self.exits.append(read_exit(_culprit(machine)))
                return self.exits[0]
        return None

    def local_pids(self) -> dict[str, int]:
        """The run's QEMUs that run on this machine (not a host VM's guests), by name."""
        return {m.name: pid for m in self._machines if (pid := getattr(m, "pid", None)) is not None}

    def forgive(self, exit: MachineExit) -> None:
        """A death the step expected (migrate expect: source-died): no longer the run's failure. The
        machine must be retired (unwatched) too, or the next look finds it dead again."""
        self.exits.remove(exit)

    def check(self) -> None:
        if (exit := self.dead()) is not None:
            raise MachineDied(exit)

    def kernel_trouble(self) -> str | None:
        """The first stall or lockup a watched machine's kernel reported on its console, if any: a
        step that timed out or lost its session on such a machine failed because of it."""
        for machine in self._machines:
            if machine.watched and (found := KERNEL_TROUBLE_RE.search(machine.console_text_now())):
                return f"{machine.name}'s kernel reported a stall: {found.group(0)}"
        return None


_current: ContextVar[RunWatch | None] = ContextVar("testbed_run_watch", default=None)


@contextlib.contextmanager
def watching(watch: RunWatch) -> Iterator[RunWatch]:
    token = _current.set(watch)
    try:
        yield watch
    finally:
        _current.reset(token)


def check_machines() -> None:
    """Raises MachineDied if a machine of the current run died; a no-op outside a run."""
    if (watch := _current.get()) is not None:
        watch.check()


def serial_text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""
