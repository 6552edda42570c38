"""QMP over qemu.qmp, used from synchronous code: one asyncio loop thread serves every machine.

Every event is recorded with the run clock and written to a JSONL artifact as it arrives. Waits look
at that record from a cursor, so an event that arrived before the wait started (or that a previous
wait did not want) is never lost.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from qemu.qmp import ExecuteError, QMPClient, Runstate
from qemu.qmp.events import EventListener

from testbed.clock import RunClock
from testbed.errors import TestbedError, WaitTimeout
from testbed.machine_watch import check_machines

WATCH_SLICE_S = 0.2


class QmpCommandError(TestbedError):
    """A QMP command failed. error_class is QEMU's error class (e.g. GenericError, DeviceNotFound),
    or None when the connection itself failed."""

    def __init__(self, vm: str, cmd: str, args: dict[str, Any] | None, error_class: str | None, desc: str):
        kind = f" ({error_class})" if error_class else ""
        super().__init__(f"{vm}: QMP {cmd} {json.dumps(args or {})} failed{kind}: {desc}")
        # not `args`: BaseException.args is the message tuple, and None would not fit it
        self.vm, self.cmd, self.arguments, self.error_class, self.desc = vm, cmd, args, error_class, desc


class _LoopThread:
    _instance: "_LoopThread | None" = None
    _lock = threading.Lock()

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="qmp-loop", daemon=True).start()

    @classmethod
    def get(cls) -> "_LoopThread":
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def run(self, coro, timeout: float, what: str) -> Any:
        future = asyncio.run_coroutine_threadsafe(asyncio.wait_for(coro, timeout), self.loop)
        try:
            return future.result(timeout + 1)
        except (asyncio.TimeoutError, TimeoutError) as e:
            raise WaitTimeout(f"{what}: no answer within {timeout}s") from e


@dataclass(frozen=True)
class EventRecord:
    t: float                 # run clock, seconds
    event: str
    data: dict[str, Any]
    qemu_time: float         # QEMU's own timestamp (wall clock)
    vm: str


class EventLog:
    def __init__(self, vm: str, jsonl: Path):
        self.vm = vm
        self._records: list[EventRecord] = []
        self._cond = threading.Condition()
        self._file = jsonl.open("a")

    def append(self, record: EventRecord) -> None:
        with self._cond:
            self._records.append(record)
            self._file.write(json.dumps(asdict(record)) + "\n")
            self._file.flush()
            self._cond.notify_all()

    def cursor(self) -> int:
        with self._cond:
            return len(self._records)

    def records(self) -> list[EventRecord]:
        with self._cond:
            return list(self._records)

    def _wait(self, found: Callable[[], Any], timeout: float) -> Any:
        """Waits for found() to return something, in short slices that also watch the run's VMs."""
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            check_machines()
            with self._cond:
                hit = found()
                left = deadline - time.monotonic()
                if hit is not None or left <= 0:
                    return hit
                self._cond.wait(min(WATCH_SLICE_S, left))

    def wait_for(self, name: str, timeout: float, since: int = 0,
                 match: Callable[[dict[str, Any]], bool] = lambda data: True) -> EventRecord:
        def found() -> EventRecord | None:
            return next((r for r in self._records[since:] if r.event == name and match(r.data)), None)
        hit = self._wait(found, timeout)
        if hit is None:
            seen = [r.event for r in self.records()[since:]] or "nothing"
            raise WaitTimeout(f"{self.vm}: waited {timeout}s for QMP event {name}; saw {seen}")
        return hit

    def next(self, names: set[str], since: int, timeout: float) -> tuple[int, EventRecord] | None:
        """The first event named in `names` at or after index `since`, with its index, waiting up to
        timeout; None if none came (the caller decides what that means)."""
        def found() -> tuple[int, EventRecord] | None:
            return next(((i, r) for i, r in enumerate(self._records[since:], since) if r.event in names), None)
        return self._wait(found, timeout)

    def close(self) -> None:
        with self._cond:
            if not self._file.closed:
                self._file.close()


class QmpChannel:
    def __init__(self, vm: str, events: EventLog, clock: RunClock):
        self.vm = vm
        self.events = events
        self._clock = clock
        self._client = QMPClient(vm)
        self._loop = _LoopThread.get()
        self._pump: asyncio.Task | None = None
        self._listener: EventListener | None = None

    def connect(self, sock: socket.socket, timeout: float = 10) -> None:
        """The QMP handshake over a connected socket; may be retried after a failed handshake."""
        async def connect() -> None:
            if self._listener is None:
                self._listener = EventListener()  # every event, registered before QEMU is let run (-S)
                self._client.register_listener(self._listener)
            await self._client.connect(sock)
            if self._pump is None:
                self._pump = asyncio.create_task(self._record(self._listener))
        self._loop.run(connect(), timeout, f"{self.vm}: QMP handshake")

    def connected(self) -> bool:
        """True while the QMP session is up: a QEMU reached over TCP is gone when it is not."""
        return self._client.runstate == Runstate.RUNNING

    async def _record(self, listener: EventListener) -> None:
        async for msg in listener:
            ts = msg.get("timestamp", {})
            self.events.append(EventRecord(
                t=round(self._clock.now(), 6), event=msg["event"], data=dict(msg.get("data", {})),
                qemu_time=ts.get("seconds", 0) + ts.get("microseconds", 0) / 1e6, vm=self.vm))

    def execute(self, cmd: str, args: dict[str, Any] | None = None, timeout: float = 10,
                watch: bool = True) -> Any:
        """watch=False for teardown: another VM's death must not stop this one's shutdown."""
        if watch:
            check_machines()  # a dead QEMU is reported as such, not as a broken connection
        try:
            return self._loop.run(self._client.execute(cmd, args), timeout, f"{self.vm}: QMP {cmd}")
        except WaitTimeout:
            raise
        except ExecuteError as e:
            raise QmpCommandError(self.vm, cmd, args, e.error_class, e.error.error.desc) from e
        except Exception as e:
            if watch:
                check_machines()
            raise QmpCommandError(self.vm, cmd, args, None, f"{type(e).__name__}: {e}") from e

    def send_fd(self, name: str, fd: int, timeout: float = 10) -> None:
        """Hands QEMU a file descriptor over the QMP socket (SCM_RIGHTS) and names it (getfd), for a
        URI such as `fd:<name>`."""
        async def send() -> None:
            self._client.send_fd_scm(fd)
            await self._client.execute("getfd", {"fdname": name})
        try:
            self._loop.run(send(), timeout, f"{self.vm}: QMP getfd {name}")
        except ExecuteError as e:
            raise QmpCommandError(self.vm, "getfd", {"fdname": name}, e.error_class, e.error.error.desc) from e

    def close(self) -> None:
        async def close() -> None:
            if self._pump:
                self._pump.cancel()
            await self._client.disconnect()
        try:
            self._loop.run(close(), 5, f"{self.vm}: QMP disconnect")
        except Exception:
            pass  # QEMU is going away anyway; the ladder in machine.py makes sure of it
