"""What every scenario step model shares: the names it refers to and what it needs of its pair, for the
scenario's cross-checks (scenario_checks.py), and the vm / pair keys of the steps about one VM."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from pydantic import Field

from testbed.scenario_values import Strict


class Ref(NamedTuple):
    """A VM or pair name a step refers to, with the key (inside the step) that names it."""
    key: str
    name: str


def no_duplicates(values: list[str] | None, what: str) -> list[str] | None:
    for i, value in enumerate(values or []):
        if value in values[:i]:  # type: ignore[index]
            raise ValueError(f"{what} {value!r} is listed twice")
    return values


class StepModel(Strict):
    """What every step declares for the scenario's cross-checks."""
    if TYPE_CHECKING:
        action: str  # each step model's Literal
    # In a scenario with a `bug:` card: this step asserts the bug's symptom (testbed.bug_verdict).
    symptom: bool = False

    def references(self) -> tuple[list[Ref], list[Ref]]:
        """The VMs this step names, and the pairs (of its one VM) it names."""
        return [], []

    def pair_needs(self) -> frozenset[str]:
        """What the named pair must have: "primary" and/or "address"."""
        return frozenset()


class StepBase(StepModel):
    timeout_s: float = Field(60.0, gt=0, le=3600)


class VmStep(StepBase):
    """A step about one VM (each declares `vm` itself, after `action`)."""
    if TYPE_CHECKING:
        vm: str

    def references(self) -> tuple[list[Ref], list[Ref]]:
        return [Ref("vm", self.vm)], []


class PairStep(StepBase):
    vm: str
    pair: str

    def references(self) -> tuple[list[Ref], list[Ref]]:
        return [Ref("vm", self.vm)], [Ref("pair", self.pair)]
