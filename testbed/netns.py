"""Private network namespaces: every tap, bridge and guest-facing socket of a run lives in one.

A namespace is held open by a small holder process that exits when its stdin closes, i.e. when the
testbed exits for any reason. Nothing is named in /run/netns, so nothing can be left registered:
the namespace disappears with the last process in it.
"""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys

from testbed.errors import TestbedError
from testbed.procutil import spawn

HOLDER_CODE = "import sys; sys.stdout.write('ready\\n'); sys.stdout.flush(); sys.stdin.read()"


class NetworkNamespace:
    def __init__(self, holder: subprocess.Popen, user_ns: bool):
        self._holder = holder
        self.user_ns = user_ns

    @classmethod
    def create(cls) -> "NetworkNamespace":
        # As root a plain network namespace; as a normal user a user+network namespace in which we
        # are root, which is enough for taps and bridges.
        user_ns = os.geteuid() != 0
        unshare = ["unshare", "--net"] + (["--user", "--map-root-user"] if user_ns else [])
        holder = spawn([*unshare, "--", sys.executable, "-c", HOLDER_CODE],
                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert holder.stdout is not None
        ready, _, _ = select.select([holder.stdout], [], [], 10)
        line = holder.stdout.readline() if ready else ""
        if line.strip() != "ready":
            holder.kill()
            _, err = holder.communicate(timeout=5)
            raise TestbedError(f"could not create a network namespace with {' '.join(unshare)} within 10 s: "
                               f"{err.strip() or 'no error output'}")
        ns = cls(holder, user_ns)
        ns.run(["ip", "link", "set", "lo", "up"])
        return ns

    @property
    def pid(self) -> int:
        return self._holder.pid

    @property
    def inode(self) -> int:
        """Identifies the namespace: a process is in it iff its /proc/PID/ns/net has this inode."""
        return os.stat(f"/proc/{self.pid}/ns/net").st_ino

    def argv(self, argv: list[str]) -> list[str]:
        """argv prefixed so that it runs inside the namespace."""
        enter = ["nsenter", f"--target={self.pid}", "--net"]
        if self.user_ns:
            enter += ["--user", "--preserve-credentials"]
        return [*enter, "--", *argv]

    def run(self, argv: list[str], input: str | None = None, timeout: float = 30) -> str:
        try:
            done = subprocess.run(self.argv(argv), input=input, capture_output=True, text=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired as e:
            raise TestbedError(f"{' '.join(argv)} in the run's namespace took more than {timeout}s") from e
        if done.returncode:
            raise TestbedError(f"{' '.join(argv)} in the run's namespace failed ({done.returncode}): "
                               f"{done.stderr.strip()}")
        return done.stdout

    def connect_tcp(self, host: str, port: int, timeout: float = 5) -> socket.socket:
        """A TCP socket connected from inside the namespace, handed back over a socketpair."""
        ours, theirs = socket.socketpair()
        try:
            code = ("import socket,sys; s=socket.create_connection((sys.argv[1], int(sys.argv[2])), "
                    "timeout=float(sys.argv[4])); socket.send_fds(socket.socket(fileno=int(sys.argv[3])), "
                    "[b'x'], [s.fileno()])")
            done = subprocess.run(self.argv([sys.executable, "-c", code, host, str(port),
                                             str(theirs.fileno()), str(timeout)]),
                                  pass_fds=[theirs.fileno()], capture_output=True, text=True,
                                  timeout=timeout + 5)
            if done.returncode:
                raise ConnectionError(f"connect to {host}:{port} in the run's namespace: "
                                      f"{done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}")
            _, fds, _, _ = socket.recv_fds(ours, 1, 1)
            return socket.socket(fileno=fds[0])
        finally:
            ours.close()
            theirs.close()

    def close(self) -> None:
        if self._holder.poll() is None:
            if self._holder.stdin:
                self._holder.stdin.close()
            try:
                self._holder.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._holder.kill()
                self._holder.wait()
