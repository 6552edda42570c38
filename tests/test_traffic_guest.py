"""Traffic through unplug and re-plug, on real guests, read back from the report."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).parent.parent
pytestmark = pytest.mark.guest


def _run(tmp_path, scenario, *extra):
    report = tmp_path / "r.json"
    done = subprocess.run([sys.executable, "-m", "testbed.cli", "run", str(REPO / "scenarios" / scenario),
                           "--report", str(report), "--artifacts", str(tmp_path / "art"), *extra],
                          capture_output=True, text=True, timeout=600)
    return done, json.loads(report.read_text())


def test_igb_vf_unplug_replug_report_attributes_gaps_and_shows_the_datapath(tmp_path):
    done, report = _run(tmp_path, "unplug-replug-igb-vf.yaml")
    assert done.returncode == 0, done.stderr
    steps = {s["index"]: s for s in report["steps"]}
    (ping,) = [t for t in report["traffic"] if t["probe"] == "ping"]
    assert ping["sent"] > 1000 and ping["received"] + ping["lost"] == ping["sent"]
    assert ping["gaps"], "an unplug and a re-plug without any gap would be news"
    for gap in ping["gaps"]:
        # A gap belongs to the step running when it started: the latest step that had started by
        # then. Between two steps the runner reads the slaves' counters over SSH, which took 1.3 s
        # in CI under load, so a gap can start after its step ended, but never once the next began.
        step = steps[gap["step"]]
        following = steps.get(gap["step"] + 1)
        assert step["started_s"] <= gap["start_s"]
        assert following is None or gap["start_s"] < following["started_s"]
        assert gap["step_action"] == step["action"]
    unplug = next(s for s in report["steps"] if s["action"] == "unplug-primary")["index"]
    plug = next(s for s in report["steps"] if s["action"] == "plug-primary")["index"]

    def carried(index, role):
        roles = steps[index]["counters"]["vm1"]["net0"]
        total = roles["failover"]["rx"] + roles["failover"]["tx"]
        return (roles[role]["rx"] + roles[role]["tx"]) / total if role in roles and total else 0.0
    assert carried(unplug - 2, "primary") > 0.9   # the sleep before the unplug
    assert carried(unplug + 2, "standby") > 0.9   # the sleep after the switch-over
    after = next(s for s in report["steps"][plug:] if s["action"] == "sleep")["index"]
    assert carried(after, "primary") > 0.9        # the sleep after the switch back
    assert steps[unplug + 2]["counters"]["vm1"]["net0"].get("primary") is None
    (tcp,) = [t for t in report["traffic"] if t["probe"] == "tcp"]
    assert tcp["error"] is None and tcp["bytes_echoed"] > 100_000

    # The timeline: a PNG, and a page whose gap table puts the unplug gap in the unplug step.
    drawn = subprocess.run([sys.executable, "-m", "testbed.cli", "report", str(tmp_path / "r.json")],
                           capture_output=True, text=True, timeout=120)
    assert drawn.returncode == 0, drawn.stderr
    png = (tmp_path / "r.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    page = (tmp_path / "r.html").read_text()
    unplug_gap = next(g for g in ping["gaps"] if g["step"] == unplug)
    assert f"<td>{unplug_gap['start_s']:.3f}</td><td>{unplug_gap['ms']}</td>" in page
    assert f"<td>{unplug} unplug-primary</td>" in page

def test_a_broken_threshold_fails_naming_step_gap_and_threshold(tmp_path):
    done, report = _run(tmp_path, "unplug-replug-pci.yaml", "--set", "unplug_gap_ms=0")
    assert done.returncode == 1
    failed = [s for s in report["steps"] if not s["ok"]]
    assert [s["action"] for s in failed] == ["check-traffic"]
    message = failed[0]["error"]
    assert "(unplug-primary) exceeds max_gap_ms 0" in message and " ms (" in message
    assert report["passed"] is False
    assert report["error"] == f"step {failed[0]['index']} (check-traffic) failed: {message}"
    assert f"error: {report['error']}" in " ".join(done.stderr.split())
