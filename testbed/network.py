"""The run's network inside its private namespace: a Linux bridge (the host switch) with a tap per
guest NIC. Built with one `ip -batch` so that setting up costs one process."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from testbed.netns import NetworkNamespace
from testbed.plan import MachinePlan

BRIDGE = "br0"
UPLINK = ("up0", "up1")  # the veth joining host 0's bridge to host 1's
PEER_PORT = "vpeer"   # the bridge end of the veth to the peer namespace
PEER_IFNAME = "eth0"  # its end inside the peer namespace


@dataclass(frozen=True)
class NetworkPlan:
    """One bridge per simulated host (br0, br1), joined by an uplink veth when there are two. The
    peer hangs off br0. Slot 0 taps sit on br0; slot 1 taps (migration destinations) on the last
    host's bridge."""
    bridges: list[str]
    taps: dict[str, str]  # tap -> bridge
    peer_addresses: list[ipaddress.IPv4Interface] = field(default_factory=list)

    @property
    def bridge(self) -> str:
        return self.bridges[0]

    @classmethod
    def for_machines(cls, machines: list[MachinePlan],
                     peer_addresses: list[ipaddress.IPv4Interface] | None = None,
                     hosts: int = 1, with_slot1: bool = False) -> "NetworkPlan":
        bridges = [f"br{i}" for i in range(hosts)]
        taps = {nic.tap: bridges[0] for m in machines for nic in m.nics}
        if with_slot1:
            taps.update({nic.tap: bridges[-1] for m in machines for nic in m.on_slot(1).nics})
        return cls(bridges, taps, list(peer_addresses or []))

    def ip_batch(self) -> str:
        lines = []
        for bridge in self.bridges:
            lines += [f"link add {bridge} type bridge", f"link set {bridge} up"]
        if len(self.bridges) == 2:
            lines += [f"link add {UPLINK[0]} type veth peer name {UPLINK[1]}",
                      f"link set {UPLINK[0]} master {self.bridges[0]}", f"link set {UPLINK[0]} up",
                      f"link set {UPLINK[1]} master {self.bridges[1]}", f"link set {UPLINK[1]} up"]
        for tap, bridge in self.taps.items():
            lines += [f"tuntap add dev {tap} mode tap", f"link set {tap} master {bridge}",
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
