"""Steps that hold a VM or end it: the boot step's hold (QEMU left at -S) needs a `cont` to start
the VM, and a migration expected to kill its source (expect: source-died) leaves no VM for later
steps to use."""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from testbed.scenario_values import KeyedValueError

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
