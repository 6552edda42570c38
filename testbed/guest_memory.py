"""Whether a guest image fits in its VM's RAM.

Every flavour is an initramfs, and the kernel unpacks it into its rootfs, a tmpfs whose size is
half the RAM free at that moment: the guest's RAM less what the kernel keeps, and less the
compressed initramfs, which is freed only after the unpack. An image larger than that is unpacked
short without a word on the console; one that barely fits boots with a full root (measured on the
cloud-init flavour at 512 MiB: 192 MiB of rootfs, 1 MiB free, journald and cloud-config.service
failing with ENOSPC). So a run refuses such a VM before anything starts, with the RAM it needs."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

from testbed.errors import TestbedError

if TYPE_CHECKING:
    from testbed.images import GuestImage
    from testbed.scenario import Scenario

PAGE = 4096
MIB = 1 << 20
# What a 6.12 guest on q35 does not count as free RAM at the unpack (462 MiB of 512 were free).
KERNEL_RESERVED_MIB = 56
# Room left in the root for what a boot and a scenario write (logs, cloud-init's state, leases).
ROOM_MIB = 32


def rootfs_bytes(tree: Path) -> int:
    """What the tree takes in a tmpfs: each regular file rounded up to whole pages (small files
    dominate a Debian root: 177 MiB of files take 192 MiB of pages)."""
    total = 0
    for directory, _, files in os.walk(tree):
        for name in files:
            path = os.path.join(directory, name)
            if not os.path.islink(path):
                total += math.ceil(os.path.getsize(path) / PAGE) * PAGE
    return total


def rootfs_limit_mib(memory_mib: int, initrd_bytes: int) -> float:
    return (memory_mib - KERNEL_RESERVED_MIB - initrd_bytes / MIB) / 2


def needed_memory_mib(image: "GuestImage") -> int | None:
    """The least memory_mib with which the image unpacks whole and leaves ROOM_MIB free, rounded up
    to 64 MiB; None for an image built before the manifest recorded its rootfs size."""
    rootfs = image.manifest.get("rootfs_bytes")
    if rootfs is None:
        return None
    exact = 2 * (rootfs / MIB + ROOM_MIB) + image.manifest["initrd_bytes"] / MIB + KERNEL_RESERVED_MIB
    return math.ceil(exact / 64) * 64


def check_images_fit(scenario: "Scenario", images: dict[str, "GuestImage"]) -> None:
    for i, vm in enumerate(scenario.vms):
        image = images[vm.image]
        needed = needed_memory_mib(image)
        if needed is not None and vm.memory_mib < needed:
            raise TestbedError(
                f"vms[{i}].memory_mib: {vm.name}'s {vm.image} image unpacks to "
                f"{image.manifest['rootfs_bytes'] / MIB:.0f} MiB in a root tmpfs of about "
                f"{rootfs_limit_mib(vm.memory_mib, image.manifest['initrd_bytes']):.0f} MiB at memory_mib "
                f"{vm.memory_mib} (half the RAM free while the kernel unpacks it), which leaves less than "
                f"{ROOM_MIB} MiB to write in; give it memory_mib: {needed} or more")
