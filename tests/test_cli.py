"""The command line as a user meets it: rejections before anything starts, and the report contract."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).parent.parent
DATA = Path(__file__).parent / "data"
TESTBED = [sys.executable, "-m", "testbed.cli"]


@pytest.fixture
def qemu_tripwire(tmp_path):
    """A 'QEMU' that leaves a file behind if anything ever executes it."""
    marker = tmp_path / "qemu-was-run"
    fake = tmp_path / "qemu-system-x86_64"
    fake.write_text(f"#!/bin/sh\ntouch {marker}\nexit 1\n")
    fake.chmod(0o755)
    return fake, marker


@pytest.mark.parametrize("name,key", [("typo-key.yaml", "vms[0].pairs[0].primry"),
                                      ("unknown-kind.yaml", "vms[0].pairs[0].primary")])
def test_bad_scenario_exits_nonzero_naming_file_and_key_and_starts_nothing(tmp_path, qemu_tripwire, name, key):
    fake, marker = qemu_tripwire
    artifacts = tmp_path / "artifacts"
    done = subprocess.run([*TESTBED, "run", str(DATA / name), "--qemu", str(fake), "--artifacts", str(artifacts)],
                          capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == 2, done.stderr
    message = " ".join(done.stderr.split())
    assert f"{DATA / name}: {key}:" in message
    assert not marker.exists(), "QEMU was executed for an invalid scenario"
    assert not artifacts.exists()


def test_missing_qemu_is_explained(tmp_path):
    done = subprocess.run([*TESTBED, "check-host", "--qemu", str(tmp_path / "nope")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "not found" in done.stderr and "setup-host.sh" in " ".join(done.stderr.split())


def test_dry_run_prints_argv_and_starts_nothing(qemu_tripwire):
    fake, marker = qemu_tripwire
    done = subprocess.run([*TESTBED, "run", str(REPO / "scenarios/standby-pci.yaml"), "--dry-run",
                           "--qemu", str(fake)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "failover_pair_id=net0-sby" in done.stdout and str(fake) in done.stdout
    assert not marker.exists()
    # a host-VM scenario: the nested guest's argv, with a placeholder where the VF assigned at launch goes
    done = subprocess.run([*TESTBED, "run", str(REPO / "scenarios/host-seed-live-migration.yaml"), "--dry-run",
                           "--qemu", str(fake)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "# vm1 (runs inside the host VM)" in done.stdout and "host=<VF of the host VM" in done.stdout
    assert not marker.exists()
    # a standby left out at boot is not on the command line; its tap backend is, for plug-standby
    done = subprocess.run([*TESTBED, "run", str(REPO / "scenarios/zoo/zoo-10-primary-before-standby.yaml"),
                           "--dry-run", "--qemu", str(fake)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "virtio-net-pci,id=net0-sby" not in done.stdout and "tap,id=hn-net0-sby" in done.stdout
    assert "e1000e,id=net0-pri" in done.stdout and not marker.exists()


@pytest.mark.guest
def test_run_igb_vf_report_lists_one_failover_standby_and_igbvf_primary(tmp_path):
    report_path = tmp_path / "r.json"
    done = subprocess.run([*TESTBED, "run", str(REPO / "scenarios/standby-igb-vf.yaml"), "--report",
                           str(report_path), "--artifacts", str(tmp_path / "art"), "--quiet"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(report_path.read_text())
    assert report["passed"] is True and report["scenario"] == "standby-igb-vf"
    assert set(report["host"]) >= {"qemu_version", "accel", "guest_kernel"}
    assert [s["action"] for s in report["steps"]] == ["boot", "check-netdevs"]
    assert all(s["ok"] and s["error"] is None and s["ended_s"] >= s["started_s"] for s in report["steps"])
    netdevs = report["vms"]["vm1"]["netdevs"]
    by_role = {role: [n for n in netdevs if n["role"] == role] for role in ("failover", "standby", "primary")}
    assert [len(v) for v in by_role.values()] == [1, 1, 1], netdevs
    master, standby, primary = by_role["failover"][0], by_role["standby"][0], by_role["primary"][0]
    assert master["driver"] == "net_failover"
    assert standby["name"] == master["name"] + "nsby" and standby["master"] == master["name"]
    assert primary["driver"] == "igbvf" and primary["master"] == master["name"]
    assert {master["perm_addr"], standby["perm_addr"], primary["perm_addr"]} == {"52:54:00:00:12:53"}
    for artifact in ("serial_log", "qemu_stderr", "qmp_events", "dmesg"):
        path = Path(report["vms"]["vm1"]["artifacts"][artifact])
        assert path.exists() and path.stat().st_size > 0, artifact
    assert "failover primary slave" in Path(report["vms"]["vm1"]["artifacts"]["dmesg"]).read_text()
