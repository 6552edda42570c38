"""The qmp step's model (pure logic); the step itself runs in tests/test_steps_guest.py."""

import pytest
from pydantic import ValidationError

from testbed.scenario import QmpStep


def test_a_qmp_step_names_a_command_and_may_expect_an_error():
    step = QmpStep(action="qmp", vm="vm1", command="device_add", arguments={"driver": "e1000e"},
                   expect_error="needs to have id")
    assert step.arguments == {"driver": "e1000e"} and step.timeout_s == 60
    for bad in ("Device_add", "device add", "", "x" * 65):
        with pytest.raises(ValidationError):
            QmpStep(action="qmp", vm="vm1", command=bad)
    with pytest.raises(ValidationError):
        QmpStep(action="qmp", vm="vm1", command="query-status", expect_error="")
