"""A module fixture's work done once per pytest session, however pytest-xdist spreads the module's
tests over its workers: pytest-xdist's own recipe, a file lock in the directory that the workers'
temporary directories share. A worker that finds the work under way waits for it and reads its
result back. (In a CI run on 2026-12-07 the two workers each ran the cloud-init runs, 232 and 364 s.)"""

import os
import pickle
import tempfile
from pathlib import Path
from typing import Callable, TypeVar

import pytest
from filelock import FileLock, Timeout

T = TypeVar("T")


def once_per_session(tmp_path_factory: pytest.TempPathFactory, name: str, compute: Callable[[Path], T],
                     wait_s: float) -> T:
    """compute(directory) once per session; its result must pickle, and what it keeps in the
    directory is there for every worker. A compute that raised is done again by the next worker to
    ask, in a directory of its own. wait_s: how long another worker's compute may take."""
    base = tmp_path_factory.getbasetemp()
    shared = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / f"once-{name}"
    try:
        with FileLock(f"{shared}.lock", timeout=wait_s):
            result = shared / "result.pickle"
            if result.exists():
                return pickle.loads(result.read_bytes())
            shared.mkdir(exist_ok=True)
            value = compute(Path(tempfile.mkdtemp(dir=shared, prefix="attempt-")))
            partial = shared / "result.pickle.partial"  # renamed whole: a worker killed mid-write leaves no result
            partial.write_bytes(pickle.dumps(value))
            partial.rename(result)
            return value
    except Timeout:
        raise TimeoutError(f"waited {wait_s:.0f}s for another pytest worker's {name} runs ({shared}) to end") from None
