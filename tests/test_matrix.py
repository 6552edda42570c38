"""testbed matrix: the combinations, the CI job matrix and the merge (pure logic), and one scenario run
over two QEMU paths as two CI slices merged into one table (real guests)."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from testbed.errors import TestbedError
from testbed.images import DEFAULT_RECIPE, ImageRecipe, with_kernel_suite
from testbed.matrix import Combination, combinations, github_matrix, merge

ZOO_19 = Path(__file__).parent.parent / "scenarios" / "zoo" / "zoo-19-mac-change-refused.yaml"


def test_combinations_are_the_product_and_default_fills_an_empty_axis():
    assert combinations([], []) == [Combination("default", "default")]
    assert combinations(["q1", "q2"], ["k:m"]) == [Combination("q1", "k:m"), Combination("q2", "k:m")]
    assert github_matrix(combinations(["q1"], ["k1:m1", "k2:m2"])) == {"include": [
        {"index": 0, "qemu": "q1", "kernel": "k1:m1"}, {"index": 1, "qemu": "q1", "kernel": "k2:m2"}]}


def test_a_kernel_needs_its_modules_or_names_a_debian_suite():
    with pytest.raises(TestbedError, match="give BZIMAGE:MODULES_DIR"):
        Combination("default", "/boot/vmlinuz").local_kernel()
    assert Combination("default", "default").local_kernel() is None
    debian = Combination("default", "debian:bookworm")
    assert debian.local_kernel() is None and debian.kernel_suite() == "bookworm"


def test_a_debian_kernel_comes_from_one_of_the_recipes_suites():
    recipe = ImageRecipe.load(DEFAULT_RECIPE)
    assert with_kernel_suite(recipe, "bookworm").kernel_package == "linux-image-amd64/bookworm"
    assert with_kernel_suite(recipe, None) == recipe
    with pytest.raises(TestbedError, match="Debian kernel suite 'trixie': the image recipe has"):
        with_kernel_suite(recipe, "trixie")


def test_merge_joins_slices_and_refuses_what_is_not_a_result(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({"rows": [{"qemu": "q2", "kernel": "default"}]}))
    (tmp_path / "b.json").write_text(json.dumps({"rows": [{"qemu": "q1", "kernel": "default"}]}))
    assert [r["qemu"] for r in merge([tmp_path / "a.json", tmp_path / "b.json"])] == ["q1", "q2"]
    (tmp_path / "c.json").write_text("not json")
    with pytest.raises(TestbedError, match="c.json: not a matrix result"):
        merge([tmp_path / "c.json"])
    for n, wrong in enumerate([{"scenario": "x", "verdict": "reproduced"}, {"rows": "x"}, {"rows": [1]}, []]):
        (tmp_path / f"w{n}.json").write_text(json.dumps(wrong))
        with pytest.raises(TestbedError, match=f"w{n}.json: not a matrix result: no list of rows"):
            merge([tmp_path / "a.json", tmp_path / f"w{n}.json"])


def _cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "testbed.cli", "matrix", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.guest
def test_two_slices_run_like_ci_jobs_and_merge_into_one_table(tmp_path):
    system_qemu = shutil.which("qemu-system-x86_64")
    axes = [ZOO_19, "--qemu", "default", "--qemu", system_qemu]
    emitted = _cli(*axes, "--emit", "github")
    assert emitted.returncode == 0, emitted.stderr
    jobs = json.loads(emitted.stdout)["include"]
    assert [(j["index"], j["qemu"]) for j in jobs] == [(0, "default"), (1, system_qemu)]
    for job in jobs:
        done = _cli(*axes, "--only", job["index"], "--json", tmp_path / f"slice{job['index']}.json",
                    "--artifacts", tmp_path / f"art{job['index']}")
        assert done.returncode == 0, done.stdout + done.stderr
    merged = _cli("merge", tmp_path / "slice0.json", tmp_path / "slice1.json", "--json", tmp_path / "all.json",
                  "--html", tmp_path / "all.html")
    assert merged.returncode == 0, merged.stderr
    rows = json.loads((tmp_path / "all.json").read_text())["rows"]
    assert sorted(r["qemu"] for r in rows) == sorted(["default", system_qemu])
    assert {r["outcome"] for r in rows} == {"reproduced"}
    # the same binary twice: one QEMU version, read from the binary each run used
    assert len({r["qemu_version"] for r in rows}) == 1 and rows[0]["qemu_version"]
    assert all(r["figures"]["pairs_ready_s"] > 0 and "Operation not supported" in r["evidence"] for r in rows)
    assert "zoo-19-mac-change-refused" in merged.stdout and "reproduced" in merged.stdout
    page = (tmp_path / "all.html").read_text()
    assert page.count("<tr>") == 3 and "reproduced" in page
