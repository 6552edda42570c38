"""Checks across a scenario's parts: names, MACs and addresses that must not clash, and steps that
must name VMs and pairs that exist and were booted. Each failure names the key it is about."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from testbed.scenario_run_steps import MigrationStepBase
from testbed.scenario_steps import (BootStep, CheckNetdevsStep, CheckTrafficStep, Expectation,
                                    PlugPrimaryStep, StartTrafficStep, StepModel, UnplugPrimaryStep)
from testbed.scenario_values import MAX_TOTAL_MEMORY_MIB, KeyedValueError

if TYPE_CHECKING:
    from testbed.scenario_model import VM, Network


def first_duplicate(values: Sequence[Any]) -> tuple[int, int] | None:
    """(first index, later index) of the first value seen twice."""
    seen: dict[Any, int] = {}
    for i, value in enumerate(values):
        if value in seen:
            return seen[value], i
        seen[value] = i
    return None


def check_vms(vms: Sequence["VM"]) -> None:
    dup = first_duplicate([vm.name for vm in vms])
    if dup:
        raise KeyedValueError(f"vms[{dup[1]}].name", f"VM name {vms[dup[1]].name!r} is used twice (also vms[{dup[0]}])")
    total = sum(vm.memory_mib for vm in vms)
    if total > MAX_TOTAL_MEMORY_MIB:
        raise KeyedValueError("vms", f"the VMs ask for {total} MiB of memory together; at most {MAX_TOTAL_MEMORY_MIB}")
    pairs = [(f"vms[{i}].pairs[{j}]", p) for i, vm in enumerate(vms) for j, p in enumerate(vm.pairs)]
    dup = first_duplicate([p.mac for _, p in pairs])
    if dup:
        raise KeyedValueError(f"{pairs[dup[1]][0]}.mac", f"pair MAC {pairs[dup[1]][1].mac} is used twice "
                              f"(also {pairs[dup[0]][0]})")
    addressed = [(key, p.address) for key, p in pairs if p.address is not None]
    dup = first_duplicate([a.ip for _, a in addressed])
    if dup:
        raise KeyedValueError(f"{addressed[dup[1]][0]}.address", f"address {addressed[dup[1]][1].ip} is used "
                              f"twice (also {addressed[dup[0]][0]})")
    for n, (key, a) in enumerate(addressed):
        for other_key, b in addressed[:n]:
            if a.network != b.network and a.network.overlaps(b.network):
                raise KeyedValueError(f"{key}.address", f"{a.network} overlaps {b.network} ({other_key}); "
                                      "pairs share a subnet only with the same prefix")


def check_network(network: "Network", vms: Sequence["VM"], steps: Sequence[StepModel]) -> None:
    guests = {p.address.ip: f"{vm.name}/{p.name}" for vm in vms for p in vm.pairs if p.address}
    if network.peer_addresses is None:
        used = set(guests)
        for vm in vms:
            for p in vm.pairs:
                if p.address and next((h for h in p.address.network.hosts() if h not in used), None) is None:
                    raise KeyedValueError("network.peer_addresses", f"{p.address.network} has no host address "
                                          "left for the peer; give a larger subnet or set peer_addresses")
        return
    peers = network.peer_addresses
    dup = first_duplicate([a.ip for a in peers])
    if dup:
        raise KeyedValueError(f"network.peer_addresses[{dup[1]}]", f"{peers[dup[1]].ip} is listed twice")
    for i, a in enumerate(peers):
        if a.ip in guests:
            raise KeyedValueError(f"network.peer_addresses[{i}]", f"{a.ip} is the address of pair {guests[a.ip]}")
    for i, step in enumerate(steps):
        if isinstance(step, StartTrafficStep):
            address = next(p.address for vm in vms if vm.name == step.vm for p in vm.pairs if p.name == step.pair)
            if address is not None and not any(a.network == address.network for a in peers):
                raise KeyedValueError("network.peer_addresses", f"steps[{i}] starts traffic to {address} but no "
                                      f"peer address is in {address.network}")


IGB_VF_MIGRATION = (
    "an in-guest igb VF does not survive a migration or a save: QEMU's igbvf device has no migration state "
    "(hw/net/igbvf.c registers no VMStateDescription), so on the destination the VF's PCI config is "
    "reset (bus mastering and MSI-X off) while igbvf still drives it, and the pair goes silent "
    "(docs/findings/igbvf-no-migration-state.md, zoo item 25). Unplug the primary before the step and "
    "plug it back after, as seed-live-migration.yaml does, or use a pci primary")


def check_migrations(vms: Sequence["VM"], steps: Sequence[StepModel]) -> None:
    """A migrate step while an igb-vf primary is plugged is refused: it would end in silent loss."""
    plugged = {(vm.name, p.name) for vm in vms for p in vm.pairs
               if p.primary is not None and p.primary.kind.value == "igb-vf"}
    for i, step in enumerate(steps):
        if isinstance(step, UnplugPrimaryStep):
            plugged.discard((step.vm, step.pair))
        elif isinstance(step, PlugPrimaryStep) and any(
                p.name == step.pair and p.primary is not None and p.primary.kind.value == "igb-vf"
                for vm in vms if vm.name == step.vm for p in vm.pairs):
            plugged.add((step.vm, step.pair))
        elif isinstance(step, MigrationStepBase):
            live = sorted(pair for vm, pair in plugged if vm == step.vm)
            if live:
                verb = "migrates" if step.action == "migrate" else "saves"
                raise KeyedValueError(f"steps[{i}]", f"{verb} {step.vm} with the igb-vf primary of "
                                      f"{', '.join(live)} plugged: {IGB_VF_MIGRATION}")


def check_steps(vms: Sequence["VM"], steps: Sequence[StepModel]) -> None:
    by_name = {vm.name: vm for vm in vms}
    booted: dict[str, int] = {}
    traffic: dict[tuple[str, str], int] = {}
    if not isinstance(steps[0], BootStep):
        raise KeyedValueError("steps[0]", "the first step must be a boot step")
    for i, step in enumerate(steps):
        vm_refs, pair_refs = step.references()
        for ref in vm_refs:
            if ref.name not in by_name:
                raise KeyedValueError(f"steps[{i}].{ref.key}", f"names VM {ref.name!r}; the scenario has {sorted(by_name)}")
        if isinstance(step, BootStep):
            for key, name in ([(f".{r.key}", r.name) for r in vm_refs] if step.vms else [("", n) for n in by_name]):
                if name in booted:
                    raise KeyedValueError(f"steps[{i}]{key}", f"boots VM {name!r} again; steps[{booted[name]}] "
                                          "already booted it")
                booted[name] = i
            continue
        for ref in vm_refs:
            if ref.name not in booted:
                raise KeyedValueError(f"steps[{i}].{ref.key}", f"names VM {ref.name!r}, which no earlier boot step "
                                      "starts")
        since = getattr(step, "since_step", None)
        if since is not None and since >= i:
            raise KeyedValueError(f"steps[{i}].since_step", f"is {since}: it must name an earlier step (0..{i - 1})")
        if not vm_refs:
            continue
        vm = by_name[vm_refs[0].name]
        pair_names = [p.name for p in vm.pairs]
        for ref in pair_refs:
            if ref.name not in pair_names:
                raise KeyedValueError(f"steps[{i}].{ref.key}", f"names pair {ref.name!r}, which VM {vm.name!r} "
                                      f"does not have (it has {pair_names})")
        needs = step.pair_needs()
        for ref in pair_refs:
            pair = vm.pair(ref.name)
            if "primary" in needs and pair.primary is None:
                raise KeyedValueError(f"steps[{i}].{ref.key}", f"{step.action} needs the primary of pair "
                                      f"{ref.name!r}, which has none")
            if ("host-vf" in needs and pair.primary is not None
                    and pair.primary.kind.value != "host-vf"):
                raise KeyedValueError(f"steps[{i}].{ref.key}", f"{step.action} sets the MAC of a host VM's VF "
                                      f"through its PF; pair {ref.name!r} has a {pair.primary.kind.value} primary "
                                      "(use `primary: {kind: host-vf}` with `host: {kind: vm}`)")
            if "address" in needs and pair.address is None:
                raise KeyedValueError(f"steps[{i}].{ref.key}", f"{step.action} needs an address on pair "
                                      f"{ref.name!r}")
        if isinstance(step, CheckNetdevsStep) and step.expect == Expectation.PAIRED:
            for pair in vm.pairs:
                if (step.pairs is None or pair.name in step.pairs) and pair.primary is None:
                    raise KeyedValueError(f"steps[{i}].expect", f"expects pair {pair.name!r} paired, but it has no primary")
        if isinstance(step, StartTrafficStep):
            key = (step.vm, step.pair)
            if key in traffic:
                raise KeyedValueError(f"steps[{i}]", f"starts traffic for {step.vm}/{step.pair} again; "
                                      f"steps[{traffic[key]}] started it and it runs until the end")
            traffic[key] = i
        if isinstance(step, CheckTrafficStep) and (step.vm, step.pair) not in traffic:
            raise KeyedValueError(f"steps[{i}]", f"checks traffic of {step.vm}/{step.pair} before any "
                                  "start-traffic for it")


def check_host(host_kind: str, vms: Sequence["VM"]) -> None:
    """host-vf primaries exist only on a host VM, and a host VM's guests take only host-vf primaries."""
    for i, vm in enumerate(vms):
        if host_kind == "vm" and vm.image != "minimal":
            raise KeyedValueError(f"vms[{i}].image", "a host VM's guests run the minimal image (the host VM's "
                                  f"image carries it, not the {vm.image} flavour)")
        for j, pair in enumerate(vm.pairs):
            kind = pair.primary.kind.value if pair.primary is not None else None
            if kind == "host-vf" and host_kind != "vm":
                raise KeyedValueError(f"vms[{i}].pairs[{j}].primary.kind", "a host-vf primary is a VF of the host "
                                      "VM's igb PF: it needs `host: {kind: vm}`")
            if host_kind == "vm" and kind not in (None, "host-vf"):
                raise KeyedValueError(f"vms[{i}].pairs[{j}].primary.kind", f"{kind} primaries run on the namespace "
                                      "host; a host VM's guests take host-vf primaries")


# Steps written and tested for guests on the namespace host only: a nested guest's QEMU runs inside
# the host VM, where the testbed's scratch paths (a save's file) and console offsets do not reach.
NAMESPACE_HOST_ONLY = {"save-restore": "its state file is written by the nested QEMU inside the host VM",
                       "reset": "not yet tested against a nested guest",
                       "start-capture": "the bridges are inside the host VM, where the testbed runs no tcpdump yet",
                       "shape-uplink": "the host VM's PFs have no uplink between them"}


def check_host_steps(host_kind: str, steps: Sequence[StepModel]) -> None:
    if host_kind != "vm":
        return
    for i, step in enumerate(steps):
        if step.action in NAMESPACE_HOST_ONLY:
            raise KeyedValueError(f"steps[{i}]", f"{step.action} is not supported on a host VM yet: "
                                  f"{NAMESPACE_HOST_ONLY[step.action]}")


def check_eject_holds(host_kind: str, vms: Sequence["VM"], steps: Sequence[StepModel]) -> None:
    """hold_eject_ms masks q35's ACPI hot-plug GPE in the guest: the eject must go through ACPI."""
    for i, step in enumerate(steps):
        if getattr(step, "hold_eject_ms", None) is None:
            continue
        if host_kind == "vm":
            raise KeyedValueError(f"steps[{i}].hold_eject_ms", "is not supported on a host VM yet (not tested "
                                  "against a nested guest)")
        vm = next(v for v in vms if v.name == step.vm)
        if vm.pci_hotplug != "acpi":
            raise KeyedValueError(f"steps[{i}].hold_eject_ms", f"holds the ACPI hot-plug event; VM {vm.name} has "
                                  "pci_hotplug: native, where the eject is pciehp's")
        if isinstance(step.hold_eject_ms, dict):
            for name in step.hold_eject_ms:
                pair = next((p for p in vm.pairs if p.name == name), None)
                if pair is None or pair.primary is None or pair.primary.kind != "pci" \
                        or pair.primary_names_another_standby():
                    raise KeyedValueError(f"steps[{i}].hold_eject_ms.{name}", f"VM {vm.name} has no pair {name!r} "
                                          "with a pci primary paired with its standby (the only kind QEMU unplugs "
                                          "for a migration)")


def check_destination_faults(host_kind: str, vms: Sequence["VM"], steps: Sequence[StepModel]) -> None:
    """destination_primary_backend: missing leaves out a tap backend, which only an emulated primary
    that QEMU pairs (failover_pair_id) has."""
    for i, step in enumerate(steps):
        if getattr(step, "destination_primary_backend", "present") == "present":
            continue
        key = f"steps[{i}].destination_primary_backend"
        if host_kind == "vm":
            raise KeyedValueError(key, "is not supported on a host VM (its primaries are VFs, with no backend)")
        vm = next(v for v in vms if v.name == step.vm)
        if not any(p.primary is not None and p.primary.kind == "pci" for p in vm.pairs):
            raise KeyedValueError(key, f"VM {vm.name} has no primary that QEMU pairs with a backend of its own "
                                  "(kind: pci): there is no -netdev to leave out")


def check_captures(hosts: int, steps: Sequence[StepModel]) -> None:
    """A capture is started once before it is checked, on a host the network has."""
    started: dict[str, int] = {}
    for i, step in enumerate(steps):
        name = getattr(step, "name", None)
        if step.action == "start-capture":
            if name in started:
                raise KeyedValueError(f"steps[{i}].name", f"capture {name!r} is already started by steps[{started[name]}]")
            if getattr(step, "host") > hosts:
                raise KeyedValueError(f"steps[{i}].host", f"host {getattr(step, 'host')} needs network.hosts: 2 "
                                      f"(this scenario has {hosts})")
            started[str(name)] = i
        elif step.action == "check-capture" and name not in started:
            raise KeyedValueError(f"steps[{i}].name", f"no earlier start-capture step starts capture {name!r}")


def check_uplink_steps(host_kind: str, hosts: int, steps: Sequence[StepModel]) -> None:
    """The uplink joins two hosts' bridges: shaping it and migrating across it need both."""
    for i, step in enumerate(steps):
        tcp = getattr(step, "transport", "unix") == "tcp"
        if step.action != "shape-uplink" and not tcp:
            continue
        key = f"steps[{i}].transport" if tcp else f"steps[{i}]"
        what = "migrate transport: tcp crosses" if tcp else "shape-uplink shapes"
        if hosts != 2:
            raise KeyedValueError(key, f"{what} the uplink between two hosts' bridges: it needs network.hosts: 2")
        if tcp and host_kind == "vm":
            raise KeyedValueError(key, "is not supported on a host VM (its QEMUs migrate inside the host VM)")
        if tcp and getattr(step, "mode") == "multifd":
            raise KeyedValueError(key, "multifd opens several connections; transport: tcp gives QEMU one")


def check_primary_overrides(vms: Sequence["VM"], steps: Sequence[StepModel]) -> None:
    """plug-primary's failover_pair_id and mac are a pci primary's device properties."""
    for i, step in enumerate(steps):
        if step.action != "plug-primary" or (getattr(step, "failover_pair_id") is None and getattr(step, "mac") is None):
            continue
        vm = next(v for v in vms if v.name == step.vm)
        pair = next(p for p in vm.pairs if p.name == getattr(step, "pair"))
        if pair.primary is None or pair.primary.kind != "pci":
            key = "failover_pair_id" if getattr(step, "failover_pair_id") is not None else "mac"
            raise KeyedValueError(f"steps[{i}].{key}", f"pair {pair.name}'s primary is not kind: pci; only a pci "
                                  "primary is added with its own failover_pair_id and MAC")


def check_failover_pair_ids(vms: Sequence["VM"]) -> None:
    """A primary's own failover_pair_id models a typo (zoo item 18): an id that names no device. One
    that named another device of the VM would make QEMU pair the primary with that standby instead."""
    for v, vm in enumerate(vms):
        devices = {d for p in vm.pairs for d in (p.standby_id, p.primary_id)}
        for n, pair in enumerate(vm.pairs):
            if pair.primary_names_another_standby() and pair.qemu_pair_id in devices:
                raise KeyedValueError(f"vms[{v}].pairs[{n}].primary.failover_pair_id", f"{pair.qemu_pair_id} is a device of "
                                      f"VM {vm.name}; name its own standby ({pair.standby_id}) or an id of none")


def check_unplugged_standbys(steps: Sequence[StepModel]) -> None:
    """After unplug-standby, a save-restore or a reset of the VM is not supported."""
    gone: dict[str, int] = {}
    for i, step in enumerate(steps):
        vm_refs, _ = step.references()
        vm = vm_refs[0].name if vm_refs else None
        if step.action == "unplug-standby" and vm is not None:
            gone.setdefault(vm, i)
        elif vm in gone and step.action in ("save-restore", "reset"):
            raise KeyedValueError(f"steps[{i}]", f"{step.action} of {vm} after steps[{gone[vm]}] unplugged a "
                                  "standby is not supported yet (its restored QEMU and pairs check assume the "
                                  "standby); a migrate is (its destination starts without the standby)")


def check_symptoms(has_bug_card: bool, steps: Sequence[StepModel]) -> None:
    """A bug scenario says which steps assert its symptom; other scenarios have no symptom steps."""
    marked = [i for i, step in enumerate(steps) if step.symptom]
    if not has_bug_card and marked:
        raise KeyedValueError(f"steps[{marked[0]}].symptom", "only a scenario with a bug: card has symptom steps")
    if has_bug_card and not marked:
        raise KeyedValueError("bug", "a bug scenario needs at least one step with symptom: true (the steps "
                              "that assert the bug's symptom)")
    for i in marked:
        if isinstance(steps[i], BootStep):
            raise KeyedValueError(f"steps[{i}].symptom", "a boot step cannot be the symptom: a failed boot says "
                                  "nothing about the bug")
