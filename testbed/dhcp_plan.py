"""DHCP in a scenario: the addresses reserved for `address: dhcp` pairs, the rules that tie DHCP and
netconfig to an image flavour, and the dnsmasq argv that serves the reservations. Pure: nothing here
starts a process (testbed.dhcp_server does)."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import TYPE_CHECKING, Any

from testbed.image_recipe import DHCP_CLIENT_FLAVOURS
from testbed.scenario_values import KeyedValueError

if TYPE_CHECKING:
    from testbed.scenario_model import VM, FailoverPair

DEFAULT_DHCP_SUBNET = "192.168.100.0/24"
FIRST_RESERVED_HOST = 10  # .1 upwards is left to the peer; pairs get .10, .11, ...


def reserve_dhcp_addresses(data: Any) -> Any:
    """The raw scenario with every `address: dhcp` (or `dhcp: true` without an address) replaced by
    `dhcp: true` and a reserved address, in the order the pairs are written. Data of the wrong shape
    is returned as it is, for the model's validators to report."""
    if not isinstance(data, dict) or not isinstance(data.get("vms"), list):
        return data
    network = data.get("network")
    raw_subnet = network.get("dhcp_subnet", DEFAULT_DHCP_SUBNET) if isinstance(network, dict) else DEFAULT_DHCP_SUBNET
    try:
        subnet = ipaddress.IPv4Network(str(raw_subnet))
    except ValueError:
        return data  # network.dhcp_subnet's own validation says why
    wanted = [(i, j) for i, vm in enumerate(data["vms"]) if isinstance(vm, dict) and isinstance(vm.get("pairs"), list)
              for j, pair in enumerate(vm["pairs"]) if isinstance(pair, dict)
              and (pair.get("address") == "dhcp" or (pair.get("dhcp") is True and pair.get("address") is None))]
    if not wanted:
        return data
    static = {str(p.get("address", "")).split("/")[0] for vm in data["vms"] if isinstance(vm, dict)
              for p in (vm.get("pairs") or []) if isinstance(p, dict)}
    free = (h for n, h in enumerate(subnet.hosts(), start=1) if n >= FIRST_RESERVED_HOST and str(h) not in static)
    vms = [dict(vm) if isinstance(vm, dict) else vm for vm in data["vms"]]
    for i, j in wanted:
        host = next(free, None)
        if host is None:
            raise KeyedValueError(f"vms[{i}].pairs[{j}].address", f"network.dhcp_subnet {subnet} has no host "
                                  f"address left to reserve (pairs take .{FIRST_RESERVED_HOST} onwards)")
        pairs = list(vms[i]["pairs"])
        pairs[j] = {**pairs[j], "address": f"{host}/{subnet.prefixlen}", "dhcp": True}
        vms[i] = {**vms[i], "pairs": pairs}
    return {**data, "vms": vms}


def check_flavour_options(vm: "VM") -> None:
    """DHCP and netconfig need a guest userspace that has a DHCP client and reads them."""
    if vm.image == "networkmanager":
        _check_networkmanager(vm)
    if vm.image in DHCP_CLIENT_FLAVOURS:
        return
    for j, pair in enumerate(vm.pairs):
        if pair.dhcp:
            raise KeyedValueError(f"pairs[{j}].address", f"address: dhcp needs a guest with a DHCP client "
                                  f"(image: {', '.join(sorted(DHCP_CLIENT_FLAVOURS))}); the {vm.image} image "
                                  "sets static addresses only")
    if vm.netconfig is not None:
        raise KeyedValueError("netconfig", f"netconfig is read by the guest's network manager (image: "
                              f"{', '.join(sorted(DHCP_CLIENT_FLAVOURS))}); the {vm.image} image has none")


def _check_networkmanager(vm: "VM") -> None:
    """The networkmanager flavour runs NM's own defaults: DHCP on every Ethernet device, nothing else."""
    if vm.netconfig is not None:
        raise KeyedValueError("netconfig", "the networkmanager image runs NetworkManager's defaults; netconfig "
                              "chooses networkd's or ifupdown's configuration (image: networkd, ifupdown)")
    for j, pair in enumerate(vm.pairs):
        if pair.address is not None and not pair.dhcp:
            raise KeyedValueError(f"pairs[{j}].address", "the networkmanager image runs NetworkManager's defaults, "
                                  "which configure every Ethernet device by DHCP: use address: dhcp, or none")


def dhcp_pairs(vms: "list[VM]") -> "list[FailoverPair]":
    return [p for vm in vms for p in vm.pairs if p.dhcp]


def dnsmasq_argv(pairs: "list[FailoverPair]", interface: str, lease_file: Path, pid_file: Path) -> list[str]:
    """dnsmasq as a DHCP server only (port=0: no DNS), on the peer's interface, handing each pair its
    reserved address and nothing else, logging every DHCP exchange to stderr for the run's log."""
    subnets = dict.fromkeys(p.address.network for p in pairs if p.address is not None)
    argv = ["dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--port=0",
            f"--interface={interface}", "--bind-interfaces", "--except-interface=lo",
            "--log-dhcp", "--log-facility=-", "--dhcp-authoritative",
            f"--dhcp-leasefile={lease_file}", f"--pid-file={pid_file}", "--user=root", "--group=root"]
    argv += [f"--dhcp-range={net.network_address},static,{net.netmask},1h" for net in subnets]
    argv += [f"--dhcp-host={p.mac},{p.address.ip}" for p in pairs if p.address is not None]
    return argv
