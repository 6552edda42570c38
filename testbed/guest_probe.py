"""What the guest's kernel shows: every netdev with its role, derived from facts, never from names."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum

from testbed.guest_shell import GuestShell


class Role(StrEnum):
    FAILOVER = "failover"
    STANDBY = "standby"
    PRIMARY = "primary"
    OTHER = "other"


@dataclass(frozen=True)
class Netdev:
    name: str
    role: Role
    driver: str | None
    master: str | None
    mac: str
    perm_addr: str | None
    operstate: str
    phys_port_name: str | None
    rx_packets: int = 0
    tx_packets: int = 0
    ipv4: tuple[str, ...] = ()  # its IPv4 addresses, ADDR/PREFIX


    def as_dict(self) -> dict:
        return asdict(self)


def _none(value: str) -> str | None:
    return None if value in ("-", "not set", "") else value


def count(value: str) -> int:
    """A counter read from sysfs; empty when the netdev vanished while it was being read."""
    return int(value) if value.isdigit() else 0


def parse_netdevs(text: str) -> list[Netdev]:
    """Parses the guest's /usr/lib/testbed/netdevs output and assigns roles.

    failover: driver net_failover. standby: enslaved to a failover master and either named port
    'sby' or driven by virtio_net. primary: any other netdev enslaved to a failover master."""
    rows = []
    for line in text.splitlines():
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 10 or not fields[3]:
            continue  # the netdev vanished while the guest was reading it (an unplug in progress)
        name, driver, master, mac, perm, oper, ppn, rx, tx, ipv4 = fields
        rows.append((name, _none(driver), _none(master), mac, _none(perm), oper, _none(ppn), count(rx), count(tx),
                     tuple(a for a in ipv4.split(",") if a and a != "-")))
    failover_masters = {r[0] for r in rows if r[1] == "net_failover"}
    out = []
    for name, driver, master, mac, perm, oper, ppn, rx, tx, ipv4 in rows:
        if name in failover_masters:
            role = Role.FAILOVER
        elif master in failover_masters:
            role = Role.STANDBY if (ppn == "sby" or driver == "virtio_net") else Role.PRIMARY
        else:
            role = Role.OTHER
        out.append(Netdev(name, role, driver, master, mac, perm, oper, ppn, rx, tx, ipv4))
    return out


def read_netdevs(shell: GuestShell, scaled: bool = True) -> list[Netdev]:
    return parse_netdevs(shell.run(["/usr/lib/testbed/netdevs"], timeout=20, scaled=scaled).stdout)


def describe(netdevs: list[Netdev]) -> str:
    return "; ".join(f"{n.name}[{n.role}, {n.driver}, master={n.master}, mac={n.mac}, perm={n.perm_addr}, "
                     f"{n.operstate}]" for n in netdevs)
