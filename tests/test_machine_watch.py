"""The run's watch names the machine whose death explains the others: a nested guest's host VM."""

import time
from dataclasses import dataclass

from testbed.machine_watch import RunWatch


@dataclass(eq=False)
class FakeMachine:
    name: str
    dead_after: float | None = None  # seconds from now; None: never dies
    depends_on: "FakeMachine | None" = None
    watched: bool = True

    def __post_init__(self):
        self._born = time.monotonic()

    def alive(self) -> bool:
        return self.dead_after is None or time.monotonic() - self._born < self.dead_after

    def exit_status(self):
        return None if self.alive() else 1

    def serial_text(self) -> str:
        return ""

    def stderr_tail(self, lines: int = 20) -> str:
        return ""

    def guest_shutdown_reason(self):
        return "guest-reset" if self.name == "host" and not self.alive() else None


def test_a_guest_whose_host_vm_dies_just_after_it_is_blamed_on_the_host_vm():
    host = FakeMachine("host", dead_after=0.3)
    guest = FakeMachine("vm1", dead_after=0.0, depends_on=host)
    watch = RunWatch()
    watch.add(guest)  # even when the guest is looked at first
    watch.add(host)
    exit = watch.dead()
    assert exit is not None and exit.vm == "host"


def test_a_guest_that_dies_alone_is_named_itself():
    host = FakeMachine("host")
    guest = FakeMachine("vm1", dead_after=0.0, depends_on=host)
    watch = RunWatch()
    watch.add(host)
    watch.add(guest)
    started = time.monotonic()
    exit = watch.dead()
    assert exit is not None and exit.vm == "vm1"
    assert time.monotonic() - started < 5  # the grace for the host VM is bounded


def test_a_plain_guest_is_named_at_once():
    guest = FakeMachine("vm1", dead_after=0.0)
    watch = RunWatch()
    watch.add(guest)
    started = time.monotonic()
    assert watch.dead().vm == "vm1"
    assert time.monotonic() - started < 0.5


def test_an_aborted_qemu_is_reported_with_its_assertion():
    from testbed.machine_watch import MachineExit
    tail = ("QEMU stderr:\nqemu-system-x86_64: warning: host doesn't support requested feature\n"
            "qemu-system-x86_64: system/physmem.c:2678: iotlb_to_section: Assertion "
            "`section_index < d->map.sections_nb' failed.")
    died = MachineExit(vm="host", returncode=-6, signal="SIGABRT", panic=None, guest_shutdown=None, stderr_tail=tail)
    assert died.describe() == ("host: QEMU exited (signal 6, SIGABRT; QEMU said: system/physmem.c:2678: "
                               "iotlb_to_section: Assertion `section_index < d->map.sections_nb' failed.)")
    killed = MachineExit(vm="vm1", returncode=-9, signal="SIGKILL", panic=None, guest_shutdown=None,
                         stderr_tail="QEMU stderr:\nqemu-system-x86_64: warning: netdev net0-pri has no peer")
    assert killed.describe() == "vm1: QEMU exited (signal 9, SIGKILL)"
    # ...and that message, in a step's error, is what the host-VM rerun matches (and nothing else is)
    import re
    from testbed.known_flakes import HOST_VM_KNOWN_FLAKES
    error = f"step 11 (plug-primary) failed: {died.describe()} during step 11 (plug-primary)"
    assert any(re.search(p, error) for p in HOST_VM_KNOWN_FLAKES)
    # the same abort during the host VM's own boot, before the run's watch has it (machine.py's
    # console wait): described the same way, so it gets the same rerun
    from testbed.machine_watch import MachineDied
    booting = str(MachineDied(died, "'testbed: host ssh up' on its serial console"))
    assert booting == died.describe() + ", while waiting for 'testbed: host ssh up' on its serial console"
    assert any(re.search(p, f"error: {booting}") for p in HOST_VM_KNOWN_FLAKES)
    for other in (killed.describe(), died.describe().replace("host:", "vm1:"),
                  "host: QEMU exited (signal 6, SIGABRT; QEMU said: hw/pci/pci.c:1: foo: Assertion `x' failed.)"):
        assert not any(re.search(p, other) for p in HOST_VM_KNOWN_FLAKES), other


def test_a_stalled_kernel_is_named_and_a_host_vm_stall_gets_its_rerun():
    import re
    from testbed.known_flakes import HOST_VM_KNOWN_FLAKES

    @dataclass(eq=False)
    class Console(FakeMachine):
        console: str = ""

        def console_text_now(self) -> str:
            return self.console

    watch = RunWatch()
    guest = Console("vm1", console="[ 5.0] virtio_net virtio1 enp1s0: renamed\n")
    watch.add(guest)
    assert watch.kernel_trouble() is None
    host = Console("host", console="[ 60.18] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:\n")
    watch.add(host)
    trouble = watch.kernel_trouble()
    assert trouble == "host's kernel reported a stall: rcu: INFO: rcu_preempt detected stalls on CPUs/tasks"
    error = f"step 5 (unplug-primary) failed: vm1: SSH session lost; {trouble}"
    assert any(re.search(p, error) for p in HOST_VM_KNOWN_FLAKES)
    assert not any(re.search(p, error.replace("host's", "vm1's")) for p in HOST_VM_KNOWN_FLAKES)
    ssh_lost = ["step 14 (migrate) failed: vm1: waited 60.0s for SSH on the management NIC; last error: x",
                "step 5 (unplug-primary) failed: vm1: SSH session lost while running '/usr/lib/testbed/netdevs'"]
    assert all(any(re.search(p, e) for p in HOST_VM_KNOWN_FLAKES) for e in ssh_lost)
    host.watched = False  # a machine the testbed shut down on purpose says nothing any more
    assert watch.kernel_trouble() is None


def test_a_host_vm_kernel_oops_gets_its_rerun_and_a_guests_panic_does_not():
    import re
    from testbed.known_flakes import HOST_VM_KNOWN_FLAKES
    seen = ("step 14 (migrate) failed: host: guest kernel panic (serial: Kernel panic - not syncing: Fatal "
            "exception in interrupt) during step 14 (migrate); the step saw: vm1: nested QEMU did not start")
    assert any(re.search(p, seen) for p in HOST_VM_KNOWN_FLAKES)
    for other in (seen.replace("host: guest", "vm1: guest"),
                  "step 1 (exec) failed: vm1: guest kernel panic (serial: Kernel panic - not syncing: sysrq "
                  "triggered crash) during step 1 (exec)"):
        assert not any(re.search(p, other) for p in HOST_VM_KNOWN_FLAKES), other
