"""How long each thread of each QEMU on this machine waited for a CPU: the scheduler's own
run_delay, the second field of /proc/<pid>/task/<tid>/schedstat. A failed step's record keeps what
its QEMUs waited during it, and its error says so when a vCPU thread waited for most of the step: the
machine was too busy to run the guest, whatever the step then saw. (A host VM's nested guests run
inside it, so their threads are not on this machine's scheduler; the host VM's own are.)"""

from __future__ import annotations

from pathlib import Path


# A vCPU thread that waited this share of a failed step, and at least CPU_WAIT_BLAMED_S, for a CPU
# of the machine: the machine was too busy to run the guest, whatever the step then saw.
CPU_WAIT_BLAMED_SHARE = 0.5
CPU_WAIT_BLAMED_S = 5.0


def qemu_thread_waits(pids: dict[str, int]) -> dict[str, dict[str, float]]:
    """Per QEMU (by label), per thread (`comm`, with its id): seconds it has spent runnable but
    waiting for a CPU (run_delay, the second field of /proc/<pid>/task/<tid>/schedstat)."""
    waits: dict[str, dict[str, float]] = {}
    for label, pid in pids.items():
        threads: dict[str, float] = {}
        try:
            tasks = list(Path(f"/proc/{pid}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                run_delay_ns = int((task / "schedstat").read_text().split()[1])
                threads[f"{(task / 'comm').read_text().strip()} ({task.name})"] = run_delay_ns / 1e9
            except (OSError, IndexError, ValueError):
                pass
        waits[label] = threads
    return waits


def cpu_wait_during(before: dict[str, dict[str, float]], after: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Each thread's wait for a CPU between two samples, per QEMU, the longest first (0.1 s and more)."""
    out: dict[str, dict[str, float]] = {}
    for label, threads in after.items():
        grown = {t: round(s - before.get(label, {}).get(t, 0.0), 2) for t, s in threads.items()}
        if kept := dict(sorted(((t, s) for t, s in grown.items() if s >= 0.1), key=lambda ts: -ts[1])):
            out[label] = kept
    return out


def describe_cpu_wait(waits: dict[str, dict[str, float]], step_s: float) -> str | None:
    """A vCPU thread that waited for a CPU for most of the step, if any (the longest such wait)."""
    vcpus = [(s, label, t) for label, threads in waits.items() for t, s in threads.items() if t.startswith("CPU ")]
    if not vcpus or step_s <= 0:
        return None
    s, label, thread = max(vcpus)
    if s < CPU_WAIT_BLAMED_S or s < CPU_WAIT_BLAMED_SHARE * step_s:
        return None
    return (f"{label}'s vCPU thread {thread} waited {s:.1f}s of this step's {step_s:.1f}s for a CPU of the machine "
            f"(its run_delay): the machine was too busy to run the guest")
