"""KVM: the same pair under a hardware accelerator, where one boots a stock kernel.

On machines whose /dev/kvm cannot run a stock kernel (the project's own: a paravirtual KVM module),
the plugin skips this with the probe's reason; the rest of the suite covers the same ground on TCG."""

from pathlib import Path

import pytest

from testbed.scenario import BootStep, CheckNetdevsStep

REPO = Path(__file__).parent.parent


@pytest.mark.guest
@pytest.mark.kvm
def test_pair_under_kvm(live_testbed):
    with live_testbed(REPO / "scenarios/standby-pci.yaml", name="kvm") as run:
        assert run.ctx.accel == "kvm"
        assert run.step(BootStep(action="boot")).ok
        assert run.step(CheckNetdevsStep(action="check-netdevs", vm="vm1", expect="paired")).ok
