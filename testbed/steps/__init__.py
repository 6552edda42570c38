"""Scenario steps. Each handler does one thing, raises TestbedError when it did not happen, and
returns details for the report. Importing the package registers every handler."""

from testbed.steps import (addresses, boot, capture, devices, events, lifecycle, migration,  # noqa: F401  (register)
                           traffic_steps, uplink)
from testbed.steps.pairs import PairsCheck
from testbed.steps.registry import HANDLERS, run_step

__all__ = ["HANDLERS", "PairsCheck", "run_step"]
