"""The `testbed` command: run scenarios, build images, check the host."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from testbed.errors import ScenarioError, TestbedError
from testbed.images import LocalKernel, ensure_image
from testbed.plan import plan_machines
from testbed.qemu_argv import LaunchFiles, build_argv
from testbed.qemu_host import inspect_qemu
from testbed.report import RunReport
from testbed.runner import RunOptions, run_scenario
from testbed.scenario import load_scenario


def _variables(pairs: list[str]) -> dict[str, object]:
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


def _local_kernel(args: argparse.Namespace) -> LocalKernel | None:
    if args.kernel is None and args.modules is None:
        return None
    if args.kernel is None or args.modules is None:
        raise TestbedError("--kernel and --modules go together (a bzImage and its /lib/modules/<release>)")
    return LocalKernel(Path(args.kernel).resolve(), Path(args.modules).resolve())


def _add_machine_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--qemu", help="QEMU binary (default: qemu-system-x86_64 on PATH, or $TESTBED_QEMU)")
    p.add_argument("--accel", default="auto", choices=["auto", "tcg", "kvm"],
                   help="auto uses KVM only where a probe boot shows it works (default: auto)")
    p.add_argument("--kernel", help="guest bzImage to use instead of the Debian kernel")
    p.add_argument("--modules", help="its modules directory (/lib/modules/<release>)")


def _print_report(console: Console, report: RunReport) -> None:
    table = Table(title=f"{report.scenario}: {'PASSED' if report.passed else 'FAILED'} in {report.duration_s:.1f}s")
    pings = [t for t in report.traffic if t["probe"] == "ping"]
    columns = ["#", "step", "ok", "start s", "end s"]
    if pings:
        columns += ["max gap ms", "lost", "carried by"]
    for col in columns + ["error"]:
        table.add_column(col)
    for s in report.steps:
        row = [str(s.index), s.action, "yes" if s.ok else "NO", f"{s.started_s:.2f}",
               f"{s.ended_s:.2f}" if s.ended_s is not None else "-"]
        if pings:
            gaps = [g for t in pings for g in t["gaps"] if g["step"] == s.index]
            row += [f"{max(g['ms'] for g in gaps):.0f}" if gaps else "-",
                    str(sum(g["lost"] for g in gaps)) if gaps else "-", _carried_by(s.counters)]
        table.add_row(*row, (s.error or "")[:300])
    console.print(table)
    for t in report.traffic:
        if t["probe"] == "ping":
            console.print(f"{t['vm']}/{t['pair']} ping {t['target']} every {t['interval_ms']:g} ms: sent {t['sent']}, "
                          f"received {t['received']}, lost {t['lost']}, max gap {t['max_gap_ms']} ms")
        else:
            console.print(f"{t['vm']}/{t['pair']} tcp: {t['bytes_echoed']} of {t['bytes_sent']} bytes echoed, "
                          f"longest stall {t['max_stall_ms']} ms" + (f", error {t['error']}" if t["error"] else ""))
    for vm, info in report.vms.items():
        t = Table(title=f"{vm} netdevs")
        for col in ("name", "role", "driver", "master", "mac", "perm_addr", "operstate"):
            t.add_column(col)
        for n in info.netdevs:
            t.add_row(*(str(n.get(c) or "-") for c in ("name", "role", "driver", "master", "mac",
                                                       "perm_addr", "operstate")))
        console.print(t)
    if report.error:
        console.print(f"[red]error:[/red] {report.error}")
    console.print(f"artifacts: {report.artifacts_dir}")


def _carried_by(counters: dict) -> str:
    """Which slave carried the packets in a step, e.g. 'net0: primary 99%'."""
    from testbed.datapath import path_shares
    out = []
    for vm, pairs in counters.items():
        for pair, roles in pairs.items():
            shares, total = path_shares([counters], vm, pair)
            parts = [f"{role} {100 * share:.0f}%" for role, share in shares.items() if role in roles]
            if parts and total:
                out.append(f"{pair}: " + ", ".join(parts))
    return "; ".join(out) or "-"


def cmd_run(args: argparse.Namespace, console: Console) -> int:
    scenario = load_scenario(args.scenario, _variables(args.set))
    if args.dry_run:
        qemu = args.qemu or "qemu-system-x86_64"
        for plan in plan_machines(scenario):
            files = LaunchFiles(Path("<kernel>"), Path("<initrd>"), Path(f"<artifacts>/{plan.name}/serial.log"), 3)
            print(f"# {plan.name}")
            print(shlex.join(build_argv(qemu, plan, files, args.accel if args.accel != "auto" else "tcg")))
        return 0
    artifacts = Path(args.artifacts or f"testbed-artifacts/{scenario.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    options = RunOptions(artifacts_dir=artifacts.resolve(), qemu=args.qemu, accel=args.accel,
                         local_kernel=_local_kernel(args), timeout_scale=args.timeout_scale,
                         scenario_file=str(args.scenario), keep=args.keep)
    if args.quiet:
        report = run_scenario(scenario, options, log=lambda msg: None)
    elif console.is_terminal and not args.keep:
        # A live status line (image build, current step) above the timestamped log.
        with console.status(f"{scenario.name}: preparing (guest image, QEMU checks)") as status:
            def log(msg: str) -> None:
                console.log(msg)
                status.update(f"{scenario.name}: {msg}")
            report = run_scenario(scenario, options, log=log)
    else:
        report = run_scenario(scenario, options, log=lambda msg: console.log(msg))
    report.write(artifacts / "report.json")
    if args.report:
        report.write(Path(args.report))
    if not args.quiet or not report.passed:
        _print_report(console, report)
    return 0 if report.passed else 1


def cmd_images(args: argparse.Namespace, console: Console) -> int:
    started = time.monotonic()
    image = ensure_image(local_kernel=_local_kernel(args), log=lambda m: console.log(m))
    console.print(f"{image.directory} (kernel {image.kernel_release}, initrd "
                  f"{image.manifest['initrd_bytes'] / 1e6:.1f} MB) in {time.monotonic() - started:.1f}s")
    return 0


def cmd_check_host(args: argparse.Namespace, console: Console) -> int:
    qemu = inspect_qemu(args.qemu).require()
    console.print(f"{qemu.path}: {qemu.version_text}; igb, e1000e, pcie-root-port: present")
    return 0


def cmd_bench(args: argparse.Namespace, console: Console) -> int:
    from testbed.bench import (print_bench, print_migration_bench, print_probe_bench, run_bench,
                               run_migration_bench, run_probe_bench)
    if args.migration:
        results = run_migration_bench(console)
        print_migration_bench(results, Console(width=200))
    elif args.probes:
        results = run_probe_bench(console)
        print_probe_bench(results, Console(width=160))
    else:
        results = run_bench(args.scenario, args.runs, args.accel, not args.no_cold, console)
        print_bench(results, Console(width=160))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


def cmd_report(args: argparse.Namespace, console: Console) -> int:
    from testbed.timeline import render
    png, page = render(Path(args.report), Path(args.png) if args.png else None,
                       Path(args.html) if args.html else None)
    console.print(f"timeline: {png}\npage: {page}")
    return 0


def _held(args: argparse.Namespace) -> tuple[dict, str | None]:
    from testbed.hold import held_runs
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
    argv = ["ssh", "-i", state["ssh_key"], "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
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
    from testbed.hold import process_alive
    from testbed.leftovers import run_leftovers
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="testbed", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a scenario file")
    run.add_argument("scenario", type=Path)
    run.add_argument("--report", help="also write the JSON report here")
    run.add_argument("--artifacts", help="artifacts directory (default: testbed-artifacts/<scenario>-<time>)")
    run.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                     help="template variable for the scenario (repeatable)")
    run.add_argument("--dry-run", action="store_true", help="print the QEMU command lines; start nothing")
    run.add_argument("--timeout-scale", type=float, default=1.0, help="multiply every step timeout")
    run.add_argument("--quiet", action="store_true", help="print only failures")
    run.add_argument("--keep", action="store_true",
                     help="on failure or at a pause step, keep the VMs and wait (testbed ssh/qmp/console/down)")
    _add_machine_options(run)
    run.set_defaults(func=cmd_run)
    images = sub.add_parser("images", help="guest images")
    images_sub = images.add_subparsers(dest="images_command", required=True)
    build = images_sub.add_parser("build", help="build (or find cached) the guest image")
    build.add_argument("--kernel")
    build.add_argument("--modules")
    build.set_defaults(func=cmd_images)
    bench = sub.add_parser("bench", help="measure image build, boot, scenario time and memory")
    bench.add_argument("scenario", type=Path, nargs="?", default=Path("scenarios/standby-pci.yaml"))
    bench.add_argument("--runs", type=int, default=3)
    bench.add_argument("--accel", default="auto", choices=["auto", "tcg", "kvm"])
    bench.add_argument("--no-cold", action="store_true", help="skip the cold image build")
    bench.add_argument("--probes", action="store_true",
                       help="measure the traffic probes instead: resolution and CPU cost")
    bench.add_argument("--migration", action="store_true",
                       help="measure live migration instead: 256 MiB and 1 GiB, with and without announce-self")
    bench.add_argument("--json", help="also write the figures here")
    bench.set_defaults(func=cmd_bench)
    rep = sub.add_parser("report", help="draw a run's timeline (PNG and self-contained HTML)")
    rep.add_argument("report", help="report.json of a run")
    rep.add_argument("--png", help="where to write the PNG (default: next to the report)")
    rep.add_argument("--html", help="where to write the HTML page (default: next to the report)")
    rep.set_defaults(func=cmd_report)
    for name, func, text in (("ssh", cmd_ssh, "ssh into a VM of a held run"),
                             ("qmp", cmd_qmp, "interactive QMP shell (qemu.qmp's qmp-shell) on a held VM"),
                             ("console", cmd_console, "the serial console of a held VM"),
                             ("resume", cmd_resume, "let a run held at a pause step go on"),
                             ("down", cmd_down, "tear a held run down and check nothing is left")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--run", help="held run (testbed pid or artifacts name; default: the newest)")
        if name in ("ssh", "qmp", "console"):
            p.add_argument("vm", nargs="?")
        if name == "ssh":
            p.add_argument("command", nargs=argparse.REMAINDER, help="command to run (after --)")
            p.set_defaults(strip_dashes=True)
        p.set_defaults(func=func)
    check = sub.add_parser("check-host", help="check that QEMU can run the testbed")
    check.add_argument("--qemu")
    check.set_defaults(func=cmd_check_host)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console(stderr=True)
    if not console.is_terminal:
        console = Console(stderr=True, width=200)  # logs and CI: never truncate names and MACs
    try:
        return args.func(args, console)
    except ScenarioError as e:
        console.print(f"[red]invalid scenario:[/red] {e}")
        return 2
    except TestbedError as e:
        console.print(f"[red]error:[/red] {e}")
        return 1
    except KeyboardInterrupt:
        console.print("[yellow]interrupted; everything was shut down[/yellow]")
        return 130


if __name__ == "__main__":
    sys.exit(main())
