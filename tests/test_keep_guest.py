"""Reproduce locally: a held run is reachable with testbed ssh/qmp/console, resumes, and goes down clean."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from testbed.leftovers import run_leftovers

REPO = Path(__file__).parent.parent
TESTBED = [sys.executable, "-m", "testbed.cli"]
pytestmark = pytest.mark.guest

SCENARIO = """
vms:
  - name: vm1
    pairs:
      - {name: net0, mac: "52:54:00:00:12:54", primary: {kind: pci}}
steps:
  - action: boot
  - action: pause
    message: first look
  - action: exec
    vm: vm1
    command: "echo resumed > /tmp/marker"
  - action: pause
    message: second look
"""


def _wait_for_hold(state_dir: Path, proc: subprocess.Popen, message: str) -> dict:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the run ended ({proc.returncode}) instead of holding at {message!r}"
        for f in state_dir.glob("*.json"):
            state = json.loads(f.read_text())
            if state["reason"] == message:
                return state
        time.sleep(0.1)
    raise AssertionError(f"the run never held at {message!r}")


def _cli(env, *args, stdin=None):
    return subprocess.run([*TESTBED, *args], env=env, input=stdin, capture_output=True, text=True, timeout=150)


def test_held_vm_is_reachable_then_resumes_then_goes_down_clean(tmp_path):
    scenario = tmp_path / "held.yaml"
    scenario.write_text(SCENARIO)
    env = {**os.environ, "TESTBED_STATE_DIR": str(tmp_path / "state")}
    artifacts = tmp_path / "art"
    log = (tmp_path / "run.log").open("w")  # a file, not a pipe nobody reads while the run is held
    run = subprocess.Popen([*TESTBED, "run", str(scenario), "--keep", "--artifacts", str(artifacts)],
                           env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        state = _wait_for_hold(tmp_path / "state", run, "first look")
        assert state["pid"] == run.pid and set(state["vms"]) == {"vm1"}

        ssh = _cli(env, "ssh", "vm1", "--", "cat", "/proc/sys/kernel/hostname")
        assert ssh.returncode == 0 and ssh.stdout.strip() == "vm1", ssh.stderr
        qmp = _cli(env, "qmp", "vm1", stdin="query-status\n")
        assert '"status": "running"' in qmp.stdout, qmp.stdout + qmp.stderr
        console = _cli(env, "console", "vm1", stdin="echo console-$((6*7))\n")
        assert console.returncode == 0

        assert _cli(env, "resume").returncode == 0
        _wait_for_hold(tmp_path / "state", run, "second look")
        marker = _cli(env, "ssh", "--", "cat", "/tmp/marker")  # one VM: no name needed
        assert marker.stdout.strip() == "resumed"
        assert "console-42" in (artifacts / "vm1" / "serial.log").read_text()

        down = _cli(env, "down")
        assert down.returncode == 0, down.stdout + down.stderr + (tmp_path / "run.log").read_text()
        assert run.wait(timeout=60) == 1  # torn down at a pause: the run did not finish
        assert run_leftovers(artifacts) == []
        assert list((tmp_path / "state").glob("*.json")) == []
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
