"""One monotonic clock per run, so steps, QMP events, traffic gaps and logs share a time axis."""

import time


class RunClock:
    def __init__(self) -> None:
        self.start = time.monotonic()
        self.start_wall = time.time()

    def now(self) -> float:
        """Seconds since the run started."""
        return time.monotonic() - self.start
