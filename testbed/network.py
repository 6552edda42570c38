"""The run's network inside its private namespace: a Linux bridge (the host switch) with a tap per
guest NIC. Built with one `ip -batch` so that setting up costs one process."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from testbed.netns import NetworkNamespace
from testbed.plan import MachinePlan

BRIDGE = "br0"
PEER_PORT = "vpeer"   # the bridge end of the veth to the peer namespace
PEER_IFNAME = "eth0"  # its end inside the peer namespace


@dataclass(frozen=True)
class NetworkPlan:
    bridge: str
    taps: list[str]
    peer_addresses: list[ipaddress.IPv4Interface] = field(default_factory=list)

    @classmethod
    def for_machines(cls, machines: list[MachinePlan],
                     peer_addresses: list[ipaddress.IPv4Interface] | None = None) -> "NetworkPlan":
        return cls(BRIDGE, [nic.tap for m in machines for nic in m.nics], list(peer_addresses or []))

    def ip_batch(self) -> str:
        lines = [f"link add {self.bridge} type bridge", f"link set {self.bridge} up"]
        for tap in self.taps:
            lines += [f"tuntap add dev {tap} mode tap", f"link set {tap} master {self.bridge}",
                      f"link set {tap} up"]
        return "\n".join(lines) + "\n"

    def apply(self, netns: NetworkNamespace, peer: NetworkNamespace | None = None) -> None:
        netns.run(["ip", "-batch", "-"], input=self.ip_batch())
        if peer is not None:
            # /proc is the host's, so the peer holder's PID names its namespace from inside ours.
            netns.run(["ip", "-batch", "-"], input=(
                f"link add {PEER_PORT} type veth peer name {PEER_IFNAME} netns {peer.pid}\n"
                f"link set {PEER_PORT} master {self.bridge}\nlink set {PEER_PORT} up\n"))
            peer.run(["ip", "-batch", "-"], input="".join(
                f"addr add {a.with_prefixlen} dev {PEER_IFNAME}\n" for a in self.peer_addresses)
                + f"link set {PEER_IFNAME} up\n")
