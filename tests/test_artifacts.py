"""The artifacts directory: checked for room before anything starts, a report written whole or not at
all, distinct directories for concurrent runs, and socket directories of dead runs swept."""

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from testbed.artifacts import (ArtifactsError, SCRATCH_PREFIX, new_artifacts_dir, sweep_dead_scratch,
                               write_whole)

REPO = Path(__file__).parent.parent
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")


@pytest.fixture
def small_tmpfs(tmp_path):
    mounts = []

    def mount(size: str, *options: str) -> Path:
        where = tmp_path / f"fs{len(mounts)}"
        where.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join([f"size={size}", *options]), "tmpfs", str(where)],
                       check=True)
        mounts.append(where)
        return where
    yield mount
    for where in mounts:
        subprocess.run(["umount", "-l", str(where)], check=False)


def _tripwire(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "qemu-was-run"
    script = tmp_path / "qemu"
    script.write_text(f"#!/bin/sh\ntouch {marker}\nexit 1\n")
    script.chmod(0o755)
    return script, marker


def _run(artifacts: Path, qemu: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "testbed.cli", "run", str(REPO / "scenarios/standby-pci.yaml"),
                           "--artifacts", str(artifacts), "--qemu", str(qemu)],
                          capture_output=True, text=True, timeout=120)


@needs_root
def test_a_full_artifacts_disk_is_refused_before_anything_starts(tmp_path, small_tmpfs):
    qemu, marker = _tripwire(tmp_path)
    full = small_tmpfs("64k")
    done = _run(full / "run", qemu)
    err = " ".join(done.stderr.split())
    assert done.returncode == 1, err
    assert f"artifacts directory {full / 'run'} has 64 KiB free; a run needs at least 16 MiB" in err
    assert "Traceback" not in err
    assert not marker.exists()
    # What fitted is a whole report of a run that did not start, never one that claims a result.
    report = json.loads((full / "run" / "report.json").read_text())
    assert report["passed"] is False and report["steps"] == [] and "64 KiB free" in report["error"]


@needs_root
def test_a_read_only_artifacts_disk_is_refused_before_anything_starts(tmp_path, small_tmpfs):
    qemu, marker = _tripwire(tmp_path)
    read_only = small_tmpfs("1m", "ro")
    done = _run(read_only / "run", qemu)
    err = " ".join(done.stderr.split())
    assert done.returncode == 1, err
    assert "cannot create an artifacts directory" in err or f"{read_only / 'run'} is not writable" in err
    assert "Read-only file system" in err and "Traceback" not in err
    assert not marker.exists()


@needs_root
def test_a_report_that_does_not_fit_leaves_no_file(small_tmpfs):
    full = small_tmpfs("64k")
    (full / "filler").write_bytes(b"x" * 60 * 1024)
    with pytest.raises(ArtifactsError, match=r"could not write .*report.json: No space left on device"):
        write_whole(full / "report.json", "{" + " " * 100_000 + "}")
    assert sorted(p.name for p in full.iterdir()) == ["filler"]


def test_a_report_replaces_the_old_one_whole(tmp_path):
    path = tmp_path / "report.json"
    write_whole(path, "old")
    write_whole(path, "new")
    assert path.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_concurrent_runs_get_distinct_artifacts_directories(tmp_path):
    made: list[Path] = []
    threads = [threading.Thread(target=lambda: made.append(new_artifacts_dir(tmp_path, "standby-pci")))
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(made) == 8 and len(set(made)) == 8 and all(p.is_dir() for p in made)


def test_socket_directories_of_dead_runs_are_swept_and_live_ones_kept(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    gone = tmp_path / f"{SCRATCH_PREFIX}{dead.pid}-abc"
    mine = tmp_path / f"{SCRATCH_PREFIX}{os.getpid()}-def"
    other = tmp_path / f"{SCRATCH_PREFIX}notapid"
    for d in (gone, mine, other):
        d.mkdir()
    assert sweep_dead_scratch(tmp_path) == [gone]
    assert not gone.exists() and mine.exists() and other.exists()


@needs_root
@pytest.mark.guest
def test_a_disk_that_fills_during_the_run_gives_an_error_and_no_report(tmp_path, small_tmpfs, testbed_image):
    # testbed_image: the image is built before the 120 s below start; on a cold cache, beside another
    # worker's build, the build alone used them up (CI, 2026-11-27)
    disk = small_tmpfs("24m")
    artifacts = disk / "run"
    proc = subprocess.Popen([sys.executable, "-m", "testbed.cli", "run", str(REPO / "tests/faults/short-sleep.yaml"),
                             "--artifacts", str(artifacts)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    steps = artifacts / "steps.jsonl"
    deadline = time.monotonic() + 120
    while '"action": "sleep", "event": "start"' not in (steps.read_text() if steps.exists() else ""):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    with (disk / "filler").open("wb") as f, pytest.raises(OSError):
        while True:
            f.write(b"x" * 65536)
            f.flush()
    _, err = proc.communicate(timeout=120)
    err = " ".join(err.split())
    assert proc.returncode == 1, err
    assert f"could not write {artifacts / 'report.json'}: No space left on device" in err
    assert "Traceback" not in err
    assert not (artifacts / "report.json").exists()
    assert not [p for p in artifacts.iterdir() if p.name.endswith(".tmp")]
