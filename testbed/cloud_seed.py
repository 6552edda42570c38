"""The NoCloud seed of a `cloud-init` guest: meta-data, user-data and a v2 network-config made from
the scenario, packed by `cloud-localds` (cloud-image-utils) into an ISO 9660 image labelled cidata,
which the guest sees as a read-only virtio disk. This is what a cloud hands a guest: its
network-config names each NIC by its MAC (and renames it with set-name), and cloud-init renders it
through netplan to systemd-networkd.

`netconfig` chooses the match, as it does for the networkd and ifupdown images:
- naive (the default here): `match: {macaddress}` and `set-name: eth<N>`, as NoCloud, ConfigDrive and
  OpenStack give it. The failover master, its standby and the VF share that MAC.
- recommended: `match: {macaddress, driver: net_failover}` and no set-name, the kernel document's
  rule (configure the master only) in v2 terms. Oracle's datasource narrows the match to the
  master's name instead (cloudinit/sources/DataSourceOracle.py, `_ensure_netfailover_safe`)."""

from __future__ import annotations

import logging
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from testbed.errors import TestbedError

if TYPE_CHECKING:
    from testbed.plan import MachinePlan

logger = logging.getLogger(__name__)

FLAVOUR = "cloud-init"
SEED_TOOL = "cloud-localds"


def netconfig_mode(plan: "MachinePlan") -> str:
    return plan.vm.netconfig or "naive"


def network_config(plan: "MachinePlan") -> dict[str, Any]:
    """The v2 network-config: one ethernet per pair with an address."""
    ethernets: dict[str, Any] = {}
    for n, pair in enumerate(p.pair for p in plan.pairs if p.pair.address is not None):
        entry: dict[str, Any] = {"match": {"macaddress": pair.mac}, "set-name": f"eth{n}"}
        if netconfig_mode(plan) == "recommended":
            # Without set-name: cloud-init reads a netdev's driver through its device link, which is
            # virtio_net for the master, so a set-name matched by driver finds no NIC and nothing is
            # renamed or configured (docs/findings/cloud-init-netplan.md).
            entry = {"match": {"macaddress": pair.mac, "driver": "net_failover"}}
        if pair.dhcp:
            entry["dhcp4"] = True
        else:
            entry["addresses"] = [pair.address.with_prefixlen]  # type: ignore[union-attr]
        ethernets[pair.name] = entry
    return {"version": 2, "ethernets": ethernets}


def meta_data(plan: "MachinePlan") -> dict[str, str]:
    return {"instance-id": f"testbed-{plan.name}", "local-hostname": plan.name}


def write_seed(plan: "MachinePlan", directory: Path) -> Path:
    """Writes the seed's three files into directory (kept with the run's artifacts) and packs them
    into directory/seed.iso, which it returns."""
    directory.mkdir(parents=True, exist_ok=True)
    files = {"meta-data": yaml.safe_dump(meta_data(plan), sort_keys=False),
             "user-data": "#cloud-config\n{}\n",
             "network-config": yaml.safe_dump(network_config(plan), sort_keys=False)}
    for name, text in files.items():
        (directory / name).write_text(text)
    seed = directory / "seed.iso"
    argv = [SEED_TOOL, f"--network-config={directory / 'network-config'}", str(seed),
            str(directory / "user-data"), str(directory / "meta-data")]
    try:
        subprocess.run(argv, check=True, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise TestbedError(f"{plan.name}: {SEED_TOOL} is missing; it packs the NoCloud seed of an image: "
                           f"{FLAVOUR} guest (package cloud-image-utils; scripts/setup-host.sh installs it)") from None
    except subprocess.CalledProcessError as e:
        raise TestbedError(f"{plan.name}: {' '.join(argv)} failed with status {e.returncode}: "
                           f"{(e.stderr or e.stdout).strip()[-500:]}") from None
    except subprocess.TimeoutExpired:
        raise TestbedError(f"{plan.name}: {' '.join(argv)} did not finish in 60 s") from None
    logger.info("%s: NoCloud seed %s (netconfig %s)", plan.name, seed, netconfig_mode(plan))
    return seed


def with_seed(plan: "MachinePlan", artifacts_dir: Path, make: bool = True) -> "MachinePlan":
    """The plan of a cloud-init guest with its seed made (in artifacts_dir/<vm>-cloud-init); any
    other plan as it is. make=False names the seed without making it (--dry-run)."""
    if plan.vm.image != FLAVOUR:
        return plan
    directory = artifacts_dir / f"{plan.name}-cloud-init"
    return replace(plan, seed_disk=write_seed(plan, directory) if make else directory / "seed.iso")
