"""Bisecting a kernel: --kernel/--modules boots a kernel the user brings, and the report says so."""

import json
import shutil
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
    assert "Linux version " + modules.name in Path(report["vms"]["vm1"]["artifacts"]["dmesg"]).read_text()


def _matrix(*args):
    return subprocess.run([sys.executable, "-m", "testbed.cli", "matrix", *map(str, args)],
                          capture_output=True, text=True, timeout=900)


def test_matrix_slices_over_a_debian_suite_kernel_and_a_user_kernel_merge_into_one_table(tmp_path, other_kernel):
    """`testbed matrix` as CI runs it: --emit github gives the job matrix, each job runs its slice
    (--only N, --json), and `matrix merge` joins them (--json, --html). The axes use every kind of
    value: a QEMU path, a Debian suite's kernel, and a kernel the user unpacked."""
    bzimage, modules = other_kernel
    zoo_19 = REPO / "scenarios" / "zoo" / "zoo-19-mac-change-refused.yaml"
    system_qemu, user = shutil.which("qemu-system-x86_64"), f"{bzimage}:{modules}"
    axes = [zoo_19, "--qemu", system_qemu, "--kernel", "debian:bookworm", "--kernel", user,
            "--kernel", "debian:trixie"]
    emitted = _matrix(*axes, "--emit", "github")
    assert emitted.returncode == 0, emitted.stderr
    jobs = json.loads(emitted.stdout)["include"]
    assert [(j["index"], j["qemu"], j["kernel"]) for j in jobs] == [(0, system_qemu, "debian:bookworm"),
                                                                      (1, system_qemu, user),
                                                                      (2, system_qemu, "debian:trixie")]
    for job in jobs:
        done = _matrix(*axes, "--only", job["index"], "--json", tmp_path / f"slice{job['index']}.json",
                       "--artifacts", tmp_path / f"art{job['index']}")
        assert done.returncode == 0, done.stdout + done.stderr
    merged = _matrix("merge", tmp_path / "slice1.json", tmp_path / "slice0.json", tmp_path / "slice2.json",
                     "--json", tmp_path / "all.json", "--html", tmp_path / "all.html")
    assert merged.returncode == 0, merged.stderr
    rows = json.loads((tmp_path / "all.json").read_text())["rows"]
    assert sorted(r["kernel"] for r in rows) == sorted(["debian:bookworm", user, "debian:trixie"])
    # bookworm's suite kernel and the unpacked one are the same 6.1 build, not the recipe's 6.12;
    # trixie's is its own 6.12 build, under the recipe's bookworm userland
    by_kernel = {r["kernel"]: r["guest_kernel"] for r in rows}
    assert by_kernel["debian:bookworm"] == by_kernel[user] == modules.name
    assert by_kernel["debian:trixie"].startswith("6.12.") and by_kernel["debian:trixie"].endswith("+deb13-amd64")
    assert {r["outcome"] for r in rows} == {"reproduced"}
    assert len({r["qemu_version"] for r in rows}) == 1 and rows[0]["qemu_version"]
    assert all(r["figures"]["pairs_ready_s"] > 0 and "Operation not supported" in r["evidence"] for r in rows)
    assert "zoo-19-mac-change-refused" in merged.stdout and "reproduced" in merged.stdout
    page = (tmp_path / "all.html").read_text()
    assert page.count("<tr>") == 4 and page.count(f"<td>{modules.name}</td>") == 2
