"""Repository-level pytest set-up. The plugin itself is testbed.pytest_plugin (a pytest11 entry point).

After the whole session, no QEMU started under this session's temporary directory may still run and
no network namespace created during the session may remain: otherwise the session fails."""

import os
from pathlib import Path

import pytest

from testbed.leftovers import qemu_processes

pytest_plugins = ["pytester"]  # tests/test_host_stall.py collects a test file of its own with the plugin

# These scenarios are run by a test that makes every check their file item would make and more;
# collecting them here too would boot the same guests twice (about 3.5 min of a 2-core CI run).
collect_ignore = [
    "scenarios/host-vf-failover.yaml",            # tests/test_host_vm_guest.py, via `testbed bench --host-vm`
    "scenarios/live-migration-pci.yaml",          # tests/test_migration_guest.py
    "scenarios/migration-guest-never-acks.yaml",  # tests/test_migration_guest.py
    "scenarios/unplug-replug-igb-vf.yaml",        # tests/test_traffic_guest.py
]


ZOO = (Path(__file__).parent / "scenarios" / "zoo").resolve()
QTEST = (Path(__file__).parent / "scenarios" / "qtest").resolve()


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """The bug zoo and QEMU's failover qtest cases run when asked for (`pytest scenarios/zoo`,
    `pytest scenarios/qtest`; the nightly workflow asks), not in the default suite, which keeps under
    20 minutes on two cores; tests/test_bug_zoo.py runs one zoo item end to end, and the default
    suite's own tests cover every step those files use."""
    if collection_path not in (ZOO, QTEST):
        return None
    asked = [Path(arg.split("::")[0]).resolve() for arg in config.args]
    return not any(a == collection_path or collection_path in a.parents for a in asked)


@pytest.fixture(autouse=True)
def _guest_image_built_first(request: pytest.FixtureRequest) -> None:
    """A guest test's own deadlines (a wait for a step to start, a subprocess's timeout) must not
    include building the minimal image: on a cold cache, beside another worker's guest, the build
    took the 120 s of one such wait in CI. The build comes first, in set-up, under the image lock."""
    if request.node.get_closest_marker("guest") is not None:
        request.getfixturevalue("testbed_image")


def _net_namespaces() -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                found.add(os.stat(entry / "ns" / "net").st_ino)
            except OSError:
                pass
    return found


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config._testbed_netns_before = _net_namespaces()  # type: ignore[attr-defined]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return  # the controller checks once all workers are done
    base = str(session.config._tmp_path_factory.getbasetemp().parent)  # type: ignore[attr-defined]
    left = [f"QEMU pid {pid}: {cmd}" for pid, cmd in qemu_processes(base)]
    new_ns = _net_namespaces() - session.config._testbed_netns_before  # type: ignore[attr-defined]
    if new_ns:
        left.append(f"network namespaces created during the session still exist: {sorted(new_ns)}")
    if left:
        session.config.get_terminal_writer().line("LEFTOVERS after the test session:\n" + "\n".join(left), red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    else:
        session.config.get_terminal_writer().line("leftover check: no QEMU process or network namespace left")
