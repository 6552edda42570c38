"""What a check-traffic step concludes, and what the report says about a pair's probes. Pure: probe
results, step windows and counter deltas in, problems and report entries out, so the verdict is
unit-tested on synthetic data."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from testbed.datapath import Snapshot, path_shares
from testbed.report import GapRecord, PingReport, TcpReport, TimelineBins
from testbed.traffic import Gap, PingResult, StepWindow, TcpResult

PATH_MIN_SHARE = 0.9  # "carried by the primary" means at least 90 % of the slaves' packets


@dataclass(frozen=True)
class TrafficCriteria:
    max_gap_ms: float | None = None
    min_gap_ms: float | None = None
    max_lost: int | None = None
    path: str = "any"            # primary | standby | any
    min_packets: int = 20
    tcp_max_stall_ms: float | None = None


def gap_dict(g: Gap) -> dict[str, Any]:
    return {"start_s": g.start_s, "end_s": g.end_s, "ms": g.ms, "lost": g.lost, "step": g.step,
            "step_action": g.step_action}


def traffic_verdict(ping: PingResult, window: list[int], deltas: list[Snapshot], vm: str, pair: str,
                    tcp: TcpResult | None, criteria: TrafficCriteria) -> tuple[dict[str, Any], list[str]]:
    """Judges the steps in `window`: the ping gaps that started in them, the slaves' packet shares
    over `deltas` (only steps whose slaves stayed the same netdevs), and the TCP stream."""
    gaps = [g for g in ping.gaps if g.step in window]
    worst = max(gaps, key=lambda g: g.ms, default=None)
    lost = sum(g.lost for g in gaps)
    details: dict[str, Any] = {"window_steps": window, "gaps": [gap_dict(g) for g in gaps],
                               "max_gap_ms": worst.ms if worst else 0.0, "lost": lost}
    problems: list[str] = []
    if criteria.max_gap_ms is not None and worst is not None and worst.ms > criteria.max_gap_ms:
        problems.append(f"gap of {worst.ms} ms ({worst.lost} echoes lost) in step {worst.step} "
                        f"({worst.step_action}) exceeds max_gap_ms {criteria.max_gap_ms}")
    if criteria.min_gap_ms is not None and (worst is None or worst.ms < criteria.min_gap_ms):
        longest = f"{worst.ms} ms, in step {worst.step} ({worst.step_action})" if worst else "none"
        problems.append(f"no gap of at least min_gap_ms {criteria.min_gap_ms} in steps {window}: the longest "
                        f"was {longest}")
    if criteria.max_lost is not None and lost > criteria.max_lost:
        problems.append(f"{lost} echoes lost in steps {window}, more than max_lost {criteria.max_lost}")
    shares, packets = path_shares(deltas, vm, pair)
    details["path"] = {"steps_measured": len(deltas), "slave_packets": packets,
                       "shares": {k: round(v, 3) for k, v in shares.items()}}
    if criteria.path != "any":
        if not deltas:
            problems.append(f"path {criteria.path}: no step in {window} kept the same slaves from start to end")
        elif packets < criteria.min_packets:
            problems.append(f"path {criteria.path}: only {packets} packets crossed the slaves in steps {window}")
        elif shares[criteria.path] < PATH_MIN_SHARE:
            problems.append(f"path {criteria.path}: the {criteria.path} carried {shares[criteria.path]:.0%} of "
                            f"{packets} packets (standby {shares['standby']:.0%}, primary {shares['primary']:.0%})")
    if tcp is not None:
        details["tcp"] = {"bytes_echoed": tcp.bytes_echoed, "max_stall_ms": tcp.max_stall_ms, "error": tcp.error}
        if tcp.error:
            problems.append(f"TCP connection failed at {tcp.error_s:.3f}s: {tcp.error}")
        if criteria.tcp_max_stall_ms is not None and tcp.max_stall_ms > criteria.tcp_max_stall_ms:
            problems.append(f"TCP stalled for {tcp.max_stall_ms} ms, more than tcp_max_stall_ms "
                            f"{criteria.tcp_max_stall_ms}")
    return details, problems


def ping_timeline(reply_times: list[float], started_s: float, bin_s: float = 0.01) -> list[int]:
    """Replies per bin from the probe's start, for the report's timeline."""
    if not reply_times:
        return []
    counts = [0] * (int((max(reply_times) - started_s) / bin_s) + 1)
    for t in reply_times:
        counts[max(0, int((t - started_s) / bin_s))] += 1
    return counts


def ping_entry(vm: str, pair: str, target: str, interval_ms: float, started_s: float,
               reply_times: list[float], result: PingResult, log: str) -> PingReport:
    bin_s = 0.01
    return PingReport(vm=vm, pair=pair, target=target,
                      timeline=TimelineBins(start_s=round(started_s, 4), bin_s=bin_s,
                                            received=ping_timeline(reply_times, started_s, bin_s)),
                      log=log, interval_ms=interval_ms, sent=result.sent, received=result.received,
                      lost=result.lost, duplicates=result.duplicates, reordered=result.reordered,
                      max_gap_ms=result.max_gap_ms, gaps=[GapRecord(**gap_dict(g)) for g in result.gaps])


def tcp_entry(vm: str, pair: str, target: str, tcp: TcpResult, windows: list[StepWindow]) -> TcpReport:
    return TcpReport(vm=vm, pair=pair, target=target, bytes_sent=tcp.bytes_sent, bytes_echoed=tcp.bytes_echoed,
                     max_stall_ms=tcp.max_stall_ms, error=tcp.error, error_s=tcp.error_s,
                     bytes_per_step={w.index: tcp.bytes_between(w.started_s, w.ended_s) for w in windows})
