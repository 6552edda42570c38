"""The run report: what ran, what the guests showed, and whether it passed. Written as JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from testbed.artifacts import write_whole


class StepRecord(BaseModel):
    index: int
    action: str
    ok: bool = False
    started_s: float
    ended_s: float | None = None
    error: str | None = None
    details: dict[str, Any] = {}
    # Packets each slave carried during this step: {vm: {pair: {role: {name, rx, tx}}}}; a role is
    # missing when its netdev was not the same at both ends of the step.
    counters: dict[str, Any] = {}


class HostInfo(BaseModel):
    qemu_version: str
    qemu_path: str
    accel: str
    guest_kernel: str
    image: str


class VmReport(BaseModel):
    netdevs: list[dict[str, Any]] = []
    boot: dict[str, float] = {}
    artifacts: dict[str, str] = {}
    # Set when the VM's QEMU ended while the run still needed it: returncode, signal, the guest's
    # panic line, QEMU's SHUTDOWN reason (testbed.machine_watch.MachineExit).
    exit: dict[str, Any] | None = None
    # How each of the VM's QEMU processes was stopped: quit, SIGTERM, SIGKILL or exited-before.
    shutdowns: list[dict[str, Any]] = []


class RunReport(BaseModel):
    scenario: str
    scenario_file: str
    passed: bool = False
    duration_s: float = 0.0
    host: HostInfo | None = None
    vms: dict[str, VmReport] = {}
    steps: list[StepRecord] = []
    traffic: list[dict[str, Any]] = []
    migrations: list[dict[str, Any]] = []
    error: str | None = None
    artifacts_dir: str

    def write(self, path: Path) -> None:
        """Whole or not at all (ArtifactsError): a full disk never leaves a truncated report."""
        write_whole(path, json.dumps(self.model_dump(mode="json"), indent=2) + "\n")
