"""Guest image recipes: the flavours the repository has (`minimal` is images/recipe.toml, any other
is images/<flavour>/recipe.toml) and what a recipe says. Kept apart from testbed.images so that
validating a scenario does not load the image builder."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from testbed.errors import TestbedError

IMAGES_DIR = Path(__file__).resolve().parent.parent / "images"
DEFAULT_RECIPE = IMAGES_DIR / "recipe.toml"
DEFAULT_FLAVOUR = "minimal"
# Not guest flavours: the minimal image's overlay, the host VM's overlay (testbed.host_image) and its tools.
_NOT_FLAVOURS = frozenset({"rootfs", "host", "host-tools"})
# Flavours whose userspace runs a DHCP client on the pairs (and reads testbed.netconfig).
DHCP_CLIENT_FLAVOURS = frozenset({"networkd", "networkmanager", "ifupdown", "cloud-init"})


def flavours() -> dict[str, Path]:
    """Each flavour's recipe."""
    found = {DEFAULT_FLAVOUR: DEFAULT_RECIPE}
    for recipe in sorted(IMAGES_DIR.glob("*/recipe.toml")):
        if recipe.parent.name not in _NOT_FLAVOURS:
            found[recipe.parent.name] = recipe
    return found


def flavour_of(recipe_path: Path) -> str:
    return next((name for name, path in flavours().items() if path == recipe_path), recipe_path.parent.name)


def recipe_for(flavour: str) -> Path:
    known = flavours()
    if flavour not in known:
        raise TestbedError(f"no guest image flavour {flavour!r}; known: {', '.join(known)}")
    return known[flavour]


class ImageRecipe(BaseModel):
    model_config = ConfigDict(extra="forbid")
    suite: str
    kernel_package: str
    extra_suites: list[str] = []
    packages: list[str]
    modules: list[str]
    prune: list[str] = []
    # extract: packages unpacked, no maintainer scripts (busybox is PID 1, the testbed writes the
    # accounts). minbase: a configured Debian system (systemd is PID 1, the packages' users exist).
    variant: Literal["extract", "minbase"] = "extract"
    # Trees laid over the root in order, relative to the recipe: "SRC" lands at /, "SRC:DEST" at /DEST.
    overlays: list[str] = ["rootfs"]
    enable: list[str] = []  # systemd units enabled in the image (minbase)
    mask: list[str] = []    # systemd units masked in the image: what a TCG boot need not wait for
    # systemd generators turned off in the image (a link to /dev/null in /etc/systemd/system-generators,
    # systemd's own way): each is a fork and exec of a binary linked to libsystemd-shared, before
    # systemd starts any unit, for hardware (LUKS, dm-verity, GPT auto-discovery) a test guest lacks.
    disable_generators: list[str] = []
    # Python trees that a package ships without byte-code and does not compile when installed; the
    # image's own python3 compiles them at build, so that no boot compiles them under TCG.
    byte_compile: list[str] = []
    # A VM's RAM when its scenario does not say (the image is unpacked into half of it,
    # testbed.guest_memory).
    memory_mib: int = 512
    # Suites whose kernel alone the image takes (`--kernel debian:trixie`), never their userland:
    # set by with_kernel_suite, not by a recipe file.
    kernel_only_suites: list[str] = []

    def overlay_paths(self, recipe_path: Path) -> list[tuple[Path, str]]:
        out = []
        for entry in self.overlays:
            src, _, dest = entry.partition(":")
            out.append(((recipe_path.parent / src).resolve(), dest))
        return out

    @classmethod
    def load(cls, path: Path) -> "ImageRecipe":
        with path.open("rb") as f:
            return cls.model_validate(tomllib.load(f))


def default_memory_mib(flavour: str) -> int:
    return ImageRecipe.load(recipe_for(flavour)).memory_mib


# Suites whose kernel (the image package and its modules, which is all the image takes of a kernel)
# runs under the recipe's own userland: trixie's is 6.12, like bookworm-backports'.
KERNEL_ONLY_SUITES = ("trixie",)


def with_kernel_suite(recipe: ImageRecipe, suite: str | None) -> ImageRecipe:
    """The recipe with Debian's kernel from another of its suites: `bookworm` gives 6.1 and
    `bookworm-backports` 6.12, with the same userland; or from a suite it takes the kernel alone
    from (trixie: its apt sees that suite at a low pin, and mmdebstrap never sees it)."""
    if suite is None:
        return recipe
    suites = [recipe.suite, *recipe.extra_suites]
    if suite in suites:
        return recipe.model_copy(update={"kernel_package": f"linux-image-amd64/{suite}"})
    if suite in KERNEL_ONLY_SUITES:
        return recipe.model_copy(update={"kernel_package": f"linux-image-amd64/{suite}", "kernel_only_suites": [suite]})
    raise TestbedError(f"Debian kernel suite {suite!r}: the image recipe has {suites}, and takes the kernel alone "
                       f"from {list(KERNEL_ONLY_SUITES)}")
