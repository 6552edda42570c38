"""Scenario files: YAML rendered by jinja2 (sandboxed), validated into typed models before anything
starts. This module is the public face; the parts live in:

- testbed.scenario_model: VMs, failover pairs, primaries, the host network, Scenario
- testbed.scenario_steps: the step models and the Step union
- testbed.scenario_values: bounds and value rules (MACs, addresses, names)
- testbed.scenario_checks: checks across the parts (clashes, references, boot order)
- testbed.scenario_template: the sandboxed, bounded template rendering
- testbed.scenario_loader / scenario_errors: reading, YAML, and error messages
"""

from testbed.scenario_loader import load_scenario
from testbed.scenario_model import (PRIMARY_KINDS, VM, FailoverPair, Host, HostKind, HostVfPrimary,
                                    IgbVfPrimary, Network, PciPrimary, Primary, PrimaryKind, Scenario,
                                    Standby)
from testbed.scenario_steps import (STEP_ACTIONS, STEP_TYPES, AnnounceSelfStep, BootStep,
                                    CheckAddressesStep, CheckDeviceStep, CheckNetdevsStep, CheckTrafficStep, ExecStep,
                                    Expectation, FdbStep, MtuStep, Nic, Path_, PauseStep,
                                    PlugPrimaryStep, PlugStandbyStep, SetLinkStep, SleepStep, StartTrafficStep, Step,
                                    UnplugPrimaryStep, UnplugStandbyStep, VfMacStep)
from testbed.scenario_capture_steps import CheckCaptureStep, StartCaptureStep
from testbed.scenario_run_steps import (CheckEventsStep, ContStep, EventPattern, MigrateStep, MigrationStepBase,
                                        QmpStep, ResetStep, SaveRestoreStep, ShapeUplinkStep, StopStep)
from testbed.scenario_step_base import PairStep, Ref, StepBase, StepModel
from testbed.scenario_template import render_template
from testbed.scenario_values import MAC_RE, NAME_RE, Strict

__all__ = [
    "load_scenario", "render_template",
    "Scenario", "VM", "FailoverPair", "Standby", "Network", "Primary", "PrimaryKind", "IgbVfPrimary",
    "PciPrimary", "HostVfPrimary", "PRIMARY_KINDS", "Host", "HostKind",
    "Step", "STEP_ACTIONS", "STEP_TYPES", "StepModel", "StepBase", "PairStep", "Ref",
    "AnnounceSelfStep", "BootStep", "CheckAddressesStep", "CheckDeviceStep", "CheckNetdevsStep", "CheckTrafficStep",
    "ExecStep", "FdbStep", "MigrateStep", "PauseStep", "PlugPrimaryStep", "SetLinkStep", "SleepStep",
    "StartTrafficStep", "UnplugPrimaryStep", "VfMacStep", "MigrationStepBase", "SaveRestoreStep",
    "StopStep", "ContStep", "ResetStep", "MtuStep", "UnplugStandbyStep", "PlugStandbyStep", "CheckEventsStep", "QmpStep", "EventPattern",
    "StartCaptureStep", "CheckCaptureStep", "ShapeUplinkStep",
    "Expectation", "Nic", "Path_", "MAC_RE", "NAME_RE", "Strict",
]
