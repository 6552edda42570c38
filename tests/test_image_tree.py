"""What the image builder writes into the unpacked tree (testbed.image_tree): pure checks. The guest
side, byte-code that predates the boot, is checked in a booted cloud-init guest by
scenarios/zoo/dhcp-cloud-init.yaml (tests/test_cloud_init_guest.py)."""

import pytest

from testbed.errors import TestbedError
from testbed.image_recipe import ImageRecipe
from testbed.image_tree import byte_compile


def test_byte_compile_names_a_directory_the_image_lacks(tmp_path):
    recipe = ImageRecipe(suite="bookworm", kernel_package="linux-image-amd64", packages=[], modules=[],
                         byte_compile=["/usr/share/nothing"])
    with pytest.raises(TestbedError, match="byte_compile: /usr/share/nothing is not a directory in the image"):
        byte_compile(tmp_path, recipe)
