"""Finds what a run may have left behind: QEMU processes and processes still in its namespace."""

from __future__ import annotations

import os
from pathlib import Path

from testbed.netns import HOLDER_CODE


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


def processes_in_netns(inode: int) -> list[tuple[int, list[str]]]:
    found = []
    for pid, argv in _processes():
        try:
            if os.stat(f"/proc/{pid}/ns/net").st_ino == inode:
                found.append((pid, argv))
        except OSError:
            continue
    return found


def run_leftovers(artifacts_dir: Path) -> list[str]:
    """Everything of the run in artifacts_dir still alive; empty when it cleaned up completely.

    The kernel reuses a freed namespace's inode number at once, so under pytest-xdist another run's
    new namespace can carry this run's old inode. Each namespace is made by exactly one holder
    process (netns.py), so a namespace whose holder is not this run's (recorded with the inode) is
    another run's, and skipped."""
    problems = [f"QEMU pid {pid} still running: {cmd}" for pid, cmd in qemu_processes(str(artifacts_dir))]
    inode_file = artifacts_dir / "netns-inode"
    if inode_file.exists():
        for line in inode_file.read_text().splitlines():
            if not line.strip():
                continue
            inode, *holder = map(int, line.split())
            found = processes_in_netns(inode)
            if holder and any(HOLDER_CODE in argv and pid != holder[0] for pid, argv in found):
                continue
            problems += [f"pid {pid} still in the run's namespace {inode}: {' '.join(argv)[:200]}" for pid, argv in found]
    return problems
