"""A `testbed run` in a process of its own, followed through its artifacts and hurt from outside: the
fault tests kill its QEMUs and time how soon it reports the death."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from testbed.leftovers import qemu_processes


def start_run(scenario: Path, artifacts: Path, *options: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "testbed.cli", "run", str(scenario), "--artifacts", str(artifacts),
                             *options], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})


def steps(artifacts: Path) -> list[dict]:
    """steps.jsonl's lines so far (a line still being written is left out)."""
    path = artifacts / "steps.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return [json.loads(line) for line in lines if line.endswith("}")]


def step_started(artifacts: Path, index: int, action: str) -> bool:
    return any(s.get("event") == "start" and (s["index"], s["action"]) == (index, action) for s in steps(artifacts))


def wait_for(what: str, condition, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"testbed ended before {what}: {proc.communicate()}"
        assert time.monotonic() < deadline, f"waited {timeout}s for {what}"
        time.sleep(0.05)


def qemu_pid(artifacts: Path, label: str) -> int:
    (pid,) = [pid for pid, _ in qemu_processes(str(artifacts / label) + "/")]
    return pid


def kill_and_time(proc: subprocess.Popen, pid: int) -> tuple[float, str]:
    """SIGKILLs the QEMU; how long the run took to end after it, and its stderr on one line."""
    killed = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    return time.monotonic() - killed, " ".join(err.split())


def stop(proc: subprocess.Popen) -> None:
    """Ctrl-C for a run a failed test leaves behind: its own teardown stops its VMs."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
