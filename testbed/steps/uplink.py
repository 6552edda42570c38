"""shape-uplink: tc on the veth that joins the two hosts' bridges (testbed.migration_link)."""

from __future__ import annotations

from typing import Any

from testbed.migration_link import shape_uplink
from testbed.run_context import RunContext
from testbed.scenario import ShapeUplinkStep
from testbed.steps.registry import handles


@handles(ShapeUplinkStep)
def shape(ctx: RunContext, step: ShapeUplinkStep) -> dict[str, Any]:
    commands = shape_uplink(ctx.host.netns, step.rate_mbit, step.delay_ms, step.loss_percent, step.clear)
    return {"commands": [" ".join(argv) for argv in commands]}
