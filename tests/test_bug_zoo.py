"""A bug-zoo scenario end to end through the CLI: its verdict, its evidence and the exit statuses that
`git bisect run` reads. The zoo itself runs with `pytest scenarios/zoo` (not in the default suite)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from testbed.leftovers import qemu_processes, run_leftovers

pytestmark = pytest.mark.guest
ZOO = Path(__file__).parent.parent / "scenarios" / "zoo"
ZOO_19 = ZOO / "zoo-19-mac-change-refused.yaml"


def _run(tmp_path: Path, name: str, *extra: str, scenario: Path = ZOO_19):
    report = tmp_path / f"{name}.json"
    done = subprocess.run([sys.executable, "-m", "testbed.cli", "run", str(scenario), "--quiet", "--report",
                           str(report), "--artifacts", str(tmp_path / name), *extra],
                          capture_output=True, text=True, timeout=600)
    return done, json.loads(report.read_text())


def test_a_reproduced_bug_exits_for_git_bisect_and_shows_its_evidence(tmp_path):
    done, report = _run(tmp_path, "default")
    assert done.returncode == 1, done.stderr  # reproduced is `bad` by default
    assert report["verdict"] == "reproduced" and report["bug"]["zoo_item"] == 19
    assert "step 1 (exec) passed (stdout: RTNETLINK answers: Operation not supported)" in report["verdict_evidence"]
    assert "zoo-19-mac-change-refused: REPRODUCED (exit 1): step 1 (exec) passed" in " ".join((done.stdout + done.stderr).split())

    done, report = _run(tmp_path, "fix-search", "--reproduced-is-good")
    assert done.returncode == 0 and report["verdict"] == "reproduced", done.stdout + done.stderr

    # a run that cannot reach the symptom says nothing about the bug: git bisect's "skip"
    done, report = _run(tmp_path, "error", "--timeout-scale", "0.001")
    assert done.returncode == 125, done.stdout + done.stderr
    assert report["verdict"] == "error" and "step 0 (boot) failed before the symptom" in report["verdict_evidence"]


def test_a_destination_that_cannot_re_plug_the_primary_completes_the_migration_silently_zoo_item_7(tmp_path):
    """destination_primary_backend: missing: the destination QEMU starts without the primary's -netdev.
    The migration completes, the guest stays on its standby, and only the destination's stderr says
    why; the testbed puts that warning in the migration's record."""
    done, report = _run(tmp_path, "zoo-07", scenario=ZOO / "zoo-07-destination-replug-fails-silently.yaml")
    assert done.returncode == 1, done.stdout + done.stderr
    assert report["verdict"] == "reproduced", report["verdict_evidence"]
    (migration,) = report["migrations"]
    assert migration["status"] == "completed"
    assert any("Property 'e1000e.netdev' can't find value 'hn-net0-pri'" in w for w in migration["destination_warnings"])
    argv = Path(migration["destination_artifacts"], "qemu-argv.txt").read_text().split("\n")
    assert "id=hn-net0-pri" not in " ".join(argv) and "e1000e" in " ".join(argv)  # the device without its backend
    assert all(s["ok"] for s in report["steps"])  # the standby carried the traffic through it


def test_captures_on_both_bridges_show_no_guest_announcement_for_a_failover_address_zoo_item_13(tmp_path):
    """start-capture (host 2 with a filter, host 1 without) and check-capture's bounds, through a
    migration: QEMU's RARPs and the plain virtio NIC's gratuitous ARPs are there, the failover
    master's address is never announced."""
    done, report = _run(tmp_path, "zoo-13", scenario=ZOO / "zoo-13-no-guest-announce-after-migration.yaml")
    assert done.returncode == 1, done.stdout + done.stderr
    assert report["verdict"] == "reproduced", report["verdict_evidence"]
    started = [s["details"] for s in report["steps"] if s["action"] == "start-capture"]
    assert [(d["interface"], d["filter"]) for d in started] == [("br1", "arp or rarp"), ("br0", "")]
    assert all(Path(d["pcap"]).stat().st_size > 24 for d in started)  # more than a pcap header
    counts = [s["details"]["count"] for s in report["steps"] if s["action"] == "check-capture"]
    rarp, control, failover, source = counts
    assert rarp >= 2 and control >= 1 and failover == 0 and source >= 1, counts
    frames = next(s for s in report["steps"] if s["action"] == "check-capture")["details"]["frames"]
    assert {"52:54:00:00:12:67", "52:54:00:00:12:68"} <= {f.split()[1] for f in frames}  # a RARP for each NIC


ZOO_16_QEMU = ZOO / "zoo-16-migrate-after-standby-unplug.yaml"


def test_a_migration_after_the_standbys_unplug_is_not_reproduced_on_a_fixed_qemu_zoo_item_16(tmp_path):
    """migrate after unplug-standby, expect: source-died. On this QEMU (fixed since 6.1) the
    migration completes: the step's check fails, which is `not reproduced` (exit 0 for git bisect),
    with the migration's statuses as the evidence. No wait-unplug: the primary lost its failover
    with the standby and migrates as a plain NIC."""
    done, report = _run(tmp_path, "zoo-16", scenario=ZOO_16_QEMU)
    assert done.returncode == 0, done.stdout + done.stderr
    assert report["verdict"] == "not-reproduced", report["verdict_evidence"]
    assert "the migration ended 'completed'" in report["verdict_evidence"]
    assert "its source QEMU is alive" in report["verdict_evidence"]
    (migration,) = report["migrations"]
    assert migration["status"] == "completed" and "wait-unplug" not in migration["statuses"]
    devices = [arg for arg in Path(migration["destination_artifacts"], "qemu-argv.txt").read_text().split("\n")
               if arg.startswith(("virtio-net-pci,", "e1000e,"))]
    # the destination has no standby either: its virtio-net-pci devices are the management NIC's alone
    assert [d.split(",")[0] for d in devices if "net0" in d] == ["e1000e"], devices
    assert report["vms"]["vm1"]["netdevs"] and all(n["role"] != "failover" for n in report["vms"]["vm1"]["netdevs"])


def test_a_source_qemu_that_dies_in_the_migration_is_the_reproduced_symptom_zoo_item_16(tmp_path):
    """The same scenario, with the source QEMU made to die by a SIGSEGV as the migration starts, as
    QEMU up to 6.0 died on its own: the migrate step passes, its details and the migration's record
    carry the signal, the verdict is `reproduced` (exit 1), and nothing is left behind."""
    artifacts = tmp_path / "art"
    scenario = tmp_path / "zoo-16-then-on.yaml"  # a step after the death: the run goes on without vm1
    scenario.write_text(ZOO_16_QEMU.read_text() + "  - {action: sleep, seconds: 1}\n")
    proc = subprocess.Popen([sys.executable, "-m", "testbed.cli", "run", str(scenario), "--quiet",
                             "--artifacts", str(artifacts), "--snapshot", "never"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    events = artifacts / "vm1" / "qmp-events.jsonl"
    deadline = time.monotonic() + 300
    while not (events.exists() and '"MIGRATION"' in events.read_text()):
        assert proc.poll() is None, f"testbed ended before the migration: {proc.communicate()}"
        assert time.monotonic() < deadline, "waited 300 s for the migration to start"
        time.sleep(0.02)
    (pid,) = [pid for pid, _ in qemu_processes(str(artifacts / "vm1") + "/")]
    os.kill(pid, signal.SIGSEGV)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, out + err
    report = json.loads((artifacts / "report.json").read_text())
    assert report["verdict"] == "reproduced", report["verdict_evidence"]
    migrate = report["steps"][2]
    assert migrate["ok"] and migrate["details"]["status"] == "source-died"
    assert [s["ok"] for s in report["steps"]] == [True] * 4, report["steps"][-1]
    assert "vm1: QEMU exited (signal 11, SIGSEGV)" in migrate["details"]["error"]
    (migration,) = report["migrations"]
    assert migration["status"] == "source-died" and migration["source_exit"]["signal"] == "SIGSEGV"
    assert run_leftovers(artifacts) == []
