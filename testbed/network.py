"""The run's network inside its private namespace: a Linux bridge (the host switch) with a tap per
guest NIC. Built with one `ip -batch` so that setting up costs one process."""

from __future__ import annotations

from dataclasses import dataclass

from testbed.netns import NetworkNamespace
from testbed.plan import MachinePlan

BRIDGE = "br0"


@dataclass(frozen=True)
class NetworkPlan:
    bridge: str
    taps: list[str]

    @classmethod
    def for_machines(cls, machines: list[MachinePlan]) -> "NetworkPlan":
        return cls(BRIDGE, [nic.tap for m in machines for nic in m.nics])

    def ip_batch(self) -> str:
        lines = [f"link add {self.bridge} type bridge", f"link set {self.bridge} up"]
        for tap in self.taps:
            lines += [f"tuntap add dev {tap} mode tap", f"link set {tap} master {self.bridge}",
                      f"link set {tap} up"]
        return "\n".join(lines) + "\n"

    def apply(self, netns: NetworkNamespace) -> None:
        netns.run(["ip", "-batch", "-"], input=self.ip_batch())
