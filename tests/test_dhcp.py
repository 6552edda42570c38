"""DHCP and image flavours in a scenario (pure logic): reservations, what each flavour accepts, the
guest's kernel command line, the dnsmasq argv, dnsmasq's log lines, and the address check."""

from pathlib import Path

import pytest
import yaml

from testbed.dhcp_plan import dnsmasq_argv
from testbed.dhcp_server import leases_of, parse_dhcp_line
from testbed.errors import ScenarioError
from testbed.guest_probe import parse_netdevs
from testbed.image_recipe import ImageRecipe, flavours
from testbed.plan import peer_addresses, plan_machines
from testbed.scenario import load_scenario
from testbed.steps.addresses import address_problems


def _scenario(tmp_path: Path, vms: list[dict], **top) -> object:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"name": "s", "vms": vms, "steps": [{"action": "boot"}], **top}))
    return load_scenario(path)


def _vm(name: str, *pairs: dict, **extra) -> dict:
    return {"name": name, "image": "networkd", "pairs": list(pairs), **extra}


def test_dhcp_pairs_get_reserved_addresses_in_order_and_the_peer_the_first_host(tmp_path):
    s = _scenario(tmp_path, [_vm("vm1", {"name": "a", "mac": "52:54:00:00:00:01", "address": "dhcp"},
                                 {"name": "b", "mac": "52:54:00:00:00:02", "address": "192.168.100.11/24"}),
                             _vm("vm2", {"name": "c", "mac": "52:54:00:00:00:03", "address": "dhcp"})])
    a, b = s.vms[0].pairs
    (c,) = s.vms[1].pairs
    assert (str(a.address), a.dhcp) == ("192.168.100.10/24", True)
    assert (str(b.address), b.dhcp) == ("192.168.100.11/24", False)   # static, and skipped by the reservations
    assert (str(c.address), c.dhcp) == ("192.168.100.12/24", True)
    assert [str(p) for p in peer_addresses(s)] == ["192.168.100.1/24"]
    cmdline = plan_machines(s)[0].kernel_cmdline()
    assert "testbed.addr=52:54:00:00:00:01=dhcp,52:54:00:00:00:02=192.168.100.11/24" in cmdline
    assert not any(a.startswith("testbed.netconfig=") for a in cmdline)


def test_a_subnet_of_ones_own_and_netconfig_reach_the_guest(tmp_path):
    s = _scenario(tmp_path, [_vm("vm1", {"name": "a", "mac": "52:54:00:00:00:01", "address": "dhcp"},
                                 netconfig="naive")], network={"dhcp_subnet": "10.9.0.0/28"})
    assert str(s.vms[0].pairs[0].address) == "10.9.0.10/28"
    assert "testbed.netconfig=naive" in plan_machines(s)[0].kernel_cmdline()


@pytest.mark.parametrize("vm, top, key, reason", [
    ({"name": "vm1", "pairs": [{"name": "a", "mac": "52:54:00:00:00:01", "address": "dhcp"}]}, {},
     "vms[0].pairs[0].address", "needs a guest with a DHCP client"),
    ({"name": "vm1", "netconfig": "naive", "pairs": [{"name": "a", "mac": "52:54:00:00:00:01"}]}, {},
     "vms[0].netconfig", "the minimal image has none"),
    ({"name": "vm1", "image": "fedora", "pairs": [{"name": "a", "mac": "52:54:00:00:00:01"}]}, {},
     "vms[0].image", "no guest image flavour 'fedora'; known: minimal, cloud-init, ifupdown, networkd, networkmanager"),
    (_vm("vm1", {"name": "a", "mac": "52:54:00:00:00:01", "address": "dhcp"},
         {"name": "b", "mac": "52:54:00:00:00:02", "address": "dhcp"}), {"network": {"dhcp_subnet": "10.9.0.0/29"}},
     "vms[0].pairs[0].address", "10.9.0.0/29 has no host address left"),
    (_vm("vm1", {"name": "a", "mac": "52:54:00:00:00:01", "primary": {"kind": "host-vf"}}), {"host": {"kind": "vm"}},
     "vms[0].image", "a host VM's guests run the minimal image"),
    ({**_vm("vm1", {"name": "a", "mac": "52:54:00:00:00:01", "address": "192.168.1.2/24"}), "image": "networkmanager"},
     {}, "vms[0].pairs[0].address", "use address: dhcp, or none"),
    ({**_vm("vm1", {"name": "a", "mac": "52:54:00:00:00:01", "address": "dhcp"}, netconfig="naive"),
      "image": "networkmanager"}, {}, "vms[0].netconfig", "runs NetworkManager's defaults"),
])
def test_flavour_options_are_refused_where_they_cannot_work(tmp_path, vm, top, key, reason):
    with pytest.raises(ScenarioError) as e:
        _scenario(tmp_path, [vm], **top)
    assert e.value.key == key and reason in e.value.reason, (e.value.key, e.value.reason)


def test_every_flavour_recipe_loads_and_its_overlays_exist():
    assert set(flavours()) == {"minimal", "networkd", "networkmanager", "ifupdown", "cloud-init"}
    for name, path in flavours().items():
        recipe = ImageRecipe.load(path)
        assert all(src.exists() for src, _ in recipe.overlay_paths(path)), name
    assert ImageRecipe.load(flavours()["networkd"]).variant == "minbase"


def test_dnsmasq_serves_only_the_reservations_and_no_dns(tmp_path):
    s = _scenario(tmp_path, [_vm("vm1", {"name": "a", "mac": "52:54:00:00:00:01", "address": "dhcp"})])
    argv = dnsmasq_argv(s.vms[0].pairs, "eth0", Path("/a/leases"), Path("/a/pid"))
    assert argv[0] == "dnsmasq" and "--port=0" in argv and "--interface=eth0" in argv
    assert "--dhcp-range=192.168.100.0,static,255.255.255.0,1h" in argv
    assert "--dhcp-host=52:54:00:00:00:01,192.168.100.10" in argv and "--conf-file=/dev/null" in argv


def test_dnsmasq_log_lines_become_dhcp_events_and_leases():
    lines = ["dnsmasq-dhcp[7]: 2808570305 DHCPDISCOVER(eth0) 52:54:00:00:12:55",
             "dnsmasq-dhcp[7]: 2808570305 DHCPOFFER(eth0) 192.168.100.10 52:54:00:00:12:55",
             "dnsmasq-dhcp[7]: 2808570305 client provides name: vm1",
             "dnsmasq-dhcp[7]: 2808570305 DHCPACK(eth0) 192.168.100.10 52:54:00:00:12:55 vm1",
             "dnsmasq-dhcp[7]: 386789912 DHCPACK(eth0) 192.168.100.10 52:54:00:00:12:55 vm1"]
    events = [e for n, line in enumerate(lines) if (e := parse_dhcp_line(line, 10.0 + n)) is not None]
    assert [e["message"] for e in events] == ["DHCPDISCOVER", "DHCPOFFER", "DHCPACK", "DHCPACK"]
    assert events[0]["address"] is None and events[2] == {"t_s": 13.0, "message": "DHCPACK", "xid": 2808570305,
                                                          "mac": "52:54:00:00:12:55", "address": "192.168.100.10",
                                                          "detail": "vm1"}
    assert leases_of(events) == [{"mac": "52:54:00:00:12:55", "address": "192.168.100.10",
                                  "acked_at_s": [13.0, 14.0]}]


NETDEVS = "\n".join("\t".join(row) for row in [
    ("enp1s0", "net_failover", "-", "52:54:00:00:12:53", "52:54:00:00:12:53", "up", "-", "1", "2", "192.168.100.10/24"),
    ("enp1s0nsby", "virtio_net", "enp1s0", "52:54:00:00:12:53", "52:54:00:00:12:53", "up", "sby", "1", "2", "-"),
    ("enp2s0", "e1000e", "enp1s0", "52:54:00:00:12:53", "52:54:00:00:12:53", "up", "-", "1", "2",
     "192.168.100.10/24,10.1.1.1/8"),
    ("enp0s2", "virtio_net", "-", "0a:54:00:00:00:01", "0a:54:00:00:00:01", "up", "-", "1", "2", "-"),
])


def test_the_address_check_names_every_netdev_that_differs():
    netdevs = parse_netdevs(NETDEVS)
    assert [n.ipv4 for n in netdevs] == [("192.168.100.10/24",), (), ("192.168.100.10/24", "10.1.1.1/8"), ()]
    mac, addr = "52:54:00:00:12:53", "192.168.100.10/24"
    assert address_problems(netdevs, mac, addr, ["failover"]) == ["enp2s0 (primary) holds 192.168.100.10/24, 10.1.1.1/8"]
    assert address_problems(netdevs, mac, addr, ["failover", "primary"]) == []
    assert address_problems(netdevs, mac, addr, ["standby", "other"]) == [
        "no other netdev with MAC 52:54:00:00:12:53",
        "enp1s0nsby (standby) does not hold 192.168.100.10/24 (it has none)",
        "enp1s0 (failover) holds 192.168.100.10/24", "enp2s0 (primary) holds 192.168.100.10/24, 10.1.1.1/8"]
