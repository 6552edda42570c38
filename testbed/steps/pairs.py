"""Reading the guest's netdevs and comparing them with what each failover pair should show."""

from __future__ import annotations

from typing import Callable

from testbed.failover_checks import default_expectation, expectation_now, explain, pair_problems
from testbed.guest_probe import Netdev, parse_netdevs
from testbed.errors import TestbedError
from testbed.guest_shell import GuestShell
from testbed.plan import PairPlan
from testbed.run_context import RunContext
from testbed.scenario import Expectation


class PairsCheck:
    """Reads the guest's netdevs and describes what differs from each pair's expectation (None when
    everything is as expected). `last` keeps the netdevs of the latest reading for the report.
    settle: wait for udev's queue first, so that a passing reading has the final names.

    Every reading after the first blocks in the guest until the netdevs differ from the previous
    reading (or CHANGE_WITHIN_S passed), woken by the kernel's link events, and a reading that finds
    nothing changed says so instead of listing again: polling, and full listings, took the CPU of the
    one-vCPU TCG guest whose boot or re-plug was being waited for (see docs/images.md). With settle,
    a reading whose `udevadm settle` timed out is a failed one: the names may still change."""

    CHANGE_WITHIN_S = 5  # whole seconds (the guest's `timeout` counts them)

    def __init__(self, shell: GuestShell, pairs: list[PairPlan], expect: Callable[[PairPlan], Expectation],
                 settle: bool = False):
        self.shell, self.pairs, self.expect, self.settle = shell, pairs, expect, settle
        self.last: list[Netdev] = []
        self._signature = "-"  # the last reading's, as the guest's netdevs computes it; "-": read at once
        self._problem: str | None = None

    def __call__(self) -> str | None:
        argv = ["/usr/lib/testbed/netdevs", "--since", self._signature, "--within", str(self.CHANGE_WITHIN_S)]
        # the blocking, settle's own 5 s, then the listing, which had 20 s on its own
        result = self.shell.run(argv + (["--settle"] if self.settle else []),
                                timeout=self.CHANGE_WITHIN_S + 5 + 20, check=False)
        if result.exit_status != 0:
            self._signature = "-"
            if result.exit_status == 3:  # its udevadm settle timed out: the names may still change
                return "udev is still busy (udevadm settle did not return)"
            raise TestbedError(f"{self.shell.vm}: netdevs exited {result.exit_status}: {result.stderr.strip()}")
        head, _, listing = result.stdout.partition("\n")
        if not head.startswith("sig\t") or not head[4:]:
            raise TestbedError(f"{self.shell.vm}: netdevs printed no signature first: {result.stdout[:200]!r}")
        if listing.strip() == "unchanged":  # the netdevs of the previous reading, and so its verdict
            if self._signature == "-":
                raise TestbedError(f"{self.shell.vm}: netdevs said unchanged to a first reading")
            self._signature = head[4:]
            return self._problem
        self._signature = head[4:]
        self.last = parse_netdevs(listing)
        problems = [problem for p in self.pairs for problem in pair_problems(self.last, p, self.expect(p))]
        self._problem = explain(problems, self.last) if problems else None
        return self._problem


def pairs_check(ctx: RunContext, vm: str, pair_names: list[str] | None, expect: Expectation | None,
                settle: bool = False) -> PairsCheck:
    pairs = [p for p in ctx.plan(vm).pairs if pair_names is None or p.pair.name in pair_names]
    return PairsCheck(ctx.shell(vm), pairs, lambda p: expect or default_expectation(p), settle=settle)


def expected_now(ctx: RunContext, vm: str, pair_names: list[str] | None = None, settle: bool = False) -> PairsCheck:
    """Each pair as it should show with the NICs plugged now: a primary unplugged by a step (or not
    there at boot) leaves it standby-only, a standby not plugged leaves the primary a plain NIC."""
    absent = frozenset(ctx.absent_devices.get(vm, set()))
    pairs = [p for p in ctx.plan(vm).pairs if pair_names is None or p.pair.name in pair_names]
    return PairsCheck(ctx.shell(vm), pairs, lambda p: expectation_now(p, absent), settle=settle)
