"""Warm start on real guests: a second run resumes from the first one's post-boot state, a broken
snapshot falls back to a cold boot, and a scenario that looks at the boot itself always boots cold.
Each test has its own snapshot cache (TESTBED_SNAPSHOT_DIR)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from testbed import warm_boot
from testbed.errors import StepFailed
from testbed.scenario import BootStep, load_scenario

pytestmark = pytest.mark.guest
SCENARIOS = Path(__file__).parent.parent / "scenarios"


@pytest.fixture
def snapshot_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "snapshots"
    monkeypatch.setenv("TESTBED_SNAPSHOT_DIR", str(path))
    return path


def test_a_second_run_resumes_and_a_broken_snapshot_boots_cold(run_testbed_scenario, snapshot_dir, tmp_path,
                                                               monkeypatch):
    scenario = SCENARIOS / "unplug-replug-pci.yaml"
    first = run_testbed_scenario(scenario, name="first")
    assert first.passed, first.error
    boot1 = first.vms["vm1"].boot
    # the run that saved went on in the QEMU that booted: QEMU unplugged nothing for the save
    assert boot1["start"] == "cold" and "restored_from" not in boot1 and boot1["saved_s"] > 0, boot1
    assert [s["qemu"] for s in first.vms["vm1"].shutdowns] == ["vm1"]
    events1 = [json.loads(line)["event"] for line in Path(first.vms["vm1"].artifacts["qmp_events"]).open()]
    assert "UNPLUG_PRIMARY" not in events1 and events1.count("FAILOVER_NEGOTIATED") == 1
    (snap,) = [p for p in snapshot_dir.iterdir() if not p.name.startswith(".")]
    assert snap.name == boot1["snapshot_key"]

    # required: the same restore, with no cold boot allowed
    second = run_testbed_scenario(scenario, {"snapshot": "required"}, name="second")
    assert second.passed, second.error
    boot2 = second.vms["vm1"].boot
    assert boot2["start"] == "restored" and boot2["restored_from"] == boot1["snapshot_key"]
    assert boot2["snapshot_mode"] == "required"
    # it did not boot: no cold boot in its record, and SSH came from the restored QEMU. How much
    # faster is a figure for `testbed bench --warm`, not a timed assert (5.8x there, 4.96-5.9x here).
    assert "cold_boot" not in boot2 and "saved_s" not in boot2 and boot2["restore_s"] == boot2["pairs_ready_s"]

    listed = subprocess.run([sys.executable, "-m", "testbed.cli", "snapshots", "list"], capture_output=True,
                            text=True, check=True).stdout
    assert boot1["snapshot_key"] in listed and "1 snapshot(s)" in listed

    # A boot step that says nothing takes the run's default: the flag (testbed run --snapshot, pytest
    # --testbed-snapshot), else $TESTBED_SNAPSHOT, else auto. The same VM, in a file of its own.
    boot_only = tmp_path / "scenarios" / "boot-only.yaml"
    boot_only.parent.mkdir()
    loaded = load_scenario(scenario)
    bare = loaded.model_copy(update={"name": "boot-only", "steps": [BootStep(action="boot")]})
    boot_only.write_text(yaml.safe_dump(bare.model_dump(mode="json", exclude_unset=True)))
    assert "snapshot" not in boot_only.read_text()
    never = {**os.environ, "TESTBED_SNAPSHOT": "never"}
    for name, flag in (("env-never", []), ("flag-auto", ["--snapshot", "auto"])):
        done = subprocess.run([sys.executable, "-m", "testbed.cli", "run", str(boot_only), "--quiet", *flag,
                               "--artifacts", str(tmp_path / name), "--report", str(tmp_path / f"{name}.json")],
                              capture_output=True, text=True, timeout=300, env=never)
        assert done.returncode == 0, done.stderr
    by_env = json.loads((tmp_path / "env-never.json").read_text())
    assert by_env["snapshot_default"] == "never" and by_env["vms"]["vm1"]["boot"]["start"] == "cold"
    assert by_env["vms"]["vm1"]["boot"]["snapshot_mode"] == "never" and "saved_s" not in by_env["vms"]["vm1"]["boot"]
    by_flag = json.loads((tmp_path / "flag-auto.json").read_text())
    assert by_flag["snapshot_default"] == "auto"
    assert by_flag["vms"]["vm1"]["boot"]["restored_from"] == boot1["snapshot_key"], by_flag["vms"]["vm1"]["boot"]
    # The restored guest has its primary as the booted one had it: enslaved once, at boot, never
    # plugged again (a migration to a file made QEMU unplug it for the save and re-plug it here).
    dmesg = Path(by_flag["vms"]["vm1"]["artifacts"]["dmesg"]).read_text()
    assert dmesg.count("failover primary slave:") == 1, dmesg[-3000:]
    assert by_flag["vms"]["vm1"]["boot"]["differs_from_cold"] == \
        "the guest's clock was set and its neighbour table flushed"
    plugin_run = tmp_path / "plugin-run"
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(boot_only),
                           "--testbed-snapshot", "auto", "--testbed-artifacts", str(plugin_run)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300, env=never)
    assert done.returncode == 0, done.stdout[-3000:]
    (plugin_report,) = plugin_run.glob("*/boot-only/report.json")
    by_plugin = json.loads(plugin_report.read_text())
    assert by_plugin["snapshot_default"] == "auto"
    assert by_plugin["vms"]["vm1"]["boot"]["restored_from"] == boot1["snapshot_key"], by_plugin["vms"]["vm1"]["boot"]

    # A restore that fails late, with the step's budget spent (as when its pairs never settle), still
    # leaves the cold boot a budget of its own. The budget is spent by hand, not waited out.
    settle, failed = warm_boot.settle_restored, []

    def spend_the_budget_and_fail(ctx, name):
        if failed:  # the cold boot's save settles its guest too
            return settle(ctx, name)
        failed.append(name)
        ctx.deadline = ctx.clock.now()
        raise StepFailed(f"{name}: injected: the restored guest's pairs never settled")
    monkeypatch.setattr(warm_boot, "settle_restored", spend_the_budget_and_fail)
    late = run_testbed_scenario(bare, name="late")
    monkeypatch.setattr(warm_boot, "settle_restored", settle)
    assert late.passed, late.error
    boot_late = late.vms["vm1"].boot
    assert boot_late["start"] == "cold" and boot_late["fallback"].startswith(f"restoring {boot1['snapshot_key']}")
    assert "injected" in boot_late["fallback"], boot_late
    assert "cold_boot" in boot_late and boot_late["saved_s"] > 0, boot_late  # and it saved again

    state = snap / "state"
    with state.open("r+b") as f:
        f.truncate(state.stat().st_size // 5)
    # the key is the VM's, not the steps': its boot alone meets the truncated snapshot
    loaded = load_scenario(scenario)
    third = run_testbed_scenario(loaded.model_copy(update={"steps": loaded.steps[:1]}), name="third")
    assert third.passed, third.error
    boot3 = third.vms["vm1"].boot
    assert boot3["start"] == "cold" and "snapshot-load" in boot3["fallback"] and "failed" in boot3["fallback"], boot3

    cleared = subprocess.run([sys.executable, "-m", "testbed.cli", "snapshots", "clear"], capture_output=True,
                             text=True, check=True).stdout
    assert "removed 1 snapshot(s)" in cleared and not any(snapshot_dir.iterdir()) or \
        all(p.name.startswith(".") for p in snapshot_dir.iterdir())


def test_an_igb_vf_guest_resumes_and_its_vf_carries_the_traffic(run_testbed_scenario, snapshot_dir, tmp_path):
    """QEMU's igbvf has no migration state, so the guest unbinds its VF before the save and binds it
    again after the restore; the check-traffic step's `path: primary` proves the rebound VF carries it."""
    loaded = load_scenario(SCENARIOS / "unplug-replug-igb-vf.yaml")
    boot, start, sleep, on_the_vf = loaded.steps[:4]
    assert (start.action, sleep.action, on_the_vf.action, on_the_vf.path) == \
        ("start-traffic", "sleep", "check-traffic", "primary")

    def scenario(mode: str):
        return loaded.model_copy(update={"steps": [boot.model_copy(update={"snapshot": mode}), start, sleep,
                                                   on_the_vf]})
    # The first run goes through the CLI with --snapshot-cache-mib: an older snapshot already in the
    # cache (least recently used) is evicted once this run's is published over the limit.
    older = snapshot_dir / "older"
    older.mkdir(parents=True)
    (older / "state").write_bytes(os.urandom(3 << 20))
    (older / "meta.json").write_text("{}")
    os.utime(older / "meta.json", (1, 1))
    scenario_file = tmp_path / "igb-vf-warm.yaml"
    scenario_file.write_text(yaml.safe_dump(scenario("auto").model_dump(mode="json", exclude_unset=True)))
    done = subprocess.run([sys.executable, "-m", "testbed.cli", "run", str(scenario_file), "--quiet",
                           "--snapshot-cache-mib", "1", "--artifacts", str(tmp_path / "first"),
                           "--report", str(tmp_path / "first.json")], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    boot1 = json.loads((tmp_path / "first.json").read_text())["vms"]["vm1"]["boot"]
    published = snapshot_dir / boot1["snapshot_key"]
    assert (published / "state").exists() and not older.exists(), sorted(snapshot_dir.iterdir())
    assert boot1["start"] == "cold" and "restored_from" not in boot1 and boot1["saved_s"] > 0, boot1
    second = run_testbed_scenario(scenario("required"), name="second")
    assert second.passed, second.error
    boot2 = second.vms["vm1"].boot
    assert boot2["start"] == "restored" and boot2["restored_from"] == boot1["snapshot_key"], boot2
    assert "unbound its paired igb VFs from igbvf before the save" in boot2["differs_from_cold"]
    assert "down and up once" in boot2["differs_from_cold"], boot2
    primary = [n for n in second.vms["vm1"].netdevs if n["role"] == "primary"]
    assert [n["driver"] for n in primary] == ["igbvf"], second.vms["vm1"].netdevs


def test_a_scenario_that_looks_at_the_boot_boots_cold_and_says_why(run_testbed_scenario, snapshot_dir, monkeypatch,
                                                                    pytestconfig):
    """Under the run's default (auto): the file's boot step says nothing about snapshots."""
    if pytestconfig.getoption("testbed_snapshot") == "never":
        pytest.skip("the suite runs with --testbed-snapshot never; this test is about the auto default")
    monkeypatch.delenv("TESTBED_SNAPSHOT", raising=False)
    scenario = load_scenario(SCENARIOS / "no-standby-negotiation.yaml")
    assert scenario.steps[0].snapshot is None
    report = run_testbed_scenario(scenario)
    assert report.passed, report.error
    assert report.snapshot_default == "auto" and report.vms["vm1"].boot["snapshot_mode"] == "auto"
    reasons = report.vms["vm1"].boot["cold_because"]
    assert report.vms["vm1"].boot["start"] == "cold"
    assert any("never negotiates STANDBY" in r for r in reasons)
    assert any("check-primary-device present: false" in r for r in reasons)
    assert not snapshot_dir.exists() or not any(snapshot_dir.iterdir())


def test_snapshot_required_fails_a_vm_that_must_boot_cold(run_testbed_scenario, snapshot_dir):
    scenario = load_scenario(SCENARIOS / "no-standby-negotiation.yaml")
    boot = scenario.steps[0].model_copy(update={"snapshot": "required"})
    report = run_testbed_scenario(scenario.model_copy(update={"steps": [boot, *scenario.steps[1:]]}))
    assert not report.passed
    assert "snapshot: required, but it must boot cold: pair net0: the standby never negotiates STANDBY" \
        in report.steps[0].error


def test_bench_warm_puts_cold_and_warm_side_by_side(tmp_path: Path):
    out = tmp_path / "warm.json"
    subprocess.run([sys.executable, "-m", "testbed.cli", "bench", "--warm", "--warm-scenarios", "standby-pci",
                    "--json", str(out)], check=True, capture_output=True, text=True, timeout=600)
    (row,) = json.loads(out.read_text())["rows"]
    assert row["scenario"] == "standby-pci" and row["second_run"] == "restored"
    assert row["second_pairs_s"] < row["cold_pairs_s"] and row["speedup"] > 1, row
    # and what the cache itself costs: a run without it, and the first run's own save
    assert row["never_run_s"] > 0 and row["empty_cache_run_s"] > 0 and row["own_save_cost_s"] > 0, row
