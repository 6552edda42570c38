"""The run report: what ran, what the guests showed, and whether it passed. Written as JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel


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
        path.write_text(json.dumps(self.model_dump(mode="json"), indent=2) + "\n")
