"""apt against the guest image recipe's suites only, independent of the host's sources and pins."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from testbed.artifacts import write_whole
from testbed.errors import TestbedError

KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"


def _run(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(argv, check=True, capture_output=True, text=True, **kwargs)
    except FileNotFoundError as e:
        raise TestbedError(f"{argv[0]} is not installed; run scripts/setup-host.sh") from e
    except subprocess.CalledProcessError as e:
        raise TestbedError(f"{' '.join(argv[:3])}... failed ({e.returncode}): {e.stderr.strip()[-2000:]}") from e


def debian_mirror(known: Path | None = None) -> str:
    """The Debian mirror the host's apt already uses, so builds work behind the same proxy/mirror."""
    if mirror := os.environ.get("TESTBED_DEBIAN_MIRROR"):
        return mirror
    if known and known.exists():
        remembered = known.read_text().strip()
        if remembered.startswith(("http://", "https://", "file:/")):
            return remembered  # else a file damaged by an older testbed's unlocked write: ask apt again
    out = _run(["apt-cache", "policy"]).stdout
    for line in out.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[1].startswith("http") and fields[2].endswith("/main") \
                and "security" not in fields[1]:
            return fields[1]
    return "http://deb.debian.org/debian"


class PrivateApt:
    """apt-get/apt-cache against the recipe's suites only, independent of the host's sources and pins."""

    def __init__(self, root: Path, mirror: str, suites: list[str], kernel_only: list[str] | None = None):
        """kernel_only: suites that are seen at pin 100 (as backports are), so that no userland package
        comes from them unless asked for by release, and that mmdebstrap never gets
        (`userland_lines`)."""
        self.root = root
        self.mirror = mirror
        self.suites = suites
        for d in ("lists/partial", "archives/partial", "prefs.d", "sources.d"):
            (root / d).mkdir(parents=True, exist_ok=True)
        (root / "status").touch()
        self.userland_lines = [f"deb [signed-by={KEYRING}] {mirror} {s} main" for s in suites]
        self.sources_lines = self.userland_lines + [f"deb [signed-by={KEYRING}] {mirror} {s} main"
                                                    for s in kernel_only or []]
        write_whole(root / "prefs", "".join(f"Package: *\nPin: release n={s}\nPin-Priority: 100\n\n"
                                            for s in kernel_only or []))
        # runs (and pytest-xdist workers) that start together all write it while another's apt-cache reads it
        write_whole(root / "sources.list", "\n".join(self.sources_lines) + "\n")

    def _opts(self) -> list[str]:
        r = self.root
        opts = {
            "Dir::State::Lists": r / "lists", "Dir::State::status": r / "status",
            "Dir::Cache": r, "Dir::Cache::archives": r / "archives",
            "Dir::Etc::SourceList": r / "sources.list", "Dir::Etc::SourceParts": r / "sources.d",
            "Dir::Etc::PreferencesParts": r / "prefs.d", "Dir::Etc::Preferences": r / "prefs",
            "APT::Architecture": "amd64", "Debug::NoLocking": "1",
        }
        if os.geteuid() == 0:
            opts["APT::Sandbox::User"] = "root"
        return [a for k, v in opts.items() for a in ("-o", f"{k}={v}")]

    def update(self, max_age_s: float = 24 * 3600) -> None:
        stamp = self.root / "updated"
        if stamp.exists() and time.time() - stamp.stat().st_mtime < max_age_s:
            return
        _run(["apt-get", *self._opts(), "-qq", "update"])
        stamp.touch()

    def show(self, package: str) -> dict[str, str]:
        out = _run(["apt-cache", *self._opts(), "show", "--no-all-versions", package]).stdout
        fields: dict[str, str] = {}
        for line in out.splitlines():
            if ":" in line and not line.startswith(" "):
                k, v = line.split(":", 1)
                fields.setdefault(k, v.strip())
        return fields

    def download(self, package_eq_version: str, dest: Path) -> Path:
        _run(["apt-get", *self._opts(), "-qq", "download", package_eq_version], cwd=dest)
        debs = sorted(dest.glob("*.deb"))
        if len(debs) != 1:
            raise TestbedError(f"apt-get download {package_eq_version} left {debs} in {dest}")
        return debs[0]
