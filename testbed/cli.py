"""The `testbed` command: run scenarios, build images, check the host."""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.text import Text

from testbed.artifacts import new_artifacts_dir
from testbed.bug_verdict import Verdict, exit_status
from testbed.errors import ScenarioError, TestbedError
from testbed.cloud_seed import with_seed
from testbed.kexec_disk import with_kexec_disk
from testbed.image_recipe import DEFAULT_FLAVOUR, flavours
from testbed.images import LocalKernel, ensure_image
from testbed.plan import absent_at_boot, plan_machines
from testbed.qemu_argv import LaunchFiles, build_argv
from testbed.qemu_host import inspect_qemu
from testbed.report_view import print_report
from testbed.runner import RunOptions, run_scenario
from testbed.snapshots import RUN_MODES
from testbed.cli_held import cmd_console, cmd_down, cmd_qmp, cmd_resume, cmd_ssh
from testbed.cli_common import log_to, variables
from testbed.cli_matrix import add_matrix_parser
from testbed.nested_machine import with_host_devices
from testbed.scenario import load_scenario


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


def cmd_run(args: argparse.Namespace, console: Console) -> int:
    scenario = load_scenario(args.scenario, variables(args.set))
    if args.dry_run:
        qemu = args.qemu or "qemu-system-x86_64"
        for plan in plan_machines(scenario):
            plan = with_seed(plan, Path("<artifacts>"), make=False)
            plan = with_kexec_disk(plan, scenario.steps, Path("<kernel>"), Path("<initrd>"), Path("<artifacts>"),
                                   make=False)
            files = LaunchFiles(Path("<kernel>"), Path("<initrd>"), Path(f"<artifacts>/{plan.name}/serial.log"), 3)
            # a host VM's VFs are assigned at launch: a placeholder where each one's address goes
            vfs = {(plan.name, plan.slot, p.pair.name): "<VF of the host VM's PF>" for p in plan.pairs}
            plan = with_host_devices(plan, vfs)
            print(f"# {plan.name}" + (" (runs inside the host VM)" if scenario.host.kind.value == "vm" else ""))
            print(shlex.join(build_argv(qemu, plan, files, args.accel if args.accel != "auto" else "tcg",
                                        absent_devices=absent_at_boot(plan))))
        return 0
    artifacts = Path(args.artifacts).resolve() if args.artifacts else \
        new_artifacts_dir(Path("testbed-artifacts").resolve(), scenario.name)
    options = RunOptions(artifacts_dir=artifacts, qemu=args.qemu, accel=args.accel,
                         local_kernel=_local_kernel(args), timeout_scale=args.timeout_scale,
                         scenario_file=str(args.scenario), keep=args.keep,
                         snapshot_cache_mib=args.snapshot_cache_mib, snapshot=args.snapshot)
    log_to(console, quiet=args.quiet)
    if console.is_terminal and not args.keep and not args.quiet:
        # A live status line (image build, current step) above the timestamped log.
        with console.status(f"{scenario.name}: preparing (guest image, QEMU checks)") as status:
            handler = _StatusHandler(status, scenario.name)
            logging.getLogger("testbed").addHandler(handler)
            try:
                report = run_scenario(scenario, options)
            finally:
                logging.getLogger("testbed").removeHandler(handler)
    else:
        report = run_scenario(scenario, options)
    if not args.quiet or (not report.passed and report.verdict is None):
        print_report(console, report)
    # Written whole or not at all: a full disk gives an error, never a truncated report.
    report.write(artifacts / "report.json")
    if args.report:
        report.write(Path(args.report))
    if report.verdict is not None:
        verdict = Verdict(report.verdict)
        status = exit_status(verdict, args.reproduced_is_good)
        console.print(f"{report.scenario}: {verdict.value.upper()} (exit {status}): {report.verdict_evidence}",
                      markup=False, highlight=False)
        return status
    return 0 if report.passed else 1


class _StatusHandler(logging.Handler):
    def __init__(self, status, name: str):
        super().__init__(logging.INFO)
        self.status, self.name = status, name

    def emit(self, record: logging.LogRecord) -> None:
        self.status.update(f"{self.name}: {escape(record.getMessage())}")


def cmd_snapshots(args: argparse.Namespace, console: Console) -> int:
    from testbed.snapshots import SnapshotCache
    cache = SnapshotCache()
    console = Console(highlight=False)  # a listing goes to stdout, for scripts
    if args.snapshots_command == "clear":
        console.print(f"removed {cache.clear()} snapshot(s) from {cache.root}")
        return 0
    entries = cache.entries()
    for snap in entries:
        meta = snap.meta()
        console.print(f"{snap.key}  {snap.size_bytes() / 2**20:8.1f} MiB  last used "
                      f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(snap.last_used()))}  "
                      f"{meta.get('scenario', '?')}/{meta.get('vm', '?')}  {meta.get('accel', '?')}", highlight=False)
    total = sum(s.size_bytes() for s in entries)
    console.print(f"{len(entries)} snapshot(s), {total / 2**20:.1f} MiB of {cache.limit_bytes >> 20} MiB, in {cache.root}",
                  highlight=False)
    return 0


def cmd_images(args: argparse.Namespace, console: Console) -> int:
    started = time.monotonic()
    log_to(console)
    image = ensure_image(local_kernel=_local_kernel(args), flavour=args.flavour)
    console.print(f"{args.flavour}: {image.directory} (kernel {image.kernel_release}, initrd "
                  f"{image.manifest['initrd_bytes'] / 1e6:.1f} MB) in {time.monotonic() - started:.1f}s")
    return 0


def cmd_check_host(args: argparse.Namespace, console: Console) -> int:
    qemu = inspect_qemu(args.qemu).require()
    console.print(f"{qemu.path}: {qemu.version_text}; igb, e1000e, pcie-root-port: present")
    return 0


def cmd_bench(args: argparse.Namespace, console: Console) -> int:
    from testbed.bench import (print_bench, print_migration_bench, print_probe_bench, run_bench,
                               run_migration_bench, run_probe_bench)
    if args.flavours is not None:
        from testbed.bench_flavours import print_flavour_bench, run_flavour_bench
        results = run_flavour_bench(console, args.runs, not args.no_cold,
                                    only=tuple(f for f in args.flavours.split(",") if f))
        print_flavour_bench(results, Console(width=160))
    elif args.warm:
        from testbed.bench_warm import print_warm_bench, run_warm_bench
        results = run_warm_bench(console, tuple(args.warm_scenarios.split(",")))
        print_warm_bench(results, Console(width=200))
    elif args.host_vm:
        from testbed.bench_host_vm import print_host_vm_bench, run_host_vm_bench
        results = run_host_vm_bench(console, args.runs)
        print_host_vm_bench(results, Console(width=160))
    elif args.migration:
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
    run.add_argument("--reproduced-is-good", action="store_true",
                     help="bug scenarios: exit 0 when the bug is reproduced and 1 when it is not (to bisect for "
                          "the fix); by default reproduced exits 1, not reproduced 0, and an error 125 (skip)")
    run.add_argument("--snapshot", choices=RUN_MODES,
                     help="boot steps that do not say `snapshot:` resume from a cached post-boot state when "
                          "nothing looks at the boot (auto), or always boot cold (never) "
                          "(default: $TESTBED_SNAPSHOT, else auto)")
    run.add_argument("--snapshot-cache-mib", type=int, metavar="MIB",
                     help="size limit of the warm-start snapshot cache; least recently used snapshots beyond it "
                          "are evicted (default: $TESTBED_SNAPSHOT_CACHE_MIB, else 4096)")
    run.add_argument("--keep", action="store_true",
                     help="on failure or at a pause step, keep the VMs and wait (testbed ssh/qmp/console/down)")
    _add_machine_options(run)
    run.set_defaults(func=cmd_run)
    images = sub.add_parser("images", help="guest images")
    images_sub = images.add_subparsers(dest="images_command", required=True)
    build = images_sub.add_parser("build", help="build (or find cached) the guest image")
    build.add_argument("--kernel")
    build.add_argument("--modules")
    build.add_argument("--flavour", default=DEFAULT_FLAVOUR, choices=list(flavours()),
                       help="the image flavour (images/<flavour>/recipe.toml; minimal: images/recipe.toml)")
    build.set_defaults(func=cmd_images)
    snaps = sub.add_parser("snapshots", help="the cache of post-boot guest states (boot step `snapshot:`)")
    snaps_sub = snaps.add_subparsers(dest="snapshots_command", required=True)
    snaps_sub.add_parser("list", help="key, size, last use, scenario/VM of each snapshot").set_defaults(func=cmd_snapshots)
    snaps_sub.add_parser("clear", help="remove every snapshot").set_defaults(func=cmd_snapshots)
    bench = sub.add_parser("bench", help="measure image build, boot, scenario time and memory")
    bench.add_argument("scenario", type=Path, nargs="?", default=Path("scenarios/standby-pci.yaml"))
    bench.add_argument("--runs", type=int, default=3)
    bench.add_argument("--accel", default="auto", choices=["auto", "tcg", "kvm"])
    bench.add_argument("--no-cold", action="store_true", help="skip the cold image build")
    bench.add_argument("--probes", action="store_true",
                       help="measure the traffic probes instead: resolution and CPU cost")
    bench.add_argument("--migration", action="store_true",
                       help="measure live migration instead: 256 MiB and 1 GiB, with and without announce-self")
    bench.add_argument("--warm", action="store_true",
                       help="cold boot against warm restore (boot snapshot: auto), up to pairs ready")
    bench.add_argument("--warm-scenarios", default="standby-pci,standby-igb-vf,two-pairs,host-vf-failover",
                       help="for --warm: scenario names under scenarios/, comma-separated")
    bench.add_argument("--flavours", nargs="?", const="", metavar="F,F",
                       help="every guest image flavour (or those listed): image build (cold and warm) and boot "
                            "to pairs ready")
    bench.add_argument("--host-vm", action="store_true",
                       help="time the phases of host-vf-failover.yaml: host VM, nested guest, unplug, re-plug, migration")
    bench.add_argument("--json", help="also write the figures here")
    bench.set_defaults(func=cmd_bench)
    add_matrix_parser(sub)
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


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() or c == "\n" else repr(c)[1:-1] for c in text)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console(stderr=True)
    if not console.is_terminal:
        console = Console(stderr=True, width=200)  # logs and CI: never truncate names and MACs
    try:
        return args.func(args, console)
    except ScenarioError as e:
        # Plain text, one line however long (grep in CI logs), control characters made visible.
        console.print(Text.assemble(("invalid scenario: ", "red"), _printable(str(e))), soft_wrap=True)
        return 2
    except TestbedError as e:
        console.print(Text.assemble(("error: ", "red"), _printable(str(e))), soft_wrap=True)
        return 1
    except KeyboardInterrupt:
        console.print("[yellow]interrupted; everything was shut down[/yellow]")
        return 130


if __name__ == "__main__":
    sys.exit(main())
