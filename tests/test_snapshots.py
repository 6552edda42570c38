"""The snapshot cache: keys that change with what shapes a booted guest, publication by rename,
least-recently-used eviction under a size limit, and concurrent writers."""

import os
import time
from pathlib import Path

from types import SimpleNamespace

from testbed.kexec_disk import with_kexec_disk
from testbed.plan import plan_machines
from testbed.scenario import load_scenario
from testbed.snapshots import SnapshotCache, cache_limit_bytes, snapshot_key
from testbed.warm_boot import key_for

QEMU = "/usr/bin/qemu-system-x86_64"
ARGV = ["qemu", "-m", "512M", "-device", "virtio-net-pci,failover=on", "-append", "console=ttyS0"]


def test_the_key_changes_with_each_part_and_not_with_run_paths():
    base = snapshot_key("img1", "QEMU 10.0.2", QEMU, ARGV, "tcg")
    assert snapshot_key("img1", "QEMU 10.0.2", QEMU, list(ARGV), "tcg") == base
    assert snapshot_key("img2", "QEMU 10.0.2", QEMU, ARGV, "tcg") != base
    assert snapshot_key("img1", "QEMU 10.1.0", QEMU, ARGV, "tcg") != base
    assert snapshot_key("img1", "QEMU 10.0.2", QEMU, ARGV, "kvm") != base
    assert snapshot_key("img1", "QEMU 10.0.2", QEMU, ARGV[:-1] + ["console=ttyS0 quiet"], "tcg") != base
    assert snapshot_key("img1", "QEMU 10.0.2", QEMU, ARGV + ["-device", "e1000e"], "tcg") != base


SCENARIOS = Path(__file__).parent.parent / "scenarios"


def _ctx(scenario: str, **variables) -> SimpleNamespace:
    """What key_for reads of a run; nothing of a run's own paths is in it."""
    plans = {p.name: p for p in plan_machines(load_scenario(SCENARIOS / scenario, variables or None))}
    image = SimpleNamespace(kernel=Path("/img/vmlinuz"), initrd=Path("/img/initrd.img"), directory=Path("/img/k1"))
    return SimpleNamespace(plans=plans, image=image, image_of=lambda vm: image, accel="tcg",
                           qemu=SimpleNamespace(path=QEMU, version_text="QEMU 10.0.2"))


def test_a_vms_key_is_the_same_in_every_run_and_follows_its_devices():
    key = key_for(_ctx("unplug-replug-pci.yaml"), "vm1")
    assert key_for(_ctx("unplug-replug-pci.yaml", snapshot="required"), "vm1") == key  # steps are not in it
    assert key_for(_ctx("standby-pci.yaml"), "vm1") == key          # the same VM in another scenario
    assert key_for(_ctx("standby-igb-vf.yaml"), "vm1") != key       # other devices


def test_a_kexec_disk_is_in_the_key_but_not_the_runs_own_path_to_it(tmp_path: Path):
    zoo_14b = "zoo/zoo-14-reset-into-a-kernel-without-standby.yaml"
    ctx = _ctx(zoo_14b)
    without = key_for(ctx, "vm1")
    keys = set()
    for run in ("run1", "run2"):
        ctx.plans["vm1"] = with_kexec_disk(_ctx(zoo_14b).plans["vm1"], load_scenario(SCENARIOS / zoo_14b).steps,
                                           Path("/k"), Path("/i"), tmp_path / run, make=False)
        keys.add(key_for(ctx, "vm1"))
    assert len(keys) == 1 and without not in keys


def _publish(cache: SnapshotCache, key: str, mib: int) -> None:
    scratch = cache.scratch(key)
    with (scratch / "state").open("wb") as f:
        f.write(os.urandom(mib << 20))  # real blocks: the cache counts what the disk holds
    cache.publish(key, scratch, {"key": key})


def test_publish_is_a_rename_and_the_least_recently_used_go_first(tmp_path: Path):
    cache = SnapshotCache(tmp_path, limit_bytes=(3 << 20) + (1 << 19))  # three, and their meta files
    for key in ("a", "b", "c"):
        _publish(cache, key, 1)
        time.sleep(0.02)
    cache.get("a").touch()  # a was restored: now b is the least recently used
    time.sleep(0.02)
    _publish(cache, "d", 1)
    assert sorted(s.key for s in cache.entries()) == ["a", "c", "d"]
    assert not any(p.name.startswith(".tmp-") for p in tmp_path.iterdir())


def test_a_second_writer_of_the_same_key_keeps_the_first(tmp_path: Path):
    cache = SnapshotCache(tmp_path, limit_bytes=100 << 20)
    first, second = cache.scratch("k"), cache.scratch("k")
    assert first != second  # two workers never write the same path
    (first / "state").write_bytes(b"first")
    (second / "state").write_bytes(b"second")
    cache.publish("k", first, {"key": "k"})
    kept = cache.publish("k", second, {"key": "k"})
    assert kept is not None and kept.state.read_bytes() == b"first"
    assert not second.exists()


def test_clear_and_drop(tmp_path: Path):
    cache = SnapshotCache(tmp_path, limit_bytes=100 << 20)
    _publish(cache, "x", 1)
    _publish(cache, "y", 1)
    cache.drop("x", "test")
    assert [s.key for s in cache.entries()] == ["y"]
    assert cache.clear() == 1 and cache.entries() == []


def test_the_size_limit_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("TESTBED_SNAPSHOT_CACHE_MIB", "123")
    assert cache_limit_bytes() == 123 << 20
    monkeypatch.delenv("TESTBED_SNAPSHOT_CACHE_MIB")
    assert cache_limit_bytes() == 4096 << 20
