"""Guest images: a Debian kernel plus an initramfs built from Debian packages by images/recipe.toml.

An image is cached under a key that hashes the recipe, the guest overlay files and the package
versions apt resolves for them, so a new kernel upload or a recipe edit builds a new image while an
unchanged recipe reuses the old one. Builds are serialised per key with a file lock, so concurrent
pytest workers build an image once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import lzma
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from testbed.artifacts import write_whole
from testbed.cache import cache_root
from testbed.debian_apt import PrivateApt, _run, debian_mirror
from testbed import image_tree
from testbed.errors import TestbedError
from testbed.guest_memory import rootfs_bytes
from testbed.image_recipe import (DEFAULT_RECIPE, IMAGES_DIR, ImageRecipe, flavour_of, recipe_for,  # noqa: F401
                                  with_kernel_suite)

REPO_ROOT = IMAGES_DIR.parent
logger = logging.getLogger(__name__)




@dataclass(frozen=True)
class LocalKernel:
    """A kernel the user built: a bzImage and its /lib/modules/<release> directory."""

    bzimage: Path
    modules_dir: Path


@dataclass(frozen=True)
class GuestImage:
    directory: Path
    kernel: Path
    initrd: Path
    ssh_key: Path
    kernel_release: str
    manifest: dict

    @classmethod
    def from_directory(cls, directory: Path) -> "GuestImage":
        manifest = json.loads((directory / "manifest.json").read_text())
        return cls(directory, directory / "vmlinuz", directory / "initrd.img",
                   directory / "id_ed25519", manifest["kernel_release"], manifest)


@dataclass
class ResolvedPackages:
    versions: dict[str, str]  # package -> version, what the image will contain
    kernel_image_package: str | None


def resolve(recipe: ImageRecipe, apt: PrivateApt, local_kernel: LocalKernel | None) -> ResolvedPackages:
    """Package versions for the recipe; remembered until the apt lists are next refreshed."""
    apt.update()
    question = json.dumps([recipe.packages, recipe.kernel_package, apt.sources_lines, local_kernel is None,
                           (apt.root / "updated").stat().st_mtime_ns])
    memo = apt.root / f"resolved-{hashlib.sha256(question.encode()).hexdigest()[:16]}.json"
    if memo.exists():
        return ResolvedPackages(**json.loads(memo.read_text()))
    resolved = _resolve_now(recipe, apt, local_kernel)
    memo.write_text(json.dumps(resolved.__dict__))
    return resolved


def _resolve_now(recipe: ImageRecipe, apt: PrivateApt, local_kernel: LocalKernel | None) -> ResolvedPackages:
    versions = {p: apt.show(p)["Version"] for p in recipe.packages}
    if local_kernel is not None:
        return ResolvedPackages(versions, None)
    meta = apt.show(recipe.kernel_package)
    image_pkg = meta["Depends"].split(",")[0].split()[0]
    versions[image_pkg] = apt.show(f"{image_pkg}={meta['Version']}")["Version"]
    return ResolvedPackages(versions, image_pkg)


def _hash_tree(h: "hashlib._Hash", root: Path) -> None:
    for path in sorted(root.rglob("*")):
        h.update(str(path.relative_to(root)).encode())
        h.update(oct(path.lstat().st_mode).encode())
        if path.is_symlink():  # a link into the image (e.g. /init), never followed on the build host
            h.update(os.readlink(path).encode())
        elif path.is_file():
            h.update(path.read_bytes())


def image_key(recipe_path: Path, resolved: ResolvedPackages, local_kernel: LocalKernel | None) -> str:
    h = hashlib.sha256(Path(__file__).read_bytes())  # the builder's own code shapes the image too
    h.update(Path(image_tree.__file__).read_bytes())
    h.update(recipe_path.read_bytes())
    for src, dest in ImageRecipe.load(recipe_path).overlay_paths(recipe_path):
        h.update(f"{src.name}:{dest}".encode())
        if src.is_dir():
            _hash_tree(h, src)
        else:
            h.update(src.read_bytes())
    h.update(json.dumps(resolved.versions, sort_keys=True).encode())
    if local_kernel:
        h.update(local_kernel.bzimage.read_bytes())
        for ko in sorted(local_kernel.modules_dir.rglob("*")):
            st = ko.stat()
            h.update(f"{ko}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:20]


def _module_closure(modules_dir: Path, wanted: list[str]) -> list[str]:
    """Relative paths of the wanted modules and everything they depend on (per modules.dep)."""
    deps: dict[str, list[str]] = {}
    by_name: dict[str, str] = {}
    for line in (modules_dir / "modules.dep").read_text().splitlines():
        path, _, rest = line.partition(":")
        deps[path] = rest.split()
        name = Path(path).name.split(".ko")[0].replace("-", "_")
        by_name[name] = path
    builtin = {Path(l).name.split(".ko")[0].replace("-", "_")
               for l in (modules_dir / "modules.builtin").read_text().split()}
    out: list[str] = []
    todo = []
    for name in wanted:
        key = name.replace("-", "_")
        if key in builtin:
            continue
        if key not in by_name:
            raise TestbedError(f"kernel module {name!r} is neither built in nor in {modules_dir}")
        todo.append(by_name[key])
    while todo:
        path = todo.pop()
        if path not in out:
            out.append(path)
            todo.extend(deps[path])
    return out


def _install_modules(src: Path, dest_root: Path, release: str, wanted: list[str]) -> None:
    if not (src / "modules.dep").exists():
        # Debian ships modules.dep from postinst, not in the package.
        _run(["depmod", "-b", str(src.parent.parent.parent), release])
    dest = dest_root / "lib" / "modules" / release
    dest.mkdir(parents=True, exist_ok=True)
    for rel in _module_closure(src, wanted):
        target = dest / rel.removesuffix(".xz").removesuffix(".zst").removesuffix(".gz")
        target.parent.mkdir(parents=True, exist_ok=True)
        data = (src / rel).read_bytes()
        # Decompressed here so the slow TCG guest does not run xz on its boot path.
        target.write_bytes(lzma.decompress(data) if rel.endswith(".xz") else data)
    for name in ("modules.builtin", "modules.builtin.modinfo", "modules.order"):
        if (src / name).exists():
            shutil.copy2(src / name, dest / name)
    _run(["depmod", "-b", str(dest_root), release])


def _pack_initramfs(tree: Path, output: Path) -> None:
    files = sorted(str(p.relative_to(tree)) for p in tree.rglob("*"))
    with output.open("wb") as out:
        cpio = subprocess.Popen(["cpio", "--quiet", "-o", "-H", "newc", "-R", "0:0"], cwd=tree,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        # The kernel only reads lz4's legacy frame format; lz4 decompresses fastest under TCG.
        lz4 = subprocess.Popen(["lz4", "-l", "-9", "-q", "-", "-"], stdin=cpio.stdout, stdout=out)
        assert cpio.stdin and cpio.stdout
        cpio.stdout.close()
        cpio.stdin.write(("\n".join(files) + "\n").encode())
        cpio.stdin.close()
        if cpio.wait() or lz4.wait():
            raise TestbedError(f"packing the initramfs failed (cpio {cpio.returncode}, lz4 {lz4.returncode})")


def _build(recipe: ImageRecipe, recipe_path: Path, apt: PrivateApt, resolved: ResolvedPackages,
           local_kernel: LocalKernel | None, work: Path, out: Path, apt_lock: FileLock) -> None:
    """apt_lock: the private apt root's, held only while this build uses that root (the kernel's
    download). mmdebstrap runs its own apt in the tree: held through a whole build, the lock kept
    every run on the machine from starting while a flavour built (a cold CI run: 245 s for a test
    whose image was long built)."""
    # the kernel first: its version was resolved a moment ago, and a mirror moves on
    if local_kernel is None:
        assert resolved.kernel_image_package
        version = resolved.versions[resolved.kernel_image_package]
        kdir = work / "kernel"
        kdir.mkdir()
        with apt_lock:
            deb = apt.download(f"{resolved.kernel_image_package}={version}", kdir)
        _run(["dpkg-deb", "-x", str(deb), str(kdir / "x")])
        # trixie's kernel packages put the modules under /usr/lib (merged /usr), bookworm's under /lib
        modules = next(p for p in (kdir / "x" / "usr" / "lib" / "modules", kdir / "x" / "lib" / "modules") if p.is_dir())
        (release,) = [p.name for p in modules.iterdir()]
        shutil.copy2(kdir / "x" / "boot" / f"vmlinuz-{release}", out / "vmlinuz")
        modules_src = modules / release
    else:
        release = local_kernel.modules_dir.name
        shutil.copy2(local_kernel.bzimage, out / "vmlinuz")
        modules_src = local_kernel.modules_dir
    tree = work / "tree"
    mode = "root" if os.geteuid() == 0 else "unshare"
    _run(["mmdebstrap", "--quiet", f"--mode={mode}", f"--variant={recipe.variant}",
          "--include=" + ",".join(recipe.packages), "--format=directory",
          recipe.suite, str(tree), *apt.userland_lines])
    for rel in recipe.prune:
        p = tree / rel
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()

    _install_modules(modules_src, tree, release, recipe.modules)

    for src, dest in recipe.overlay_paths(recipe_path):
        target = tree / dest
        if src.is_dir():
            shutil.copytree(src, target, dirs_exist_ok=True, symlinks=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)
    for mountpoint in ("proc", "sys", "dev", "run", "tmp", "root"):
        (tree / mountpoint).mkdir(exist_ok=True)
    if "busybox" in recipe.packages:
        image_tree.busybox_links(tree)
    image_tree.write_accounts(tree, image_tree.generate_ssh_key(out), configured=recipe.variant != "extract")
    image_tree.systemd_units(tree, recipe)
    image_tree.byte_compile(tree, recipe)
    if recipe.variant == "minbase":
        image_tree.mark_updated(tree)
    _pack_initramfs(tree, out / "initrd.img")
    manifest = {
        "kernel_release": release,
        "flavour": flavour_of(recipe_path),
        "packages": resolved.versions,
        "mirror": apt.mirror,
        "local_kernel": str(local_kernel.bzimage) if local_kernel else None,
        "initrd_bytes": (out / "initrd.img").stat().st_size,
        "rootfs_bytes": rootfs_bytes(tree),
        "built_at": time.time(),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


def ensure_image(recipe_path: Path = DEFAULT_RECIPE, local_kernel: LocalKernel | None = None,
                 cache: Path | None = None, kernel_suite: str | None = None,
                 flavour: str | None = None) -> GuestImage:
    """Returns the cached image for the recipe (or the flavour's), building it first if needed
    (under a file lock)."""
    cache = cache or cache_root()
    if flavour is not None:
        recipe_path = recipe_for(flavour)
    recipe = with_kernel_suite(ImageRecipe.load(recipe_path), kernel_suite)
    mirror = debian_mirror(known=cache / "apt" / "mirror")
    # a kernel-only suite gets an apt root of its own: the shared one's sources stay the recipes'
    root = cache / "apt" if not recipe.kernel_only_suites else cache / f"apt+{'+'.join(recipe.kernel_only_suites)}"
    apt = PrivateApt(root, mirror, [recipe.suite, *recipe.extra_suites], recipe.kernel_only_suites)
    write_whole(apt.root / "mirror", mirror + "\n")
    with FileLock(str(cache / "apt.lock"), timeout=600):
        resolved = resolve(recipe, apt, local_kernel)
    key = image_key(recipe_path, resolved, local_kernel)
    final = cache / "images" / key
    if (final / "manifest.json").exists():
        return GuestImage.from_directory(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(final) + ".lock", timeout=900):
        if (final / "manifest.json").exists():
            return GuestImage.from_directory(final)
        logger.info("building guest image %s", key)
        with tempfile.TemporaryDirectory(dir=final.parent, prefix=f".build-{key}-") as tmp:
            work = Path(tmp)
            out = work / "out"
            out.mkdir()
            _build(recipe, recipe_path, apt, resolved, local_kernel, work, out, FileLock(str(cache / "apt.lock"), timeout=600))
            out.rename(final)
    return GuestImage.from_directory(final)
