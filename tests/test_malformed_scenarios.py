"""1,000 malformed scenario files, generated from a seed: `testbed run` must refuse every one with
exit status 2 and a message naming the file (and, for a misspelt key, the key), quickly, without a
traceback, without running anything: no template may create its marker file, and the 'QEMU'
tripwire must never run.

The classes: misspelt keys at every level of a valid scenario, misspelt actions and kinds, wrong
types, out-of-range values, bad MACs and addresses, duplicate keys, steps out of order, absurd
sizes, unsafe names, binary and non-UTF-8 bytes, deep nesting, template attacks, templates that
never end or grow without bound, templates including themselves, odd file names and paths."""

from __future__ import annotations

import copy
import gzip
import os
import pty
import random
import re
import select
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from testbed import cli
from testbed.errors import ScenarioError, TestbedError
from testbed.scenario import STEP_TYPES, load_scenario
from testbed.scenario_model import FailoverPair, IgbVfPrimary, Network, PciPrimary, Scenario, Standby, VM

SEED = 20261126
COUNT = 1000
PER_FILE_S = 2.0

BASE: dict[str, Any] = {
    "name": "gen-base",
    "description": "a valid scenario that every case breaks in one way",
    "markers": ["slow"],
    "network": {"hosts": 2, "peer_addresses": ["192.168.77.1/24", "192.168.78.1/24"]},
    "vms": [
        {"name": "vm1", "memory_mib": 512, "cpus": 1, "kernel_args": ["loglevel=7"], "pairs": [
            {"name": "net0", "mac": "52:54:00:00:12:53", "address": "192.168.77.2/24",
             "standby": {"failover": True, "legacy_virtio": False, "link": "up"},
             "primary": {"kind": "pci", "model": "e1000e"}},
            {"name": "vf", "mac": "52:54:00:00:12:54", "address": "192.168.78.2/24",
             "primary": {"kind": "igb-vf", "num_vfs": 2, "vf_index": 1}}]},
        {"name": "vm2", "memory_mib": 256, "pairs": [
            {"name": "net0", "mac": "52:54:00:00:12:55", "address": "192.168.77.3/24"}]},
    ],
    "steps": [
        {"action": "boot", "vms": ["vm1"], "wait_for_pairs": True, "timeout_s": 60},
        {"action": "check-netdevs", "vm": "vm1", "pairs": ["net0"], "expect": "paired", "wait": True},
        {"action": "check-primary-device", "vm": "vm1", "pair": "net0", "present": True},
        {"action": "start-traffic", "vm": "vm1", "pair": "net0", "interval_ms": 5, "tcp": True, "tcp_rate_kib_s": 64},
        {"action": "sleep", "seconds": 1},
        {"action": "unplug-primary", "vm": "vm1", "pair": "net0"},
        {"action": "check-traffic", "vm": "vm1", "pair": "net0", "max_gap_ms": 500, "max_lost": 100,
         "path": "any", "tcp_max_stall_ms": 2000, "min_packets": 5},
        {"action": "plug-primary", "vm": "vm1", "pair": "net0", "wait": True},
        {"action": "set-link", "vm": "vm1", "pair": "net0", "nic": "standby", "up": True},
        {"action": "fdb", "vm": "vm1", "pair": "net0", "op": "del", "port": "primary", "mac": "52:54:00:00:12:53"},
        {"action": "announce-self", "vm": "vm1", "rounds": 3, "initial_ms": 50, "max_ms": 550, "step_ms": 100},
        {"action": "exec", "vm": "vm1", "command": ["ip", "link"], "expect_status": 0},
        {"action": "pause", "message": "look"},
        {"action": "boot", "vms": ["vm2"]},
        {"action": "migrate", "vm": "vm2", "count": 1, "wait_unplug_timeout_s": 30, "expect": "completed"},
        {"action": "check-netdevs", "vm": "vm2", "expect": "standby-only"},
    ],
}
VM2_BOOT = 13  # index of the step that boots vm2
MODELS = (Scenario, Network, VM, FailoverPair, Standby, IgbVfPrimary, PciPrimary, *STEP_TYPES)
ALL_FIELDS = {f for m in MODELS for f in m.model_fields}


@dataclass
class Case:
    kind: str
    content: bytes | None = None        # None: make() creates the path
    expect: tuple[str, ...] = ()        # fragments the message must contain
    misspelt: str | None = None         # a misspelt key the message must name
    name: str | None = None             # the file's name, if not the default
    make: Callable[[Path], Path] | None = None
    marker: bool = False                # a template attack: checked through its marker file
    slow: bool = False                  # expected to run into the render time limit


def dump(data: Any) -> bytes:
    return yaml.dump(data, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper), sort_keys=False,
                     default_flow_style=False, allow_unicode=True).encode()


def fmt(path: tuple) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def walk(data: Any, path: tuple = ()) -> list[tuple]:
    """Paths to every value below data (dict keys and list items)."""
    out = []
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else ()
    for key, value in items:
        out.append(path + (key,))
        out += walk(value, path + (key,))
    return out


def get(data: Any, path: tuple) -> Any:
    for part in path:
        data = data[part]
    return data


def put(data: Any, path: tuple, value: Any) -> None:
    get(data, path[:-1])[path[-1]] = value


def misspell(rng: random.Random, word: str) -> str:
    for _ in range(100):
        i = rng.randrange(len(word))
        letter = rng.choice("abcdefghijklmnopqrstuvwxyz")
        op = rng.randrange(4)
        if op == 0 and len(word) > 1:
            j = min(i, len(word) - 2)
            bad = word[:j] + word[j + 1] + word[j] + word[j + 2:]
        elif op == 1 and len(word) > 2:
            bad = word[:i] + word[i + 1:]
        elif op == 2:
            bad = word[:i] + letter + word[i:]
        else:
            bad = word[:i] + letter + word[i + 1:]
        if bad != word and bad not in ALL_FIELDS and bad[0].isalpha() and isinstance(yaml.safe_load(bad), str):
            return bad
    raise AssertionError(f"no misspelling of {word!r}")


# --- The case generators. Each takes the rng and the case number and returns a Case. ---

def misspelt_key(rng: random.Random, n: int) -> Case:
    data = copy.deepcopy(BASE)
    path = rng.choice([p for p in walk(data) if isinstance(p[-1], str)])
    bad = misspell(rng, path[-1])
    parent = get(data, path[:-1])
    parent[bad] = parent.pop(path[-1])
    return Case("misspelt-key", dump(data), expect=(f": {fmt(path[:-1] + (bad,))}: ",), misspelt=bad)


def misspelt_action(rng: random.Random, n: int) -> Case:
    data = copy.deepcopy(BASE)
    i = rng.randrange(len(data["steps"]))
    bad = misspell(rng, data["steps"][i]["action"])
    data["steps"][i]["action"] = bad
    return Case("misspelt-action", dump(data), expect=(f": steps[{i}]: unknown action '{bad}'",))


def misspelt_kind(rng: random.Random, n: int) -> Case:
    data = copy.deepcopy(BASE)
    j = rng.randrange(2)
    bad = misspell(rng, data["vms"][0]["pairs"][j]["primary"]["kind"])
    data["vms"][0]["pairs"][j]["primary"]["kind"] = bad
    return Case("misspelt-kind", dump(data), expect=(f": vms[0].pairs[{j}].primary: unknown kind '{bad}'",))


def wrong_type(rng: random.Random, n: int) -> Case:
    data = copy.deepcopy(BASE)
    path = rng.choice(walk(data))
    put(data, path, rng.choice([{"zz": [1]}, [[1]]]))
    at = path[:-1] if path[-1] in ("action", "kind") else path
    return Case("wrong-type", dump(data), expect=(f": {fmt(at)}",))


OUT_OF_RANGE = [
    (("vms", 0, "memory_mib"), [0, 127, 16385, 10**6, -1]), (("vms", 0, "cpus"), [0, 9, 1000]),
    (("vms", 0, "pairs", 1, "primary", "num_vfs"), [0, 8]), (("vms", 0, "pairs", 1, "primary", "vf_index"), [-1, 2, 7]),
    (("steps", 0, "timeout_s"), [0, -5, 3601, 1e9]), (("steps", 4, "seconds"), [0, -1, 601, 1e12]),
    (("steps", 3, "interval_ms"), [0.5, 1001]), (("steps", 3, "tcp_rate_kib_s"), [0, 10241]),
    (("steps", 6, "max_gap_ms"), [-1]), (("steps", 6, "max_lost"), [-1, 10**10]), (("steps", 6, "min_packets"), [-1]),
    (("steps", 10, "rounds"), [0, 21]), (("steps", 10, "initial_ms"), [0, 10**6]),
    (("steps", 11, "expect_status"), [-1, 256]), (("steps", 14, "count"), [0, 51]),
    (("steps", 14, "wait_unplug_timeout_s"), [0, 3601]), (("network", "hosts"), [0, 3]),
    (("steps", 6, "timeout_s"), [float("nan"), float("inf")]),
]


def out_of_range(rng: random.Random, n: int) -> Case:
    data = copy.deepcopy(BASE)
    path, values = rng.choice(OUT_OF_RANGE)
    put(data, path, rng.choice(values))
    return Case("out-of-range", dump(data), expect=(f": {fmt(path)}: ",))


BAD_MACS = ["52:54:00:00:12:53\n", "00:00:00:00:00:00", "ff:ff:ff:ff:ff:ff", "06:54:00:00:00:01",
            "0a:54:00:01:00:01", "0A:54:00:00:00:01", "01:00:5e:00:00:01", "33:33:00:00:00:01", "52:54:00:00:12",
            "52:54:00:00:12:53:00", "52-54-00-00-12-53", "5254.0000.1253", "zz:54:00:00:12:53", "",
            " 52:54:00:00:12:53", "52:54:00:00:12:5g", "٥٢:54:00:00:12:53", 525400001253, True, None, 12.5]


def bad_mac(rng: random.Random, n: int) -> Case:
    data = copy.deepcopy(BASE)
    path = rng.choice([("vms", 0, "pairs", 0, "mac"), ("vms", 0, "pairs", 1, "mac"), ("vms", 1, "pairs", 0, "mac")])
    mac = rng.choice(BAD_MACS + ["52:54:00:00:12:56 sentinel-unquoted"])
    if mac == "52:54:00:00:12:56 sentinel-unquoted":  # an unquoted MAC: YAML makes it a base-60 number
        text = dump(data).replace(f"mac: '{get(data, path)}'".encode(), b"mac: 52:54:00:00:12:56")
        assert text != dump(data)
        return Case("bad-mac", text, expect=(f": {fmt(path)}: write the MAC in quotes",))
    put(data, path, mac)
    return Case("bad-mac", dump(data), expect=(f": {fmt(path)}: ",))


BAD_ADDRESSES = ["192.168.77.9/32", "192.168.77.9/31", "192.168.77.0/24", "192.168.77.255/24", "127.0.0.1/8",
                 "224.0.0.1/24", "0.0.0.0/0", "0.1.2.3/8", "169.254.0.5/16", "240.1.2.3/8", "255.255.255.255/24",
                 "10.0.2.99/24", "10.0.0.5/16", "192.168.77.9", "192.168.77.300/24", "fe80::1/64", "abc", "", 7]


def bad_address(rng: random.Random, n: int) -> Case:
    data = copy.deepcopy(BASE)
    path = rng.choice([("vms", 0, "pairs", 0, "address"), ("vms", 1, "pairs", 0, "address"),
                       ("network", "peer_addresses", 0), ("network", "peer_addresses", 1)])
    choice = rng.randrange(len(BAD_ADDRESSES) + 2)
    if choice == len(BAD_ADDRESSES):  # a peer address that a guest has
        path = ("network", "peer_addresses", 0)
        put(data, path, "192.168.77.3/24")
        return Case("bad-address", dump(data), expect=(": network.peer_addresses[0]: ", "vm2/net0"))
    if choice == len(BAD_ADDRESSES) + 1:  # two pairs with one address
        put(data, ("vms", 1, "pairs", 0, "address"), "192.168.77.2/24")
        return Case("bad-address", dump(data), expect=(": vms[1].pairs[0].address: ", "used twice"))
    put(data, path, BAD_ADDRESSES[choice])
    return Case("bad-address", dump(data), expect=(f": {fmt(path)}: ",))


def duplicate_key(rng: random.Random, n: int) -> Case:
    lines = dump(BASE).decode().splitlines()
    candidates = [(i, m) for i, line in enumerate(lines)
                  if (m := re.match(r"^(\s*)(- )?([A-Za-z_]+): (\S.*)$", line))]
    i, m = rng.choice(candidates)
    indent = len(m.group(1)) + (2 if m.group(2) else 0)
    lines.insert(i + 1, " " * indent + f"{m.group(3)}: {m.group(4)}")
    return Case("duplicate-key", ("\n".join(lines) + "\n").encode(),
                expect=(f": line {i + 2}: duplicate key '{m.group(3)}' (also on line {i + 1})",))


def _with_step(step: dict, at: int, data: dict | None = None) -> dict:
    data = copy.deepcopy(data or BASE)
    data["steps"].insert(at, step)
    return data


def step_order(rng: random.Random, n: int) -> Case:
    k = rng.randrange(1, VM2_BOOT)
    options = [
        (_with_step({"action": "boot"}, k), "boots VM 'vm1' again"),
        (_with_step({"action": "boot", "vms": ["vm1"]}, rng.randrange(1, len(BASE["steps"]))), "boots VM 'vm1' again"),
        (_with_step({"action": "check-netdevs", "vm": "vm2", "expect": "standby-only"}, k), "no earlier boot step"),
        (_with_step({"action": "exec", "vm": "vm2", "command": "true"}, k), "no earlier boot step"),
        (_with_step({"action": "migrate", "vm": "vm2"}, k), "no earlier boot step"),
        (_with_step({"action": "announce-self", "vm": "vm2"}, k), "no earlier boot step"),
        (_with_step({"action": "check-netdevs", "vm": "vm1", "pairs": []}, k), "at least 1 item"),
        (_with_step({"action": "check-netdevs", "vm": "vm9"}, k), "names VM 'vm9'"),
        (_with_step({"action": "unplug-primary", "vm": "vm1", "pair": "nope"}, k), "names pair 'nope'"),
        (_with_step({"action": "check-traffic", "vm": "vm1", "pair": "vf"}, k), "before any start-traffic"),
        (_with_step({"action": "start-traffic", "vm": "vm1", "pair": "net0"}, rng.randrange(4, 12)), "starts traffic"),
        (_with_step({"action": "unplug-primary", "vm": "vm2", "pair": "net0"}, len(BASE["steps"])), "needs the primary"),
        (_with_step({"action": "boot", "vms": []}, k), "at least 1 item"),
        (_with_step({"action": "boot", "vms": ["vm2", "vm2"]}, k), "listed twice"),
        (_with_step({"action": "sleep", "seconds": 1}, 0), "must be a boot step"),
    ]
    data, fragment = rng.choice(options)
    return Case("step-order", dump(data), expect=(fragment,))


def absurd_size(rng: random.Random, n: int) -> Case:
    data = copy.deepcopy(BASE)
    choice = rng.randrange(12)
    small_vm = {"name": "x", "memory_mib": 16384, "pairs": [{"name": "p", "mac": "52:54:00:00:00:01"}]}
    if choice == 0:
        count = rng.choice([9, 20, 500])
        data["vms"] = [dict(small_vm, name=f"v{i}", pairs=[{"name": "p", "mac": f"52:54:00:00:{i >> 8:02x}:{i & 255:02x}"}])
                       for i in range(count)]
        return Case("size", dump(data), expect=(": vms: List should have at most 8 items",))
    if choice == 1:
        data["vms"] += [dict(small_vm, name=f"big{i}", pairs=[{"name": "p", "mac": f"52:54:00:00:01:{i:02x}"}])
                        for i in range(2)]
        return Case("size", dump(data), expect=(": vms: the VMs ask for",))
    if choice == 2:
        data["vms"][1]["pairs"] = [{"name": f"p{i}", "mac": f"52:54:00:00:02:{i:02x}"} for i in range(9)]
        return Case("size", dump(data), expect=(": vms[1].pairs: List should have at most 8 items",))
    if choice == 3:
        data["vms"][0]["kernel_args"] = [f"a{i}=1" for i in range(rng.choice([65, 300, 5000]))]
        return Case("size", dump(data), expect=(": vms[0].kernel_args: List should have at most 64 items",))
    if choice == 4:
        data["vms"][0]["kernel_args"] = ["x" * rng.randrange(60, 2000) for _ in range(rng.randrange(2, 60))]
        return Case("size", dump(data), expect=(": vms[0].kernel_args: ", "2048 bytes"))
    if choice == 5:
        count = rng.choice([485, 1000, 20000])
        text = dump(data) + b"- {action: sleep, seconds: 1}\n" * count
        return Case("size", text, expect=(": steps: List should have at most 500 items",) if count < 20000
                    else ("more than 50000 YAML values",))
    if choice == 6:
        text = dump(data).replace(b"  - loglevel=7\n", b"  - k\n" * 870_000)  # the file alone is too large
        return Case("size", text, expect=(": (file): larger than 1 MiB",))
    if choice == 7:
        data["description"] = "d" * rng.choice([4097, 100_000])
        return Case("size", dump(data), expect=(": description: String should have at most 4096 characters",))
    if choice == 8:
        data["steps"][11]["command"] = rng.choice(["c" * 5000, ["a"] * 300, ["b" * 4097]])
        return Case("size", dump(data), expect=(": steps[11].command",))
    if choice == 9:
        data["steps"][12]["message"] = "m" * 5000
        return Case("size", dump(data), expect=(": steps[12].message: String should have at most 4096",))
    if choice == 10:
        data["markers"] = [f"m{i}" for i in range(17)]
        return Case("size", dump(data), expect=(": markers: List should have at most 16 items",))
    data["markers"] = [rng.choice(["not valid!", "", "a b", "x" * 65, "1st"])]
    return Case("size", dump(data), expect=(": markers[0]: ",))


BAD_NAMES = ["../escape", "../../../../tmp/x", "a/b", "..", "...", ".hidden", "a\0b", "x" * 65, "x" * 300, "",
             " ", "a b", "ü", "-x", "name\n", "a..b", "C:\\x", "\x1b[31mred"]


def unsafe_name(rng: random.Random, n: int) -> Case:
    data = copy.deepcopy(BASE)
    data["name"] = rng.choice(BAD_NAMES + [None, 12, ["a"]])
    return Case("name", dump(data), expect=(": name: ",))


def binary(rng: random.Random, n: int) -> Case:
    base = dump(BASE)
    choice = rng.randrange(9)
    if choice == 0:
        return Case("binary", rng.randbytes(rng.randrange(1, 5000)))
    if choice == 1:
        at = rng.randrange(len(base))
        return Case("binary", base[:at] + bytes([rng.randrange(0x80, 0x100)]) + b"\xff" + base[at:],
                    expect=("not UTF-8",))
    if choice == 2:
        return Case("binary", dump(dict(BASE, description="café")).decode().encode("latin-1"), expect=("not UTF-8",))
    if choice == 3:
        return Case("binary", dump(BASE).decode().encode(rng.choice(["utf-16", "utf-32"])), expect=("not UTF-8",))
    if choice == 4:
        at = rng.randrange(len(base))
        return Case("binary", base[:at] + b"\0" + base[at:], expect=("a NUL character",))
    if choice == 5:
        return Case("binary", gzip.compress(base, mtime=0))
    if choice == 6:
        return Case("binary", b"\x7fELF\x02\x01\x01" + bytes(rng.randrange(256) for _ in range(300)))
    if choice == 7:
        at = base.index(b"description: ") + 13
        return Case("binary", base[:at] + bytes([rng.choice([7, 8, 0x1b, 0x7f, 0x0c])]) + base[at:])
    return Case("binary", b"\xef\xbb\xbf" + base[:50] + b"\xc3\x28" + base[50:], expect=("not UTF-8",))


def deep(rng: random.Random, n: int) -> Case:
    depth = rng.choice([13, 40, 1000, 30_000, 200_000])
    choice = rng.randrange(9)
    if choice == 0:
        return Case("deep", f"steps: {'[' * depth}{']' * depth}\n".encode(), expect=(": line 1: ", "nest"))
    if choice == 1:
        return Case("deep", f"vms: {'{a: ' * depth}1{'}' * depth}\n".encode(), expect=(": line 1: ", "nest"))
    if choice == 2:
        d = min(depth, 1200)
        return Case("deep", ("a:\n" + "".join(" " * i + "b:\n" for i in range(1, d)) + " " * d + "c\n").encode(),
                    expect=(": line 1: ", "nest"))
    if choice == 3:
        return Case("deep", ("- " * min(depth, 100_000) + "x\n").encode(), expect=(": line 1: ", "nest"))
    if choice == 4:
        d = min(depth, 5000)
        return Case("deep", ("{% if true %}" * d + "x" + "{% endif %}" * d).encode())
    if choice == 5:
        return Case("deep", ("{{ " + "(" * depth + "1" + ")" * depth + " }}").encode())
    if choice == 6:
        return Case("deep", ("{{ " + "[" * depth + "]" * depth + " }}").encode())
    if choice == 7:
        d = min(depth, 3000)
        return Case("deep", ("{% for a in [1] %}" * d + "{% endfor %}" * d).encode())
    return Case("deep", ("{% set x %}" * min(depth, 5000) + "{% endset %}" * min(depth, 5000)).encode())


ATTACKS = [
    "{{ cycler.__init__.__globals__.os.popen('touch M').read() }}",
    "{{ joiner.__init__.__globals__.os.system('touch M') }}",
    "{{ namespace.__init__.__globals__.os.system('touch M') }}",
    "{{ lipsum.__globals__.os.system('touch M') }}",
    "{{ lipsum.__globals__['os'].popen('touch M').read() }}",
    "{{ cycler.__init__.__globals__.__builtins__.open('M', 'w').write('x') }}",
    "{{ lipsum.__globals__.__builtins__['open']('M', 'w').write('x') }}",
    "{{ joiner.__init__.__globals__.__builtins__.__import__('os').system('touch M') }}",
    "{{ namespace.__init__.__globals__.__builtins__.exec(\"open('M', 'w')\") }}",
    "{{ cycler.__init__.__globals__.sys.modules.os.system('touch M') }}",
    "{{ cycler['__init__']['__globals__']['os'].system('touch M') }}",
    "{{ (cycler|attr('__init__')|attr('__globals__'))['os'].system('touch M') }}",
    "{% set o = lipsum.__globals__.os %}{{ o.system('touch M') }}",
    "{% for c in ''.__class__.__mro__[1].__subclasses__() %}{% if c.__name__ == 'Popen' %}"
    "{{ c(['touch', 'M']) }}{% endif %}{% endfor %}",
    "{% for c in ().__class__.__bases__[0].__subclasses__() %}{% if 'warning' in c.__name__ %}"
    "{{ c()._module.__builtins__['__import__']('os').system('touch M') }}{% endif %}{% endfor %}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ self.__init__.__globals__.__builtins__.open('M', 'w') }}",
    "{{ self._TemplateReference__context.cycler.__init__.__globals__.os.system('touch M') }}",
    "{{ '{0.__class__.__init__.__globals__}'.format(cycler) }}",
    "{{ '%s'|format(lipsum.__globals__.os.system('touch M')) }}",
    "{{ cycler.next.__func__.__globals__.os.system('touch M') }}",
    "{{ range.__self__.open('M', 'w') }}",
    "{{ dict.__init__.__globals__ }}",
    "{{ lipsum.__code__ }}",
    "{{ config.__class__.__init__.__globals__['os'].system('touch M') }}",
    "{{ request.application.__globals__.__builtins__.open('M', 'w') }}",
    "{% set d = {} %}{{ d.update(a=1) }}{{ d.__setitem__('b', 2) }}",
    "{{ namespace(x=1).__class__.__init__.__globals__.os.system('touch M') }}",
    "{{ [].append.__self__.__class__.__mro__ }}",
    "{{ ().__class__.__base__.__subclasses__()[0].__init__.__globals__ }}",
]


def template_attack(rng: random.Random, n: int) -> Case:
    attack = rng.choice(ATTACKS).replace("M", "@MARKER@")
    base = dump(BASE).decode()
    where = rng.randrange(3)
    text = attack if where == 0 else base + f"# {attack}\n" if where == 1 else base.replace(
        "description: ", f"description: {attack} ", 1)
    return Case("template-attack", text.encode(), marker=True)


def runaway(rng: random.Random, n: int) -> Case:
    cases = [
        "{{ 'x' * 100000000 }}", "{{ 'x' * 10**9 }}", "{{ [0] * 10**8 }}", "{{ 10 ** 10 ** 10 }}",
        "{{ 'ab'|center(10**9) }}", "{{ '%0999999999d' % 1 }}", "{{ 'x'|indent(10**9, true) }}",
        "{{ 7 ** 999999 }}", "{% set n = namespace(s='x') %}{% for i in range(60) %}{% set n.s = n.s ~ n.s %}"
        "{% endfor %}{{ n.s|length }}",
        "{% for i in range(100000) %}{% for j in range(100) %}xxxxxxxxxx{% endfor %}{% endfor %}",
        "{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}",
        "{% macro a(n) %}{{ b(n + 1) }}{% endmacro %}{% macro b(n) %}{{ a(n + 1) }}{% endmacro %}{{ a(0) }}",
        "{% macro m(n) %}{{ m(n) ~ m(n) }}{% endmacro %}{{ m(1) }}",
        "{{ 1 / 0 }}", "{{ 1 + 'a' }}", "{{ undefined_thing }}", "{{ none.attr }}", "{{ [1][5] }}",
        "{% for i in range(10**9) %}{% endfor %}", "{{ '%d' % 'x' }}", "{{ 'x'|int(base=99) }}",
        "{{ ('\\ud800') }}", "{{ {}|first }}", "{{ 2 ** 0.5 ** -5000 }}", "{{ 1e308 * 10 }}|{{ x.y }}",
    ]
    slow = ["{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
            "{{ lipsum(1000000) }}",
            "{% for i in range(100000) %}{% for j in range(100000) %}{{ '' }}{% endfor %}{% endfor %}"]
    if n % 125 == 7:  # eight files run into the time limit: each costs the whole limit
        return Case("runaway", rng.choice(slow).encode(), expect=("rendering took longer than",), slow=True)
    return Case("runaway", rng.choice(cases).encode())


def self_include(rng: random.Random, n: int) -> Case:
    name = f"{n:04d}-include.yaml"
    statement = rng.choice([f"{{% include '{name}' %}}", f"{{% import '{name}' as me %}}", f"{{% extends '{name}' %}}",
                            f"{{% from '{name}' import m %}}", "{% include '/etc/passwd' %}",
                            "{% include ['a.yaml', 'b.yaml'] %}", "{% include x %}", "{% import 'x' as y %}"])
    text = rng.choice([statement, dump(BASE).decode() + statement + "\n", statement + "\n" + dump(BASE).decode()])
    return Case("include", text.encode(), name=name, expect=("cannot read other files",))


ODD_NAMES = ["with space.yaml", "ünïcödé-ñame.yaml", "[red]x[/red].yaml", "$HOME.yaml", "`id`.yaml", "a;b.yaml",
             "a'b\"c.yaml", "new\nline.yaml", "tab\tname.yaml", "%s%n%x.yaml", "-dash.yaml", ".hidden.yaml",
             "no-extension", "x.yaml.yaml", "日本語.yaml", "back\\slash.yaml", "..yaml", "*?.yaml"]


def odd_path(rng: random.Random, n: int) -> Case:
    inner = rng.choice([misspelt_key, bad_mac, step_order, misspelt_action])(rng, n)
    choice = rng.randrange(10)
    if choice <= 1:
        length = rng.choice([250, 251, 254, 255])
        name = f"{n:04d}" + "n" * (length - 9) + ".yaml"
        return Case("odd-name", inner.content, name=name, expect=inner.expect, misspelt=inner.misspelt)
    if choice <= 3:
        return Case("odd-name", inner.content, name=f"{n:04d}-{rng.choice(ODD_NAMES)}", expect=inner.expect,
                    misspelt=inner.misspelt)

    def make(tmp: Path) -> Path:
        base = tmp / f"{n:04d}-special"
        if choice == 4:
            base.mkdir()
            return base / ("x" * rng.choice([256, 300, 1000]) + ".yaml")       # ENAMETOOLONG
        if choice == 5:
            return Path(str(base) + "/" + "/".join(["d" * 200] * 25) + "/s.yaml")  # longer than PATH_MAX
        if choice == 6:
            base.mkdir()
            return base                                                       # a directory
        if choice == 7:
            os.mkfifo(base)
            return base                                                       # a FIFO: never opened
        if choice == 8:
            os.symlink(base, base)
            return base                                                       # a symlink loop
        base.write_bytes(b"x")
        return base / "s.yaml"                                                # through a file: ENOTDIR
    return Case("odd-path", make=make, expect=(": (file): ",))


def misc(rng: random.Random, n: int) -> Case:
    base = dump(BASE).decode()
    laughs = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n" for p, c in zip("abcdefgh", "bcdefghi"))
    texts = [
        ("", "expected a mapping"), ("   \n\n", "expected a mapping"), ("# only a comment\n", "expected a mapping"),
        ("- a\n- b\n", "expected a mapping"), ("just a string\n", "expected a mapping"), ("42\n", "expected a mapping"),
        (base + "---\n" + base, "invalid YAML"), ("name: x\n\tvms: []\n", "invalid YAML"),
        ("name: 'unterminated\n", "invalid YAML"), ("{{ unclosed\n", "template syntax"),
        ("{# never closed\n" + base, "template syntax"), ("{% if x %}\n", "template syntax"),
        ("x: !!python/object/apply:os.system ['touch @MARKER@']\n", "invalid YAML"),
        ("!!python/object/new:os.system [touch @MARKER@]\n", "invalid YAML"),
        (laughs, "aliases are expanded"), ("a: &a [*a]\n", "contains it"), ("a: &a {b: *a}\n", "contains it"),
        (base.replace("memory_mib: 512", "memory_mib: " + "1" * 5000), "invalid YAML"),
        (base.replace("name: gen-base", "1: x\nname: gen-base"), "is not a string"),
        (base.replace("name: gen-base", "yes: x\nname: gen-base"), "is not a string"),
        (base.replace("name: gen-base", "? [a, b]\n: c\nname: gen-base"), "is not a string"),
        (base.replace("name: gen-base", "null: x\nname: gen-base"), "is not a string"),
        (base.replace("memory_mib: 512", "memory_mib: !!binary aGVsbG8="), "memory_mib"),
        (base.replace("memory_mib: 512", "memory_mib: 2024-01-01"), "memory_mib"),
        (base.replace("markers:", "markers: !!set {a, b}\nxmarkers:"), "markers"),
        ("defaults: &d {name: vm1}\n" + base.replace("- name: vm1", "- <<: *d\n  name: vm1"), "defaults"),
        (base + "*undefined_alias\n", "invalid YAML"), ("a: b: c\n", "invalid YAML"),
    ]
    text, fragment = rng.choice(texts)
    return Case("misc", text.encode(), expect=(fragment,), marker="@MARKER@" in text)


# How many files of each class (1,000 in all).
GENERATORS: list[tuple[Callable[[random.Random, int], Case], int]] = [
    (misspelt_key, 200), (misspelt_action, 50), (misspelt_kind, 30), (wrong_type, 70), (out_of_range, 60),
    (bad_mac, 50), (bad_address, 50), (duplicate_key, 40), (step_order, 60), (absurd_size, 40),
    (unsafe_name, 25), (binary, 50), (deep, 40), (template_attack, 90), (runaway, 60), (self_include, 25),
    (odd_path, 40), (misc, 20),
]
assert sum(count for _, count in GENERATORS) == COUNT


def generate(tmp: Path) -> list[tuple[Path, Case]]:
    rng = random.Random(SEED)
    cases: list[tuple[Path, Case]] = []
    n = 0
    for generator, count in GENERATORS:
        for _ in range(count):
            case = generator(rng, n)
            if case.make is not None:
                path = case.make(tmp)
            else:
                path = tmp / (case.name or f"{n:04d}-{case.kind}.yaml")
                content = case.content or b""
                content = content.replace(b"@MARKER@", str(tmp / "markers" / f"{n:04d}").encode())
                path.write_bytes(content)
            cases.append((path, case))
            n += 1
    return cases


def squash(text: str) -> str:
    return "".join(text.split())  # rich wraps long lines, and folds words longer than a line


@pytest.fixture
def tripwire(tmp_path):
    marker = tmp_path / "qemu-was-run"
    fake = tmp_path / "qemu-system-x86_64"
    fake.write_text(f"#!/bin/sh\ntouch '{marker}'\nexit 1\n")
    fake.chmod(0o755)
    return fake, marker


def test_the_base_scenario_is_valid(tmp_path):
    path = tmp_path / "base.yaml"
    path.write_bytes(dump(BASE))
    assert load_scenario(path).name == "gen-base"


def test_a_thousand_malformed_files_are_refused(tmp_path, tripwire, capfd, monkeypatch):
    fake, ran = tripwire
    cases_dir = tmp_path / "cases"
    (cases_dir / "markers").mkdir(parents=True)
    accepted: list[str] = []

    def must_not_run(scenario, options, log=None):
        accepted.append(options.scenario_file)
        raise TestbedError("the scenario was accepted")
    monkeypatch.setattr(cli, "run_scenario", must_not_run)  # a safety net: nothing may start

    cases = generate(cases_dir)
    assert len(cases) == COUNT
    failures: list[str] = []
    slowest = (0.0, "")
    started = time.monotonic()
    for path, case in cases:
        t0 = time.perf_counter()
        rc = cli.main(["run", str(path), "--qemu", str(fake)])
        elapsed = time.perf_counter() - t0
        out, err = capfd.readouterr()
        text = squash(out + err)
        slowest = max(slowest, (elapsed, path.name[:60]))
        problems = []
        if rc != 2:
            problems.append(f"exit status {rc}")
        if "Traceback" in out + err:
            problems.append("a traceback")
        if squash(str(path)) not in text:
            problems.append("the file is not named")
        if case.misspelt and f"'{case.misspelt}'" not in text:
            problems.append(f"the misspelt key {case.misspelt!r} is not named")
        problems += [f"no {fragment!r}" for fragment in case.expect if squash(fragment) not in text]
        if elapsed >= PER_FILE_S:
            problems.append(f"took {elapsed:.2f} s")
        if problems:
            failures.append(f"{path.name[:80]!r} ({case.kind}): {', '.join(problems)}\n    {(out + err).strip()[:400]}")
    total = time.monotonic() - started
    print(f"{COUNT} files in {total:.1f} s; slowest {slowest[0]:.2f} s ({slowest[1]})")
    assert not failures, f"{len(failures)} of {COUNT} files:\n" + "\n".join(failures[:40])
    assert not accepted
    assert not list((cases_dir / "markers").iterdir()), "a template attack created its marker file"
    assert not ran.exists(), "the QEMU tripwire ran"


NASTIEST = {
    "attack.yaml": ATTACKS[0],
    "open.yaml": ATTACKS[5],
    "include-self.yaml": "{% include 'include-self.yaml' %}",
    "macro.yaml": "{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}",
    "loop.yaml": "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "deep.yaml": "steps: " + "[" * 200_000 + "]" * 200_000,
    "binary.yaml": None,
    "n" * 246 + ".yaml": None,
}


def test_the_nastiest_files_print_no_traceback_on_a_terminal(tmp_path, tripwire):
    fake, ran = tripwire
    markers = tmp_path / "markers"
    markers.mkdir()
    testbed = Path(sys.executable).with_name("testbed")
    command = [str(testbed)] if testbed.exists() else [sys.executable, "-m", "testbed.cli"]
    runs = []
    for name, text in NASTIEST.items():
        path = tmp_path / name
        if name == "binary.yaml":
            path.write_bytes(random.Random(SEED).randbytes(4096))
        elif text is None:
            path.write_text("steps: [{actoin: boot}]\n")
        else:
            path.write_text(text.replace("M", str(markers / name)) if text in ATTACKS else text)
        with pytest.raises(ScenarioError):  # refused in-process first: nothing may start for real
            load_scenario(path)
        primary, secondary = pty.openpty()  # a real terminal: rich's interactive output
        proc = subprocess.Popen([*command, "run", str(path), "--qemu", str(fake)], stdin=subprocess.DEVNULL,
                                stdout=secondary, stderr=secondary, cwd=tmp_path)
        os.close(secondary)
        runs.append((path, proc, primary))
    for path, proc, primary in runs:
        output = b""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if select.select([primary], [], [], 1)[0]:
                try:
                    chunk = os.read(primary, 65536)
                except OSError:  # EIO: the process closed the terminal
                    break
                if not chunk:
                    break
                output += chunk
            elif proc.poll() is not None:
                break
        os.close(primary)
        assert proc.wait(timeout=60) == 2, output
        text = output.decode(errors="replace")
        assert "Traceback" not in text and "invalid scenario" in text, text
        assert path.name[:40] in squash(text), text
    assert not list(markers.iterdir()) and not ran.exists()


EVERY_FILTER_TEST_AND_GLOBAL = """\
{%- set d = {"b": 2, "a": 1} -%}{%- set l = [{"n": "x", "v": 2}, {"n": "y", "v": 1}] -%}
{{ -3|abs }} {{ namespace(n="x")|attr("n") }} {{ [1,2,3]|batch(2)|list }} {{ "ab"|capitalize }} {{ "a"|center(5) }}
{{ "aab"|count }} {{ u|d("x") }} {{ u|default("y") }} {{ d|dictsort }} {{ "<"|e }} {{ "<"|escape }}
{{ 123456|filesizeformat }} {{ [1,2]|first }} {{ "1.5"|float }} {{ "<"|forceescape }} {{ "%s=%d"|format("a", 1) }}
{{ l|groupby("n")|list }} {{ "a\\nb"|indent(2) }} {{ "7"|int }} {{ d|items|list }} {{ [1,2]|join(",") }}
{{ [1,2]|last }} {{ "abc"|length }} {{ "ab"|list }} {{ "AB"|lower }} {{ l|map(attribute="n")|list }}
{{ [3,1]|max }} {{ [3,1]|min }} {{ d|pprint }} {{ [1,2]|random > 0 }} {{ [1,2,3]|reject("odd")|list }}
{{ l|rejectattr("v", "odd")|list }} {{ "ab"|replace("a", "c") }} {{ [1,2]|reverse|list }} {{ 1.26|round(1) }}
{{ "x"|safe }} {{ [1,2,3]|select("odd")|list }} {{ l|selectattr("v", "odd")|list }} {{ [1,2,3]|slice(2)|list }}
{{ [2,1]|sort }} {{ 1|string }} {{ "<b>x</b>"|striptags }} {{ [1,2]|sum }} {{ "ab cd"|title }} {{ d|tojson }}
{{ " a "|trim }} {{ "abcdefghijklmnopqrstuvwxyz"|truncate(10) }} {{ [1,1,2]|unique|list }} {{ "a"|upper }}
{{ {"a": "b c"}|urlencode }} {{ "see http://example.com"|urlize }} {{ "a b"|wordcount }} {{ "aaa bbb"|wordwrap(3) }}
{{ {"class": "x"}|xmlattr }}
{% for t in [1 is boolean, f is callable, u is defined, 4 is divisibleby(2), "<"|e is escaped, 2 is even,
   false is false, "upper" is filter, 1.0 is float, 2 is ge(1), 2 is gt(1), 1 is in([1]), 1 is integer,
   [] is iterable, 1 is le(2), 1 is lt(2), "a" is lower, {} is mapping, 1 is ne(2), none is none,
   1 is number, 1 is odd, 1 is sameas(1), [] is sequence, "" is string, "odd" is test, true is true,
   u is undefined, "A" is upper, 1 is eq(1), 1 is equalto(1), 2 is greaterthan(1), 1 is lessthan(2),
   1 == 1, 1 != 2, 1 < 2, 1 <= 2, 2 > 1, 2 >= 1] %}{{ t }}{% endfor %}
{% set c = cycler("a", "b") %}{{ c.next() }}{% set j = joiner(",") %}{{ j() }}{{ j() }}{{ dict(a=1) }}
{{ lipsum(1, html=false)|length > 0 }}{% set ns = namespace(x=1) %}{% set ns.x = ns.x + 1 %}{{ ns.x }}{{ range(3)|list }}
{% macro m(x) %}{{ x * 2 }}{% endmacro %}{{ m(2) }}{% filter upper %}q{% endfilter %}{% with a = 1 %}{{ a }}{% endwith %}
{{ "é"|upper }} {{ "\\u00e9" }} {{ 2 ** 10 }} {{ "ab" * 3 }} {{ [1] + [2] }} {{ 7 // 2 }} {{ 7 % 3 }} {{ "%05d" % 3 }}
"""


def test_every_filter_test_and_global_works_in_the_sandboxed_child():
    """The child cannot open files, so a jinja feature that imports a module on first use would fail
    there: every builtin filter, test and global is used once (see _PRELOADED)."""
    from testbed.scenario_template import _ENV, render_template
    text = render_template(EVERY_FILTER_TEST_AND_GLOBAL, {"f": len})
    used = set()
    for name in list(_ENV.filters) + list(_ENV.tests) + list(_ENV.globals):
        if re.search(rf"(\|\s*{re.escape(name)}\b|\bis {re.escape(name)}\b|\b{re.escape(name)}\()", EVERY_FILTER_TEST_AND_GLOBAL) \
                or name in ("==", "!=", "<", "<=", ">", ">=", "in"):
            used.add(name)
    assert used >= set(_ENV.filters) | set(_ENV.tests) | set(_ENV.globals), "a new filter, test or global to add here"
    assert "123.5 kB" in text and "a=b+c" in text and "É é 1024 ababab [1, 2] 3 1 00003" in text


def test_a_normal_render_costs_a_few_milliseconds():
    from testbed.scenario_template import render_template
    source = (Path(__file__).parent.parent / "scenarios" / "live-migration-pci.yaml").read_text()
    render_template(source)
    started = time.perf_counter()
    for _ in range(20):
        render_template(source, {"announce": False})
    assert (time.perf_counter() - started) / 20 < 0.05
