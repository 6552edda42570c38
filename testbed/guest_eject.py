"""Holding the guest's eject of a failover primary, as the qtest does by writing the eject port when
it chooses: QEMU asks the guest to eject through ACPI PCI hot-plug (GPE 1 on q35), and the guest
ejects about 0.25 s later on its own. Masking that GPE in the guest keeps the request pending (its
status bit stays set, shown as STS) until it is unmasked; a background job in the guest waits for the
request, then for the hold, then unmasks. So the hold is measured from the request itself, with no
round trip to the testbed in between. Measured on QEMU 10.0.2 and Debian's 6.12: a 3 s hold gave a
3.25 s wait-unplug, a 6 s hold 6.25 s.

One primary of several (qtest migrate/multi/out) is released by the guest itself, as the qtest
writes one slot's eject: `echo 0 > /sys/bus/pci/slots/<slot>/power` makes acpiphp remove the
device and evaluate the slot's _EJ0, which QEMU takes as that device's eject, while the GPE stays
masked for the others."""

from __future__ import annotations

import logging

from testbed.errors import StepFailed, TestbedError
from testbed.guest_shell import GuestShell

logger = logging.getLogger(__name__)

GPE = "/sys/firmware/acpi/interrupts/gpe01"
PID_FILE = "/run/testbed-eject-hold.pid"
LOG = "/run/testbed-eject-hold.log"  # "request <uptime>", then "eject <MAC> <uptime> ok|failed"
GIVE_UP_S = 120  # no request came (no primary to unplug): the job unmasks anyway
# Stops the job of an earlier hold, if any is still waiting.
STOP_JOB = f"[ -e {PID_FILE} ] && kill $(cat {PID_FILE}) 2>/dev/null; rm -f {PID_FILE}; "


# The ACPI hot-plug slot (acpiphp, /sys/bus/pci/slots) of the primary with MAC $1: the netdev with
# that MAC whose device is bound to a driver other than virtio_net is the primary (the standby's
# device is virtio_net's, and so is the failover master's, which net_failover gives the standby's).
SLOT_OF = ('slot_of() { for n in /sys/class/net/*; do [ -e "$n/device/driver" ] || continue; '
           '[ "$(cat "$n/address")" = "$1" ] || continue; '
           '[ "$(basename "$(readlink "$n/device/driver")")" = virtio_net ] && continue; '
           'd=$(basename "$(readlink -f "$n/device")"); '
           'for s in /sys/bus/pci/slots/*; do [ "$(cat "$s/address" 2>/dev/null)" = "${d%.*}" ] && '
           '{ echo "$s"; return 0; }; done; done; '
           'echo "no ACPI hot-plug slot for the primary with MAC $1" >&2; return 1; }; ')


def arm(shell: GuestShell, hold: float | dict[str, float]) -> None:
    """Masks the hot-plug GPE and starts the job that unmasks it hold ms after the next request.
    hold as {primary MAC: ms}: the job ejects each primary itself, through its ACPI slot's power
    file, ms after the request (in order), then unmasks; QEMU's request stays pending for the rest."""
    ejects = ""
    slots = ""
    uptime = "$(cut -d' ' -f1 /proc/uptime)"
    if isinstance(hold, dict):
        done = 0.0
        for n, (mac, ms) in enumerate(sorted(hold.items(), key=lambda item: item[1])):
            slots += f's{n}=$(slot_of {mac}) || exit 1; '
            ejects += (f"sleep {(ms - done) / 1000:.3f}; if echo 0 > \"$s{n}/power\"; then r=ok; else r=failed; fi; "
                       f'echo "eject {mac} {uptime} $r" >> {LOG}; ')
            done = ms
    else:
        ejects = f"sleep {hold / 1000:.3f}; "
    script = (f"{STOP_JOB}rm -f {LOG}; {SLOT_OF if slots else ''}{slots}echo mask > {GPE} || exit 1; "
              f"grep -qw masked {GPE} || exit 1; "
              f"(end=$(($(date +%s) + {GIVE_UP_S})); "
              f"while ! grep -q STS {GPE} && [ $(date +%s) -lt $end ]; do sleep 0.05; done; "
              f'echo "request {uptime}" >> {LOG}; '
              f"{ejects}echo unmask > {GPE}; rm -f {PID_FILE}) >/dev/null 2>&1 & "
              f"echo $! > {PID_FILE}")
    result = shell.run(script, check=False)
    if result.exit_status != 0:
        raise StepFailed(f"{shell.vm}: could not hold the guest's eject (masking {GPE}): "
                         f"{(result.stderr or result.stdout).strip() or f'exit {result.exit_status}'}")


def ejects(shell: GuestShell) -> list[dict[str, object]]:
    """What the job of a per-pair hold did, from its log in the guest: each primary's eject (by MAC),
    how long after QEMU's request it came, and whether the slot's power file took it."""
    try:
        lines = shell.run(["cat", LOG], check=False, timeout=10).stdout.split("\n")
    except TestbedError as e:
        logger.warning("%s: could not read the eject log %s: %s", shell.vm, LOG, e)
        return []
    request = next((float(line.split()[1]) for line in lines if line.startswith("request ")), None)
    out: list[dict[str, object]] = []
    for line in lines:
        if line.startswith("eject ") and request is not None and len(line.split()) == 4:
            _, mac, at, result = line.split()
            out.append({"mac": mac, "after_request_ms": round((float(at) - request) * 1000, 1), "ok": result == "ok"})
    return out


def release(shell: GuestShell) -> None:
    """Ends a hold that is still on (the migration ended before the job unmasked); best effort."""
    try:
        shell.run(f"{STOP_JOB}echo unmask > {GPE}", check=False, timeout=10, scaled=False)
    except TestbedError as e:
        logger.warning("%s: could not unmask %s after the migration: %s", shell.vm, GPE, e)
