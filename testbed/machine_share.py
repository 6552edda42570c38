"""The machine's CPUs among the guest tests of every pytest process on it (pytest-xdist's workers, or
a second session): a test that boots guests shares them with other such tests, and a test marked
`alone` has them to itself.

Why: a host VM is TCG running a guest of its own under KVM on emulated SVM, two vCPUs that want
both cores. Beside another worker's TCG guest on the 2-core CI machine its vCPUs stalled for
seconds: 22 s without a reply to any echo in one CI run, `plug-primary` taking 76 s in another, and
a guest listing that did not finish in 81 s in a third. Those are the traffic checks and waits the
host-VM tests exist to make, so they run alone rather than with looser bounds.

A reader/writer lock from `filelock` (SQLite's), behind a turnstile (a plain `filelock.FileLock`): a
test waiting to be alone holds the turnstile while it waits, and a shared hold passes the turnstile
before it takes its share, so no new share starts while a test waits to be alone. The reader/writer
lock alone did not ensure that: a waiting writer retries, and in one CI run a share started between
two of its retries."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from filelock import FileLock, ReadWriteLock, Timeout

from testbed.cache import cache_root
from testbed.errors import TestbedError

logger = logging.getLogger(__name__)

# Set while a process holds a share: a pytest session started by a test that holds one (a test of
# the plugin itself) runs under its parent's share. Taking its own would deadlock as soon as a test
# waiting to be alone kept new shares out while the parent waited for its child.
HELD_ENV = "TESTBED_MACHINE_SHARE_HELD"

# Longer than the longest guest test: a host-VM test with its two reruns, about 6 min each on a slow day.
WAIT_S = 1800.0


class MachineShare:
    """One test's hold on the machine: `acquire()` before its set-up, `release()` after its teardown."""

    def __init__(self, alone: bool, directory: Path | None = None, wait_s: float = WAIT_S):
        self.alone = alone
        self.path = (directory or cache_root()) / "machine-share.db"
        self.wait_s = wait_s
        self._lock: ReadWriteLock | None = None
        self.waited_s = 0.0

    def acquire(self) -> None:
        holder = os.environ.get(HELD_ENV)
        if holder and holder != str(os.getpid()):  # inherited from the process that holds it
            logger.info("running under the share that process %s holds", holder)
            return
        lock = ReadWriteLock(self.path, is_singleton=False)
        turnstile = FileLock(self.path.with_name(self.path.name + ".turnstile"), thread_local=False)
        started = time.monotonic()
        try:
            with turnstile.acquire(timeout=self.wait_s):
                if self.alone:
                    lock.acquire_write(timeout=max(0.0, self.wait_s - (time.monotonic() - started)))
            if not self.alone:
                lock.acquire_read(timeout=max(0.0, self.wait_s - (time.monotonic() - started)))
        except Timeout as e:
            lock.close()
            raise TestbedError(
                f"waited {self.wait_s:.0f} s for the machine's CPUs "
                f"({'alone' if self.alone else 'shared'}, lock {self.path}): another guest test on this "
                f"machine held them all that time") from e
        self._lock = lock
        os.environ[HELD_ENV] = str(os.getpid())
        self.waited_s = time.monotonic() - started
        if self.waited_s > 1:
            logger.info("waited %.1f s for the machine's CPUs (%s)", self.waited_s,
                        "alone" if self.alone else "shared")

    def release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock.close()
            self._lock = None
            os.environ.pop(HELD_ENV, None)
