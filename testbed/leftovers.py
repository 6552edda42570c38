"""Finds what a run may have left behind: QEMU processes and processes still in its namespace."""

from __future__ import annotations

import os
from pathlib import Path


def _processes():
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().split(b"\0")
                yield int(entry.name), [a.decode(errors="replace") for a in cmdline if a]
            except OSError:
                continue


def qemu_processes(marker: str) -> list[tuple[int, str]]:
    """QEMU processes whose command line mentions marker (e.g. an artifacts directory)."""
    return [(pid, " ".join(argv)[:200]) for pid, argv in _processes()
            if argv and "qemu-system" in os.path.basename(argv[0]) and any(marker in a for a in argv)]


def processes_in_netns(inode: int) -> list[tuple[int, str]]:
    found = []
    for pid, argv in _processes():
        try:
            if os.stat(f"/proc/{pid}/ns/net").st_ino == inode:
                found.append((pid, " ".join(argv)[:200]))
        except OSError:
            continue
    return found


def run_leftovers(artifacts_dir: Path) -> list[str]:
    """Everything of the run in artifacts_dir still alive; empty when it cleaned up completely."""
    problems = [f"QEMU pid {pid} still running: {cmd}" for pid, cmd in qemu_processes(str(artifacts_dir))]
    inode_file = artifacts_dir / "netns-inode"
    if inode_file.exists():
        for inode in map(int, inode_file.read_text().split()):
            problems += [f"pid {pid} still in the run's namespace {inode}: {cmd}"
                         for pid, cmd in processes_in_netns(inode)]
    return problems
