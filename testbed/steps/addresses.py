"""check-addresses: which of a pair's netdevs the guest's userspace gave IPv4 addresses to. The kernel
document's warning is that network managers and DHCP clients configure the slaves too; this is the
step that sees it."""

from __future__ import annotations

from typing import Any

from testbed.errors import StepFailed, WaitTimeout
from testbed.guest_probe import Netdev, read_netdevs
from testbed.run_context import RunContext
from testbed.scenario import CheckAddressesStep
from testbed.steps.registry import handles
from testbed.waiting import wait_until

SETTLED = "/usr/lib/testbed/netconfig-settled"


def missing_holders(netdevs: list[Netdev], mac: str, address: str, holders: list[str]) -> list[str]:
    """Each role in `holders` is there, and each netdev with the pair's MAC in such a role holds `address`."""
    mine = [n for n in netdevs if n.mac == mac]
    return [f"no {role} netdev with MAC {mac}" for role in holders if not any(n.role == role for n in mine)] + \
        [f"{n.name} ({n.role}) does not hold {address} (it has {', '.join(n.ipv4) or 'none'})"
         for n in mine if n.role in holders and address not in n.ipv4]


def address_problems(netdevs: list[Netdev], mac: str, address: str, holders: list[str]) -> list[str]:
    """What differs from: the holders hold `address` (missing_holders), and every other netdev with
    the pair's MAC holds no IPv4 address."""
    return missing_holders(netdevs, mac, address, holders) + \
        [f"{n.name} ({n.role}) holds {', '.join(n.ipv4)}" for n in netdevs
         if n.mac == mac and n.role not in holders and n.ipv4]


def holders(netdevs: list[Netdev], mac: str) -> dict[str, dict[str, Any]]:
    return {n.name: {"role": n.role.value, "ipv4": list(n.ipv4)} for n in netdevs if n.mac == mac}


@handles(CheckAddressesStep)
def check_addresses(ctx: RunContext, step: CheckAddressesStep) -> dict[str, Any]:
    pair = ctx.plan(step.vm).pair(step.pair).pair
    assert pair.address is not None
    shell = ctx.shell(step.vm)
    seen: dict[str, Any] = {"settled": None, "netdevs": []}

    def settled_and_held() -> str | None:
        # The guest's network manager first (a DHCP client still at work may yet configure a slave),
        # then the addresses the roles in `holders` must hold.
        busy = shell.run([SETTLED], timeout=20, check=False)
        seen["settled"] = busy.stdout.strip() or "settled"
        if busy.exit_status:
            return f"the guest's network configuration is still busy: {busy.stdout.strip() or busy.stderr.strip()}"
        seen["netdevs"] = read_netdevs(shell)
        return "; ".join(missing_holders(seen["netdevs"], pair.mac, pair.address.with_prefixlen,
                                         step.holders)) or None
    try:
        waited = wait_until(settled_and_held, ctx.timeout(step.timeout_s),
                            f"{step.vm}/{step.pair}: {', '.join(step.holders)} to hold {pair.address}")
    except WaitTimeout as e:
        raise StepFailed(f"{e}; addresses: {holders(seen['netdevs'], pair.mac)}") from e
    netdevs = seen["netdevs"]
    details = {"waited_s": round(waited, 3), "address": pair.address.with_prefixlen, "dhcp": pair.dhcp,
               "holders": holders(netdevs, pair.mac), "netconfig": seen["settled"]}
    ctx.report.vms[step.vm].netdevs = [n.as_dict() for n in netdevs]
    if problems := address_problems(netdevs, pair.mac, pair.address.with_prefixlen, step.holders):
        raise StepFailed(f"{step.vm}/{step.pair}: expected {pair.address} on {', '.join(step.holders)} only: "
                         + "; ".join(problems))
    return details
