"""Whether KVM inside the host VM runs a stock guest kernel. TCG's `-cpu max` emulates AMD's SVM with
nested paging, so L1's kvm_amd loads; if a probe boot shows that it really runs L2's kernel, the
nested guests are KVM guests of L1 (seconds to boot) instead of TCG inside TCG (minutes)."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from typing import TYPE_CHECKING

from testbed.artifacts import write_whole
from testbed.cache import cache_root
from testbed.host_image import L1_QEMU, L2_KERNEL
from testbed.qemu_host import inspect_qemu

if TYPE_CHECKING:
    from testbed.host_vm import VmHost

logger = logging.getLogger(__name__)

# About 18 s on an idle machine. Beside another worker's guest on a slow day, the probe kernel was
# still booting (at "PM: genpd: Disabling unused power domains", 37 s in) when 60 s ran out; the
# fallback, TCG inside TCG, then missed a 300 s boot budget. A longer probe costs less than that.
PROBE_TIMEOUT_S = 150
PROBE_ATTEMPTS = 2
# As qemu_host.probe_kvm: no initramfs, so reaching the root-mount panic proves the kernel ran.
PROBE_ARGV = [str(L1_QEMU), "-machine", "q35", "-accel", "kvm", "-cpu", "host", "-m", "256M", "-nodefaults",
              "-display", "none", "-no-reboot", "-serial", "stdio", "-kernel", str(L2_KERNEL),
              "-append", "console=ttyS0 panic=-1"]
WORKS = ("VFS: Unable to mount root", "Kernel panic")


def probe(host: "VmHost") -> tuple[bool | None, str]:
    """True: KVM ran L2's kernel. False: L1 has no KVM at all. None: the probe boot did not get there
    (seen once, with another guest loading the cores: the probe QEMU's output stopped at PCI
    enumeration after 15 s), which proves nothing either way."""
    if host.exec(["test", "-c", "/dev/kvm"], timeout=10).exit_status != 0:
        return False, "no /dev/kvm in the host VM (kvm_amd did not load: no SVM in L1's CPU?)"
    result = host.exec(["timeout", str(PROBE_TIMEOUT_S), *PROBE_ARGV], timeout=PROBE_TIMEOUT_S + 15)
    out = result.stdout + result.stderr
    lines = [line for line in out.strip().splitlines() if line.strip()]
    evidence = next((line for line in lines if any(w in line for w in WORKS)), lines[-1] if lines else "no output")
    works = any(w in out for w in WORKS)
    return (True if works else None), f"{evidence.strip()} (probe QEMU exit status {result.exit_status})"


def nested_kvm_verdict(host: "VmHost", host_image_key: str) -> tuple[str, str]:
    """'kvm' or 'tcg' for the nested guests, with the probe's evidence. Kept per host image and
    outer QEMU: both decide what L1's CPU offers."""
    qemu_version = inspect_qemu(host.machine.qemu).version_text
    key = hashlib.sha256(f"{host_image_key}|{qemu_version}".encode()).hexdigest()[:16]
    memo = cache_root() / f"nested-kvm-probe-{key}.json"
    result = json.loads(memo.read_text()) if memo.exists() else None
    if result is None or not result.get("conclusive"):  # older memos kept inconclusive probes too
        started = time.monotonic()
        for attempt in range(PROBE_ATTEMPTS):
            ok, evidence = probe(host)
            if ok is not None:
                break
            logger.warning("nested KVM probe %d/%d was inconclusive: %s", attempt + 1, PROBE_ATTEMPTS, evidence)
        result = {"kvm_works": bool(ok), "evidence": evidence, "probe_s": round(time.monotonic() - started, 2),
                  "conclusive": ok is not None}
        if ok is not None:  # an inconclusive probe is not remembered: the next run probes again
            write_whole(memo, json.dumps(result))  # pytest-xdist workers may probe at once
        logger.info("nested KVM probe (%ss): %s: %s", result["probe_s"], "works" if ok else "does not work", evidence)
    accel = "kvm" if result["kvm_works"] else "tcg"
    return accel, str(result["evidence"])
