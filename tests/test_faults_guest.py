"""A VM that dies is reported for what it is, at once: QEMU killed by a signal during traffic or during
a migration, and a guest kernel panic; and a step that failed while the testbed itself stood still,
or while its guest waited for a CPU, says so. Each run is a real `testbed run` of a scenario in tests/faults.
A host VM killed under its guest is tested on the warm run of tests/test_host_vm_guest.py."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from testbed.cpu_wait import CPU_WAIT_BLAMED_S, CPU_WAIT_BLAMED_SHARE
from testbed.host_stall import STOOD_STILL_S
from testbed.leftovers import run_leftovers
from testbed.known_flakes import MACHINE_STOOD_STILL
from testbed_process import kill_and_time, qemu_pid, start_run, step_started, stop, wait_for  # tests/

REPO = Path(__file__).parent.parent
FAULTS = Path(__file__).parent / "faults"
pytestmark = pytest.mark.guest


def _start(tmp_path: Path, scenario: str, snapshot: str = "never") -> tuple[subprocess.Popen, Path]:
    """snapshot never: the test watches the first QEMU's own artifacts (its QMP events, its PID). With
    auto, a private cache: the boot saves, and the run goes on in a QEMU restored from that save."""
    artifacts = tmp_path / "art"
    proc = start_run(FAULTS / scenario, artifacts, "--snapshot", snapshot,
                     env={"TESTBED_SNAPSHOT_DIR": str(tmp_path / "snapshots")})
    return proc, artifacts


def _events(path: Path) -> list[str]:
    if not path.exists():
        return []
    return [json.loads(line)["event"] for line in path.read_text().splitlines() if line.strip()]


def test_qemu_killed_during_traffic_is_named_within_seconds(tmp_path):
    """The QEMU killed is the one that booted and saved its state (snapshot: auto, the default)."""
    proc, artifacts = _start(tmp_path, "kill-during-traffic.yaml", snapshot="auto")
    # The long sleep: the first check-traffic passed, probes are running.
    wait_for("the sleep step", lambda: step_started(artifacts, 3, "sleep"), proc)
    took, err = kill_and_time(proc, qemu_pid(artifacts, "vm1"))
    assert proc.returncode == 1, err
    assert took < 5, f"the testbed took {took:.1f}s to report the death"
    assert "vm1: QEMU exited (signal 9, SIGKILL) during step 3 (sleep)" in err
    report = json.loads((artifacts / "report.json").read_text())
    assert report["passed"] is False
    assert "vm1: QEMU exited (signal 9, SIGKILL) during step 3 (sleep)" in report["error"]
    assert report["vms"]["vm1"]["exit"]["signal"] == "SIGKILL"
    assert report["vms"]["vm1"]["boot"]["saved_s"] > 0
    assert {s["qemu"]: s["how"] for s in report["vms"]["vm1"]["shutdowns"]} == {"vm1": "exited-before"}
    assert run_leftovers(artifacts) == []


def test_source_killed_during_migration_is_named_within_seconds(tmp_path):
    proc, artifacts = _start(tmp_path, "kill-during-migration.yaml")
    wait_for("the migration to sit in wait-unplug",
             lambda: "UNPLUG_PRIMARY" in _events(artifacts / "vm1" / "qmp-events.jsonl"), proc)
    took, err = kill_and_time(proc, qemu_pid(artifacts, "vm1"))
    assert proc.returncode == 1, err
    assert took < 5, f"the testbed took {took:.1f}s to report the death"
    assert "vm1: QEMU exited (signal 9, SIGKILL) during step 2 (migrate)" in err
    report = json.loads((artifacts / "report.json").read_text())
    assert report["vms"]["vm1"]["exit"]["signal"] == "SIGKILL"
    assert run_leftovers(artifacts) == []


def test_guest_kernel_panic_is_named_as_one(tmp_path):
    proc, artifacts = _start(tmp_path, "guest-panic.yaml")
    _, err = proc.communicate(timeout=300)
    err = " ".join(err.split())
    assert proc.returncode == 1, err
    assert "vm1: guest kernel panic (serial: Kernel panic - not syncing: sysrq triggered crash) during step 1 (exec)" \
        in err
    report = json.loads((artifacts / "report.json").read_text())
    assert report["vms"]["vm1"]["exit"]["panic"].startswith("Kernel panic - not syncing")
    assert report["steps"][1]["ok"] is False and len(report["steps"]) == 2


@pytest.mark.flaky(reruns=0)  # its failure quotes the words that the plugin's rerun matches
def test_a_step_failed_while_the_testbed_stood_still_says_so(tmp_path):
    """The testbed's own process stopped for 6 s (SIGSTOP, as a hypervisor that deschedules the whole
    machine would) during a step that then times out: the step's error says that the machine
    stalled, in the words that pytest's plugin reruns, and the report keeps the stall. (A step that
    fails on its own check meanwhile is not blamed on the machine: tests/test_host_stall.py.)"""
    proc, artifacts = _start(tmp_path, "stood-still.yaml", snapshot="auto")
    try:
        wait_for("the exec step", lambda: step_started(artifacts, 1, "exec"), proc)
        time.sleep(0.5)
        os.kill(proc.pid, signal.SIGSTOP)
        time.sleep(6)
        os.kill(proc.pid, signal.SIGCONT)
        _, err = proc.communicate(timeout=120)
    finally:
        stop(proc)
    err = " ".join(err.split())
    assert proc.returncode == 1, err
    report = json.loads((artifacts / "report.json").read_text())
    error = report["steps"][1]["error"]
    # the step's 8 s, less what the step spent before the command
    assert re.match(r"vm1: 'sleep 30' did not finish within [78]\.\ds; the testbed itself stood still", error), error
    assert re.search(r"the testbed itself stood still for (5\.[6-9]|6\.\d|7\.\d)s during this step", error), error
    assert re.search(MACHINE_STOOD_STILL, error) and report["steps"][1]["check_failed"] is False
    (stall,) = [s for s in report["host_stalls"] if s["late_s"] >= STOOD_STILL_S]
    assert report["steps"][1]["started_s"] < stall["at_s"] - stall["late_s"] < stall["at_s"] < report["steps"][1]["ended_s"]


@pytest.mark.alone  # one of the machine's two CPUs is taken from every other guest for 15 s
def test_a_step_failed_while_its_guest_waited_for_a_cpu_says_so(tmp_path):
    """The guest spins through a step that then fails, its QEMU pinned to one CPU beside two busy
    loops: the step's record keeps how long each QEMU thread waited for a CPU, and its error names
    the vCPU thread that waited for most of the step."""
    proc, artifacts = _start(tmp_path, "cpu-starved.yaml", snapshot="auto")
    hogs: list[subprocess.Popen] = []
    try:
        wait_for("the exec step", lambda: step_started(artifacts, 1, "exec"), proc)
        cpu = max(os.sched_getaffinity(0))
        for task in Path(f"/proc/{qemu_pid(artifacts, 'vm1')}/task").iterdir():
            os.sched_setaffinity(int(task.name), {cpu})
        hogs = [subprocess.Popen([sys.executable, "-c", f"import os\nos.sched_setaffinity(0, {{{cpu}}})\nwhile True: pass"])
                for _ in range(2)]
        _, err = proc.communicate(timeout=120)
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
        stop(proc)
    assert proc.returncode == 1, err
    step = json.loads((artifacts / "report.json").read_text())["steps"][1]
    assert step["error"].startswith("vm1: ['sh', '-c', \"timeout 12 sh -c 'while :; do :; done'; exit 3\"] exited 3"), step
    assert re.search(r"; vm1's vCPU thread CPU 0/TCG \(\d+\) waited \d+\.\ds of this step's \d+\.\ds for a CPU of the "
                     r"machine \(its run_delay\)", step["error"]), step["error"]
    (vcpu,) = [s for thread, s in step["cpu_wait"]["vm1"].items() if thread.startswith("CPU 0/TCG")]
    assert vcpu >= CPU_WAIT_BLAMED_S and vcpu >= CPU_WAIT_BLAMED_SHARE * (step["ended_s"] - step["started_s"])
