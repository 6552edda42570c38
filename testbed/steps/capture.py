"""The packet capture steps: tcpdump on a simulated host's bridge, and counts of what it saw."""

from __future__ import annotations

from typing import Any

from testbed.errors import StepFailed
from testbed.network import BRIDGE
from testbed.packet_capture import PacketCapture
from testbed.run_context import RunContext
from testbed.scenario import CheckCaptureStep, StartCaptureStep
from testbed.steps.registry import handles

SHOWN_FRAMES = 20


@handles(StartCaptureStep)
def start_capture(ctx: RunContext, step: StartCaptureStep) -> dict[str, Any]:
    interface = f"br{step.host - 1}" if step.host > 1 else BRIDGE
    capture = PacketCapture(step.name, ctx.host.netns, interface, step.filter,
                            ctx.options.artifacts_dir / f"capture-{step.name}.pcap")
    ctx.captures[step.name] = capture  # stopped at teardown, even if it never listens
    capture.start(ctx.timeout(min(step.timeout_s, 15)))
    return {"interface": interface, "pcap": str(capture.pcap), "filter": step.filter}


@handles(CheckCaptureStep)
def check_capture(ctx: RunContext, step: CheckCaptureStep) -> dict[str, Any]:
    capture = ctx.captures[step.name]  # the scenario's checks: started by an earlier step
    frames = capture.frames(step.match)
    details = {"count": len(frames), "match": step.match, "frames": frames[:SHOWN_FRAMES], "pcap": str(capture.pcap)}
    wrong = []
    if step.min_count is not None and len(frames) < step.min_count:
        wrong.append(f"at least {step.min_count}")
    if step.max_count is not None and len(frames) > step.max_count:
        wrong.append(f"at most {step.max_count}")
    if wrong:
        seen = "; ".join(frames[:5]) or "none"
        raise StepFailed(f"capture {step.name}: {len(frames)} frames match {step.match or '(everything)'!r}, "
                         f"expected {' and '.join(wrong)}; first frames: {seen}")
    return details
