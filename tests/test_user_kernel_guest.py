"""Bisecting a kernel: --kernel/--modules boots a kernel the user brings, and the report says so."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from testbed.cache import cache_root
from testbed.images import PrivateApt, debian_mirror

REPO = Path(__file__).parent.parent
pytestmark = [pytest.mark.guest, pytest.mark.slow]


@pytest.fixture(scope="module")
def other_kernel(tmp_path_factory):
    """bookworm's own 6.1 kernel, unpacked as a kernel build tree would leave it: a bzImage and
    its /lib/modules/<release>."""
    root = tmp_path_factory.mktemp("kernel")
    apt = PrivateApt(cache_root() / "apt", debian_mirror(cache_root() / "apt" / "mirror"),
                     ["bookworm", "bookworm-backports"])
    apt.update()
    meta = apt.show("linux-image-amd64/bookworm")
    package = meta["Depends"].split(",")[0].split()[0]
    deb = apt.download(package, root)
    subprocess.run(["dpkg-deb", "-x", str(deb), str(root / "x")], check=True)
    (modules,) = (root / "x" / "lib" / "modules").iterdir()
    return root / "x" / "boot" / f"vmlinuz-{modules.name}", modules


def test_a_user_kernel_boots_the_pair_and_is_reported(tmp_path, other_kernel):
    bzimage, modules = other_kernel
    assert modules.name.startswith("6.1.")
    report_path = tmp_path / "r.json"
    done = subprocess.run([sys.executable, "-m", "testbed.cli", "run", str(REPO / "scenarios/standby-pci.yaml"),
                           "--kernel", str(bzimage), "--modules", str(modules), "--report", str(report_path),
                           "--artifacts", str(tmp_path / "art"), "--quiet"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    report = json.loads(report_path.read_text())
    assert report["host"]["guest_kernel"] == modules.name
    assert "Linux version " + modules.name in (tmp_path / "art" / "vm1" / "dmesg.txt").read_text()


def test_matrix_over_a_debian_suite_kernel_and_a_user_kernel(tmp_path, other_kernel):
    """`testbed matrix` with both kinds of --kernel value that are not the default, one machine, and its
    --json and --html outputs: each row ran the kernel its combination names."""
    bzimage, modules = other_kernel
    zoo_19 = REPO / "scenarios" / "zoo" / "zoo-19-mac-change-refused.yaml"
    user = f"{bzimage}:{modules}"
    done = subprocess.run([sys.executable, "-m", "testbed.cli", "matrix", str(zoo_19), "--kernel", "debian:bookworm",
                           "--kernel", user, "--json", str(tmp_path / "m.json"), "--html", str(tmp_path / "m.html"),
                           "--artifacts", str(tmp_path / "art")], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = json.loads((tmp_path / "m.json").read_text())["rows"]
    assert sorted(r["kernel"] for r in rows) == sorted(["debian:bookworm", user])
    # bookworm's suite kernel and the unpacked one are the same 6.1 build, not the recipe's 6.12
    assert {r["guest_kernel"] for r in rows} == {modules.name}
    assert {r["outcome"] for r in rows} == {"reproduced"}
    page = (tmp_path / "m.html").read_text()
    assert page.count("<tr>") == 3 and page.count(f"<td>{modules.name}</td>") == 2
