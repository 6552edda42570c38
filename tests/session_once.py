"""A module fixture's work done once per pytest session, however pytest-xdist spreads the module's
tests over its workers: pytest-xdist's own recipe, a file lock in the directory that the workers'
temporary directories share. A worker that finds the work under way waits for it and reads its
result back. (In a CI run on 2026-12-07 the two workers each ran the cloud-init runs, 232 and 364 s.)"""

import os
import pickle
from pathlib import Path
from typing import Callable, TypeVar

import pytest
from filelock import FileLock

T = TypeVar("T")
WAIT_S = 1800


def once_per_session(tmp_path_factory: pytest.TempPathFactory, name: str, compute: Callable[[Path], T]) -> T:
    """compute(directory) once per session; its result must pickle, and what it keeps in the
    directory is there for every worker."""
    base = tmp_path_factory.getbasetemp()
    shared = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / f"once-{name}"
    with FileLock(f"{shared}.lock", timeout=WAIT_S):
        result = shared / "result.pickle"
        if result.exists():
            return pickle.loads(result.read_bytes())
        shared.mkdir(exist_ok=True)
        value = compute(shared)
        result.write_bytes(pickle.dumps(value))
        return value
