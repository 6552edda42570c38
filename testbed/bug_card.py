"""The `bug:` card of a bug-zoo scenario: which known bug it reproduces, where it is documented, what
symptom its steps assert, and what the fixed behaviour looks like. The verdict of a run is decided
by testbed.bug_verdict."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from testbed.scenario_values import MAX_TEXT, Strict

Text = Annotated[str, Field(min_length=1, max_length=MAX_TEXT)]


class BugCard(Strict):
    title: Text
    zoo_item: int | None = Field(None, ge=1, le=99)   # its number in ../shared/zoo.md
    component: Literal["qemu", "kernel", "userspace", "libvirt", "testbed"]
    affected: Text                                     # e.g. "QEMU >= 4.2 up to at least 10.0.2"
    source: list[Text] = Field(min_length=1, max_length=10)  # upstream reports, threads, commits, code
    symptom: Text                                      # what the steps marked `symptom: true` assert
    fixed: Text                                        # what a run on a fixed build shows instead
    # What this project measured on its own stack (QEMU 10.0.2, Debian 6.12 guest): a pytest run
    # fails when the verdict differs, since a changed verdict is news.
    expect: Literal["reproduced", "not-reproduced"] = "reproduced"
