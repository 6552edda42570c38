"""The run's DHCP server: dnsmasq in the peer namespace, serving the reservations of `address: dhcp`
pairs. Every DHCP message it logs is kept, stamped on the run clock, in the report and in
dnsmasq.log among the artifacts."""

from __future__ import annotations

import logging
import re
import subprocess
import threading
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING

from testbed.dhcp_plan import dnsmasq_argv
from testbed.errors import TestbedError
from testbed.procutil import spawn

if TYPE_CHECKING:
    from testbed.clock import RunClock
    from testbed.netns import NetworkNamespace
    from testbed.scenario_model import FailoverPair

logger = logging.getLogger(__name__)

# "dnsmasq-dhcp[7]: 2771589213 DHCPACK(eth0) 192.168.100.10 52:54:00:00:12:53 vm1": the message, the
# interface, then an address (not in DISCOVER), the client's MAC and, in ACK, its host name.
_MESSAGE = re.compile(r"(?P<xid>\d+ )?(?P<kind>DHCP[A-Z]+)\((?P<interface>[^)]*)\)\s+"
                      r"(?:(?P<address>\d+\.\d+\.\d+\.\d+)\s+)?(?P<mac>[0-9a-f]{2}(?::[0-9a-f]{2}){5})"
                      r"(?:\s+(?P<rest>.*))?$")


def parse_dhcp_line(line: str, t_s: float) -> dict[str, object] | None:
    """One DHCP message from dnsmasq's log, or None for any other line."""
    match = _MESSAGE.search(line)
    if match is None:
        return None
    event: dict[str, object] = {"t_s": round(t_s, 3), "message": match["kind"], "mac": match["mac"],
                                "address": match["address"]}
    if match["xid"]:
        event["xid"] = int(match["xid"])
    if match["rest"]:
        event["detail"] = match["rest"].strip()
    return event


class DhcpServer:
    def __init__(self, proc: subprocess.Popen, log_path: Path, clock: "RunClock"):
        self._proc = proc
        self._log_path = log_path
        self._clock = clock
        self.events: list[dict[str, object]] = []
        self._lines: deque[str] = deque(maxlen=5)  # the last lines, for the error if it never serves
        self._serving = threading.Event()  # dnsmasq logged its DHCP range: it listens
        self._reader = threading.Thread(target=self._read, name="dnsmasq-log", daemon=True)
        self._reader.start()

    @classmethod
    def start(cls, peer: "NetworkNamespace", interface: str, pairs: "list[FailoverPair]", artifacts_dir: Path,
              clock: "RunClock") -> "DhcpServer":
        argv = dnsmasq_argv(pairs, interface, artifacts_dir / "dnsmasq.leases", artifacts_dir / "dnsmasq.pid")
        try:
            proc = spawn(peer.argv(argv), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
        except FileNotFoundError as e:
            raise TestbedError("dnsmasq is not installed; run scripts/setup-host.sh") from e
        server = cls(proc, artifacts_dir / "dnsmasq.log", clock)
        logger.info("DHCP server in the peer namespace: %s", " ".join(argv))
        try:
            server._wait_serving(timeout_s=10)
        except BaseException:
            server.stop()
            raise
        return server

    def _wait_serving(self, timeout_s: float) -> None:
        if self._serving.wait(timeout_s):
            return
        self._reader.join(timeout=1)
        state = "exited with " + str(self._proc.returncode) if self._proc.poll() is not None else "still running"
        raise TestbedError(f"dnsmasq did not report its DHCP range within {timeout_s} s ({state}); it printed: "
                           f"{' | '.join(self._lines) or 'nothing'}")

    def _read(self) -> None:
        assert self._proc.stderr is not None
        with self._log_path.open("w") as log:
            for line in self._proc.stderr:
                t = self._clock.now()
                log.write(f"{t:10.3f} {line}")
                log.flush()
                self._lines.append(line.strip())
                if "DHCP, " in line:
                    self._serving.set()
                if (event := parse_dhcp_line(line.rstrip("\n"), t)) is not None:
                    self.events.append(event)

    def stop(self) -> None:
        """Ends dnsmasq (TERM, then KILL after 5 s) and reads the rest of its log."""
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=5)
        elif self._proc.returncode:
            logger.warning("dnsmasq had exited with %s before the run ended (see %s)", self._proc.returncode,
                           self._log_path)
        self._reader.join(timeout=5)

    def leases(self) -> list[dict[str, object]]:
        return leases_of(self.events)


def leases_of(events: list[dict[str, object]]) -> list[dict[str, object]]:
    """Per MAC and address: when the server acknowledged it (each DHCPACK), in order."""
    out: dict[tuple[object, object], dict[str, object]] = {}
    for event in events:
        if event["message"] == "DHCPACK":
            lease = out.setdefault((event["mac"], event["address"]),
                                   {"mac": event["mac"], "address": event["address"], "acked_at_s": []})
            lease["acked_at_s"].append(event["t_s"])  # type: ignore[union-attr]
    return list(out.values())
