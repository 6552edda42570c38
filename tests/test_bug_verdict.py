"""The bug-zoo verdict and its exit statuses, from step records (pure logic), and the cards' checks."""

import pytest

from testbed.bug_verdict import BISECT_SKIP, Verdict, decide, exit_status
from testbed.report import RunReport, StepRecord
from testbed.scenario import load_scenario
from testbed.errors import ScenarioError

CARD = """
bug:
  title: t
  component: kernel
  affected: a
  source: [s]
  symptom: s
  fixed: f
vms:
  - name: vm1
    pairs: [{name: net0, mac: "52:54:00:00:12:54", primary: {kind: pci}}]
steps:
  - action: boot
  - {action: sleep, seconds: 1}
  - {action: exec, vm: vm1, command: "true", symptom: true}
"""


@pytest.fixture
def scenario(tmp_path):
    path = tmp_path / "bug.yaml"
    path.write_text("name: bug\n" + CARD)
    return load_scenario(path)


def _report(oks, error=None, passed=None):
    steps = [StepRecord(index=i, action=a, started_s=0.0, ok=ok, error=None if ok else f"{a} failed", check_failed=not ok,
                        details={"stdout": "Operation not supported\n"} if a == "exec" else {})
             for i, (a, ok) in enumerate(oks)]
    return RunReport(scenario="bug", scenario_file="", artifacts_dir="", steps=steps, error=error,
                     passed=all(ok for _, ok in oks) if passed is None else passed)


def test_all_steps_passed_is_reproduced_with_what_the_symptom_step_saw(scenario):
    verdict, evidence = decide(scenario, _report([("boot", True), ("sleep", True), ("exec", True)]))
    assert verdict == Verdict.REPRODUCED
    assert evidence == "step 2 (exec) passed (stdout: Operation not supported)"


def test_a_failed_symptom_step_is_not_reproduced_and_anything_else_is_an_error(scenario):
    verdict, evidence = decide(scenario, _report([("boot", True), ("sleep", True), ("exec", False)]))
    assert (verdict, evidence) == (Verdict.NOT_REPRODUCED, "step 2 (exec): exec failed")
    # a symptom step that failed on the machinery (SSH lost, a QEMU that died), not on its check
    broken = _report([("boot", True), ("sleep", True), ("exec", False)])
    broken.steps[2].check_failed = False
    verdict, evidence = decide(scenario, broken)
    assert (verdict, evidence) == (Verdict.ERROR, "symptom step 2 (exec) could not make its check: exec failed")
    verdict, evidence = decide(scenario, _report([("boot", True), ("sleep", False)]))
    assert verdict == Verdict.ERROR and "step 1 (sleep) failed before the symptom could be checked" in evidence
    verdict, evidence = decide(scenario, _report([], error="set-up failed: no QEMU", passed=False))
    assert (verdict, evidence) == (Verdict.ERROR, "set-up failed: no QEMU")


def test_exit_statuses_fit_git_bisect_run():
    assert exit_status(Verdict.REPRODUCED) == 1 and exit_status(Verdict.NOT_REPRODUCED) == 0
    assert exit_status(Verdict.REPRODUCED, reproduced_is_good=True) == 0
    assert exit_status(Verdict.NOT_REPRODUCED, reproduced_is_good=True) == 1
    assert exit_status(Verdict.ERROR) == exit_status(Verdict.ERROR, True) == BISECT_SKIP == 125


@pytest.mark.parametrize("edit, key, reason", [
    (lambda t: t.replace(", symptom: true", ""), "bug", "needs at least one step with symptom: true"),
    (lambda t: t.replace("  - action: boot", "  - {action: boot, symptom: true}"), "steps[0].symptom",
     "a boot step cannot be the symptom"),
    (lambda t: t[t.index("vms:"):], "steps[2].symptom", "only a scenario with a bug: card has symptom steps"),
    (lambda t: t.replace("  source: [s]\n", ""), "bug.source", "missing key 'source'"),
    (lambda t: t.replace("component: kernel", "component: firmware"), "bug.component", "Input should be"),
])
def test_bad_cards_are_refused_with_the_key(tmp_path, edit, key, reason):
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\n" + edit(CARD))
    with pytest.raises(ScenarioError) as e:
        load_scenario(path)
    assert e.value.key == key and reason in e.value.reason, (e.value.key, e.value.reason)


def test_a_later_boot_step_cannot_be_the_symptom_either(tmp_path):
    two_vms = CARD.replace("steps:", """  - name: vm2
    pairs: [{name: net0, mac: "52:54:00:00:12:55", primary: {kind: pci}}]
steps:""").replace("  - action: boot\n", "  - {action: boot, vms: [vm1]}\n").replace(
        "  - {action: sleep, seconds: 1}", "  - {action: boot, vms: [vm2], symptom: true}")
    path = tmp_path / "two.yaml"
    path.write_text("name: two\n" + two_vms)
    with pytest.raises(ScenarioError) as e:
        load_scenario(path)
    assert e.value.key == "steps[1].symptom" and "a boot step cannot be the symptom" in e.value.reason


@pytest.mark.parametrize("step", ["{action: save-restore, vm: vm1}", "{action: reset, vm: vm1}"])
def test_steps_not_built_for_a_host_vm_are_refused_there(tmp_path, step):
    path = tmp_path / "host.yaml"
    path.write_text("""name: host
host: {kind: vm}
vms:
  - name: vm1
    pairs: [{name: net0, mac: "52:54:00:00:12:54", primary: {kind: host-vf}}]
steps:
  - action: boot
  - %s
""" % step)
    with pytest.raises(ScenarioError) as e:
        load_scenario(path)
    assert e.value.key == "steps[1]" and "is not supported on a host VM yet" in e.value.reason


@pytest.mark.parametrize("later", ["{action: save-restore, vm: vm1}", "{action: reset, vm: vm1}"])
def test_rebuilding_a_vm_after_its_standby_was_unplugged_is_refused(tmp_path, later):
    """A migrate is allowed (zoo item 16's QEMU half); a save-restore or reset is not yet."""
    path = tmp_path / "sby.yaml"
    path.write_text("""name: sby
vms:
  - name: vm1
    pairs: [{name: net0, mac: "52:54:00:00:12:54", primary: {kind: pci}}]
steps:
  - action: boot
  - {action: unplug-standby, vm: vm1, pair: net0}
  - %s
""" % later)
    with pytest.raises(ScenarioError) as e:
        load_scenario(path)
    assert e.value.key == "steps[2]" and "after steps[1] unplugged a standby is not supported yet" in e.value.reason


def test_a_migration_expected_to_kill_its_source_is_one_migration(tmp_path):
    path = tmp_path / "die.yaml"
    path.write_text("""name: die
network: {hosts: 2}
vms:
  - name: vm1
    pairs: [{name: net0, mac: "52:54:00:00:12:54", primary: {kind: pci}}]
steps:
  - action: boot
  - {action: migrate, vm: vm1, expect: source-died, count: 2}
""")
    with pytest.raises(ScenarioError) as e:
        load_scenario(path)
    assert e.value.key == "steps[1]" and "count must be 1" in e.value.reason
    path.write_text(path.read_text().replace(", count: 2", ""))
    assert load_scenario(path).steps[1].expect == "source-died"
    # the VM is gone after it: a later step on it is refused, and there is no wait-unplug to bound
    path.write_text(path.read_text() + "  - {action: sleep, seconds: 1}\n  - {action: stop, vm: vm1}\n")
    with pytest.raises(ScenarioError) as e:
        load_scenario(path)
    assert e.value.key == "steps[3]" and "uses vm1, which steps[1] (migrate expect: source-died)" in e.value.reason
    path.write_text(path.read_text().replace("  - {action: stop, vm: vm1}\n", "").replace(
        "expect: source-died}", "expect: source-died, min_wait_unplug_ms: 10}"))
    with pytest.raises(ScenarioError, match="no wait-unplug phase to bound"):
        load_scenario(path)
