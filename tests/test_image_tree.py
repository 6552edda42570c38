"""What the image builder writes into the unpacked tree (testbed.image_tree): pure checks. The guest
side, byte-code that predates the boot, is checked in a booted cloud-init guest by
scenarios/zoo/dhcp-cloud-init.yaml (tests/test_cloud_init_guest.py)."""

import pytest

from testbed.errors import TestbedError
from testbed.image_recipe import ImageRecipe
from testbed.image_tree import byte_compile, mark_updated, systemd_units


def test_byte_compile_names_a_directory_the_image_lacks(tmp_path):
    recipe = ImageRecipe(suite="bookworm", kernel_package="linux-image-amd64", packages=[], modules=[],
                         byte_compile=["/usr/share/nothing"])
    with pytest.raises(TestbedError, match="byte_compile: /usr/share/nothing is not a directory in the image"):
        byte_compile(tmp_path, recipe)


def _recipe(**fields) -> ImageRecipe:
    return ImageRecipe(suite="bookworm", kernel_package="linux-image-amd64", packages=[], modules=[], **fields)


def test_a_disabled_generator_is_a_link_to_dev_null(tmp_path):
    shipped = tmp_path / "lib" / "systemd" / "system-generators"
    shipped.mkdir(parents=True)
    (shipped / "systemd-gpt-auto-generator").write_text("")
    systemd_units(tmp_path, _recipe(disable_generators=["systemd-gpt-auto-generator"]))
    link = tmp_path / "etc" / "systemd" / "system-generators" / "systemd-gpt-auto-generator"
    assert link.is_symlink() and str(link.readlink()) == "/dev/null"


def test_disabling_a_generator_the_image_lacks_is_an_error(tmp_path):
    with pytest.raises(TestbedError, match="the image has no systemd generator systemd-nothing-generator"):
        systemd_units(tmp_path, _recipe(disable_generators=["systemd-nothing-generator"]))


def test_the_update_stamps_are_newer_than_usr(tmp_path):
    for directory in ("etc", "var", "usr"):
        (tmp_path / directory).mkdir()
    mark_updated(tmp_path)
    usr = (tmp_path / "usr").stat().st_mtime_ns
    assert all((tmp_path / d / ".updated").stat().st_mtime_ns >= usr for d in ("etc", "var"))
