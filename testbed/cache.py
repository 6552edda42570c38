"""Where the testbed keeps what outlives a run: guest images, apt lists, probe results."""

import os
from pathlib import Path


def cache_root() -> Path:
    base = os.environ.get("TESTBED_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "failover-testbed")
    path = Path(base)
    path.mkdir(parents=True, exist_ok=True)
    return path
