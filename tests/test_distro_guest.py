"""A distribution userspace in the guest (issue 12): the networkd flavour, DHCP from dnsmasq in the peer
namespace, and what networkd does with a failover pair, configured as the kernel document asks and
naively. Both through the CLI, as a user runs them."""

import json
import os
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
import sys
from pathlib import Path

import pytest

from session_once import once_per_session  # tests/

pytestmark = pytest.mark.guest
ZOO = Path(__file__).parent.parent / "scenarios" / "zoo"
DATA = Path(__file__).parent / "data"


SCENARIOS = [ZOO / "dhcp-networkd.yaml", DATA / "networkd-no-standby.yaml",
             ZOO / "zoo-04-naive-dhcp-configures-slaves.yaml", ZOO / "zoo-04-networkmanager-defaults.yaml",
             ZOO / "dhcp-ifupdown.yaml", ZOO / "zoo-04-ifupdown-allow-hotplug-configures-slaves.yaml",
             DATA / "ifupdown-no-standby.yaml"]

RUN_TIMEOUT_S = 900


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, tuple[subprocess.CompletedProcess, dict]]:
    """The scenarios, two at a time, each its own run on its own core: the suite pays for half. Under
    pytest-xdist (-n 2, the README's command) one at a time, since the other worker runs guests of its
    own (three TCG guests on two cores starved a guest's helpers past their timeouts); once per session,
    whichever workers get this module's tests."""
    def run_all(tmp_path: Path):
        with ThreadPoolExecutor(1 if os.environ.get("PYTEST_XDIST_WORKER") else 2) as pool:
            return dict(zip([p.stem for p in SCENARIOS], pool.map(lambda path: _run(tmp_path, path), SCENARIOS)))
    return once_per_session(tmp_path_factory, "distro", run_all, wait_s=len(SCENARIOS) * RUN_TIMEOUT_S)


def _run(tmp_path: Path, scenario: Path) -> tuple[subprocess.CompletedProcess, dict]:
    report = tmp_path / f"{scenario.stem}.json"
    done = subprocess.run([sys.executable, "-m", "testbed.cli", "run", str(scenario), "--quiet", "--report",
                           str(report), "--artifacts", str(tmp_path / scenario.stem)],
                          capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    return done, json.loads(report.read_text())


def _holders(report: dict, n: int = 0) -> dict[str, list[str]]:
    step = [s for s in report["steps"] if s["action"] == "check-addresses"][n]
    return {h["role"]: h["ipv4"] for h in step["details"]["holders"].values()}


def test_networkd_as_the_kernel_document_asks_leases_to_the_master_only(runs):
    (done, report), (other_done, other) = runs["dhcp-networkd"], runs["networkd-no-standby"]
    # A pair that never negotiated STANDBY: its plain virtio NIC takes the lease, from the scenario's own
    # subnet; a static pair: its master holds the address.
    assert other_done.returncode == 0, other_done.stdout + other_done.stderr
    assert [(lease["mac"], lease["address"]) for lease in other["leases"]] == [("52:54:00:00:12:59", "10.10.0.10")]
    assert _holders(other, 0) == {"other": ["10.10.0.10/24"]}
    assert _holders(other, 1) == {"failover": ["192.168.77.2/24"], "standby": [], "primary": []}

    assert done.returncode == 0, done.stdout + done.stderr
    assert report["host"]["images"].keys() == {"networkd"}
    # one DHCP client asked (the master's), and got the address reserved for its MAC
    (lease,) = report["leases"]
    assert lease["mac"] == "52:54:00:00:12:53" and lease["address"] == "192.168.100.10"
    assert len(lease["acked_at_s"]) == 1 and 0 < lease["acked_at_s"][0] < report["duration_s"]
    messages = [e["message"] for e in report["dhcp"]]
    assert messages[0] == "DHCPDISCOVER" and messages[-2:] == ["DHCPREQUEST", "DHCPACK"], messages
    # after boot and after the re-plug: the master holds it, the standby and the primary nothing
    for n in (0, 1):
        assert _holders(report, n) == {"failover": ["192.168.100.10/24"], "standby": [], "primary": []}
    netdevs = {d["role"]: d for d in report["vms"]["vm1"]["netdevs"] if d["mac"] == "52:54:00:00:12:53"}
    assert netdevs["failover"]["ipv4"] == ["192.168.100.10/24"] and netdevs["primary"]["driver"] == "e1000e"
    # the traffic went through the unplug and the re-plug, each path carrying it in turn
    shares = [s["details"]["path"]["shares"] for s in report["steps"]
              if s["action"] == "check-traffic" and s["details"]["path"]["steps_measured"]]
    assert [max(share, key=share.get) for share in shares] == ["primary", "standby", "primary"], shares
    (tcp,) = [t for t in report["traffic"] if t["probe"] == "tcp"]
    assert tcp["error"] is None and tcp["bytes_echoed"] > 0  # what is in flight when the probe stops is not echoed


def test_zoo_item_4_a_naive_networkd_config_and_networkmanager_defaults_lease_to_all_three(runs):
    naive, nm = runs["zoo-04-naive-dhcp-configures-slaves"], runs["zoo-04-networkmanager-defaults"]
    for done, report in (naive, nm):
        assert done.returncode == 1, done.stdout + done.stderr  # reproduced: `bad` for git bisect
        assert report["verdict"] == "reproduced", report["verdict_evidence"]
        assert _holders(report) == {role: ["192.168.100.10/24"] for role in ("failover", "standby", "primary")}

    done, report = naive
    (lease,) = report["leases"]
    assert len(lease["acked_at_s"]) >= 3, lease  # three DHCP clients with one MAC: the master and both slaves
    assert "3 default routes" in report["steps"][2]["details"]["stdout"]

    done, report = nm
    profiles = report["steps"][2]["details"]["stdout"]
    assert all(f"{dev}:connected:Wired connection" in profiles for dev in ("enp1s0", "enp1s0nsby", "enp2s0"))
    (lease,) = report["leases"]
    # at least: boot (3 devices), the re-plugged VF, the VF after the migration (a client that repeats
    # its request under load adds one)
    assert len(lease["acked_at_s"]) >= 5, lease
    for n in (1, 2):  # the re-plugged VF, and the VF on the migration's destination: connected and leased again
        assert _holders(report, n)["primary"] == ["192.168.100.10/24"]
    assert report["migrations"][0]["status"] == "completed"


def test_ifupdown_configures_the_master_only_as_the_document_asks_and_every_nic_with_allow_hotplug(runs):
    (done, report), (naive_done, naive) = runs["dhcp-ifupdown"], runs["zoo-04-ifupdown-allow-hotplug-configures-slaves"]
    other_done, other = runs["ifupdown-no-standby"]
    # no STANDBY: the plain virtio NIC takes the lease; a static pair: its master holds the address
    assert other_done.returncode == 0, other_done.stdout + other_done.stderr
    assert [(lease["mac"], lease["address"]) for lease in other["leases"]] == [("52:54:00:00:12:6a", "10.10.0.10")]
    assert _holders(other, 0) == {"other": ["10.10.0.10/24"]}
    assert _holders(other, 1) == {"failover": ["192.168.77.2/24"], "standby": [], "primary": []}
    assert done.returncode == 0, done.stdout + done.stderr
    assert report["host"]["images"].keys() == {"ifupdown"}
    (lease,) = report["leases"]
    assert (lease["mac"], lease["address"], len(lease["acked_at_s"])) == ("52:54:00:00:12:67", "192.168.100.10", 1)
    for n in (0, 1):  # after boot, and after udev's ifupdown hook saw the VF re-plugged
        assert _holders(report, n) == {"failover": ["192.168.100.10/24"], "standby": [], "primary": []}

    assert naive_done.returncode == 1, naive_done.stdout + naive_done.stderr  # reproduced
    assert naive["verdict"] == "reproduced", naive["verdict_evidence"]
    interfaces = naive["steps"][1]["details"]["stdout"]
    assert all(f"allow-hotplug {dev}\niface {dev} inet dhcp" in interfaces for dev in ("enp1s0", "enp1s0nsby", "enp2s0"))
    (lease,) = naive["leases"]
    assert len(lease["acked_at_s"]) >= 3, lease  # a dhclient per netdev with the MAC
    assert _holders(naive) == {role: ["192.168.100.10/24"] for role in ("failover", "standby", "primary")}


def test_bench_flavours_boots_a_flavour_and_images_build_takes_a_flavour(tmp_path):
    out = tmp_path / "bench.json"
    # One flavour (every flavour is the same loop; the suite boots each one elsewhere): with minimal not
    # among those measured, there is no ratio to it.
    done = subprocess.run([sys.executable, "-m", "testbed.cli", "bench", "--flavours", "networkd", "--runs", "1",
                           "--no-cold", "--json", str(out)], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    (row,) = json.loads(out.read_text())["rows"]
    assert row["flavour"] == "networkd" and "pairs_over_minimal" not in row and "image_cold_s" not in row
    assert 0 < row["ssh_ready_s"] < row["pairs_ready_s"] and row["image_warm_s"] < 1 and row["initrd_mib"] > 20

    done = subprocess.run([sys.executable, "-m", "testbed.cli", "images", "build", "--flavour", "networkd"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    directory = Path(re.search(r"networkd: (\S+)", done.stdout + done.stderr)[1])
    assert json.loads((directory / "manifest.json").read_text())["flavour"] == "networkd"
    assert "systemd" in json.loads((directory / "manifest.json").read_text())["packages"]
