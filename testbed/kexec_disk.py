"""The disk that lets a guest's next boot run its kernel with other arguments (a `reset` step's
`kernel_args`), as a boot menu entry would.

QEMU's -kernel/-append are fixed for its life, and a system_reset boots them again. To boot the
same kernel differently after a reset (zoo item 14(b): a kernel that does not negotiate STANDBY,
here `virtio_pci.force_legacy=1` on a transitional standby), the minimal image's init reads this
read-only virtio disk before it loads virtio_net. When the header is armed, it copies the kernel
and initrd from the disk and kexecs into them with /proc/cmdline, `testbed.kexeced` and the step's
arguments. The header is rewritten on the host before each reset (armed or not): QEMU reads the
raw file through the host page cache, so the next boot sees the new header.

Layout (all offsets 4096-aligned): a text header of `key=value` lines in the first 4096 bytes,
then the kernel, then the initrd. The guest finds the disk by its serial."""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from testbed.plan import MachinePlan
    from testbed.scenario_steps import StepModel

logger = logging.getLogger(__name__)

SERIAL = "testbed-kexec"
MAGIC = "testbed-kexec-disk v1"
BLOCK = 4096
CMDLINE_MARK = "testbed.kexec_disk"   # on QEMU's -append: the guest has such a disk
KEXECED_MARK = "testbed.kexeced"      # on the kexec'd kernel's command line: do not kexec again


def _align(n: int) -> int:
    return (n + BLOCK - 1) // BLOCK * BLOCK


def wants_kexec_disk(vm: str, steps: Sequence["StepModel"]) -> bool:
    return any(s.action == "reset" and getattr(s, "vm") == vm and getattr(s, "kernel_args") for s in steps)


def _header(kernel_size: int, initrd_size: int, args: Sequence[str] | None) -> bytes:
    kernel_at = BLOCK
    lines = [MAGIC, f"armed={1 if args is not None else 0}", f"kernel_offset={kernel_at}",
             f"kernel_size={kernel_size}", f"initrd_offset={kernel_at + _align(kernel_size)}",
             f"initrd_size={initrd_size}", f"append={' '.join(args or [])}", "end=1"]
    text = ("\n".join(lines) + "\n").encode("ascii")
    if len(text) > BLOCK:
        raise ValueError(f"kexec disk header of {len(text)} bytes does not fit {BLOCK}")
    return text.ljust(BLOCK, b"\0")


def write_disk(path: Path, kernel: Path, initrd: Path) -> Path:
    """A disarmed disk: the guest boots on as QEMU booted it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    k, i = kernel.stat().st_size, initrd.stat().st_size
    with open(path, "wb") as out:
        out.write(_header(k, i, None))
        for source, size in ((kernel, k), (initrd, i)):
            with open(source, "rb") as f:
                shutil.copyfileobj(f, out)
            out.write(b"\0" * (_align(size) - size))
    return path


def arm(path: Path, kernel_args: Sequence[str] | None) -> None:
    """Sets what the next boot does: kexec with these arguments added, or (None) nothing."""
    with open(path, "r+b") as f:
        fields = dict(line.split("=", 1) for line in f.read(BLOCK).rstrip(b"\0").decode("ascii").splitlines()[1:])
        f.seek(0)
        f.write(_header(int(fields["kernel_size"]), int(fields["initrd_size"]), kernel_args))
        f.flush()
        os.fsync(f.fileno())
    logger.info("%s: next boot %s", path, f"kexecs with {' '.join(kernel_args)}" if kernel_args is not None
                else "runs on")


def with_kexec_disk(plan: "MachinePlan", steps: Sequence["StepModel"], kernel: Path, initrd: Path,
                    artifacts_dir: Path, make: bool = True) -> "MachinePlan":
    """The plan with its kexec disk (artifacts_dir/<vm>-kexec.img) when a reset step of the VM asks
    for other kernel arguments; any other plan as it is. make=False names it only (--dry-run)."""
    if not wants_kexec_disk(plan.name, steps):
        return plan
    path = artifacts_dir / f"{plan.name}-kexec.img"
    return replace(plan, kexec_disk=write_disk(path, kernel, initrd) if make else path)
