"""Steps that hold a VM, restart it or end it: the boot step's hold (QEMU left at -S) needs a `cont`
to start the VM, a reset into other kernel arguments needs the minimal image's init, and a migration
expected to kill its source (expect: source-died) leaves no VM for later steps to use."""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from testbed.image_recipe import DEFAULT_FLAVOUR
from testbed.scenario_values import KeyedValueError, check_kernel_args

if TYPE_CHECKING:
    from testbed.scenario_model import VM
    from testbed.scenario_steps import StepModel


def check_held_boots(host_kind: str, vms: Sequence["VM"], steps: Sequence["StepModel"]) -> None:
    for i, step in enumerate(steps):
        if step.action != "boot" or not getattr(step, "hold"):
            continue
        if host_kind == "vm":
            raise KeyedValueError(f"steps[{i}].hold", "is not supported on a host VM yet (its nested guests are "
                                  "started by the host VM's boot)")
        for name in getattr(step, "vms") or [vm.name for vm in vms]:
            if not any(later.action == "cont" and getattr(later, "vm") == name for later in steps[i + 1:]):
                raise KeyedValueError(f"steps[{i}].hold", f"holds {name} before its guest starts, and no later "
                                      f"cont step starts it")


def check_migrations_into_a_crash(steps: Sequence["StepModel"]) -> None:
    for i, step in enumerate(steps):
        if step.action != "migrate" or getattr(step, "expect") != "source-died":
            continue
        vm = getattr(step, "vm")
        later = next((j for j, s in enumerate(steps[i + 1:], i + 1) if vm in [r.name for r in s.references()[0]]),
                     None)
        if later is not None:
            raise KeyedValueError(f"steps[{later}]", f"uses {vm}, which steps[{i}] (migrate expect: source-died) "
                                  "expects to die")


def check_kexec_resets(vms: Sequence["VM"], steps: Sequence["StepModel"]) -> None:
    """A reset with kernel_args: the guest's init kexecs, and the command line must still fit."""
    by_name = {vm.name: vm for vm in vms}
    for i, step in enumerate(steps):
        vm = by_name.get(getattr(step, "vm", ""))
        if step.action != "reset" or not getattr(step, "kernel_args") or vm is None:
            continue
        key = f"steps[{i}].kernel_args"
        if vm.image != DEFAULT_FLAVOUR:
            raise KeyedValueError(key, f"{vm.name} runs the {vm.image!r} image; only the {DEFAULT_FLAVOUR!r} image's "
                                  "init boots its kernel again with other arguments (it kexecs before udev)")
        try:
            # testbed.kexec_disk and testbed.kexeced come out of CMDLINE_RESERVE, as the testbed's own
            check_kernel_args([*vm.kernel_args, *getattr(step, "kernel_args")], len(vm.pairs))
        except KeyedValueError as e:
            raise KeyedValueError(key, f"with {vm.name}'s own kernel_args: {e}") from None
