"""Value rules shared by the scenario models: bounds, MACs, IPv4 addresses, names."""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from pydantic import BaseModel, ConfigDict

# Bounds. A scenario is data that CI runs from pull requests, so nothing in it may be unbounded.
MAX_VMS = 8
MAX_PAIRS_PER_VM = 8             # up to 16 pcie-root-ports on pcie.0, from slot 3 upward (of 32)
MAX_TOTAL_MEMORY_MIB = 32768     # all guests together
MAX_KERNEL_ARGS = 64
KERNEL_CMDLINE_MAX = 2048        # x86 COMMAND_LINE_SIZE, with its NUL
CMDLINE_RESERVE = 300            # the testbed's own arguments (console, hostname, mgmt MAC) ...
CMDLINE_RESERVE_PER_PAIR = 80    # ... and per pair (testbed.sriov=, testbed.addr= entries)
MAX_STEPS = 500
MAX_TEXT = 4096                  # description, an exec command, a pause message
MAX_MARKERS = 16
MAX_PEER_ADDRESSES = 16

NAME_RE = r"^[a-z][a-z0-9]{0,7}$"  # short: names end up in QEMU ids and tap names
MAC_RE = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
SCENARIO_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
MARKER_RE = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
QEMU_ID_RE = r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$"  # a QEMU device id (qdev's id_wellformed, bounded)
# The testbed derives MACs from these prefixes (testbed.plan): igb PFs and management NICs.
OWN_MAC_PREFIXES = {"06:54:00": "the igb PFs", "0a:54:00": "the management NICs"}
# Every guest's management NIC (QEMU user-mode networking) has 10.0.2.15/24.
MGMT_NETWORK = ipaddress.IPv4Network("10.0.2.0/24")
THIS_NETWORK = ipaddress.IPv4Network("0.0.0.0/8")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KeyedValueError(ValueError):
    """A model validator's error about one key below the model, e.g. steps[3].vm: the loader shows
    the key instead of the model's own location."""

    def __init__(self, key: str, reason: str):
        super().__init__(reason)
        self.key = key


def check_mac(value: Any, own_ok: bool = False) -> str:
    """A unicast MAC the testbed can give a NIC. own_ok: also one of the MACs it derives itself."""
    if isinstance(value, int) and not isinstance(value, bool):
        raise ValueError("write the MAC in quotes: YAML reads an unquoted MAC such as 52:54:00:00:12:53 "
                         "as a base-60 number")
    if not isinstance(value, str):
        raise ValueError(f"expected a MAC address in quotes, like \"52:54:00:00:12:53\"; got {type(value).__name__}")
    mac = value.lower()
    if not MAC_RE.fullmatch(mac):
        raise ValueError(f"{value[:40]!r} is not a MAC address like 52:54:00:00:12:53")
    if mac == "00:00:00:00:00:00":
        raise ValueError("00:00:00:00:00:00 is not a usable MAC")
    if mac == "ff:ff:ff:ff:ff:ff":
        raise ValueError("ff:ff:ff:ff:ff:ff is the broadcast address; a NIC needs a unicast MAC")
    if int(mac[:2], 16) & 1:
        raise ValueError(f"{mac} is a multicast MAC; a NIC needs a unicast one")
    if not own_ok and mac[:8] in OWN_MAC_PREFIXES:
        raise ValueError(f"{mac} is one of the testbed's own MACs: it derives {mac[:8]}:xx:xx:xx for "
                         f"{OWN_MAC_PREFIXES[mac[:8]]}; use another prefix, e.g. 52:54:00")
    return mac


def check_host_address(iface: ipaddress.IPv4Interface) -> ipaddress.IPv4Interface:
    """An address a guest NIC or the peer can have, in a subnet with room for the other end."""
    ip, net = iface.ip, iface.network
    if ip in THIS_NETWORK:
        raise ValueError(f"{ip} is not a host address (0.0.0.0/8 is 'this network')")
    for test, what in ((ip.is_loopback, "a loopback"), (ip.is_multicast, "a multicast"),
                       (ip.is_link_local, "a link-local"), (ip.is_reserved, "a reserved")):
        if test:
            raise ValueError(f"{ip} is {what} address; give a unicast host address like 192.168.77.2/24")
    if net.prefixlen >= 31:
        raise ValueError(f"{iface.with_prefixlen}: a /{net.prefixlen} leaves no room for the peer; "
                         "give a subnet with the prefix, e.g. 192.168.77.2/24")
    if ip == net.network_address:
        raise ValueError(f"{ip} is the network address of {net}")
    if ip == net.broadcast_address:
        raise ValueError(f"{ip} is the broadcast address of {net}")
    if net.overlaps(MGMT_NETWORK):
        raise ValueError(f"{iface.with_prefixlen}: its subnet {net} overlaps {MGMT_NETWORK}, the management "
                         "network every guest has (SSH)")
    return iface


def check_scenario_name(value: str) -> str:
    if not SCENARIO_NAME_RE.fullmatch(value) or ".." in value:
        raise ValueError(f"{value[:80]!r} is not a usable scenario name: it names the artifacts directory, "
                         "so use 1 to 64 letters, digits, '_', '.' and '-', starting with a letter or "
                         "digit, without '..'")
    return value


def name_from_stem(stem: str) -> str:
    """The default scenario name: the file's stem, made safe for check_scenario_name."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", stem)
    name = re.sub(r"\.{2,}", ".", name).lstrip("_.-")[:64]
    return name if name and SCENARIO_NAME_RE.fullmatch(name) else "scenario"


def check_kernel_args(args: list[str], pairs: int) -> list[str]:
    for i, arg in enumerate(args):
        if not arg.strip():
            raise KeyedValueError(f"kernel_args[{i}]", "an empty kernel argument")
        if not all(" " <= c <= "~" for c in arg):
            raise KeyedValueError(f"kernel_args[{i}]", f"{arg[:40]!r}: kernel arguments are printable ASCII")
        if arg.startswith("testbed."):
            raise KeyedValueError(f"kernel_args[{i}]", f"{arg[:40]!r}: testbed.* arguments are the testbed's own")
    used = len(" ".join(args)) + (1 if args else 0)
    budget = KERNEL_CMDLINE_MAX - CMDLINE_RESERVE - CMDLINE_RESERVE_PER_PAIR * pairs
    if used > budget:
        raise KeyedValueError("kernel_args", f"{used} bytes of kernel arguments; with the testbed's own "
                              f"(up to {KERNEL_CMDLINE_MAX - budget} bytes for {pairs} pair(s)) the command "
                              f"line must fit the kernel's {KERNEL_CMDLINE_MAX} bytes, so at most {budget}")
    return args
