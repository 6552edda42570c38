"""The cache of post-boot guest states (a flat guest's qcow2 with its `snapshot-save`, a host VM's
migration stream to a file in `mapped-ram` format), keyed by everything that shapes a booted guest,
bounded in size and evicted least recently used first.

Layout, next to the image cache: <cache>/snapshots/<key>/{state,meta.json}. A snapshot appears in one
rename of a finished directory, so a reader never sees a half-written one, and two writers (pytest-xdist
workers) never write the same path: each writes its own temporary directory, and the second rename
finds the key taken and drops its copy."""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_fixed

from testbed.cache import cache_root
from testbed.errors import TestbedError

logger = logging.getLogger(__name__)

DEFAULT_LIMIT_MIB = 4096
LIMIT_ENV = "TESTBED_SNAPSHOT_CACHE_MIB"
STATE, META = "state", "meta.json"
LOCK_TIMEOUT_S = 30
MODE_ENV = "TESTBED_SNAPSHOT"
RUN_MODES = ("auto", "never")


def snapshot_root() -> Path:
    """Next to the image cache, or TESTBED_SNAPSHOT_DIR (a CI cache step can keep either)."""
    override = os.environ.get("TESTBED_SNAPSHOT_DIR")
    path = Path(override) if override else cache_root() / "snapshots"
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_limit_bytes(flag_mib: int | None = None) -> int:
    mib = flag_mib if flag_mib is not None else int(os.environ.get(LIMIT_ENV, DEFAULT_LIMIT_MIB))
    return max(0, mib) * 1024 * 1024


def run_default(flag: str | None = None) -> str:
    """The `snapshot` of every boot step that gives none: the run's flag, else $TESTBED_SNAPSHOT, else
    auto. `required` is a step's word only: as a run's default it would fail every scenario that must
    boot cold."""
    mode = flag or os.environ.get(MODE_ENV) or "auto"
    if mode not in RUN_MODES:
        source = "--snapshot" if flag else f"${MODE_ENV}"
        raise TestbedError(f"{source}={mode!r}: the run's snapshot default is one of {', '.join(RUN_MODES)}")
    return mode


def snapshot_key(image_key: str, qemu_version: str, qemu_path: str, argv: list[str], accel: str) -> str:
    """Everything that shapes the booted guest: the image, the QEMU binary (version and build), the
    device set and properties and the kernel command line (both in the argv), and the accelerator."""
    st = Path(qemu_path).stat()
    h = hashlib.sha256()
    for part in (image_key, qemu_version, f"{qemu_path}:{st.st_size}:{st.st_mtime_ns}", accel, *argv):
        h.update(part.encode() + b"\0")
    return h.hexdigest()[:20]


@dataclass(frozen=True)
class Snapshot:
    key: str
    directory: Path

    @property
    def state(self) -> Path:
        return self.directory / STATE

    def meta(self) -> dict:
        try:
            return json.loads((self.directory / META).read_text())
        except (OSError, ValueError):
            return {}

    def size_bytes(self) -> int:
        # mapped-ram files are sparse (and qcow2 ones may be): count what the disk holds
        return sum(p.stat().st_blocks * 512 for p in self.directory.iterdir() if p.is_file())

    def last_used(self) -> float:
        try:
            return (self.directory / META).stat().st_mtime
        except OSError:
            return 0.0

    def touch(self) -> None:
        os.utime(self.directory / META)


class SnapshotCache:
    def __init__(self, root: Path | None = None, limit_bytes: int | None = None):
        self.root = root or snapshot_root()
        self.limit_bytes = cache_limit_bytes() if limit_bytes is None else limit_bytes

    def get(self, key: str) -> Snapshot | None:
        snap = Snapshot(key, self.root / key)
        return snap if snap.state.exists() and (snap.directory / META).exists() else None

    def entries(self) -> list[Snapshot]:
        return sorted((Snapshot(p.name, p) for p in self.root.iterdir()
                       if p.is_dir() and not p.name.startswith(".") and (p / META).exists()),
                      key=lambda s: s.last_used(), reverse=True)

    def scratch(self, key: str) -> Path:
        """A private directory to save into, on the cache's filesystem (so that publish is a rename)."""
        path = self.root / f".tmp-{key}-{os.getpid()}-{time.monotonic_ns()}"
        path.mkdir()
        return path

    def publish(self, key: str, scratch: Path, meta: dict) -> Snapshot | None:
        """Moves a verified snapshot into place, then evicts the least recently used ones over the limit."""
        (scratch / META).write_text(json.dumps(meta, indent=2) + "\n")
        target = self.root / key
        with self._lock():
            try:
                os.rename(scratch, target)
            except OSError:  # another run published the same key first
                shutil.rmtree(scratch, ignore_errors=True)
                return self.get(key)
            self._evict(keep=key)
        return Snapshot(key, target)

    def drop(self, key: str, why: str) -> None:
        logger.warning("snapshot %s removed: %s", key, why)
        with self._lock():
            shutil.rmtree(self.root / key, ignore_errors=True)

    def clear(self) -> int:
        with self._lock():
            entries = [p for p in self.root.iterdir() if p.is_dir()]
            for p in entries:
                shutil.rmtree(p, ignore_errors=True)
        return len(entries)

    def _evict(self, keep: str) -> None:
        entries = self.entries()
        total = sum(s.size_bytes() for s in entries)
        for snap in reversed(entries):  # least recently used first
            if total <= self.limit_bytes:
                break
            if snap.key == keep:
                continue
            total -= snap.size_bytes()
            logger.info("snapshot cache over %d MiB: evicting %s", self.limit_bytes >> 20, snap.key)
            shutil.rmtree(snap.directory, ignore_errors=True)

    def _lock(self):
        return _FileLock(self.root / ".lock")


class _FileLock:
    """The cache-wide lock, held only to publish, evict or clear; waited for at most LOCK_TIMEOUT_S."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self) -> "_FileLock":
        self.fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            for attempt in Retrying(stop=stop_after_delay(LOCK_TIMEOUT_S), wait=wait_fixed(0.05), reraise=True,
                                    retry=retry_if_exception_type(BlockingIOError)):
                with attempt:
                    fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            os.close(self.fd)
            raise TestbedError(f"the snapshot cache lock {self.path} was held for more than {LOCK_TIMEOUT_S}s") from e
        return self

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
