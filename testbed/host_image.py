"""The host VM (L1) image: an initramfs for a VM that plays the hypervisor host of the nested topology.

L1 boots the guest image's kernel. Its initramfs is the guest image's own tree (busybox, dropbear,
iproute2, ethtool, the /usr/lib/testbed helpers and the root key) with images/host/ laid over it,
plus what a host needs: the vfio, tun and bridge modules from the same kernel package, the host's
QEMU with its whole shared-library closure and the few ROMs it loads, and L2's kernel, initramfs and
public key in /srv/l2. The testbed's one SSH key therefore logs into L1 and L2 alike.

An image is cached under a key that hashes the guest image's name, the QEMU binary (version, size
and mtime, and those of its libraries and ROMs), the overlay and this module, and is built under a
file lock, like the guest image.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from filelock import FileLock

from testbed.cache import cache_root
from testbed.debian_apt import PrivateApt, _run, debian_mirror
from testbed.errors import TestbedError
from testbed.images import (DEFAULT_RECIPE, REPO_ROOT, GuestImage, ImageRecipe, _hash_tree,
                            _install_modules, _pack_initramfs)

logger = logging.getLogger(__name__)

HOST_OVERLAY = REPO_ROOT / "images" / "host"
QEMU = Path("/usr/bin/qemu-system-x86_64")
# What L1's QEMU loads for a q35 guest booted with -kernel (linuxboot_dma.bin is its -kernel loader;
# without either ROM it prints "rom: file ...: error" at every start). No NIC option ROMs: every NIC
# of L2 needs romfile="" ("failed to find romfile efi-virtio.rom" otherwise), as the testbed's argv has.
FIRMWARE = (Path("/usr/share/seabios/bios-256k.bin"), Path("/usr/share/qemu/linuxboot_dma.bin"),
            Path("/usr/share/qemu/kvmvapic.bin"))
# Loaded by L1's /init; their dependencies (irqbypass, vfio_pci_core, llc, stp...) come along.
L1_MODULES = ("virtio_pci", "virtio_net", "igb", "vfio", "vfio_iommu_type1", "vfio_pci", "tun", "bridge",
              # KVM on the AMD SVM that TCG's `-cpu max` emulates: L2 then runs as a KVM guest of
              # L1 instead of TCG inside TCG (a probe decides, see VmHost.probe_nested_kvm).
              "kvm", "kvm_amd")
# Where L1 keeps L2's boot files and where its QEMU is, for the argv the testbed runs inside L1.
L2_DIR = PurePosixPath("/srv/l2")
L2_KERNEL = L2_DIR / "vmlinuz"
L2_INITRD = L2_DIR / "initrd.img"
L1_QEMU = PurePosixPath(str(QEMU))
_LIB_DIRS = ("lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu")


@dataclass(frozen=True)
class HostImage:
    directory: Path
    kernel: Path   # the guest image's vmlinuz: L1 and L2 run the same kernel
    initrd: Path
    ssh_key: Path  # the guest image's key, authorized for root in L1 and in L2
    manifest: dict

    @classmethod
    def from_directory(cls, directory: Path, guest: GuestImage) -> "HostImage":
        manifest = json.loads((directory / "manifest.json").read_text())
        return cls(directory, guest.kernel, directory / "initrd.img", guest.ssh_key, manifest)


def shared_libraries(binary: Path) -> list[Path]:
    """The binary's shared-library closure as the host's loader resolves it (ldd), interpreter included."""
    libs: list[Path] = []
    for line in _run(["ldd", str(binary)]).stdout.splitlines():
        fields = line.split()
        if "=>" in fields:
            target = fields[fields.index("=>") + 1]
            if target == "not":
                raise TestbedError(f"{binary} needs {fields[0]}, which the host's loader cannot find")
            if target.startswith("/"):
                libs.append(Path(target))
        elif fields and fields[0].startswith("/"):
            libs.append(Path(fields[0]))
    return libs


def _qemu_files() -> list[Path]:
    return [QEMU, *shared_libraries(QEMU), *FIRMWARE]


def host_image_key(guest: GuestImage, modules_dir: Path | None = None) -> str:
    h = hashlib.sha256(Path(__file__).read_bytes())
    h.update(guest.directory.name.encode())
    h.update(_run([str(QEMU), "--version"]).stdout.encode())
    for path in _qemu_files():
        st = path.stat()
        h.update(f"{path}:{st.st_size}:{st.st_mtime_ns}".encode())
    _hash_tree(h, HOST_OVERLAY)
    if modules_dir is not None:  # a local kernel's modules, as images.py hashes them (depmod's output aside)
        for ko in sorted(p for p in modules_dir.rglob("*") if not p.name.startswith("modules.")):
            st = ko.stat()
            h.update(f"{ko.relative_to(modules_dir)}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:20]


def _kernel_package(guest: GuestImage) -> tuple[str, str]:
    package = f"linux-image-{guest.kernel_release}"
    version = guest.manifest.get("packages", {}).get(package)
    if guest.manifest.get("local_kernel") or version is None:
        raise TestbedError(f"the guest image {guest.directory.name} runs a kernel that is not a Debian package "
                           f"({guest.manifest.get('local_kernel')}); pass its /lib/modules/"
                           f"{guest.kernel_release} directory as modules_dir")
    return package, version


def kernel_modules(guest: GuestImage, cache: Path) -> Path:
    """The guest kernel package's whole /lib/modules/<release> with modules.dep, extracted once and
    kept (the guest image keeps only its own modules' closure)."""
    package, version = _kernel_package(guest)
    root = cache / "host-images" / "kernels" / f"{package}_{version}"
    modules = root / "lib" / "modules" / guest.kernel_release
    root.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root) + ".lock", timeout=900):
        if (modules / "modules.dep").exists():
            return modules
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir()
        logger.info("extracting the modules of %s=%s", package, version)
        recipe = ImageRecipe.load(DEFAULT_RECIPE)  # its suites: where the guest's kernel package came from
        mirror = guest.manifest.get("mirror") or debian_mirror(known=cache / "apt" / "mirror")
        apt = PrivateApt(cache / "apt", mirror, [recipe.suite, *recipe.extra_suites])
        with FileLock(str(cache / "apt.lock"), timeout=600):
            apt.update()
            deb = apt.download(f"{package}={version}", root)
        _run(["dpkg-deb", "-x", str(deb), str(root)])
        deb.unlink()
        shutil.rmtree(root / "boot", ignore_errors=True)
        # Debian makes modules.dep in postinst. Made here only after the whole package is out, it
        # marks a complete extraction (the check above).
        _run(["depmod", "-b", str(root), guest.kernel_release])
    return modules


def _unpack_initramfs(initrd: Path, tree: Path) -> None:
    with initrd.open("rb") as src:
        lz4 = subprocess.Popen(["lz4", "-dc"], stdin=src, stdout=subprocess.PIPE)
        assert lz4.stdout is not None
        cpio = subprocess.run(["cpio", "-idm", "--quiet", "--no-absolute-filenames"], cwd=tree,
                              stdin=lz4.stdout, capture_output=True, text=True)
        lz4.stdout.close()
        if lz4.wait() or cpio.returncode:
            raise TestbedError(f"unpacking {initrd} failed (lz4 {lz4.returncode}, cpio {cpio.returncode}): "
                               f"{cpio.stderr.strip()[-500:]}")


def _install_file(src: Path, target: Path) -> None:
    """Copies src's content (symlinks followed) to target, replacing whatever target was."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_symlink() or target.exists():
        target.unlink()
    shutil.copy2(src, target)


def _install_qemu(tree: Path) -> int:
    """The host's QEMU, its libraries and ROMs at the host's paths; returns the number of libraries.
    A library the tree already has (under /lib or /usr/lib) is replaced in place, so that a single
    copy exists: the host's, which QEMU was built against."""
    _install_file(QEMU, tree / QEMU.relative_to("/"))
    libs = shared_libraries(QEMU)
    for lib in libs:
        present = [tree / d / lib.name for d in _LIB_DIRS if (tree / d / lib.name).exists()]
        _install_file(lib, present[0] if present else tree / lib.relative_to("/"))
    for rom in FIRMWARE:
        _install_file(rom, tree / rom.relative_to("/"))
    return len(libs)


def _install_l2(guest: GuestImage, tree: Path) -> None:
    l2 = tree / L2_DIR.relative_to("/")
    l2.mkdir(parents=True, exist_ok=True)
    shutil.copy2(guest.kernel, tree / L2_KERNEL.relative_to("/"))
    shutil.copy2(guest.initrd, tree / L2_INITRD.relative_to("/"))
    public_key = guest.ssh_key.with_name(guest.ssh_key.name + ".pub").read_text()
    (l2 / "id_ed25519.pub").write_text(public_key)
    ssh = tree / "root" / ".ssh"
    ssh.mkdir(parents=True, exist_ok=True)
    ssh.chmod(0o700)
    (ssh / "authorized_keys").write_text(public_key)
    (ssh / "authorized_keys").chmod(0o600)


def _build(guest: GuestImage, modules_src: Path, work: Path, out: Path) -> None:
    started = time.monotonic()
    tree = work / "tree"
    tree.mkdir()
    _unpack_initramfs(guest.initrd, tree)
    _install_modules(modules_src, tree, guest.kernel_release, list(L1_MODULES))
    libraries = _install_qemu(tree)
    _install_l2(guest, tree)
    shutil.copytree(HOST_OVERLAY, tree, dirs_exist_ok=True, symlinks=True)
    _pack_initramfs(tree, out / "initrd.img")
    manifest = {
        "guest_image": guest.directory.name,
        "kernel_release": guest.kernel_release,
        "qemu_version": _run([str(QEMU), "--version"]).stdout.splitlines()[0],
        "qemu_libraries": libraries,
        "firmware": [str(f) for f in FIRMWARE],
        "modules": list(L1_MODULES),
        "modules_src": str(modules_src),
        "tree_bytes": sum(p.stat().st_size for p in tree.rglob("*") if p.is_file() and not p.is_symlink()),
        "initrd_bytes": (out / "initrd.img").stat().st_size,
        "build_s": round(time.monotonic() - started, 3),
        "built_at": time.time(),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


def ensure_host_image(guest: GuestImage, modules_dir: Path | None = None,
                      cache: Path | None = None) -> HostImage:
    """Returns the cached host image for this guest image and host QEMU, building it first if needed
    (under a file lock). modules_dir: the guest kernel's /lib/modules/<release>, needed only when the
    guest image runs a local kernel; otherwise the kernel package is fetched and extracted once."""
    cache = cache or cache_root()
    key = host_image_key(guest, modules_dir)
    final = cache / "host-images" / key
    if (final / "manifest.json").exists():
        return HostImage.from_directory(final, guest)
    final.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(final) + ".lock", timeout=900):
        if (final / "manifest.json").exists():
            return HostImage.from_directory(final, guest)
        modules_src = modules_dir or kernel_modules(guest, cache)
        logger.info("building host image %s from guest image %s", key, guest.directory.name)
        with tempfile.TemporaryDirectory(dir=final.parent, prefix=f".build-{key}-") as tmp:
            work = Path(tmp)
            out = work / "out"
            out.mkdir()
            _build(guest, modules_src, work, out)
            out.rename(final)
    return HostImage.from_directory(final, guest)
