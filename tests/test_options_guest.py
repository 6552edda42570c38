"""Documented options that the shipped scenarios do not need, each used on a real guest
(tests/options/every-option.yaml), with what the report shows for them."""

from pathlib import Path

import pytest

pytestmark = pytest.mark.guest
SCENARIO = Path(__file__).parent / "options" / "every-option.yaml"


def test_every_option_works_on_a_real_guest(run_testbed_scenario):
    report = run_testbed_scenario(SCENARIO)
    assert report.passed, [(s.index, s.action, s.error) for s in report.steps if not s.ok]
    steps = report.steps

    def nth(action: str, n: int = 0):
        return [s for s in steps if s.action == action][n]
    nproc, cmdline = nth("exec").details["stdout"].splitlines()[:2]
    assert nproc == "2" and "option.seen=1" in cmdline.split()
    assert steps[0].details["vm1"].get("pairs_ready_s") is None      # boot did not wait for the pairs
    traffic = nth("check-traffic").details
    assert traffic["lost"] == 0 and traffic["path"]["slave_packets"] >= 50
    assert nth("start-traffic").details["interval_ms"] == 10
    outage = nth("check-traffic", 1).details
    assert outage["max_gap_ms"] >= 500 and {g["step_action"] for g in outage["gaps"]} & {"sleep", "set-link"}
    assert nth("set-link").details == {"device": "net0-pri", "up": False}
    assert "guest_paired_after_s" not in nth("plug-primary").details  # plug-primary did not wait
    assert nth("fdb").details["mac"] == "52:54:00:00:12:60" and nth("fdb").details["port"] == "t0net0s"
    assert nth("fdb", 1).details["entry_existed"] is True
    cancelled, there_and_back = report.migrations[0], report.migrations[1:]
    assert cancelled.status == "cancelled" and cancelled.cancelled_by == "cancel_in active"
    assert [m.status for m in there_and_back] == ["completed", "completed"]
    assert [(m.from_slot, m.to_slot) for m in there_and_back] == [(0, 1), (1, 0)]
    (tcp,) = report.tcp()
    assert tcp.error is None and tcp.bytes_echoed > 0
