"""What a failed step says of the testbed standing still (testbed.host_stall) and of its guests
waiting for a CPU (testbed.cpu_wait), and that pytest's plugin reruns exactly the first, once, on any
guest test; and that a step failed by its own check is not blamed on a standstill."""

import os
import re

from testbed.cpu_wait import cpu_wait_during, describe_cpu_wait, qemu_thread_waits
from testbed.host_stall import STOOD_STILL_S, HostStall, HostStallMonitor, describe_standstill
from testbed.clock import RunClock
from testbed.errors import StepFailed, WaitTimeout
from testbed.guest_shell import GuestSessionLost
from testbed.known_flakes import HOST_VM_KNOWN_FLAKES, MACHINE_STOOD_STILL


def test_a_stall_long_enough_is_blamed_in_the_words_the_rerun_matches():
    assert describe_standstill([]) is None
    assert describe_standstill([HostStall(at_s=20.0, late_s=STOOD_STILL_S - 0.1, steal_s=0.0)]) is None
    text = describe_standstill([HostStall(at_s=20.0, late_s=1.2, steal_s=0.0),
                                HostStall(at_s=50.0, late_s=24.3, steal_s=23.9)])
    assert text is not None and text.startswith("the testbed itself stood still for 24.3s during this step, at 25.7s")
    assert "steal time meanwhile: 23.9s" in text
    assert re.search(MACHINE_STOOD_STILL, f"vm1: waited 30.0s for x; {text}")
    assert MACHINE_STOOD_STILL in HOST_VM_KNOWN_FLAKES


def test_only_the_stalls_that_overlap_a_step_are_its_own():
    monitor = HostStallMonitor(RunClock())
    before, inside, across = (HostStall(at_s=9.0, late_s=6.0, steal_s=0.0), HostStall(at_s=15.0, late_s=6.0, steal_s=0.0),
                              HostStall(at_s=23.0, late_s=6.0, steal_s=0.0))
    monitor.stalls += [before, inside, across]
    assert monitor.during(10.0, 20.0) == [inside, across]
    assert monitor.blame(WaitTimeout("x"), 24.0, 30.0) is None
    assert monitor.as_report()[1] == {"at_s": 15.0, "late_s": 6.0, "steal_s": 0.0}


def test_a_guest_test_gets_one_rerun_for_a_stood_still_machine(pytester):
    pytester.makepyfile("""
        import pytest
        pytestmark = pytest.mark.guest

        def test_plain():
            pass

        @pytest.mark.flaky(reruns=0)
        def test_own_flaky():
            pass
    """)
    items, _ = pytester.inline_genitems()
    marks = {i.name: i.get_closest_marker("flaky") for i in items}
    assert marks["test_plain"].kwargs == {"reruns": 1, "only_rerun": [MACHINE_STOOD_STILL]}
    assert marks["test_own_flaky"].kwargs == {"reruns": 0}


def test_a_vcpu_that_waited_for_most_of_a_failed_step_is_named():
    before = {"vm1": {"CPU 0/TCG (11)": 1.0, "qemu-system-x86 (10)": 0.5}}
    after = {"vm1": {"CPU 0/TCG (11)": 21.5, "qemu-system-x86 (10)": 0.55},
             "vm1-migration1": {"CPU 0/TCG (21)": 3.0}}
    waits = cpu_wait_during(before, after)
    assert waits == {"vm1": {"CPU 0/TCG (11)": 20.5}, "vm1-migration1": {"CPU 0/TCG (21)": 3.0}}
    assert describe_cpu_wait(waits, 30.0) == ("vm1's vCPU thread CPU 0/TCG (11) waited 20.5s of this step's 30.0s "
                                              "for a CPU of the machine (its run_delay): the machine was too busy "
                                              "to run the guest")
    assert describe_cpu_wait(waits, 45.0) is None                              # under half the step
    assert describe_cpu_wait({"vm1": {"CPU 0/TCG (11)": 4.0}}, 5.0) is None    # under 5 s
    assert describe_cpu_wait({"vm1": {"qemu-system-x86 (10)": 20.0}}, 30.0) is None  # not a vCPU


def test_the_waits_of_this_process_threads_are_read():
    (waits,) = qemu_thread_waits({"self": os.getpid()}).values()
    assert any(thread.endswith(f" ({os.getpid()})") for thread in waits), waits  # the main thread's id is the pid
    assert qemu_thread_waits({"gone": 2 ** 22 + 7}) == {}


def test_a_standstill_under_way_counts_before_the_monitor_wakes():
    """A step that failed as the machine came back may ask before the monitor's thread has woken."""
    monitor = HostStallMonitor(RunClock())
    monitor._last_tick -= 7.0  # as if the monitor had not run for 7 s (it was never started here)
    (stall,) = monitor.during(0.0, 1e6)
    assert stall.late_s >= 6.8 and monitor.blame(WaitTimeout("x"), 0.0, 1e6) is not None


def test_only_a_wait_that_ran_out_or_a_lost_session_is_blamed_on_a_standstill():
    monitor = HostStallMonitor(RunClock())
    monitor.stalls.append(HostStall(at_s=15.0, late_s=8.0, steal_s=0.0))
    assert monitor.blame(WaitTimeout("vm1: 'true' did not finish within 30s"), 0.0, 20.0) is not None
    assert monitor.blame(GuestSessionLost("vm1: SSH session lost while running 'true'"), 0.0, 20.0) is not None
    assert monitor.blame(StepFailed("check-traffic: 3 lost, max_lost 0"), 0.0, 20.0) is None  # its own check
    assert monitor.blame(None, 0.0, 20.0) is None  # a testbed bug
