"""`testbed matrix`: the CLI of testbed.matrix (runs, table, JSON, HTML, the CI job matrix, merge)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from testbed import matrix
from testbed.cli_common import log_to, variables
from testbed.errors import TestbedError


def cmd_matrix(args: argparse.Namespace, console: Console) -> int:
    if args.scenario == "merge":
        if not args.inputs:
            raise TestbedError("testbed matrix merge: give the JSON files of the slices")
        rows = matrix.merge([Path(p) for p in args.inputs])
    else:
        if args.inputs:
            raise TestbedError(f"testbed matrix: unexpected arguments {args.inputs} (only merge takes files)")
        combos = matrix.combinations(args.qemu, args.kernel)
        if args.emit == "github":
            print(json.dumps(matrix.github_matrix(combos)))
            return 0
        if args.only is not None:
            if not 0 <= args.only < len(combos):
                raise TestbedError(f"--only {args.only}: there are {len(combos)} combinations (0..{len(combos) - 1})")
            combos = [combos[args.only]]
        log_to(console, quiet=False)
        rows = matrix.run_matrix(Path(args.scenario), combos, variables(args.set),
                                 Path(args.artifacts).resolve() if args.artifacts else None)
    table = Table(title=f"testbed matrix: {rows[0]['scenario'] if rows else '(no rows)'}")
    for col in ("qemu", "QEMU version", "kernel", "guest kernel", "outcome", "figures", "evidence"):
        table.add_column(col)
    for r in rows:
        table.add_row(*(Text(str(v)) for v in (r["qemu"], r.get("qemu_version") or "-", r["kernel"],
                                                r.get("guest_kernel") or "-", r["outcome"],
                                                json.dumps(r["figures"]), (r.get("evidence") or "")[:160])))
    Console(width=200).print(table)
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows}, indent=2) + "\n")
    if args.html:
        matrix.write_html(rows, Path(args.html))
    return 0 if all(r["outcome"] in ("passed", "reproduced", "not-reproduced") for r in rows) else 1



def add_matrix_parser(sub: Any) -> None:
    mx = sub.add_parser("matrix", help="one scenario over several QEMU builds and guest kernels (docs/zoo.md)")
    mx.add_argument("scenario", help="the scenario file; or `merge`, then the JSON files of CI slices")
    mx.add_argument("inputs", nargs="*", help=argparse.SUPPRESS)
    mx.add_argument("--qemu", action="append", default=[], metavar="PATH",
                    help="a QEMU binary (repeat; `default`: the system's)")
    mx.add_argument("--kernel", action="append", default=[], metavar="KERNEL",
                    help="a guest kernel (repeat): debian:SUITE for Debian's kernel from that suite of the image "
                         "recipe (debian:bookworm is 6.1, debian:bookworm-backports 6.12) or debian:trixie (its 6.12 "
                         "kernel under the recipe's userland), BZIMAGE:MODULES_DIR for "
                         "your own build, or `default` (the recipe's)")
    mx.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="template variable")
    mx.add_argument("--emit", choices=["github"], help="print the combinations as a GitHub Actions job matrix")
    mx.add_argument("--only", type=int, metavar="N", help="run combination N only (one CI job's slice)")
    mx.add_argument("--json", help="write the rows here")
    mx.add_argument("--html", help="write an HTML table here")
    mx.add_argument("--artifacts", help="artifacts root (one directory per combination)")
    mx.set_defaults(func=cmd_matrix)
