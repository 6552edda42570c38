"""Whether an image fits its VM's RAM (pure logic); the guest side runs in tests/test_cloud_init_guest.py."""

from pathlib import Path

import pytest

from testbed.errors import TestbedError
from testbed.guest_memory import MIB, check_images_fit, needed_memory_mib, rootfs_bytes
from testbed.images import GuestImage
from testbed.scenario import load_scenario

SCENARIO = """
vms:
  - name: vm1
    image: {image}
    {memory}
    pairs: [{{name: net0, mac: "52:54:00:00:12:59", primary: {{kind: pci}}}}]
steps: [{{action: boot}}]
"""


def _load(tmp_path: Path, image: str, memory: str = ""):
    path = tmp_path / "s.yaml"
    path.write_text(SCENARIO.format(image=image, memory=memory))
    return load_scenario(path)


def _image(rootfs_mib: float, initrd_mib: float) -> GuestImage:
    manifest = {"kernel_release": "6.12", "initrd_bytes": int(initrd_mib * MIB), "rootfs_bytes": int(rootfs_mib * MIB)}
    return GuestImage(Path("/c/i"), Path("/c/i/vmlinuz"), Path("/c/i/initrd.img"), Path("/c/i/k"), "6.12", manifest)


def test_rootfs_bytes_counts_whole_pages_and_skips_links(tmp_path):
    (tmp_path / "a").write_bytes(b"x")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "b").write_bytes(b"y" * 4097)
    (tmp_path / "l").symlink_to("a")
    assert rootfs_bytes(tmp_path) == 3 * 4096


def test_the_cloud_init_image_at_512_mib_is_refused_with_the_memory_it_needs(tmp_path):
    # the figures of the cloud-init image that booted with a full root at 512 MiB
    image = _image(rootfs_mib=193, initrd_mib=71.3)
    assert needed_memory_mib(image) == 640
    scenario = _load(tmp_path, "cloud-init", "memory_mib: 512")
    with pytest.raises(TestbedError, match=r"vms\[0\]\.memory_mib: vm1's cloud-init image unpacks to 193 MiB in a "
                                           r"root tmpfs of about 192 MiB .* give it memory_mib: 640 or more"):
        check_images_fit(scenario, {"cloud-init": image})
    check_images_fit(scenario.model_copy(update={"vms": [scenario.vms[0].model_copy(update={"memory_mib": 640})]}),
                     {"cloud-init": image})


def test_a_vm_gets_its_flavours_memory_unless_it_says(tmp_path):
    assert _load(tmp_path, "cloud-init").vms[0].memory_mib == 768
    assert _load(tmp_path, "minimal").vms[0].memory_mib == 512
    assert _load(tmp_path, "cloud-init", "memory_mib: 1024").vms[0].memory_mib == 1024
    # an image built before manifests recorded the rootfs is not refused
    assert needed_memory_mib(GuestImage(Path("/"), Path("/"), Path("/"), Path("/"), "6.12", {"initrd_bytes": 1})) is None
