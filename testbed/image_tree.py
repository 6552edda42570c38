"""What the image builder writes into an unpacked root tree before packing it: root's SSH key and
accounts, busybox's applet links, systemd unit states and the byte-code a package does not ship."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from testbed.debian_apt import _run
from testbed.errors import TestbedError
from testbed.image_recipe import ImageRecipe


def busybox_links(tree: Path) -> None:
    """Symlink busybox applets that no real package in the tree provides."""
    applets = _run([str(tree / "bin" / "busybox"), "--list-full"]).stdout.split()
    for applet in applets:
        link = tree / applet
        if link.exists() or link.is_symlink():
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to("/bin/busybox")


def write_accounts(tree: Path, public_key: str, configured: bool) -> None:
    """Root's SSH key; on an unconfigured (extract) tree, the account files too."""
    etc = tree / "etc"
    if not configured:
        (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
        (etc / "group").write_text("root:x:0:\n")
        (etc / "shadow").write_text("root:*:19000:0:99999:7:::\n")
        (etc / "shells").write_text("/bin/sh\n")
    ssh = tree / "root" / ".ssh"
    ssh.mkdir(parents=True, exist_ok=True)
    ssh.chmod(0o700)
    (ssh / "authorized_keys").write_text(public_key + "\n")
    (ssh / "authorized_keys").chmod(0o600)
    (etc / "dropbear").mkdir(exist_ok=True)


def generate_ssh_key(directory: Path) -> str:
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode()
    (directory / "id_ed25519").write_bytes(private)
    (directory / "id_ed25519").chmod(0o600)
    (directory / "id_ed25519.pub").write_text(public + " failover-testbed\n")
    return public


def systemd_units(tree: Path, recipe: ImageRecipe) -> None:
    generators = tree / "etc" / "systemd" / "system-generators"
    for name in recipe.disable_generators:
        if not (tree / "lib" / "systemd" / "system-generators" / name).exists():
            raise TestbedError(f"disable_generators: the image has no systemd generator {name}")
        generators.mkdir(parents=True, exist_ok=True)
        (generators / name).symlink_to("/dev/null")
    if recipe.enable:
        _run(["chroot", str(tree), "systemctl", "enable", *recipe.enable])
    if recipe.mask:
        _run(["chroot", str(tree), "systemctl", "mask", *recipe.mask])


def mark_updated(tree: Path) -> None:
    """What systemd-update-done writes on an installed system's first boot: with them, the units
    that rebuild state after an upgrade of /usr (ConditionNeedsUpdate: systemd-sysusers, ldconfig,
    the hwdb and journal catalogue updates) are skipped, as on every later boot of that system.
    Written last, so that they are newer than the tree's /usr."""
    for directory in ("etc", "var"):
        (tree / directory / ".updated").write_text(
            "# This file was created by the testbed's image builder, as systemd-update-done would have.\n")


def byte_compile(tree: Path, recipe: ImageRecipe) -> None:
    for directory in recipe.byte_compile:
        if not (tree / directory.lstrip("/")).is_dir():
            raise TestbedError(f"byte_compile: {directory} is not a directory in the image")
        # The image's interpreter, so that the byte-code's magic number is its own; timestamp
        # checking, as Debian's py3compile does.
        _run(["chroot", str(tree), "python3", "-m", "compileall", "-q", directory])
