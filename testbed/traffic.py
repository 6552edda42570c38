"""Traffic probes between the peer namespace and a guest's failover master, and their analysis.

PingProbe: fping in loop mode at a fixed interval (5 ms by default) with wall-clock timestamps (-D);
every echo that did not come back is a lost packet, and every stretch between two replies with
lost echoes in between is a gap. (iputils ping busy-waits below a 10 ms interval, a whole host core
at 5 ms, and at 10 ms it sends every ~16 ms: fping keeps 5.0 ms spacing at ~1% of a core.) TcpProbe: one long-lived TCP connection to an echo server in the
guest (socat), fed at a steady rate; it must never reset, and its longest silence is its stall.
The analysis is pure, so it is unit-tested on synthetic records."""

from __future__ import annotations

import re
import select
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Sequence

from testbed.clock import RunClock
from testbed.netns import NetworkNamespace
from testbed.procutil import spawn

# fping -D output: "[1795651014.14281] 192.168.77.2 : [0], 64 bytes, 0.042 ms (0.042 avg, 0% loss)"
REPLY_RE = re.compile(r"^\[(\d+\.\d+)\] \S+ : (duplicate for )?\[(\d+)\], \d+ bytes, ([\d.]+) ms")
SENT_RE = re.compile(r"xmt/rcv/%loss = (\d+)/")
IN_FLIGHT_S = 0.5  # unanswered echoes this close to the stop are in flight, not lost


@dataclass(frozen=True)
class Reply:
    seq: int
    t: float          # run clock, seconds, when the reply arrived
    rtt_ms: float
    duplicate: bool = False


@dataclass(frozen=True)
class StepWindow:
    index: int
    action: str
    started_s: float
    ended_s: float


@dataclass
class Gap:
    start_s: float
    end_s: float
    lost: int
    step: int | None          # index of the step during which the gap started
    step_action: str | None

    @property
    def ms(self) -> float:
        return round((self.end_s - self.start_s) * 1000, 1)


@dataclass
class PingResult:
    sent: int
    received: int
    duplicates: int
    reordered: int
    max_gap_ms: float
    gaps: list[Gap] = field(default_factory=list)

    @property
    def lost(self) -> int:
        return max(0, self.sent - self.received)


def step_at(t: float, windows: Sequence[StepWindow]) -> StepWindow | None:
    """The step running at time t (the latest that started at or before t)."""
    current = None
    for w in windows:
        if w.started_s <= t:
            current = w
    return current


def analyse_ping(replies: Sequence[Reply], sent: int, started_s: float, stopped_s: float,
                 interval_s: float, windows: Sequence[StepWindow]) -> PingResult:
    """A gap is a silence between consecutive replies (by arrival) that either lost echoes or lasted
    longer than three intervals (late replies), plus a leading or trailing silence with losses. A gap
    starts when the last reply before it arrived, and belongs to the step running then."""
    slow = max(3 * interval_s, 0.02)
    unique: dict[int, Reply] = {}
    duplicates = reordered = 0
    highest = 0
    for r in replies:
        if r.duplicate or r.seq in unique:
            duplicates += 1
            continue
        if r.seq < highest:
            reordered += 1
        highest = max(highest, r.seq)
        unique[r.seq] = r
    ordered = sorted(unique.values(), key=lambda r: r.t)
    gaps: list[Gap] = []
    max_gap = 0.0

    def add(start: float, end: float, lost: int) -> None:
        w = step_at(start, windows)
        gaps.append(Gap(round(start, 4), round(end, 4), lost, w.index if w else None, w.action if w else None))

    prev_t, prev_seq = started_s, 0   # ping numbers echoes from 1
    for r in ordered:
        max_gap = max(max_gap, r.t - prev_t)
        lost = sum(1 for s in range(prev_seq + 1, r.seq) if s not in unique)
        if lost or r.t - prev_t > slow:
            add(prev_t, r.t, lost)
        prev_t, prev_seq = r.t, max(prev_seq, r.seq)
    trailing = sum(1 for s in range(prev_seq + 1, sent + 1) if s not in unique)
    if trailing and stopped_s - prev_t < IN_FLIGHT_S:
        sent -= trailing  # still in flight when ping was stopped: neither received nor lost
    elif trailing:
        add(prev_t, stopped_s, trailing)  # an outage still going on at the end
        max_gap = max(max_gap, stopped_s - prev_t)
    return PingResult(sent=sent, received=len(unique), duplicates=duplicates, reordered=reordered,
                      max_gap_ms=round(max_gap * 1000, 1), gaps=gaps)


class PingProbe:
    """fping -l -D from the peer namespace; replies are read by a thread and stamped on the run clock."""

    def __init__(self, peer: NetworkNamespace, target: str, clock: RunClock, interval_s: float = 0.005):
        self.target = target
        self.interval_s = interval_s
        self._clock = clock
        self._peer = peer
        self.replies: list[Reply] = []
        self.sent = 0
        self.raw_lines: list[str] = []
        self.started_s = 0.0
        self.stopped_s = 0.0
        self._proc: subprocess.Popen | None = None
        self._reader: threading.Thread | None = None

    def start(self) -> None:
        # -i 1: fping's global send spacing must not throttle the per-target period -p.
        argv = ["fping", "-l", "-D", "-i", "1", "-p", f"{self.interval_s * 1000:g}", "-t", "1000", self.target]
        self.started_s = self._clock.now()
        self._proc = spawn(self._peer.argv(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, bufsize=1)
        self._reader = threading.Thread(target=self._read, name=f"ping-{self.target}", daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def _read(self) -> None:
        assert self._proc and self._proc.stdout
        for line in self._proc.stdout:
            self.raw_lines.append(line)
            if m := REPLY_RE.match(line):
                wall = float(m.group(1))
                # fping counts from 0; the analysis numbers echoes from 1
                self.replies.append(Reply(int(m.group(3)) + 1, round(wall - self._clock.start_wall, 6),
                                          float(m.group(4)), bool(m.group(2))))
            elif m := SENT_RE.search(line):
                self.sent = int(m.group(1))

    def stop(self) -> None:
        if self._proc is None:
            return
        self.stopped_s = self._clock.now()
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGINT)  # fping prints its totals on SIGINT
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        if self._reader:
            self._reader.join(timeout=5)
        if self.sent == 0 and self.replies:  # killed before the summary: the highest seq is a floor
            self.sent = max(r.seq for r in self.replies)
        self._proc = None

    def result(self, windows: Sequence[StepWindow]) -> PingResult:
        return analyse_ping(self.replies, self.sent, self.started_s, self.stopped_s or self._clock.now(),
                            self.interval_s, windows)


@dataclass
class TcpResult:
    bytes_sent: int
    bytes_echoed: int
    max_stall_ms: float
    error: str | None
    error_s: float | None
    samples: list[tuple[float, int]]   # (run clock, bytes echoed so far), one per read

    def bytes_between(self, start: float, end: float) -> int:
        before = [b for t, b in self.samples if t <= start]
        upto = [b for t, b in self.samples if t <= end]
        return (upto[-1] if upto else 0) - (before[-1] if before else 0)


class TcpProbe:
    """One TCP connection from the peer namespace to an echo server in the guest, fed at a fixed
    rate; records every echoed byte so bytes per step and the longest silence can be derived."""

    def __init__(self, peer: NetworkNamespace, target: str, port: int, clock: RunClock,
                 rate_bytes_s: int = 64 * 1024, chunk: int = 512):
        self._peer, self.target, self.port, self._clock = peer, target, port, clock
        self.rate = rate_bytes_s
        self.chunk = chunk
        self.sent = 0
        self.echoed = 0
        self.samples: list[tuple[float, int]] = []
        self.error: str | None = None
        self.error_s: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None

    def start(self) -> None:
        self._sock = self._peer.connect_tcp(self.target, self.port, timeout=5)
        self._sock.setblocking(False)
        self.samples.append((self._clock.now(), 0))
        self._thread = threading.Thread(target=self._loop, name=f"tcp-{self.target}", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        assert self._sock is not None
        payload = b"x" * self.chunk
        period = self.chunk / self.rate
        next_send = time.monotonic()
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                writable = [self._sock] if now >= next_send else []
                r, w, _ = select.select([self._sock], writable, [], max(0.0, min(0.01, next_send - now)))
                if r:
                    data = self._sock.recv(65536)
                    if not data:
                        raise ConnectionError("the guest closed the connection")
                    self.echoed += len(data)
                    self.samples.append((self._clock.now(), self.echoed))
                if w:
                    try:
                        self.sent += self._sock.send(payload)
                    except BlockingIOError:
                        pass  # the window is full: the stall shows in the echo silence
                    next_send += period
                    if next_send < now - 1:
                        next_send = now  # do not burst to catch up after a long stall
        except OSError as e:
            self.error = f"{type(e).__name__}: {e}"
            self.error_s = self._clock.now()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        if self._sock:
            self._sock.close()
            self._sock = None

    def result(self, until_s: float | None = None) -> TcpResult:
        times = [t for t, _ in self.samples]
        end = self.error_s or until_s or self._clock.now()
        stall = max((b - a for a, b in zip(times, times[1:] + [end])), default=0.0)
        return TcpResult(self.sent, self.echoed, round(stall * 1000, 1), self.error, self.error_s,
                         list(self.samples))


@dataclass
class TrafficSession:
    """The probes of one failover pair, from start-traffic to the end of the run."""
    vm: str
    pair: str
    target: str
    ping: PingProbe
    tcp: TcpProbe | None
    start_step: int
    window_start: int  # first step of the next check-traffic window

    def stop(self) -> None:
        self.ping.stop()
        if self.tcp is not None:
            self.tcp.stop()
