"""The kexec disk's layout and header, and where a plan gets one (testbed.kexec_disk)."""

from pathlib import Path

from testbed.kexec_disk import BLOCK, MAGIC, arm, with_kexec_disk, write_disk
from testbed.plan import plan_machines
from testbed.qemu_argv import LaunchFiles, build_argv
from testbed.scenario import load_scenario

ZOO_14B = Path(__file__).parent.parent / "scenarios/zoo/zoo-14-reset-into-a-kernel-without-standby.yaml"


def _header(path: Path) -> dict[str, str]:
    lines = path.read_bytes()[:BLOCK].rstrip(b"\0").decode().splitlines()
    assert lines[0] == MAGIC
    return dict(line.split("=", 1) for line in lines[1:])


def test_the_disk_holds_kernel_and_initrd_at_aligned_offsets_and_starts_disarmed(tmp_path):
    kernel, initrd = tmp_path / "vmlinuz", tmp_path / "initrd.img"
    kernel.write_bytes(b"K" * 5000)
    initrd.write_bytes(b"I" * 123)
    disk = write_disk(tmp_path / "d.img", kernel, initrd)
    head = _header(disk)
    assert head == {"armed": "0", "kernel_offset": "4096", "kernel_size": "5000", "initrd_offset": "12288",
                    "initrd_size": "123", "append": "", "end": "1"}
    data = disk.read_bytes()
    assert data[4096:9096] == b"K" * 5000 and data[9096:12288] == b"\0" * 3192
    assert data[12288:12411] == b"I" * 123 and len(data) == 16384

    arm(disk, ["virtio_pci.force_legacy=1", "a=b c"])
    assert _header(disk)["armed"] == "1" and _header(disk)["append"] == "virtio_pci.force_legacy=1 a=b c"
    assert disk.read_bytes()[BLOCK:] == data[BLOCK:]     # the kernel and initrd are untouched
    arm(disk, None)
    assert _header(disk) == head


def test_only_a_vm_with_a_reset_into_other_arguments_gets_the_disk_and_its_cmdline_mark(tmp_path):
    scenario = load_scenario(ZOO_14B)
    (plan,) = plan_machines(scenario)
    files = LaunchFiles(Path("/k"), Path("/i"), Path("/s.log"), 7)
    assert with_kexec_disk(plan, scenario.steps[:1], Path("/k"), Path("/i"), tmp_path, make=False) is plan
    plan = with_kexec_disk(plan, scenario.steps, Path("/k"), Path("/i"), tmp_path, make=False)
    assert plan.kexec_disk == tmp_path / "vm1-kexec.img" and not plan.kexec_disk.exists()
    argv = build_argv("qemu", plan, files, "tcg")
    assert f"if=none,id=kexec,file={tmp_path}/vm1-kexec.img,format=raw,readonly=on" in argv
    assert "virtio-blk-pci,drive=kexec,serial=testbed-kexec,bus=pcie.0,addr=0x1d" in argv
    assert "testbed.kexec_disk" in argv[argv.index("-append") + 1].split()
    (sby,) = [a for a in argv if a.startswith("virtio-net-pci,id=net0-sby")]
    assert sby.endswith("failover=on,disable-legacy=off")     # transitional: legacy and modern
