"""Gap, loss and datapath analysis on synthetic probe records (the probes themselves run in guest tests)."""

from pathlib import Path

from testbed.datapath import delta, parse_counters, path_shares, stable
from testbed.plan import plan_machines
from testbed.scenario import load_scenario
from testbed.traffic import Reply, StepWindow, analyse_ping

WINDOWS = [StepWindow(0, "boot", 0.0, 1.0), StepWindow(1, "sleep", 1.0, 2.0),
           StepWindow(2, "unplug-primary", 2.0, 3.0), StepWindow(3, "sleep", 3.0, 4.0)]


def _replies(seqs, interval=0.01, start=1.0):
    return [Reply(seq, start + seq * interval, 0.2) for seq in seqs]


def test_steady_stream_has_no_gap():
    result = analyse_ping(_replies(range(1, 101)), 100, 1.0, 2.02, 0.01, WINDOWS)
    assert (result.sent, result.received, result.lost, result.gaps) == (100, 100, 0, [])
    assert result.max_gap_ms == 10.0


def test_a_loss_is_one_gap_attributed_to_the_step_it_started_in():
    seqs = [s for s in range(1, 301) if not 105 <= s <= 134]   # 30 echoes lost from t=2.04
    result = analyse_ping(_replies(seqs), 300, 1.0, 4.1, 0.01, WINDOWS)
    (gap,) = result.gaps
    assert (gap.lost, gap.step, gap.step_action) == (30, 2, "unplug-primary")
    assert gap.start_s == 2.04 and gap.end_s == 2.35 and gap.ms == 310.0
    assert result.lost == 30 and result.max_gap_ms == 310.0


def test_late_replies_without_loss_are_a_gap_too():
    replies = _replies(range(1, 51)) + [Reply(51, 2.0, 500.0)]
    result = analyse_ping(replies, 51, 1.0, 2.1, 0.01, WINDOWS)
    assert [(g.lost, g.step) for g in result.gaps] == [(0, 1)]


def test_duplicates_and_reordering_are_counted_not_lost():
    replies = _replies([1, 2, 4, 3, 5]) + [Reply(5, 1.06, 0.2, duplicate=True)]
    result = analyse_ping(replies, 5, 1.0, 1.07, 0.01, WINDOWS)
    assert (result.received, result.duplicates, result.reordered, result.lost) == (5, 1, 1, 0)


def test_echoes_in_flight_at_stop_are_not_lost_but_an_outage_at_the_end_is():
    in_flight = analyse_ping(_replies(range(1, 11)), 11, 1.0, 1.12, 0.01, WINDOWS)
    assert (in_flight.sent, in_flight.lost, in_flight.gaps) == (10, 0, [])
    outage = analyse_ping(_replies(range(1, 11)), 250, 1.0, 3.6, 0.01, WINDOWS)
    (gap,) = outage.gaps
    assert (gap.lost, gap.step, gap.end_s) == (240, 1, 3.6)


PLAN = plan_machines(load_scenario(Path(__file__).parent.parent / "scenarios/standby-igb-vf.yaml"))[0]
# /usr/lib/testbed/counters: name master address phys_port_name rx tx
BEFORE = ("enp1s0\t-\t52:54:00:00:12:53\t-\t100\t100\nenp1s0nsby\tenp1s0\t52:54:00:00:12:53\tsby\t2\t1\n"
          "enp2s0v0\tenp1s0\t52:54:00:00:12:53\t-\t98\t99\nenp0s2\t-\t0a:54:00:00:00:01\t-\t5\t5\n")
AFTER = BEFORE.replace("100\t100", "500\t500").replace("98\t99", "496\t497")
UNPLUGGED = "enp1s0\t-\t52:54:00:00:12:53\t-\t600\t600\nenp1s0nsby\tenp1s0\t52:54:00:00:12:53\tsby\t100\t100\n"


def test_counters_give_roles_and_per_step_deltas():
    before, after = {"vm1": parse_counters(BEFORE, PLAN)}, {"vm1": parse_counters(AFTER, PLAN)}
    assert set(before["vm1"]["net0"]) == {"failover", "standby", "primary"}
    d = delta(before, after)
    assert d["vm1"]["net0"]["primary"] == {"name": "enp2s0v0", "rx": 398, "tx": 398}
    assert stable(before, after, "vm1", "net0")
    shares, total = path_shares([d], "vm1", "net0")
    assert total == 796 and shares["primary"] == 1.0 and shares["standby"] == 0.0


def test_a_step_that_loses_a_slave_is_not_stable_and_has_no_delta_for_it():
    before, after = {"vm1": parse_counters(BEFORE, PLAN)}, {"vm1": parse_counters(UNPLUGGED, PLAN)}
    assert not stable(before, after, "vm1", "net0")
    assert "primary" not in delta(before, after)["vm1"]["net0"]
