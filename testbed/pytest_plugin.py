"""pytest plugin (entry point `failover_testbed`): scenario files as test items, and fixtures to run
scenarios from Python tests."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Callable

import pytest

from testbed.errors import TestbedError
from testbed.images import GuestImage, LocalKernel, ensure_image
from testbed.known_flakes import host_vm_flake_rerun, machine_stood_still_rerun
from testbed.machine_share import MachineShare
from testbed.report import RunReport
from testbed.runner import RunOptions, live_run, run_scenario
from testbed.scenario import Scenario, load_scenario


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("failover-testbed", "failover-testbed: QEMU net_failover scenarios")
    group.addoption("--testbed-qemu", default=None, help="QEMU binary (default: qemu-system-x86_64)")
    group.addoption("--testbed-accel", default="auto", choices=["auto", "tcg", "kvm"],
                    help="accelerator; auto uses KVM only where a probe boot works")
    group.addoption("--testbed-kernel", default=None, help="guest bzImage instead of the Debian kernel")
    group.addoption("--testbed-modules", default=None, help="its /lib/modules/<release> directory")
    group.addoption("--testbed-artifacts", default=None,
                    help="where runs keep serial logs, QMP events, dmesg and reports (default: pytest's tmp)")
    group.addoption("--testbed-timeout-scale", type=float, default=1.0,
                    help="multiply every step timeout (TCG on a slow machine)")
    group.addoption("--testbed-snapshot", default=None, choices=["auto", "never"],
                    help="boot steps without `snapshot:` (default: $TESTBED_SNAPSHOT, else auto)")
    group.addoption("--testbed-keep-on-failure", action="store_true",
                    help="hold a failed scenario's VMs for testbed ssh/qmp/console until testbed down (use with -s)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "guest: boots real QEMU guests")
    config.addinivalue_line("markers", "alone: a guest test that has the machine's CPUs to itself: no other "
                                       "guest test of any pytest process on the machine runs meanwhile "
                                       "(testbed.machine_share); scenario files with a host VM get it")
    config.addinivalue_line("markers", "slow: takes minutes under TCG")
    config.addinivalue_line("markers", "kvm: needs working KVM; skipped where the KVM probe boot fails")


SHARE = pytest.StashKey[MachineShare]()


def _run_order(item: pytest.Item) -> int:
    if item.get_closest_marker("alone") is not None:
        return 0
    return 2 if item.get_closest_marker("guest") is not None else 1


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The tests that run alone first, then the ones that boot no guest, then the other guest tests,
    each group in collection order. pytest-xdist's `load` scheduling hands each worker a run of
    consecutive items to start with: the worker that draws the `alone` tests starts them at once
    (none waits for another worker's guest test to end), and the other worker spends that time on
    the tests that boot nothing and so need no share, instead of waiting for the machine.
    Every guest test without reruns of its own gets one for a step failed while the machine stood
    still, unless the command line asks for reruns (a marker would override `--reruns`)."""
    items.sort(key=_run_order)
    if config.getoption("reruns", None):
        return
    for item in items:
        if item.get_closest_marker("guest") is not None and item.get_closest_marker("flaky") is None:
            item.add_marker(machine_stood_still_rerun())


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """A guest test's share of the machine, held from before its fixtures are set up until they are
    torn down; a test marked `alone` waits until no other guest test runs, and keeps them out."""
    _skip_without_kvm(item)
    if item.get_closest_marker("guest") is not None and SHARE not in item.stash:
        share = MachineShare(alone=item.get_closest_marker("alone") is not None)
        share.acquire()
        item.stash[SHARE] = share


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None):
    try:
        return (yield)
    finally:
        if (share := item.stash.get(SHARE, None)) is not None:
            share.release()
            del item.stash[SHARE]


def _skip_without_kvm(item: pytest.Item) -> None:
    if item.get_closest_marker("kvm") is None:
        return
    from testbed.images import ensure_image
    from testbed.qemu_host import choose_accel, inspect_qemu
    if item.config.getoption("testbed_accel") == "tcg":
        pytest.skip("KVM test, but --testbed-accel=tcg")
    qemu = inspect_qemu(item.config.getoption("testbed_qemu")).require()
    if choose_accel("auto", qemu, ensure_image().kernel) != "kvm":
        pytest.skip("KVM test: /dev/kvm is missing or a probe boot of the guest kernel under KVM failed")


def _options(config: pytest.Config, name: str, base: Path) -> RunOptions:
    kernel, modules = config.getoption("testbed_kernel"), config.getoption("testbed_modules")
    local = LocalKernel(Path(kernel), Path(modules)) if kernel and modules else None
    artifacts = config.getoption("testbed_artifacts")
    root = Path(artifacts) if artifacts else base
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    directory = root / worker / re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
    base, attempt = directory, 1
    while directory.exists():  # a rerun (see HOST_VM_KNOWN_FLAKES) keeps the failed attempt's artifacts
        attempt += 1
        directory = base.with_name(f"{base.name}-{attempt}")
    return RunOptions(artifacts_dir=directory.resolve(), qemu=config.getoption("testbed_qemu"),
                      accel=config.getoption("testbed_accel"), local_kernel=local,
                      timeout_scale=config.getoption("testbed_timeout_scale"),
                      keep=config.getoption("testbed_keep_on_failure"),
                      snapshot=config.getoption("testbed_snapshot"))


class ScenarioFailed(Exception):
    def __init__(self, report: RunReport):
        self.report = report
        super().__init__(report.error or "scenario failed")


def describe_failure(report: RunReport) -> str:
    lines = [f"scenario {report.scenario} FAILED after {report.duration_s:.1f}s"]
    if report.verdict is not None and report.bug is not None:
        lines.append(f"  bug verdict: {report.verdict} (this project measured {report.bug['expect']} on its own "
                     f"stack): {report.verdict_evidence}")
    for s in report.steps:
        mark = "ok " if s.ok else "FAIL"
        lines.append(f"  [{mark}] step {s.index} {s.action} ({s.started_s:.2f}s..{s.ended_s}s)"
                     + (f": {s.error}" if s.error else ""))
    if report.error:
        lines.append(f"  error: {report.error}")
    lines.append(f"  artifacts: {report.artifacts_dir}")
    lines.append(f"    report: {Path(report.artifacts_dir) / 'report.json'}")
    for vm, info in report.vms.items():
        for kind, path in info.artifacts.items():
            lines.append(f"    {vm} {kind}: {path}")
    for p in report.pings():
        lines.append(f"    {p.vm}/{p.pair} traffic log: {p.log}")
    return "\n".join(lines)


def step_table(report: RunReport) -> str:
    return "\n".join(f"  step {s.index:2} {s.action:22} {s.started_s:8.2f}s .. {s.ended_s or 0:8.2f}s "
                     f"{'ok' if s.ok else 'FAILED: ' + (s.error or '')}" for s in report.steps)


class ScenarioItem(pytest.Item):
    def __init__(self, *, path_for_scenario: Path, **kwargs: Any):
        super().__init__(**kwargs)
        self.scenario_path = path_for_scenario
        self.add_marker("guest")
        try:
            scenario = load_scenario(path_for_scenario)
            for marker in scenario.markers:
                self.add_marker(marker)
            if scenario.host.kind.value == "vm":
                self.add_marker(host_vm_flake_rerun())
                self.add_marker("alone")
        except TestbedError:
            pass  # reported by runtest, with file and key

    def runtest(self) -> None:
        scenario = load_scenario(self.scenario_path)
        base = self.config._tmp_path_factory.getbasetemp() / "testbed"  # type: ignore[attr-defined]
        options = _options(self.config, self.scenario_path.stem, base)
        options.scenario_file = str(self.scenario_path)
        self.user_properties.append(("artifacts", str(options.artifacts_dir)))
        report = run_scenario(scenario, options)
        report.write(options.artifacts_dir / "report.json")
        self.user_properties.append(("report", str(options.artifacts_dir / "report.json")))
        self.add_report_section("call", "testbed steps", step_table(report))
        if report.verdict is not None and scenario.bug is not None:
            # a bug scenario passes when its verdict is what the card says this stack shows
            self.user_properties.append(("verdict", report.verdict))
            self.user_properties.append(("verdict_evidence", report.verdict_evidence))
            if report.verdict != scenario.bug.expect:
                raise ScenarioFailed(report)
            return
        if not report.passed:
            raise ScenarioFailed(report)

    def repr_failure(self, excinfo, style=None):  # type: ignore[override]
        if isinstance(excinfo.value, ScenarioFailed):
            return describe_failure(excinfo.value.report)
        if isinstance(excinfo.value, TestbedError):
            return f"{self.scenario_path}: {excinfo.value}"
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return self.scenario_path, None, f"scenario: {self.scenario_path.name}"


class ScenarioFile(pytest.File):
    def collect(self):
        yield ScenarioItem.from_parent(self, name=self.path.stem, path_for_scenario=self.path)


VERDICT_STATUS = {"reproduced": ("r", "REPRODUCED"), "not-reproduced": ("n", "NOT REPRODUCED"),
                  "error": ("E", "ERROR")}


def _verdict(report: pytest.TestReport) -> tuple[str, str] | None:
    props = dict(report.user_properties)
    return (props["verdict"], props.get("verdict_evidence") or "") if "verdict" in props else None


def pytest_report_teststatus(report: pytest.TestReport, config: pytest.Config):
    """A bug scenario that passed shows its verdict (r / n, REPRODUCED / NOT REPRODUCED), never a bare pass."""
    if report.when == "call" and report.passed and (found := _verdict(report)) is not None:
        letter, word = VERDICT_STATUS[found[0]]
        return "passed", letter, word
    return None


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    rows = [(r.nodeid, *v) for r in terminalreporter.stats.get("passed", []) + terminalreporter.stats.get("failed", [])
            if r.when == "call" and (v := _verdict(r)) is not None]
    if rows:
        terminalreporter.section("bug zoo verdicts")
        for nodeid, verdict, evidence in rows:
            terminalreporter.line(f"{VERDICT_STATUS[verdict][1]:15} {nodeid}: {evidence}")


def pytest_collect_file(file_path: Path, parent: pytest.Collector):
    in_scenarios = file_path.parent.name == "scenarios" or \
        (file_path.parent.name in ("zoo", "qtest") and file_path.parent.parent.name == "scenarios")
    if file_path.suffix == ".yaml" and in_scenarios:
        return ScenarioFile.from_parent(parent, path=file_path)
    return None


@pytest.fixture(scope="session")
def testbed_image(pytestconfig: pytest.Config) -> GuestImage:
    """The guest image, built once per cache; concurrent workers wait on the build lock."""
    kernel, modules = pytestconfig.getoption("testbed_kernel"), pytestconfig.getoption("testbed_modules")
    local = LocalKernel(Path(kernel), Path(modules)) if kernel and modules else None
    return ensure_image(local_kernel=local)


@pytest.fixture
def run_testbed_scenario(request: pytest.FixtureRequest, pytestconfig: pytest.Config, tmp_path: Path,
                         testbed_image: GuestImage) -> Callable[..., RunReport]:
    """Runs a scenario (a path, or a Scenario built in Python) and returns its report.
    It does not assert: the test decides what a pass is."""
    def run(scenario: Scenario | str | Path, variables: dict[str, Any] | None = None,
            name: str | None = None) -> RunReport:
        if not isinstance(scenario, Scenario):
            scenario = load_scenario(scenario, variables)
        options = _options(pytestconfig, name or scenario.name, tmp_path)
        request.node.user_properties.append(("artifacts", str(options.artifacts_dir)))
        report = run_scenario(scenario, options)
        report.write(options.artifacts_dir / "report.json")
        return report
    return run


@pytest.fixture
def live_testbed(request: pytest.FixtureRequest, pytestconfig: pytest.Config, tmp_path: Path,
                 testbed_image: GuestImage) -> Callable[..., Any]:
    """Opens a run to drive step by step, with the plugin's options:

        with live_testbed("scenarios/standby-pci.yaml") as run:
            run.step(BootStep(action="boot"))
            run.ctx.machine("vm1").qmp.execute("query-status")
    """
    def open_run(scenario: Scenario | str | Path, variables: dict[str, Any] | None = None,
                 name: str | None = None):
        if not isinstance(scenario, Scenario):
            scenario = load_scenario(scenario, variables)
        options = _options(pytestconfig, name or scenario.name, tmp_path)
        request.node.user_properties.append(("artifacts", str(options.artifacts_dir)))
        return live_run(scenario, options)
    return open_run
