"""What the CLI's commands share: --set variables and the log handler."""

from __future__ import annotations

import json
import logging

from rich.console import Console
from rich.logging import RichHandler

from testbed.errors import ScenarioError


def variables(pairs: list[str]) -> dict[str, object]:
    out: dict[str, object] = {}
    for item in pairs:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ScenarioError("--set", item, "expected NAME=VALUE")
        try:
            out[key] = json.loads(value)  # numbers and booleans stay typed for jinja
        except json.JSONDecodeError:
            out[key] = value
    return out



def log_to(console: Console, quiet: bool = False) -> None:
    """The testbed's module loggers print through rich: time, message (never markup)."""
    root = logging.getLogger("testbed")
    root.handlers = [h for h in root.handlers if not isinstance(h, RichHandler)]
    handler = RichHandler(console=console, show_path=False, show_level=False, markup=False,
                          rich_tracebacks=False)
    handler.setLevel(logging.WARNING if quiet else logging.INFO)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    # paramiko logs every failed connection attempt with a traceback; the testbed's own wait says
    # what it waited for and what it saw.
    logging.getLogger("paramiko").setLevel(logging.CRITICAL)
