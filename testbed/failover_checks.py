"""Whether the guest's netdevs show a failover pair as expected. Pure: facts in, problems out."""

from __future__ import annotations

from testbed.guest_probe import Netdev, Role, describe
from testbed.plan import PairPlan
from testbed.scenario import Expectation


def default_expectation(pair: PairPlan) -> Expectation:
    """What a correct guest shows for this pair once it has settled."""
    standby = pair.pair.standby
    if not standby.failover or standby.legacy_virtio:
        return Expectation.NO_FAILOVER
    return Expectation.PAIRED if pair.primary else Expectation.STANDBY_ONLY


def expectation_now(pair: PairPlan, absent: set[str] | frozenset[str]) -> Expectation:
    """What the pair should show with the NICs that are plugged now (absent: device ids not plugged)."""
    standby_here = pair.standby.device_id not in absent
    primary_here = pair.primary is not None and pair.primary.device_id not in absent
    if not standby_here:
        return Expectation.PRIMARY_ONLY if primary_here else Expectation.ABSENT
    base = default_expectation(pair)
    return Expectation.STANDBY_ONLY if base == Expectation.PAIRED and not primary_here else base


def _without_standby(netdevs: list[Netdev], pair: PairPlan, expect: Expectation) -> list[str]:
    mac, name = pair.pair.mac, pair.pair.name
    with_mac = [n for n in netdevs if n.mac == mac or n.perm_addr == mac]
    problems = [f"pair {name}: expected no failover master for {mac}, found {n.name}"
                for n in with_mac if n.role == Role.FAILOVER]
    if expect == Expectation.ABSENT:
        return problems + [f"pair {name}: expected no netdev with MAC {mac}, found {n.name} ({n.driver})"
                           for n in with_mac if n.role != Role.FAILOVER]
    plain = [n for n in with_mac if n.driver == pair.guest_primary_driver and n.master is None]
    if len(plain) != 1 or len(with_mac) != 1:
        problems.append(f"pair {name}: expected only a plain {pair.guest_primary_driver} netdev with MAC {mac}, "
                        f"found {[f'{n.name} ({n.driver}, master {n.master})' for n in with_mac]}")
    return problems


def pair_problems(netdevs: list[Netdev], pair: PairPlan, expect: Expectation) -> list[str]:
    """Everything that differs from the expectation; empty means the check passes."""
    mac = pair.pair.mac
    name = pair.pair.name
    if expect in (Expectation.PRIMARY_ONLY, Expectation.ABSENT):
        return _without_standby(netdevs, pair, expect)
    masters = [n for n in netdevs if n.role == Role.FAILOVER and n.mac == mac]
    problems: list[str] = []
    if expect == Expectation.NO_FAILOVER:
        if masters:
            problems.append(f"pair {name}: expected no failover master for {mac}, found {masters[0].name}")
        plain = [n for n in netdevs if n.mac == mac and n.driver == "virtio_net" and n.master is None]
        if len(plain) != 1:
            problems.append(f"pair {name}: expected one plain virtio_net netdev with MAC {mac}, found {len(plain)}")
        return problems

    if len(masters) != 1:
        return [f"pair {name}: expected one failover master with MAC {mac}, found {len(masters)}"]
    master = masters[0]
    if master.driver != "net_failover":
        problems.append(f"pair {name}: master {master.name} has driver {master.driver}, not net_failover")
    standbys = [n for n in netdevs if n.role == Role.STANDBY and n.master == master.name]
    primaries = [n for n in netdevs if n.role == Role.PRIMARY and n.master == master.name]
    if len(standbys) != 1:
        problems.append(f"pair {name}: expected one standby enslaved to {master.name}, found {len(standbys)}")
    else:
        sby = standbys[0]
        # udev names a standby by its own PCI path plus "n" and its phys_port_name ("sby"): the master
        # shares that path name until something renames it (cloud-init's set-name does, the standby
        # keeps its name), so the suffix is what holds.
        if not sby.name.endswith("nsby"):
            problems.append(f"pair {name}: standby is named {sby.name}, expected a name ending in nsby "
                            f"(udev's, from its phys_port_name sby; {master.name}nsby before any rename)")
        if sby.driver != "virtio_net":
            problems.append(f"pair {name}: standby {sby.name} has driver {sby.driver}, not virtio_net")
        if sby.perm_addr != mac:
            problems.append(f"pair {name}: standby {sby.name} has permanent MAC {sby.perm_addr}, not {mac}")
    if expect == Expectation.PAIRED:
        if len(primaries) != 1:
            problems.append(f"pair {name}: expected one primary enslaved to {master.name}, found {len(primaries)}")
        else:
            pri = primaries[0]
            want = pair.guest_primary_driver
            if pri.driver != want:
                problems.append(f"pair {name}: primary {pri.name} has driver {pri.driver}, expected {want}")
            if pri.perm_addr != mac:
                problems.append(f"pair {name}: primary {pri.name} has permanent MAC {pri.perm_addr}, not {mac}")
            if pri.operstate != "up":
                # net_failover only transmits on a primary that is up and running
                problems.append(f"pair {name}: primary {pri.name} is {pri.operstate}, not up")
    elif primaries:
        problems.append(f"pair {name}: expected no primary, found {primaries[0].name} ({primaries[0].driver})")
    return problems


def explain(problems: list[str], netdevs: list[Netdev]) -> str:
    return "; ".join(problems) + f". Guest netdevs: {describe(netdevs)}"
