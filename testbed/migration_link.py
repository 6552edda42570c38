"""A migration stream over TCP that crosses the uplink between the two simulated hosts, and the
shaping of that uplink (tc: tbf for a rate alone, netem for delay and loss).

Both QEMUs run in the run's namespace, where a connection between two local addresses would never
leave the loopback. So the destination QEMU listens on an address of the destination host's bridge,
and the connection is opened from a small namespace of its own that hangs off the source host's
bridge: the stream goes source bridge -> uplink -> destination bridge. The source QEMU gets the
connected socket as a file descriptor (QMP getfd, `migrate fd:`). Addresses come from 198.18.0.0/15
(RFC 2544, benchmarking), which no scenario's guests use on these bridges; the run's namespace only
answers ARP on the bridge that holds the address (arp_ignore=1), so the frames really cross."""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass

from testbed.errors import StepFailed, TestbedError
from testbed.netns import NetworkNamespace
from testbed.network import UPLINK

logger = logging.getLogger(__name__)

PORT_BASE = 4600


@dataclass(frozen=True)
class LinkEnd:
    bridge: str     # the bridge in the run's namespace that holds the listening address
    listen: str     # the destination QEMU's address on it
    veth: str       # the connector's veth, on the other bridge
    connect: str    # the connector's address


# A destination on host 2 (br1) is reached from the connector's end on br0, and the other way round.
ENDS = {1: LinkEnd("br1", "198.18.0.1", "mga", "198.18.0.2"), 0: LinkEnd("br0", "198.18.0.5", "mgb", "198.18.0.6")}


class MigrationLink:
    def __init__(self, netns: NetworkNamespace):
        self._netns = netns
        self._connector = NetworkNamespace.create()
        try:
            lines = []
            for slot, end in ENDS.items():
                other = ENDS[1 - slot].bridge  # the connector hangs off the source's bridge
                lines += [f"link add {end.veth} type veth peer name c{end.veth} netns {self._connector.pid}",
                          f"link set {end.veth} master {other}", f"link set {end.veth} up",
                          f"address add {end.listen}/30 dev {end.bridge}"]
            netns.run(["sysctl", "-q", "-w", "net.ipv4.conf.all.arp_ignore=1", "net.ipv4.conf.all.arp_announce=2"])
            netns.run(["ip", "-batch", "-"], input="\n".join(lines) + "\n")
            self._connector.run(["ip", "-batch", "-"], input="".join(
                f"address add {end.connect}/30 dev c{end.veth}\nlink set c{end.veth} up\n" for end in ENDS.values()))
        except BaseException:
            self._connector.close()
            raise

    def incoming_uri(self, destination_slot: int, number: int) -> str:
        return f"tcp:{ENDS[destination_slot].listen}:{PORT_BASE + number}"

    def connect(self, destination_slot: int, number: int, timeout: float) -> socket.socket:
        """A TCP connection to the destination's listening address, opened from the source's side."""
        end = ENDS[destination_slot]
        try:
            return self._connector.connect_tcp(end.listen, PORT_BASE + number, timeout)
        except ConnectionError as e:
            raise StepFailed(f"the migration connection to {end.listen}:{PORT_BASE + number} across the uplink "
                             f"failed: {e}") from e

    def close(self) -> None:
        self._connector.close()


def shape_uplink(netns: NetworkNamespace, rate_mbit: float | None, delay_ms: float, loss_percent: float,
                 clear: bool) -> list[list[str]]:
    """The same shaping on each end of the uplink veth (so on each direction); returns the commands."""
    done = []
    for dev in UPLINK:
        if clear:
            argv = ["tc", "qdisc", "del", "dev", dev, "root"]
        elif delay_ms or loss_percent:
            argv = ["tc", "qdisc", "replace", "dev", dev, "root", "netem", "delay", f"{delay_ms:g}ms",
                    "loss", f"{loss_percent:g}%", *(["rate", f"{rate_mbit:g}mbit"] if rate_mbit else [])]
        else:
            # tbf: a burst of at least one MTU-sized frame per 10 ms tick at the rate
            burst = max(16 * 1024, int((rate_mbit or 0) * 1e6 / 8 / 100))
            argv = ["tc", "qdisc", "replace", "dev", dev, "root", "tbf", "rate", f"{rate_mbit:g}mbit",
                    "burst", str(burst), "latency", "200ms"]
        try:
            netns.run(argv)
        except TestbedError as e:
            if clear and any(text in str(e) for text in ("No such file", "Cannot delete qdisc with handle of zero")):
                continue  # nothing to clear
            if "qdisc kind is unknown" in str(e):
                raise StepFailed(f"this host's kernel has no {argv[6]} qdisc (sch_{argv[6]}): "
                                 f"{'delay_ms and loss_percent need netem' if argv[6] == 'netem' else 'rate_mbit needs tbf'}"
                                 f"; `{' '.join(argv)}` said: {e}") from e
            raise StepFailed(f"shaping the uplink failed: `{' '.join(argv)}`: {e}") from e
        done.append(argv)
    return done
