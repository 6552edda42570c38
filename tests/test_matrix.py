"""testbed matrix: the combinations, the CI job matrix and the merge (pure logic). The guest run, two CI
slices merged into one table, is in tests/test_user_kernel_guest.py (it needs the unpacked kernel)."""

import json

import pytest

from testbed.errors import TestbedError
from testbed.images import DEFAULT_RECIPE, ImageRecipe, with_kernel_suite
from testbed.matrix import Combination, combinations, github_matrix, merge



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
    assert with_kernel_suite(recipe, "bookworm").kernel_only_suites == []
    # trixie: its kernel alone, under the recipe's bookworm userland
    trixie = with_kernel_suite(recipe, "trixie")
    assert (trixie.kernel_package, trixie.kernel_only_suites, trixie.suite) == \
        ("linux-image-amd64/trixie", ["trixie"], "bookworm")
    with pytest.raises(TestbedError, match="Debian kernel suite 'sid': the image recipe has .* and takes the "
                                           "kernel alone from \\['trixie'\\]"):
        with_kernel_suite(recipe, "sid")


def test_a_kernel_only_suite_is_pinned_low_and_kept_from_mmdebstrap(tmp_path):
    from testbed.debian_apt import PrivateApt
    apt = PrivateApt(tmp_path, "http://deb.debian.org/debian", ["bookworm"], ["trixie"])
    assert [line.split()[-2] for line in apt.sources_lines] == ["bookworm", "trixie"]
    assert [line.split()[-2] for line in apt.userland_lines] == ["bookworm"]
    assert "Pin: release n=trixie\nPin-Priority: 100" in (tmp_path / "prefs").read_text()


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
