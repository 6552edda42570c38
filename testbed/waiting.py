"""Bounded waits. Every wait has a timeout, and its error says what it waited for and what it saw.
Every wait also watches the run's VMs (testbed.machine_watch): a dead QEMU ends it at once."""

from __future__ import annotations

import time
from typing import Callable

from tenacity import RetryError, Retrying, retry_if_result, stop_after_delay, wait_fixed

from testbed.errors import WaitTimeout
from testbed.machine_watch import check_machines


def wait_until(check: Callable[[], str | None], timeout: float, what: str, interval: float = 0.25) -> float:
    """Polls check() (None = satisfied, else a description of what is wrong) until it is satisfied.
    Returns the seconds it took; on timeout the error says what was awaited and what was seen last."""
    started = time.monotonic()

    def attempt() -> str | None:
        check_machines()
        return check()
    retrying = Retrying(stop=stop_after_delay(timeout), wait=wait_fixed(interval),
                        retry=retry_if_result(lambda problem: problem is not None))
    try:
        retrying(attempt)
    except RetryError as e:
        raise WaitTimeout(f"waited {timeout:.0f}s for {what}; last seen: {e.last_attempt.result()}") from None
    return time.monotonic() - started


def watchful_sleep(seconds: float, interval: float = 0.1) -> None:
    """time.sleep that ends early, with MachineDied, when a VM of the run dies."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        check_machines()
        time.sleep(min(interval, left))
    check_machines()
