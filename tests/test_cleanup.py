"""Nothing outlives a run: not after Ctrl-C, not after SIGKILL of the testbed itself."""

import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from testbed.artifacts import SCRATCH_PREFIX, sweep_dead_scratch
from testbed.leftovers import run_leftovers
from testbed.netns import NetworkNamespace

REPO = Path(__file__).parent.parent
pytestmark = pytest.mark.guest


def _start_and_wait_for_boot(tmp_path, scenario: str = "scenarios/standby-pci.yaml") -> tuple[subprocess.Popen, Path]:
    artifacts = tmp_path / "art"
    # --snapshot never: mid-boot is a boot (a warm cache would restore instead)
    proc = subprocess.Popen([sys.executable, "-m", "testbed.cli", "run", str(REPO / scenario),
                             "--artifacts", str(artifacts), "--snapshot", "never"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    serial = artifacts / "vm1" / "serial.log"
    deadline = time.monotonic() + 120
    # Mid-boot: the kernel has printed something, the guest is not up yet.
    while not (serial.exists() and serial.stat().st_size > 0):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "QEMU never started writing the serial console"
        time.sleep(0.05)
    assert run_leftovers(artifacts), "expected a live QEMU before the interruption"
    return proc, artifacts


def _assert_nothing_left(artifacts: Path, within_s: float = 10) -> None:
    deadline = time.monotonic() + within_s
    while (left := run_leftovers(artifacts)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert left == []


@pytest.mark.parametrize("scenario", ["scenarios/standby-pci.yaml",
                                      "scenarios/zoo/dhcp-networkd.yaml"])  # + dnsmasq in the peer namespace
def test_sigint_mid_boot_leaves_nothing(tmp_path, scenario):
    proc, artifacts = _start_and_wait_for_boot(tmp_path, scenario)
    if "dhcp" in scenario:
        assert any("dnsmasq" in left for left in run_leftovers(artifacts)), run_leftovers(artifacts)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    _assert_nothing_left(artifacts, within_s=0.5)


def test_sigkill_of_the_testbed_takes_qemu_and_the_namespace_with_it(tmp_path):
    proc, artifacts = _start_and_wait_for_boot(tmp_path)
    proc.kill()
    proc.communicate(timeout=30)
    _assert_nothing_left(artifacts)
    # A SIGKILLed run cannot remove its socket directory; the next run's sweep does.
    left = list(Path(tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}{proc.pid}-*"))
    assert left, "expected the killed run's socket directory"
    assert set(left) <= set(sweep_dead_scratch())
    assert not any(p.exists() for p in left)


def test_a_namespace_that_reuses_the_runs_inode_is_not_counted_as_the_runs(tmp_path):
    """The kernel hands a freed namespace's inode number to the next one made, so under xdist
    another run's namespace can carry this run's old inode: it has a holder that is not this run's."""
    other = NetworkNamespace.create()
    try:
        record = tmp_path / "netns-inode"
        record.write_text(f"{other.inode} {other.pid + 100000}\n")  # this run's record: another holder
        assert run_leftovers(tmp_path) == []
        record.write_text(f"{other.inode} {other.pid}\n")            # the run's own holder, still alive
        assert [f"pid {other.pid} still in the run's namespace {other.inode}"] == \
            [left.split(":")[0] for left in run_leftovers(tmp_path)]
        record.write_text(f"{other.inode}\n")                        # no holder recorded: counted
        assert len(run_leftovers(tmp_path)) == 1
    finally:
        other.close()
