"""Migration over TCP across the uplink between the two hosts' bridges, unshaped and shaped
(shape-uplink), on a real guest: the stream crosses the uplink (a capture on the destination side's
bridge sees it), and a rate on the uplink caps the migration's throughput. delay_ms and loss_percent
need the host kernel's netem: where it is missing the step must say so."""

from pathlib import Path

import pytest

from testbed.errors import TestbedError
from testbed.netns import NetworkNamespace
from testbed.runner import RunOptions, run_scenario
from testbed.scenario import load_scenario

pytestmark = pytest.mark.guest

RATE_MBIT = 200
SCENARIO = """
description: migrations over TCP across the uplink, unshaped, then at a rate, then with delay and loss
network: {hosts: 2}
vms:
  - name: vm1
    pairs:
      - {name: net0, mac: "52:54:00:00:12:69", address: 192.168.77.2/24, primary: {kind: pci}}
steps:
  - action: boot
  - {action: start-capture, name: uplink, host: 2, filter: tcp and net 198.18.0.0/29}
  - {action: migrate, vm: vm1, transport: tcp}
  - {action: shape-uplink, rate_mbit: %d}
  - {action: migrate, vm: vm1, transport: tcp}
  - {action: check-capture, name: uplink, match: dst host 198.18.0.5, min_count: 100}
  - {action: shape-uplink, clear: true}
  - {action: shape-uplink, delay_ms: 20, loss_percent: 0.1}
  - {action: migrate, vm: vm1, transport: tcp}
  - {action: check-netdevs, vm: vm1, expect: paired}
""" % RATE_MBIT


def _netem_here() -> bool:
    """Whether this kernel has the netem qdisc, asked in a throwaway network namespace."""
    ns = NetworkNamespace.create()
    try:
        ns.run(["ip", "link", "add", "t0", "type", "veth", "peer", "name", "t1"])
        ns.run(["tc", "qdisc", "add", "dev", "t0", "root", "netem", "delay", "1ms"])
        return True
    except TestbedError as e:
        if "qdisc kind is unknown" in str(e):
            return False
        raise
    finally:
        ns.close()


def test_migrations_cross_the_uplink_and_its_rate_caps_them(tmp_path: Path):
    path = tmp_path / "uplink.yaml"
    path.write_text(SCENARIO)
    report = run_scenario(load_scenario(path), RunOptions(artifacts_dir=tmp_path / "art", snapshot="never"))
    first, second = report.migrations[:2]
    assert (first.status, second.status) == ("completed", "completed"), report.error
    assert first.transport == second.transport == "tcp" and (first.to_slot, second.to_slot) == (1, 0)
    # unshaped, the stream runs far above the rate; shaped, tbf holds it to the rate
    assert first.ram_mbps is not None and first.ram_mbps > 2 * RATE_MBIT, first.ram_mbps
    assert second.ram_mbps is not None and second.ram_mbps <= RATE_MBIT * 1.05, second.ram_mbps
    assert second.total_time_ms > 2 * first.total_time_ms
    # the second migration went to host 1's bridge from host 2's side: across the uplink, so the
    # capture on host 2's bridge saw it
    steps = {s.index: s for s in report.steps}
    assert steps[5].ok and steps[5].details["count"] >= 100, steps[5].details
    assert steps[3].details["commands"][0].startswith("tc qdisc replace dev up0 root tbf rate 200mbit")
    assert steps[6].ok
    netem = steps[7]
    if _netem_here():
        assert netem.ok and "netem delay 20ms loss 0.1%" in netem.details["commands"][0]
        assert report.passed, report.error
        assert report.migrations[2].status == "completed"
    else:  # this machine's kernel: the step says why it cannot shape, and the run stops there
        assert not netem.ok and "this host's kernel has no netem qdisc (sch_netem)" in netem.error, netem.error
        assert len(report.migrations) == 2
