"""SSH into a guest with paramiko, over the management NIC, from inside the run's namespace."""

from __future__ import annotations

import logging
import shlex
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import paramiko
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_fixed

from testbed.errors import TestbedError, WaitTimeout
from testbed.netns import NetworkNamespace


class GuestSessionLost(TestbedError):
    """The SSH session to a guest broke while a command ran."""


logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CommandResult:
    argv: list[str]
    exit_status: int
    stdout: str
    stderr: str


class GuestShell:
    def __init__(self, vm: str, netns: NetworkNamespace, port: int, key_file: Path, slowdown: float = 1.0):
        """slowdown multiplies every command's timeout: a nested guest (TCG inside TCG) needs
        seconds for what takes milliseconds elsewhere."""
        self.vm = vm
        self.slowdown = slowdown
        self._netns = netns
        self._port = port
        self._key = paramiko.Ed25519Key.from_private_key_file(str(key_file))
        self._client: paramiko.SSHClient | None = None

    def connect(self, timeout: float, alive=lambda: True) -> float:
        """Retries until the guest's SSH server answers; returns the seconds it took."""
        started = time.monotonic()
        last_error: list[BaseException] = []

        def attempt() -> None:
            if not alive():
                raise TestbedError(f"{self.vm}: QEMU exited while waiting for SSH")
            try:
                self._client = self._open(min(10.0, timeout))
            except BaseException as e:
                last_error[:] = [e]
                raise

        try:
            for try_ in Retrying(stop=stop_after_delay(timeout), wait=wait_fixed(0.2), reraise=True,
                                 retry=retry_if_exception_type((OSError, paramiko.SSHException, EOFError))):
                with try_:
                    attempt()
        except (OSError, paramiko.SSHException, EOFError) as e:
            raise WaitTimeout(f"{self.vm}: waited {timeout}s for SSH on the management NIC; "
                              f"last error: {type(e).__name__}: {e}") from e
        return time.monotonic() - started

    def _open(self, timeout: float) -> paramiko.SSHClient:
        sock = self._netns.connect_tcp("127.0.0.1", self._port, timeout=timeout)
        client = paramiko.SSHClient()
        # The guest's host key is made fresh at every boot, on a network only this run can reach.
        client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        try:
            # A nested guest's dropbear (TCG inside TCG) can take tens of seconds to send its banner.
            client.connect("127.0.0.1", port=self._port, username="root", pkey=self._key, sock=sock,
                           look_for_keys=False, allow_agent=False, timeout=timeout,
                           banner_timeout=max(timeout, 30), auth_timeout=max(timeout, 30))
        except BaseException:
            client.close()
            sock.close()
            raise
        return client

    def run(self, argv: list[str] | str, timeout: float = 30, check: bool = True,
            scaled: bool = True) -> CommandResult:
        """Runs a command in the guest. argv is quoted for the remote shell; a str is a shell script.
        The timeout is stretched by the guest's slowdown unless `scaled` is false (a best-effort
        collection that must not hold up a teardown)."""
        if self._client is None:
            raise TestbedError(f"{self.vm}: not connected")
        command = argv if isinstance(argv, str) else shlex.join(argv)
        timeout *= self.slowdown if scaled else 1.0
        try:
            chan = self._open_channel(timeout)
            chan.settimeout(timeout)
            chan.exec_command(command)  # what SSHClient.exec_command does, once the channel is open
            out, err = chan.makefile("r"), chan.makefile_stderr("r")
            stdout = out.read().decode(errors="replace")
            stderr = err.read().decode(errors="replace")
            status = out.channel.recv_exit_status()
        except (socket.timeout, TimeoutError) as e:
            raise WaitTimeout(f"{self.vm}: {command!r} did not finish within {timeout:.1f}s") from e
        except (paramiko.SSHException, EOFError, OSError) as e:
            # The session broke under the command (the guest or its QEMU went away): a typed error,
            # which the run's watch turns into the cause when a VM died.
            raise GuestSessionLost(f"{self.vm}: SSH session lost while running {command!r}: "
                                   f"{type(e).__name__}: {e}") from e
        if status == -1:  # paramiko's "no exit status came": the channel closed under the command
            raise GuestSessionLost(f"{self.vm}: {command!r} ended without an exit status: the SSH session "
                                   f"closed under it")
        result = CommandResult(argv if isinstance(argv, list) else [argv], status, stdout, stderr)
        if check and status != 0:
            raise TestbedError(f"{self.vm}: {command!r} exited {status}: {stderr.strip() or stdout.strip()}")
        return result

    def _open_channel(self, timeout: float) -> paramiko.Channel:
        """A session whose server stopped opening channels (seen once under load, right after a
        migration: "Timeout opening channel") gets one new connection. Nothing ran on the channel
        that failed to open, so nothing runs twice."""
        assert self._client is not None
        try:
            transport = self._client.get_transport()
            if transport is None or not transport.is_active():
                raise paramiko.SSHException("SSH session not active")
            return transport.open_session(timeout=timeout)
        except (paramiko.SSHException, EOFError, OSError) as e:
            logger.warning("%s: SSH session did not open a channel (%s); connecting again", self.vm, e)
            self._client.close()
            self._client = self._open(min(timeout, 20.0))
            transport = self._client.get_transport()
            assert transport is not None
            return transport.open_session(timeout=timeout)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
