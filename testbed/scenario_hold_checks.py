"""The boot step's hold (QEMU left at -S): a held VM runs only once a `cont` starts it."""

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
