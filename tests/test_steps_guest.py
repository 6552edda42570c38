"""Steps no shipped scenario needs on its own, each shown to act on a real guest and bridge."""

from pathlib import Path

import pytest

from testbed.runner import RunOptions, live_run
from testbed.scenario import (AnnounceSelfStep, BootStep, ExecStep, FdbStep, SleepStep,
                              StartTrafficStep, load_scenario)

REPO = Path(__file__).parent.parent
pytestmark = pytest.mark.guest


def _shares(record):
    roles = record.counters["vm1"]["net0"]
    return {r: roles[r]["rx"] for r in ("standby", "primary")}, {r: roles[r]["tx"] for r in ("standby", "primary")}


def test_exec_fdb_and_announce_self(tmp_path):
    scenario = load_scenario(REPO / "scenarios/standby-pci.yaml")
    with live_run(scenario, RunOptions(artifacts_dir=tmp_path / "art")) as run:
        assert run.step(BootStep(action="boot")).ok

        hostname = run.step(ExecStep(action="exec", vm="vm1", command=["cat", "/proc/sys/kernel/hostname"]))
        assert hostname.ok and hostname.details["stdout"].strip() == "vm1"
        assert run.step(ExecStep(action="exec", vm="vm1", command="exit 3", expect_status=3)).ok
        wrong = run.step(ExecStep(action="exec", vm="vm1", command="echo oops >&2; exit 3"))
        assert not wrong.ok and "exited 3, expected 0: oops" in wrong.error

        # The guest talks to the peer through its primary, so the bridge learns its MAC on the
        # primary's tap; deleting the entry twice shows it gone.
        assert run.step(ExecStep(action="exec", vm="vm1", command=["ping", "-c", "2", "-W", "2", "192.168.77.1"])).ok
        first = run.step(FdbStep(action="fdb", vm="vm1", pair="net0", op="del", port="primary"))
        second = run.step(FdbStep(action="fdb", vm="vm1", pair="net0", op="del", port="primary"))
        assert first.details["entry_existed"] is True and second.details["entry_existed"] is False
        announce = run.step(AnnounceSelfStep(action="announce-self", vm="vm1", rounds=2, initial_ms=20,
                                             max_ms=100, step_ms=20))
        assert announce.ok
        assert run.step(SleepStep(action="sleep", seconds=1)).ok
        relearned = run.ctx.netns.run(["bridge", "fdb", "show", "br", "br0"])
        # A bridge keeps one learned port per MAC: after the announcement it is one of the pair's taps.
        ports = [line.split()[2] for line in relearned.splitlines()
                 if line.startswith("52:54:00:00:12:54 dev ") and "permanent" not in line]
        assert len(ports) == 1 and ports[0] in ("t0net0s", "t0net0p"), relearned
        # exec where: host runs on the host that holds the bridge (here the run's namespace)
        on_host = run.step(ExecStep(action="exec", vm="vm1", where="host", command=["ip", "-o", "link", "show", "master", "br0"]))
        assert on_host.ok and {"t0net0s:", "t0net0p:"} <= set(on_host.details["stdout"].split())
        failing = run.step(ExecStep(action="exec", vm="vm1", where="host", command="exit 4"))
        assert failing.error == "the host: 'exit 4' exited 4, expected 0: "

        # Pinning the MAC to the standby's tap sends the peer's echoes into the standby. While a
        # primary is enslaved, net_failover hands frames from the standby to nobody
        # (net_failover_handle_frame: RX_HANDLER_EXACT), so the guest answers none: a black hole,
        # which is what a stale FDB entry does after a re-plug.
        assert run.step(StartTrafficStep(action="start-traffic", vm="vm1", pair="net0", tcp=False)).ok
        assert run.step(FdbStep(action="fdb", vm="vm1", pair="net0", op="add", port="standby")).ok
        pinned = run.step(SleepStep(action="sleep", seconds=1.5))
        assert run.step(FdbStep(action="fdb", vm="vm1", pair="net0", op="del", port="standby")).ok
        recovered = run.step(SleepStep(action="sleep", seconds=1.5))
        assert run.step(SleepStep(action="sleep", seconds=0.1)).ok  # closes the counters of `recovered`
        rx, tx = _shares(pinned)
        assert rx["standby"] > 100 and rx["primary"] < 10, (rx, tx)
        assert tx["primary"] + tx["standby"] < 10, (rx, tx)
        rx, tx = _shares(recovered)
        assert rx["primary"] > 100 and tx["primary"] > 100, (rx, tx)
        ping = run.ctx.traffic[("vm1", "net0")].ping.result([])
        assert max(g.ms for g in ping.gaps) > 1000  # the black hole shows as a gap
