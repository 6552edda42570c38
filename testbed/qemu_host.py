"""What the host's QEMU can do: version, device models, and which accelerator really boots a guest."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from testbed.cache import cache_root
from testbed.errors import TestbedError

logger = logging.getLogger(__name__)

MIN_VERSION = (8, 0)
REQUIRED_DEVICES = ("igb", "e1000e", "pcie-root-port", "virtio-net-pci")
INSTALL_HINT = ("run scripts/setup-host.sh (Debian 12: QEMU from bookworm-backports; Debian 13: the "
                "distribution's qemu-system-x86), or pass --qemu PATH")


@dataclass(frozen=True)
class QemuBinary:
    path: str
    version: tuple[int, int, int]
    version_text: str
    devices: frozenset[str]

    def require(self) -> "QemuBinary":
        problems = []
        if self.version[:2] < MIN_VERSION:
            problems.append(f"version {'.'.join(map(str, self.version))} is older than "
                            f"{'.'.join(map(str, MIN_VERSION))} (the first with igb)")
        missing = [d for d in REQUIRED_DEVICES if d not in self.devices]
        if missing:
            problems.append(f"no device model {', '.join(missing)} in '-device help'")
        if problems:
            raise TestbedError(f"{self.path}: " + "; ".join(problems) + f". To fix: {INSTALL_HINT}")
        return self


@functools.cache
def inspect_qemu(path: str | None = None) -> QemuBinary:
    path = path or os.environ.get("TESTBED_QEMU") or "qemu-system-x86_64"
    resolved = shutil.which(path)
    if resolved is None:
        raise TestbedError(f"QEMU binary {path!r} not found. To fix: {INSTALL_HINT}")
    try:
        text = subprocess.run([resolved, "--version"], capture_output=True, text=True, timeout=20,
                              check=True).stdout
        help_text = subprocess.run([resolved, "-device", "help"], capture_output=True, text=True,
                                   timeout=20, check=True).stdout
    except (subprocess.SubprocessError, OSError) as e:
        raise TestbedError(f"{resolved} does not run: {e}") from e
    m = re.search(r"version (\d+)\.(\d+)\.(\d+)", text)
    if not m:
        raise TestbedError(f"{resolved} --version printed no version: {text[:200]!r}")
    devices = frozenset(re.findall(r'^name "([^"]+)"', help_text, re.M))
    return QemuBinary(resolved, tuple(int(x) for x in m.groups()), text.splitlines()[0], devices)


def _kvm_usable() -> bool:
    return os.access("/dev/kvm", os.R_OK | os.W_OK)


def probe_kvm(qemu: QemuBinary, kernel: Path, timeout: float = 10.0) -> tuple[bool, str]:
    """Boots the guest kernel under KVM without an initramfs. Reaching the root-mount panic means KVM
    runs a stock kernel; a paravirtual KVM that cannot ('emulation failure') fails long before."""
    argv = [qemu.path, "-machine", "q35", "-accel", "kvm", "-cpu", "host", "-m", "256M", "-nodefaults",
            "-display", "none", "-no-reboot", "-serial", "stdio", "-kernel", str(kernel),
            "-append", "console=ttyS0 panic=-1"]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        out = done.stdout + done.stderr
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
    ok = "VFS: Unable to mount root" in out or "Kernel panic" in out
    tail = out.strip().splitlines()[-1] if out.strip() else "no output"
    return ok, tail


def choose_accel(requested: str, qemu: QemuBinary, kernel: Path) -> str:
    """'tcg' and 'kvm' are taken as given; 'auto' uses KVM only where a probe boot proved it works.
    The probe result is cached per QEMU, kernel and host kernel."""
    if requested in ("tcg", "kvm"):
        return requested
    if requested != "auto":
        raise TestbedError(f"accel must be auto, tcg or kvm, not {requested!r}")
    if not _kvm_usable():
        return "tcg"
    key = hashlib.sha256(f"{qemu.version_text}|{kernel.stat().st_size}|{kernel.stat().st_mtime_ns}|"
                         f"{os.uname().release}".encode()).hexdigest()[:16]
    memo = cache_root() / f"kvm-probe-{key}.json"
    if memo.exists():
        result = json.loads(memo.read_text())
    else:
        started = time.monotonic()
        ok, tail = probe_kvm(qemu, kernel)
        result = {"kvm_works": ok, "evidence": tail, "probe_s": round(time.monotonic() - started, 2)}
        memo.write_text(json.dumps(result))
        logger.info("KVM probe: %s (%s)", "works" if ok else "does not boot a stock kernel", tail)
    return "kvm" if result["kvm_works"] else "tcg"
