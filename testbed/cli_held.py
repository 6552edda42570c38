"""`testbed ssh / qmp / console / resume / down`: reaching the VMs of a run held by --keep."""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import time
from pathlib import Path

from rich.console import Console

from testbed.errors import TestbedError
from testbed.hold import held_runs
from testbed.leftovers import run_leftovers
from testbed.procutil import process_alive


def _held(args: argparse.Namespace) -> tuple[dict, str | None]:
    runs = held_runs()
    if args.run:
        runs = [r for r in runs if str(r["pid"]) == args.run or r["run"] == args.run]
    if not runs:
        raise TestbedError("no held run (start one with `testbed run SCENARIO --keep`)")
    state = runs[0]
    vm = getattr(args, "vm", None)
    if vm is None and len(state["vms"]) == 1:
        vm = next(iter(state["vms"]))
    if vm is not None and vm not in state["vms"]:
        raise TestbedError(f"held run {state['run']} has VMs {sorted(state['vms'])}, not {vm!r}")
    return state, vm


def _enter(state: dict) -> list[str]:
    return ["nsenter", f"--target={state['netns_pid']}", "--net",
            *(["--user", "--preserve-credentials"] if state["user_ns"] else [])]


def cmd_ssh(args: argparse.Namespace, console: Console) -> int:
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    state, _ = _held(argparse.Namespace(run=args.run, vm=None))
    vm = args.vm
    if vm is not None and vm not in state["vms"] and len(state["vms"]) == 1:
        command, vm = [vm, *command], None  # `testbed ssh -- cmd`: argparse took cmd for the VM
    state, vm = _held(argparse.Namespace(run=args.run, vm=vm))
    if vm is None:
        raise TestbedError(f"which VM? {sorted(state['vms'])}")
    proxy = shlex.join([*_enter(state), "socat", "-", f"TCP:127.0.0.1:{state['vms'][vm]['ssh_port']}"])
    argv = ["ssh", "-i", state["vms"][vm].get("ssh_key", state["ssh_key"]), "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "LogLevel=ERROR", "-o", f"ProxyCommand={proxy}", f"root@{vm}", *command]
    os.execvp(argv[0], argv)


def cmd_qmp(args: argparse.Namespace, console: Console) -> int:
    state, vm = _held(args)
    if vm is None:
        raise TestbedError(f"which VM? {sorted(state['vms'])}")
    argv = [sys.executable, "-m", "qemu.qmp.qmp_shell", "-p", state["vms"][vm]["qmp_socket"]]
    os.execv(argv[0], argv)


def cmd_console(args: argparse.Namespace, console: Console) -> int:
    state, vm = _held(args)
    if vm is None:
        raise TestbedError(f"which VM? {sorted(state['vms'])}")
    local = "-,raw,echo=0,escape=0x1d" if sys.stdin.isatty() else "-"
    if sys.stdin.isatty():
        console.print("console: Ctrl-] leaves")
    argv = ["socat", local, f"UNIX-CONNECT:{state['vms'][vm]['console_socket']}"]
    os.execvp(argv[0], argv)


def cmd_resume(args: argparse.Namespace, console: Console) -> int:
    state, _ = _held(args)
    os.kill(state["pid"], signal.SIGUSR1)
    return 0


def cmd_down(args: argparse.Namespace, console: Console) -> int:
    state, _ = _held(args)
    os.kill(state["pid"], signal.SIGTERM)
    deadline = time.monotonic() + 120
    while process_alive(state["pid"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = run_leftovers(Path(state["artifacts_dir"]))
    if process_alive(state["pid"]) or left:
        console.print(f"[red]still there after 120 s:[/red] testbed pid {state['pid']}; {left}")
        return 1
    console.print(f"{state['run']}: torn down, nothing left")
    return 0
