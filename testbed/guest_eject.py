"""Holding the guest's eject of a failover primary, as the qtest does by writing the eject port when
it chooses: QEMU asks the guest to eject through ACPI PCI hot-plug (GPE 1 on q35), and the guest
ejects about 0.25 s later on its own. Masking that GPE in the guest keeps the request pending (its
status bit stays set, shown as STS) until it is unmasked; a background job in the guest waits for the
request, then for the hold, then unmasks. So the hold is measured from the request itself, with no
round trip to the testbed in between. Measured on QEMU 10.0.2 and Debian's 6.12: a 3 s hold gave a
3.25 s wait-unplug, a 6 s hold 6.25 s."""

from __future__ import annotations

import logging

from testbed.errors import StepFailed, TestbedError
from testbed.guest_shell import GuestShell

logger = logging.getLogger(__name__)

GPE = "/sys/firmware/acpi/interrupts/gpe01"
PID_FILE = "/run/testbed-eject-hold.pid"
GIVE_UP_S = 120  # no request came (no primary to unplug): the job unmasks anyway
# Stops the job of an earlier hold, if any is still waiting.
STOP_JOB = f"[ -e {PID_FILE} ] && kill $(cat {PID_FILE}) 2>/dev/null; rm -f {PID_FILE}; "


def arm(shell: GuestShell, hold_ms: float) -> None:
    """Masks the hot-plug GPE and starts the job that unmasks it hold_ms after the next request."""
    script = (f"{STOP_JOB}echo mask > {GPE} || exit 1; grep -qw masked {GPE} || exit 1; "
              f"(end=$(($(date +%s) + {GIVE_UP_S})); "
              f"while ! grep -q STS {GPE} && [ $(date +%s) -lt $end ]; do sleep 0.05; done; "
              f"sleep {hold_ms / 1000:.3f}; echo unmask > {GPE}; rm -f {PID_FILE}) >/dev/null 2>&1 & "
              f"echo $! > {PID_FILE}")
    result = shell.run(script, check=False)
    if result.exit_status != 0:
        raise StepFailed(f"{shell.vm}: could not hold the guest's eject (masking {GPE}): "
                         f"{(result.stderr or result.stdout).strip() or f'exit {result.exit_status}'}")


def release(shell: GuestShell) -> None:
    """Ends a hold that is still on (the migration ended before the job unmasked); best effort."""
    try:
        shell.run(f"{STOP_JOB}echo unmask > {GPE}", check=False, timeout=10, scaled=False)
    except TestbedError as e:
        logger.warning("%s: could not unmask %s after the migration: %s", shell.vm, GPE, e)
