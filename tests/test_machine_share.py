"""The machine's CPUs among guest tests (testbed.machine_share), with threads standing in for the
pytest-xdist workers; the plugin's use of it runs in every guest test of the suite."""

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from testbed.errors import TestbedError
from testbed.machine_share import HELD_ENV, MachineShare


def _hold(share: MachineShare, log: list[str], name: str, until: threading.Event) -> threading.Thread:
    def run():
        share.acquire()
        log.append(f"{name} in")
        until.wait(10)
        log.append(f"{name} out")
        share.release()
    thread = threading.Thread(target=run)
    thread.start()
    return thread


def _now() -> threading.Event:
    event = threading.Event()
    event.set()
    return event


def _wait_for(what, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_shared_holds_overlap(tmp_path):
    log: list[str] = []
    b_done = threading.Event()
    a = _hold(MachineShare(False, tmp_path), log, "a", until=b_done)
    _wait_for(lambda: log == ["a in"])
    b = _hold(MachineShare(False, tmp_path), log, "b", until=_now())
    b.join()
    b_done.set()
    a.join()
    assert log == ["a in", "b in", "b out", "a out"]   # b got in while a held: otherwise a's 10 s ran out first


def _writer_waiting(tmp_path) -> bool:
    probe = MachineShare(False, tmp_path, wait_s=0)
    try:
        probe.acquire()
    except TestbedError:
        return True
    probe.release()
    return False


def test_a_test_alone_waits_for_the_shared_one_and_keeps_later_ones_out(tmp_path):
    log: list[str] = []
    end_shared, end_alone = threading.Event(), threading.Event()
    shared = _hold(MachineShare(False, tmp_path), log, "shared", until=end_shared)
    _wait_for(lambda: log == ["shared in"])
    alone = _hold(MachineShare(True, tmp_path), log, "alone", until=end_alone)
    _wait_for(lambda: _writer_waiting(tmp_path))   # a shared hold is refused while it waits
    later = _hold(MachineShare(False, tmp_path), log, "later", until=_now())
    time.sleep(0.3)
    assert log == ["shared in"]
    end_shared.set()
    _wait_for(lambda: "alone in" in log)
    time.sleep(0.3)
    assert log == ["shared in", "shared out", "alone in"]
    end_alone.set()
    for t in (shared, alone, later):
        t.join()
    assert log == ["shared in", "shared out", "alone in", "alone out", "later in", "later out"]


def test_a_wait_that_runs_out_names_the_lock_and_the_mode(tmp_path):
    holder = MachineShare(False, tmp_path)
    holder.acquire()
    try:
        with pytest.raises(TestbedError, match=r"waited 0 s for the machine's CPUs \(alone, lock .*machine-share.db\)"):
            MachineShare(True, tmp_path, wait_s=0.3).acquire()
    finally:
        holder.release()
    alone = MachineShare(True, tmp_path, wait_s=0.3)
    alone.acquire()   # released, the machine is free again
    alone.release()


def test_the_host_vm_tests_scenario_files_and_the_cpu_starving_test_are_the_ones_alone():
    repo = Path(__file__).parent.parent
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--collect-only", "-q",
                           "-m", "alone", "tests", "scenarios", "scenarios/zoo"], cwd=repo,
                          capture_output=True, text=True, timeout=120)
    items = {line for line in done.stdout.splitlines() if "::" in line}
    assert items == {"tests/test_host_vm_guest.py::"
                     "test_host_vf_failover_through_unplug_replug_and_migration_then_a_warm_start",
                     "scenarios/host-seed-live-migration.yaml::host-seed-live-migration",
                     "scenarios/zoo/zoo-18-pair-id-typo-vfio-migrates-dead.yaml::zoo-18-pair-id-typo-vfio-migrates-dead",
                     "scenarios/zoo/zoo-24-igbvf-bars-above-4g.yaml::zoo-24-igbvf-bars-above-4g",
                     "tests/test_faults_guest.py::test_a_step_failed_while_its_guest_waited_for_a_cpu_says_so"}, done.stdout


def test_the_alone_tests_run_first_then_the_ones_without_a_guest():
    repo = Path(__file__).parent.parent
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--collect-only", "-q",
                           "tests/test_structure.py", "tests/test_host_vm_guest.py", "tests/test_faults_guest.py",
                           "scenarios/host-seed-live-migration.yaml"], cwd=repo,
                          capture_output=True, text=True, timeout=120)
    items = [line for line in done.stdout.splitlines() if "::" in line]
    alone = {"tests/test_host_vm_guest.py::test_host_vf_failover_through_unplug_replug_and_migration_then_a_warm_start",
             "scenarios/host-seed-live-migration.yaml::host-seed-live-migration",
             "tests/test_faults_guest.py::test_a_step_failed_while_its_guest_waited_for_a_cpu_says_so"}
    kinds = ["alone" if i in alone else "unit" if i.startswith("tests/test_structure.py") else "guest" for i in items]
    # the alone tests move ahead of the unit tests, the scenario file's from the end of the list
    assert kinds == ["alone"] * 3 + ["unit"] * kinds.count("unit") + ["guest"] * kinds.count("guest"), items
    assert kinds.count("unit") > 10 and kinds.count("guest") >= 3, items


def test_a_process_started_under_a_share_runs_under_it(tmp_path):
    """A pytest session that a guest test starts (as the plugin's own tests do) must not wait for a
    share of its own: with a test waiting to be alone, that wait would never end."""
    holder = MachineShare(False, tmp_path)
    holder.acquire()
    alone_waits = threading.Thread(target=lambda: (s := MachineShare(True, tmp_path)).acquire() or s.release())
    alone_waits.start()
    _wait_for(lambda: _writer_waiting_in_child(tmp_path))
    child = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path)], capture_output=True, text=True, timeout=30)
    assert child.returncode == 0 and child.stdout.strip() == "in", child.stderr
    holder.release()
    alone_waits.join()
    # released, the variable is gone: this process's next share is a share of its own again
    child = subprocess.run([sys.executable, "-c", CHILD_NO_WAIT, str(tmp_path)], capture_output=True, text=True,
                           timeout=30)
    assert child.stdout.strip() == "own share", child.stderr


CHILD = """
import sys
from pathlib import Path
from testbed.machine_share import MachineShare
share = MachineShare(False, Path(sys.argv[1]), wait_s=5)
share.acquire()
print("in")
share.release()
"""
CHILD_NO_WAIT = """
import os, sys
from pathlib import Path
from testbed.machine_share import MachineShare, HELD_ENV
share = MachineShare(False, Path(sys.argv[1]), wait_s=5)
share.acquire()
print("own share" if os.environ.get(HELD_ENV) == str(os.getpid()) else "borrowed")
share.release()
"""


def _writer_waiting_in_child(tmp_path) -> bool:
    # asked from a process without the variable, so that the probe takes a share of its own
    probe = "import sys; from pathlib import Path; from testbed.machine_share import MachineShare\n" \
            "s = MachineShare(False, Path(sys.argv[1]), wait_s=0)\n" \
            "try:\n    s.acquire()\nexcept Exception:\n    print('waiting')\nelse:\n    s.release()"
    env = {k: v for k, v in os.environ.items() if k != HELD_ENV}
    return subprocess.run([sys.executable, "-c", probe, str(tmp_path)], capture_output=True, text=True,
                          timeout=30, env=env).stdout.strip() == "waiting"
