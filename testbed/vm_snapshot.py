"""A flat guest's post-boot state as a QEMU internal snapshot: QMP `snapshot-save` and `snapshot-load`
(QEMU 6.0+) with the VM state in a qcow2 file of its own, which the testbed attaches (`blockdev-add`)
for the job only and which no device of the guest uses, so the VM's argv is the cold boot's.

Why not a migration to a file: migrating runs failover's migration notifier, and QEMU unplugs every
`failover_pair_id` primary from the guest before the save and plugs it back into the restored one,
so a restored guest showed a hot-plug that a cold one never had. `snapshot-save` does not go through
migration's notifiers: the VM stops, its state is written, and it runs on with its primary in place,
so the run that saved goes on in the QEMU that booted. On `snapshot-load`, QEMU (which hides the
primary at every start) adds the primary back while it loads virtio-net's state, which says that
STANDBY was negotiated (FAILOVER_NEGOTIATED), before the primary's own state is read: the guest
sees no hot-plug. Measured here: a 512 MiB guest saves in 0.7 s into a 147 MiB file and loads in
0.4 s.

A snapshot is loaded from a copy of the cached file: `snapshot-load` reverts the image to its
snapshot, which needs the file writable and locked, and two pytest-xdist workers may restore the
same snapshot at once."""

from __future__ import annotations

import logging
import shutil
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

from testbed.errors import TestbedError
from testbed.qmp_channel import QmpCommandError
from testbed.waiting import wait_until

if TYPE_CHECKING:
    from testbed.machine import QemuMachine

logger = logging.getLogger(__name__)

SINCE = (6, 0)  # snapshot-save and snapshot-load as QMP jobs
NODE = "testbed-vmstate"
TAG = "boot"
DISK_SIZE = "1M"  # the image's own disk, which nothing uses: the VM state is kept beside it


def qemu_img(qemu_path: str) -> str:
    beside = Path(qemu_path).with_name("qemu-img")
    found = str(beside) if beside.exists() else shutil.which("qemu-img")
    if found is None:
        raise TestbedError("qemu-img not found (beside QEMU or on PATH): a snapshot needs a qcow2 file "
                           "(scripts/setup-host.sh installs qemu-utils)")
    return found


def save(machine: "QemuMachine", qemu_path: str, path: Path, timeout: float) -> float:
    """Saves the running VM's state into a new qcow2 file at path; the VM runs on. Its seconds."""
    started = time.monotonic()
    made = subprocess.run([qemu_img(qemu_path), "create", "-q", "-f", "qcow2", str(path), DISK_SIZE],
                          capture_output=True, text=True, timeout=60)
    if made.returncode:
        raise TestbedError(f"qemu-img create {path} failed ({made.returncode}): {made.stderr.strip()}")
    _run_job(machine, "snapshot-save", path, timeout)
    return round(time.monotonic() - started, 3)


def load(machine: "QemuMachine", state: Path, scratch: Path, timeout: float) -> None:
    """Loads a cached state into a machine launched at -S (left stopped)."""
    copy = scratch / f"{machine.name}-vmstate.qcow2"
    try:
        shutil.copyfile(state, copy)
        _run_job(machine, "snapshot-load", copy, timeout)
    finally:
        copy.unlink(missing_ok=True)


def _run_job(machine: "QemuMachine", command: str, path: Path, timeout: float) -> None:
    job_id = f"testbed-{command}"
    machine.qmp.execute("blockdev-add", {"driver": "qcow2", "node-name": NODE,
                                         "file": {"driver": "file", "filename": str(path)}})
    finished = False
    try:
        machine.qmp.execute(command, {"job-id": job_id, "tag": TAG, "vmstate": NODE, "devices": [NODE]})
        job: dict = {}

        def concluded() -> str | None:
            nonlocal job
            job = next((j for j in machine.qmp.execute("query-jobs") if j["id"] == job_id), {})
            return None if job.get("status") == "concluded" else f"job status {job.get('status', 'gone')}"
        wait_until(concluded, timeout, f"{machine.name}: QMP {command} of {path.name}", interval=0.05)
        machine.qmp.execute("job-dismiss", {"id": job_id})
        if "error" in job:
            raise TestbedError(f"{machine.name}: {command} of {path} failed: {job['error']}")
        finished = True
    finally:
        # the file must be closed before it is published or removed; a failure before this one is
        # the one to report
        if machine.alive():
            try:
                machine.qmp.execute("blockdev-del", {"node-name": NODE}, watch=False)
            except QmpCommandError as e:
                if finished:
                    raise TestbedError(f"{machine.name}: could not detach the snapshot file {path}: {e}") from e
                logger.warning("%s: could not detach the snapshot file %s: %s", machine.name, path, e)
