"""min/max_wait_unplug_ms (pure logic): each bound fails a migration outside it, and a migration
without a wait-unplug phase cannot pass either."""

import pytest

from testbed.errors import StepFailed
from testbed.report import MigrationRecord
from testbed.scenario_run_steps import MigrateStep
from testbed.steps.migration_checks import check_wait_unplug


def _entry(waited):
    return MigrationRecord(vm="vm1", number=1, from_slot=0, to_slot=1, destination_artifacts="/x",
                           wait_unplug_ms=waited, statuses=["setup", "active", "completed"])


def test_bounds():
    step = MigrateStep(action="migrate", vm="vm1", min_wait_unplug_ms=5000, max_wait_unplug_ms=8000)
    check_wait_unplug(step, [_entry(6500.0)])
    with pytest.raises(StepFailed, match="250.0 ms in wait-unplug .* less than min_wait_unplug_ms 5000"):
        check_wait_unplug(step, [_entry(250.0)])
    with pytest.raises(StepFailed, match="9000.0 ms in wait-unplug .* more than max_wait_unplug_ms 8000"):
        check_wait_unplug(step, [_entry(6500.0), _entry(9000.0)])
    with pytest.raises(StepFailed, match="had no wait-unplug phase"):
        check_wait_unplug(step, [_entry(None)])
    check_wait_unplug(MigrateStep(action="migrate", vm="vm1"), [_entry(None)])  # no bound, no check
