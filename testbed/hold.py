"""Holding a run's VMs for a person: `testbed run --keep` on failure or at a pause step.

The testbed process itself stays alive while it holds, so everything still dies with it. It
writes a state file that `testbed ssh / qmp / console / resume / down` read, prints how to reach
each VM, and waits for `testbed resume` (SIGUSR1: go on) or `testbed down` (SIGTERM) or Ctrl-C."""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from testbed.cache import cache_root
from testbed.procutil import process_alive

if TYPE_CHECKING:
    from testbed.run_context import RunContext

logger = logging.getLogger(__name__)


def state_dir() -> Path:
    path = Path(os.environ.get("TESTBED_STATE_DIR") or cache_root() / "runs")
    path.mkdir(parents=True, exist_ok=True)
    return path


def held_runs() -> list[dict]:
    """Held runs whose testbed process is alive, newest first."""
    runs = []
    for f in state_dir().glob("*.json"):
        state = json.loads(f.read_text())
        if process_alive(state["pid"]):
            runs.append(state)
        else:
            f.unlink(missing_ok=True)  # its testbed is gone, and everything with it
    return sorted(runs, key=lambda s: s["held_at"], reverse=True)


def _state(ctx: "RunContext", reason: str) -> dict:
    vms = {}
    for name, machine in ctx.machines.items():
        if machine.alive():
            vms[name] = {"ssh_port": machine.plan.ssh_port, "qmp_socket": str(machine.qmp_socket),
                         "console_socket": str(machine.serial_socket),
                         "serial_log": str(machine.artifacts.serial_log),
                         "ssh_key": str(machine.image.ssh_key)}
    return {"pid": os.getpid(), "run": ctx.options.artifacts_dir.name, "scenario": ctx.scenario.name,
            "reason": reason, "held_at": ctx.clock.start_wall + ctx.clock.now(),
            "netns_pid": ctx.netns.pid, "user_ns": ctx.netns.user_ns, "ssh_key": str(ctx.image.ssh_key),
            "artifacts_dir": str(ctx.options.artifacts_dir), "vms": vms}


def hold(ctx: "RunContext", reason: str, resumable: bool = False) -> bool:
    """Blocks until resumed (returns True) or told to go down (returns False)."""
    state = _state(ctx, reason)
    path = state_dir() / f"{os.getpid()}.json"
    path.write_text(json.dumps(state, indent=2))
    outcome = {"resume": False}
    done = threading.Event()

    def on_resume(signum, frame):
        outcome["resume"] = True
        done.set()

    def on_down(signum, frame):
        done.set()
    previous = {sig: signal.signal(sig, handler) for sig, handler in
                ((signal.SIGUSR1, on_resume), (signal.SIGTERM, on_down), (signal.SIGINT, on_down))}
    try:
        logger.warning(f"holding the VMs ({reason}). Reach them with:")
        for vm in state["vms"]:
            logger.warning(f"  testbed ssh {vm}   |   testbed qmp {vm}   |   testbed console {vm}")
        logger.warning("  " + ("testbed resume (go on)  |  " if resumable else "") + "testbed down (tear down)")
        done.wait(ctx.options.keep_timeout_s)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        path.unlink(missing_ok=True)
    ctx.down_requested = not outcome["resume"]
    return outcome["resume"]
