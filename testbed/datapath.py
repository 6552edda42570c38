"""Which slave carried the traffic: per-step deltas of the guest's per-slave packet counters."""

from __future__ import annotations

from typing import Any

from typing import TYPE_CHECKING

from testbed.guest_probe import count
from testbed.plan import MachinePlan

if TYPE_CHECKING:
    from testbed.guest_shell import GuestShell

Snapshot = dict[str, dict[str, dict[str, dict[str, Any]]]]   # vm -> pair -> role -> {name, rx, tx}


def parse_counters(text: str, plan: MachinePlan) -> dict[str, dict[str, dict[str, Any]]]:
    """Parses /usr/lib/testbed/counters. Roles without ethtool: the failover master is the netdev
    with the pair's MAC that others are enslaved to; its slave with port name 'sby' is the standby
    (as net_failover names it), any other slave the primary."""
    rows = [f for f in (line.split("\t") for line in text.splitlines()) if len(f) == 6 and f[2]]
    masters = {r[1] for r in rows if r[1] != "-"}
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for p in plan.pairs:
        roles: dict[str, dict[str, Any]] = {}
        master = next((r for r in rows if r[0] in masters and r[2] == p.pair.mac), None)
        if master is not None:
            roles["failover"] = {"name": master[0], "rx": count(master[4]), "tx": count(master[5])}
            for name, parent, _, ppn, rx, tx in rows:
                if parent == master[0]:
                    role = "standby" if ppn == "sby" else "primary"
                    roles[role] = {"name": name, "rx": count(rx), "tx": count(tx)}
        out[p.pair.name] = roles
    return out


def read_counters(shell: "GuestShell", plan: MachinePlan) -> dict[str, dict[str, dict[str, Any]]]:
    return parse_counters(shell.run(["/usr/lib/testbed/counters"], timeout=20).stdout, plan)


def delta(before: Snapshot, after: Snapshot) -> Snapshot:
    """Per role, packets between two snapshots, for roles held by the same netdev at both ends."""
    out: Snapshot = {}
    for vm, pairs in after.items():
        for pair, roles in pairs.items():
            for role, now in roles.items():
                then = before.get(vm, {}).get(pair, {}).get(role)
                # Counters that went back belong to a netdev made again under the same name (a re-plug).
                if (then is not None and then["name"] == now["name"]
                        and (role == "failover" or (now["rx"] >= then["rx"] and now["tx"] >= then["tx"]))):
                    out.setdefault(vm, {}).setdefault(pair, {})[role] = {
                        "name": now["name"], "rx": now["rx"] - then["rx"], "tx": now["tx"] - then["tx"]}
    return out


def stable(before: Snapshot, after: Snapshot, vm: str, pair: str) -> bool:
    """True when the pair's slaves were the same netdevs at both ends (no unplug/plug in between)."""
    names = lambda s: {r: v["name"] for r, v in s.get(vm, {}).get(pair, {}).items()}  # noqa: E731
    return bool(names(before)) and names(before) == names(after)


def path_shares(deltas: list[Snapshot], vm: str, pair: str) -> tuple[dict[str, float], int]:
    """Share of the slaves' packets (rx + tx) that each slave carried over the given step deltas,
    and their total. The slaves, not the master, are the reference: net_failover folds a departing
    slave's counters out of the master's, so the master's deltas jump around an unplug."""
    per_role = {"standby": 0, "primary": 0}
    for d in deltas:
        roles = d.get(vm, {}).get(pair, {})
        for role in per_role:
            if role in roles:
                per_role[role] += max(0, roles[role]["rx"] + roles[role]["tx"])
    total = sum(per_role.values())
    shares = {r: (v / total if total else 0.0) for r, v in per_role.items()}
    return shares, total
