"""The pairs wait blocks in the guest until the netdevs change (woken by the kernel's link events),
instead of listing them over and over: a listing forks a dozen processes per netdev on the guest's
one vCPU (docs/images.md)."""

import shlex
import time
from pathlib import Path

import pytest

from testbed.guest_probe import Role, parse_netdevs
from testbed.runner import RunOptions, live_run
from testbed.scenario import BootStep, CheckNetdevsStep, ExecStep, load_scenario

REPO = Path(__file__).parent.parent
NETDEVS = "/usr/lib/testbed/netdevs"
pytestmark = pytest.mark.guest


def _signature_and_netdevs(stdout: str):
    head, _, listing = stdout.partition("\n")
    assert head.startswith("sig\t"), stdout
    return head.split("\t")[1], parse_netdevs(listing)


def test_the_netdevs_wait_returns_on_a_change_and_not_before(tmp_path):
    scenario = load_scenario(REPO / "scenarios/standby-pci.yaml")
    with live_run(scenario, RunOptions(artifacts_dir=tmp_path / "art")) as run:
        assert run.step(BootStep(action="boot")).ok
        now = run.step(ExecStep(action="exec", vm="vm1", command=[NETDEVS, "--since", "-", "--settle"]))
        assert now.ok, now.error
        signature, netdevs = _signature_and_netdevs(now.details["stdout"])
        primary = next(n.name for n in netdevs if n.role == Role.PRIMARY)
        # The boot wait ended only once udev's coldplug had renamed every NIC: the minimal image loads
        # the NIC drivers before udevd runs, and `udevadm settle` without udevd returns at once.
        assert not [n.name for n in netdevs if n.name.startswith("eth")], netdevs

        # Nothing changes: it waits out --within and says so, without listing again.
        started = time.monotonic()
        same = run.step(ExecStep(action="exec", vm="vm1", command=[NETDEVS, "--since", signature, "--within", "3"]))
        waited = time.monotonic() - started
        assert same.ok and same.details["stdout"].splitlines() == [f"sig\t{signature}", "unchanged"], same.details
        assert waited >= 3, f"returned after {waited:.1f}s with nothing changed"

        # The primary's link goes down 1 s in: the wait ends then, long before its 60 s, with the new state.
        started = time.monotonic()
        changed = run.step(ExecStep(action="exec", vm="vm1", command=(
            f"(sleep 1; ip link set {primary} down) & exec {NETDEVS} --since {shlex.quote(signature)} --within 60")))
        waited = time.monotonic() - started
        assert changed.ok, changed.error
        after, netdevs = _signature_and_netdevs(changed.details["stdout"])
        assert after != signature
        assert next(n.operstate for n in netdevs if n.name == primary) == "down"
        assert waited < 45, f"the wait saw the link go down only after {waited:.1f}s"

        # The pairs check sees the downed primary; a waiting one, whose later readings block in the
        # guest, passes once the link is back up (e1000e's autonegotiation takes a few seconds).
        down = run.step(CheckNetdevsStep(action="check-netdevs", vm="vm1"))
        assert not down.ok and f"primary {primary} is down, not up" in down.error
        assert run.step(ExecStep(action="exec", vm="vm1", command=["ip", "link", "set", primary, "up"])).ok
        up = run.step(CheckNetdevsStep(action="check-netdevs", vm="vm1", wait=True, timeout_s=60))
        assert up.ok, up.error
