"""Starting the probes of a pair and judging the traffic of the steps since the last check."""

from __future__ import annotations

from typing import Any

from testbed.errors import StepFailed, WaitTimeout
from testbed.datapath import stable
from testbed.run_context import RunContext
from testbed.scenario import CheckTrafficStep, StartTrafficStep
from testbed.steps.registry import handles
from testbed.traffic import PingProbe, TcpProbe, TrafficSession
from testbed.traffic_verdict import TrafficCriteria, traffic_verdict
from testbed.waiting import wait_until

TCP_ECHO_PORT_BASE = 5001


def _try_start(tcp: TcpProbe) -> str | None:
    try:
        tcp.start()
        return None
    except OSError as e:
        return str(e)


@handles(StartTrafficStep)
def start_traffic(ctx: RunContext, step: StartTrafficStep) -> dict[str, Any]:
    key = (step.vm, step.pair)
    if key in ctx.traffic:
        raise StepFailed(f"traffic for {step.vm}/{step.pair} is already running")
    plan = ctx.plan(step.vm)
    pair = plan.pair(step.pair)
    assert pair.pair.address is not None and ctx.peer is not None
    target = str(pair.pair.address.ip)
    tcp = None
    if step.tcp:
        port = TCP_ECHO_PORT_BASE + plan.pairs.index(pair)
        # socat echoes every byte back, so the peer sees both directions of one connection.
        log = f"/tmp/tcp-echo-{port}.log"
        shell = ctx.shell(step.vm)
        shell.run(["/usr/lib/testbed/detach", log, "socat", f"TCP-LISTEN:{port},bind={target},reuseaddr",
                   "EXEC:/bin/cat"], timeout=10)
        tcp = TcpProbe(ctx.peer, target, port, ctx.clock, rate_bytes_s=step.tcp_rate_kib_s * 1024)
        try:
            wait_until(lambda: _try_start(tcp), ctx.timeout(min(step.timeout_s, 15)),
                       f"TCP echo server {target}:{port}", interval=0.1)
        except WaitTimeout as e:
            raise StepFailed(f"{e}; guest's {log}: {shell.run(['cat', log], check=False).stdout.strip()!r}") from e
    ping = PingProbe(ctx.peer, target, ctx.clock, interval_s=step.interval_ms / 1000)
    ping.start()
    index = len(ctx.report.steps) - 1
    ctx.traffic[key] = TrafficSession(step.vm, step.pair, target, ping, tcp, index, index + 1)
    # The window of the first check starts with the step after this one, once ping is flowing.
    wait_until(lambda: None if ping.replies else "no echo reply yet", ctx.timeout(step.timeout_s),
               f"the first echo reply from {target}", interval=0.05)
    return {"target": target, "interval_ms": step.interval_ms, "tcp": bool(tcp)}


@handles(CheckTrafficStep)
def check_traffic(ctx: RunContext, step: CheckTrafficStep) -> dict[str, Any]:
    session = ctx.traffic.get((step.vm, step.pair))
    if session is None:
        raise StepFailed(f"no traffic is running for {step.vm}/{step.pair}")
    current = len(ctx.report.steps) - 1
    window = list(range(session.window_start, current))
    session.window_start = current + 1
    # Judge completed gaps: an outage still open when the check starts is waited out first.
    fresh = max(0.2, 3 * session.ping.interval_s)

    def flowing() -> str | None:
        last = session.ping.replies[-1].t if session.ping.replies else session.ping.started_s
        silent = ctx.clock.now() - last
        return None if silent < fresh else f"no echo reply for the last {silent * 1000:.0f} ms"
    try:
        recovered_after = wait_until(flowing, ctx.timeout(step.timeout_s), f"echo replies from {session.target}",
                                     interval=0.02)
    except WaitTimeout as e:
        raise StepFailed(f"{step.vm}/{step.pair}: outage in progress: {e}") from e
    # Datapath: only steps whose slaves were the same netdevs at both ends tell who carried what.
    deltas = [ctx.report.steps[i].counters for i in window
              if i in ctx.snapshots and i + 1 in ctx.snapshots
              and stable(ctx.snapshots[i], ctx.snapshots[i + 1], step.vm, step.pair)]
    criteria = TrafficCriteria(max_gap_ms=step.max_gap_ms, min_gap_ms=step.min_gap_ms, max_lost=step.max_lost,
                               path=step.path.value,
                               min_packets=step.min_packets, tcp_max_stall_ms=step.tcp_max_stall_ms)
    details, problems = traffic_verdict(session.ping.result(ctx.step_windows()), window, deltas, step.vm,
                                        step.pair, session.tcp.result() if session.tcp else None, criteria)
    details["waited_for_recovery_s"] = round(recovered_after, 3)
    if problems:
        raise StepFailed(f"{step.vm}/{step.pair}: " + "; ".join(problems))
    return details
