"""Packet captures in the run's namespace: tcpdump on a bridge writes a pcap into the run's
artifacts, and the frames that match a BPF expression are read back with tcpdump. Filters are
tcpdump's own syntax, checked by tcpdump itself before the run starts (filter_problem)."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

from testbed.errors import StepFailed, TestbedError
from testbed.netns import NetworkNamespace
from testbed.procutil import spawn
from testbed.waiting import wait_until

logger = logging.getLogger(__name__)

TCPDUMP = "tcpdump"
MISSING = "tcpdump is missing (package tcpdump; scripts/setup-host.sh installs it)"


def filter_problem(expression: str) -> str | None:
    """What tcpdump says is wrong with a BPF expression for an Ethernet link, or None."""
    if not expression:
        return None
    try:
        done = subprocess.run([TCPDUMP, "-y", "EN10MB", "-d", expression], capture_output=True, text=True, timeout=10)
    except FileNotFoundError:
        return MISSING
    except subprocess.TimeoutExpired:
        return "tcpdump took more than 10 s to compile it"
    if done.returncode == 0:
        return None
    lines = [line for line in done.stderr.splitlines() if not line.startswith("Warning:")]
    return (lines[-1] if lines else f"tcpdump exited with status {done.returncode}").removeprefix("tcpdump: ")


class PacketCapture:
    """tcpdump on one interface of the run's namespace, from start() until stop()."""

    def __init__(self, name: str, netns: NetworkNamespace, interface: str, expression: str, pcap: Path):
        self.name, self.interface, self.expression, self.pcap = name, interface, expression, pcap
        self._netns = netns
        self._log = pcap.with_suffix(".log")
        self._proc: subprocess.Popen | None = None

    def start(self, timeout: float) -> None:
        """Returns once tcpdump says it is listening, so that the next step's frames are in it."""
        argv = [TCPDUMP, "-i", self.interface, "-n", "-U", "-Z", "root", "-w", str(self.pcap)]
        argv += [self.expression] if self.expression else []
        with open(self._log, "wb") as log:
            try:
                self._proc = spawn(self._netns.argv(argv), stdout=subprocess.DEVNULL, stderr=log)
            except FileNotFoundError:
                raise TestbedError(MISSING) from None

        def listening() -> str | None:
            text = self._log.read_text(errors="replace")
            if "listening on" in text:
                return None
            if self._proc is not None and self._proc.poll() is not None:
                raise StepFailed(f"capture {self.name}: tcpdump on {self.interface} exited with status "
                                 f"{self._proc.returncode}: {text.strip()[-300:]}")
            return text.strip()[-200:] or "tcpdump has printed nothing yet"
        wait_until(listening, timeout, f"tcpdump on {self.interface} to listen (capture {self.name})", interval=0.05)
        logger.info("capture %s: tcpdump on %s into %s", self.name, self.interface, self.pcap)

    def frames(self, match: str) -> list[str]:
        """The frames captured so far that match, one line each (link-level header, epoch time)."""
        argv = [TCPDUMP, "-r", str(self.pcap), "-nn", "-e", "-tt", *([match] if match else [])]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        if done.returncode != 0 and "truncated dump file" not in done.stderr:
            raise StepFailed(f"capture {self.name}: reading {self.pcap} failed: {done.stderr.strip()[-300:]}")
        return [line for line in done.stdout.splitlines() if line.strip()]

    def stop(self) -> None:
        if self._proc is None or self._proc.poll() is not None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(5)
