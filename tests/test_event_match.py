"""check-events' matching (pure logic): order, data subsets, timing bounds, absent events, and the
scenario's refusal of a since_step that is not earlier."""

import pytest

from testbed.event_match import SeenEvent, absent_problems, match_sequence
from testbed.scenario import EventPattern, load_scenario
from testbed.errors import ScenarioError

EVENTS = [SeenEvent(1.0, "MIGRATION", {"status": "setup"}, "vm1"),
          SeenEvent(1.1, "UNPLUG_PRIMARY", {"device-id": "net0-pri"}, "vm1"),
          SeenEvent(1.2, "MIGRATION", {"status": "wait-unplug"}, "vm1"),
          SeenEvent(1.5, "MIGRATION", {"status": "active"}, "vm1"),
          SeenEvent(2.5, "MIGRATION", {"status": "completed"}, "vm1"),
          SeenEvent(4.0, "FAILOVER_NEGOTIATED", {"device-id": "net0-sby"}, "vm1-migration1")]


def _p(event, **kw):
    data = {k.replace("_", "-"): v for k, v in kw.items() if not k.endswith("_previous")}
    bounds = {k: v for k, v in kw.items() if k.endswith("_previous")}
    return EventPattern(event=event, data=data, **bounds)


def test_a_sequence_in_order_with_data_subsets_and_bounds():
    found, problem = match_sequence([_p("UNPLUG_PRIMARY", device_id="net0-pri"), _p("MIGRATION", status="active"),
                                     _p("FAILOVER_NEGOTIATED", max_ms_after_previous=3000)], EVENTS)
    assert problem is None and [e.t for e in found] == [1.1, 1.5, 4.0]


def test_each_way_a_sequence_fails():
    _, problem = match_sequence([_p("MIGRATION", status="active"), _p("UNPLUG_PRIMARY")], EVENTS)
    assert problem == "sequence[1]: no UNPLUG_PRIMARY after MIGRATION {'status': 'active'} at 1.500s"
    _, problem = match_sequence([_p("UNPLUG_PRIMARY", device_id="net1-pri")], EVENTS)
    assert problem == "sequence[0]: no UNPLUG_PRIMARY {'device-id': 'net1-pri'}"
    _, problem = match_sequence([_p("MIGRATION", status="wait-unplug"),
                                 _p("MIGRATION", status="active", min_ms_after_previous=1000)], EVENTS)
    assert problem is not None and "came 300 ms after the previous match, less than min_ms_after_previous 1000" in problem
    _, problem = match_sequence([_p("MIGRATION", status="completed"),
                                 _p("FAILOVER_NEGOTIATED", max_ms_after_previous=1000)], EVENTS)
    assert problem is not None and "came 1500 ms after the previous match, more than max_ms_after_previous 1000" in problem


def test_absent():
    assert absent_problems([_p("MIGRATION", status="failed")], EVENTS) == []
    assert absent_problems([_p("UNPLUG_PRIMARY")], EVENTS) == ["absent[0]: UNPLUG_PRIMARY came at 1.100s from vm1"]


def test_since_step_must_be_earlier(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("""
vms:
  - name: vm1
    pairs: [{name: net0, mac: "52:54:00:00:12:53", primary: {kind: pci}}]
steps:
  - action: boot
  - action: check-events
    vm: vm1
    since_step: 1
    sequence: [{event: FAILOVER_NEGOTIATED}]
""")
    with pytest.raises(ScenarioError, match=r"steps\[1\].since_step.*must name an earlier step \(0..0\)"):
        load_scenario(path)


def test_a_pattern_can_name_the_qemu():
    both = [SeenEvent(1.0, "MIGRATION", {"status": "active"}, "vm1-migration1"),
            SeenEvent(1.2, "MIGRATION", {"status": "active"}, "vm1")]
    found, problem = match_sequence([EventPattern(event="MIGRATION", data={"status": "active"}, qemu="vm1")], both)
    assert problem is None and found[0].t == 1.2
    assert absent_problems([EventPattern(event="MIGRATION", qemu="vm1-migration2")], both) == []
    _, problem = match_sequence([EventPattern(event="MIGRATION", qemu="vm1-migration2")], both)
    assert problem == "sequence[0]: no MIGRATION from vm1-migration2"
