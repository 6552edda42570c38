"""Errors the testbed raises on purpose; each carries a message meant for the user as it stands."""


class TestbedError(Exception):
    __test__ = False  # not a pytest test class, despite the name


class ScenarioError(TestbedError):
    """A scenario file is invalid. Raised before anything starts."""

    def __init__(self, file: str, key: str, reason: str):
        self.file, self.key, self.reason = file, key, reason
        super().__init__(f"{file}: {key}: {reason}")


class WaitTimeout(TestbedError):
    """A wait ran out of time. The message says what was awaited and what was seen instead."""


class StepFailed(TestbedError):
    """A scenario step did not do what it promised."""
