"""Where a run keeps its files: a fresh artifacts directory per run, checked for room before anything
starts, reports written whole or not at all, and the short-lived socket directories of runs that
died without cleaning up swept by the next run."""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

from testbed.errors import TestbedError
from testbed.procutil import process_alive

logger = logging.getLogger(__name__)

# A run writes serial logs, QEMU stderr, QMP events, dmesg, traffic logs and the report: a few MiB.
MIN_FREE_MIB = 16
SCRATCH_PREFIX = "tb-"
_SCRATCH_RE = re.compile(rf"^{SCRATCH_PREFIX}(\d+)-")


class ArtifactsError(TestbedError):
    """The artifacts directory cannot take the run's files (read-only, full, or not a directory)."""


def new_artifacts_dir(base: Path, name: str) -> Path:
    """base/<name>-<time>, created exclusively: two runs started in the same second get -2, -3..."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    try:
        base.mkdir(parents=True, exist_ok=True)
        for n in range(1, 1000):
            path = base / (f"{name}-{stamp}" if n == 1 else f"{name}-{stamp}-{n}")
            try:
                path.mkdir()
                return path
            except FileExistsError:
                continue
    except OSError as e:
        raise ArtifactsError(f"cannot create an artifacts directory under {base}: {e.strerror or e}") from e
    raise ArtifactsError(f"{base}: 999 runs of {name} started in the same second")


def check_room(directory: Path, min_free_mib: float = MIN_FREE_MIB) -> None:
    """Fails before anything starts if the run's files could not be written there."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / ".write-probe"
        probe.write_bytes(b"x")
        probe.unlink()
        free_mib = shutil.disk_usage(directory).free / 2**20
    except OSError as e:
        raise ArtifactsError(f"artifacts directory {directory} is not writable: {e.strerror or e}") from e
    if free_mib < min_free_mib:
        raise ArtifactsError(f"artifacts directory {directory} has {free_mib * 1024:.0f} KiB free; a run needs "
                             f"at least {min_free_mib} MiB for its logs and report")


def write_whole(path: Path, text: str) -> None:
    """Writes to a temporary file beside path, then renames it into place: a reader sees the old file,
    the complete new one, or none, never a truncated report."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise ArtifactsError(f"could not write {path}: {e.strerror or e}") from e


def make_scratch_dir() -> Path:
    """A short private directory for unix sockets (sun_path holds only 108 bytes), named after this
    process so that a later run can tell whether its owner is gone."""
    return Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-"))


def sweep_dead_scratch(root: Path | None = None) -> list[Path]:
    """Removes the scratch directories of testbed processes that no longer run (SIGKILLed runs
    cannot clean up after themselves); returns what was removed."""
    root = root or Path(tempfile.gettempdir())
    removed = []
    for entry in root.glob(f"{SCRATCH_PREFIX}*"):
        m = _SCRATCH_RE.match(entry.name)
        if m and entry.is_dir() and entry.stat().st_uid == os.geteuid() and not process_alive(int(m.group(1))):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    if removed:
        logger.info("removed %d socket directories of runs that died: %s", len(removed),
                    ", ".join(p.name for p in removed))
    return removed
