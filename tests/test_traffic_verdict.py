"""check-traffic's verdict on synthetic probe results: each criterion can fail, and says why."""

from testbed.traffic import Gap, PingResult, TcpResult
from testbed.traffic_verdict import TrafficCriteria, ping_timeline, traffic_verdict


def _ping(*gaps: Gap) -> PingResult:
    return PingResult(sent=1000, received=1000 - sum(g.lost for g in gaps), duplicates=0, reordered=0,
                      max_gap_ms=max((g.ms for g in gaps), default=0.0), gaps=list(gaps))


def _delta(standby: int, primary: int) -> dict:
    return {"vm1": {"net0": {"standby": {"name": "s", "rx": standby, "tx": 0},
                             "primary": {"name": "p", "rx": primary, "tx": 0}}}}


UNPLUG_GAP = Gap(1.0, 1.2, 40, 4, "unplug-primary")
OLD_GAP = Gap(0.1, 0.9, 160, 1, "boot")


def test_only_gaps_of_the_window_count():
    details, problems = traffic_verdict(_ping(OLD_GAP, UNPLUG_GAP), [3, 4, 5], [], "vm1", "net0", None,
                                        TrafficCriteria(max_gap_ms=250, max_lost=40))
    assert problems == []
    assert details["max_gap_ms"] == 200.0 and details["lost"] == 40 and len(details["gaps"]) == 1


def test_a_gap_over_max_gap_ms_names_step_and_threshold():
    _, problems = traffic_verdict(_ping(UNPLUG_GAP), [4], [], "vm1", "net0", None, TrafficCriteria(max_gap_ms=100))
    assert problems == ["gap of 200.0 ms (40 echoes lost) in step 4 (unplug-primary) exceeds max_gap_ms 100"]


def test_min_gap_ms_wants_an_outage_at_least_that_long():
    assert traffic_verdict(_ping(UNPLUG_GAP), [4], [], "vm1", "net0", None, TrafficCriteria(min_gap_ms=200))[1] == []
    _, problems = traffic_verdict(_ping(UNPLUG_GAP), [4], [], "vm1", "net0", None, TrafficCriteria(min_gap_ms=500))
    assert problems == ["no gap of at least min_gap_ms 500 in steps [4]: the longest was 200.0 ms, in step 4 "
                        "(unplug-primary)"]
    _, problems = traffic_verdict(_ping(), [4], [], "vm1", "net0", None, TrafficCriteria(min_gap_ms=1))
    assert problems == ["no gap of at least min_gap_ms 1 in steps [4]: the longest was none"]


def test_losses_over_max_lost():
    _, problems = traffic_verdict(_ping(UNPLUG_GAP), [4], [], "vm1", "net0", None, TrafficCriteria(max_lost=39))
    assert problems == ["40 echoes lost in steps [4], more than max_lost 39"]


def test_path_needs_ninety_percent_of_the_slaves_packets():
    ok = traffic_verdict(_ping(), [2], [_delta(5, 95)], "vm1", "net0", None, TrafficCriteria(path="primary"))
    assert ok[1] == [] and ok[0]["path"]["shares"] == {"standby": 0.05, "primary": 0.95}
    _, problems = traffic_verdict(_ping(), [2], [_delta(20, 80)], "vm1", "net0", None,
                                  TrafficCriteria(path="primary"))
    assert problems == ["path primary: the primary carried 80% of 100 packets (standby 20%, primary 80%)"]


def test_path_without_measurable_steps_or_packets_fails():
    _, none = traffic_verdict(_ping(), [2, 3], [], "vm1", "net0", None, TrafficCriteria(path="standby"))
    assert none == ["path standby: no step in [2, 3] kept the same slaves from start to end"]
    _, few = traffic_verdict(_ping(), [2], [_delta(3, 0)], "vm1", "net0", None, TrafficCriteria(path="standby"))
    assert few == ["path standby: only 3 packets crossed the slaves in steps [2]"]


def test_tcp_errors_and_stalls():
    broken = TcpResult(1000, 500, 30.0, "ConnectionResetError: reset", 3.25, [])
    _, problems = traffic_verdict(_ping(), [1], [], "vm1", "net0", broken, TrafficCriteria())
    assert problems == ["TCP connection failed at 3.250s: ConnectionResetError: reset"]
    slow = TcpResult(1000, 1000, 2500.0, None, None, [])
    _, problems = traffic_verdict(_ping(), [1], [], "vm1", "net0", slow, TrafficCriteria(tcp_max_stall_ms=2000))
    assert problems == ["TCP stalled for 2500.0 ms, more than tcp_max_stall_ms 2000"]


def test_timeline_bins_replies_from_the_probe_start():
    assert ping_timeline([10.001, 10.004, 10.031], 10.0, 0.01) == [2, 0, 0, 1]
    assert ping_timeline([], 10.0) == []
