"""Role derivation and pair checks, fed with netdev tables captured from real guests."""

from pathlib import Path

import pytest

from testbed.failover_checks import pair_problems
from testbed.guest_probe import Role, parse_netdevs
from testbed.plan import plan_machines
from testbed.scenario import Expectation, load_scenario

SCENARIOS = Path(__file__).parent.parent / "scenarios"

# /usr/lib/testbed/netdevs in the standby-igb-vf guest (name driver master mac perm operstate ppn rx tx)
IGB_VF_GUEST = """\
enp0s2\tvirtio_net\t-\t0a:54:00:00:00:01\t0a:54:00:00:00:01\tup\t-\t10\t20\t-
enp1s0\tnet_failover\t-\t52:54:00:00:12:53\t52:54:00:00:12:53\tup\t-\t10\t20\t-
enp1s0nsby\tvirtio_net\tenp1s0\t52:54:00:00:12:53\t52:54:00:00:12:53\tup\tsby\t10\t20\t-
enp2s0\tigb\t-\t06:54:00:00:00:01\t06:54:00:00:00:01\tup\t-\t10\t20\t-
enp2s0v0\tigbvf\tenp1s0\t52:54:00:00:12:53\t52:54:00:00:12:53\tup\t-\t10\t20\t-
lo\t-\t-\t00:00:00:00:00:00\tnot set\tunknown\t-\t10\t20\t-
"""


@pytest.fixture
def pair():
    return plan_machines(load_scenario(SCENARIOS / "standby-igb-vf.yaml"))[0].pairs[0]


def test_roles_come_from_drivers_and_masters():
    roles = {n.name: n.role for n in parse_netdevs(IGB_VF_GUEST)}
    assert roles == {"enp0s2": Role.OTHER, "enp1s0": Role.FAILOVER, "enp1s0nsby": Role.STANDBY,
                     "enp2s0": Role.OTHER, "enp2s0v0": Role.PRIMARY, "lo": Role.OTHER}


def test_a_complete_pair_passes(pair):
    assert pair_problems(parse_netdevs(IGB_VF_GUEST), pair, Expectation.PAIRED) == []


@pytest.mark.parametrize("edit,problem", [
    (("enp2s0v0\tigbvf\tenp1s0", "enp2s0v0\tigbvf\t-"), "expected one primary enslaved to enp1s0, found 0"),
    (("enp1s0nsby", "enp1s0sby"), "standby is named enp1s0sby, expected a name ending in nsby"),
    (("enp2s0v0\tigbvf", "enp2s0v0\te1000e"), "driver e1000e, expected igbvf"),
    (("52:54:00:00:12:53\tup\t-\t10\t20\t-\nlo", "52:54:00:00:12:99\tup\t-\t10\t20\t-\nlo"), "permanent MAC 52:54:00:00:12:99"),
    (("52:54:00:00:12:53\tup\t-\t10\t20\t-\nlo", "52:54:00:00:12:53\tdown\t-\t10\t20\t-\nlo"), "primary enp2s0v0 is down, not up"),
    (("enp1s0\tnet_failover", "enp1s0\tvirtio_net"), "expected one failover master"),
])
def test_each_defect_is_reported(pair, edit, problem):
    text = IGB_VF_GUEST.replace(*edit)
    assert text != IGB_VF_GUEST
    problems = pair_problems(parse_netdevs(text), pair, Expectation.PAIRED)
    assert any(problem in p for p in problems), problems


def test_standby_only_rejects_a_present_primary(pair):
    problems = pair_problems(parse_netdevs(IGB_VF_GUEST), pair, Expectation.STANDBY_ONLY)
    assert problems == ["pair net0: expected no primary, found enp2s0v0 (igbvf)"]


def test_no_failover_rejects_a_master(pair):
    problems = pair_problems(parse_netdevs(IGB_VF_GUEST), pair, Expectation.NO_FAILOVER)
    assert "expected no failover master for 52:54:00:00:12:53, found enp1s0" in problems[0]
