"""Child processes that die with the testbed, even when it is SIGKILLed."""

from __future__ import annotations

import ctypes
import signal
import subprocess
from pathlib import Path

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


def _die_with_parent() -> None:
    # Survives exec (not setuid), so QEMU and the namespace holder go when the testbed goes.
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def spawn(argv: list[str], **kwargs) -> subprocess.Popen:
    """Popen that ties the child's life to this process; argv only, never a shell string."""
    return subprocess.Popen(argv, preexec_fn=_die_with_parent, **kwargs)


def process_alive(pid: int) -> bool:
    """True for a running process; an exited one not yet reaped by its parent (a zombie) is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
