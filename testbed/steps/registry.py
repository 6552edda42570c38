"""Which function runs which step model. A handler module registers itself with @handles; the table
is checked against the Step union by a unit test, so a new step kind cannot lack its handler."""

from __future__ import annotations

from typing import Any, Callable, TypeVar

from testbed.run_context import RunContext

Handler = Callable[[RunContext, Any], "dict[str, Any] | None"]
HANDLERS: dict[type, Handler] = {}
F = TypeVar("F", bound=Handler)


def handles(step_type: type) -> Callable[[F], F]:
    def register(func: F) -> F:
        if step_type in HANDLERS:
            raise RuntimeError(f"two handlers for {step_type.__name__}")
        HANDLERS[step_type] = func
        return func
    return register


def run_step(ctx: RunContext, step: Any) -> dict[str, Any] | None:
    return HANDLERS[type(step)](ctx, step)
