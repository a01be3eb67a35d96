"""Run known page populations in a real memcg under a ladder of limits and record what the kernel did.

The command line of the fidelity harness (root only): ``python -m wsrl.lab.measure [--quick] --out
PATH.json``. What it runs and measures is :mod:`wsrl.lab.ladder`; the cgroups and zram swap it sets
up are :mod:`wsrl.lab.kernel`; :mod:`wsrl.sim.fidelity.compare` compares the JSON it writes with
the simulator.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from wsrl.errors import WsrlError
from wsrl.lab.ladder import CASE_SETS, run_measurements
from wsrl.lab.table import TABLE_HEADER


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m wsrl.lab.measure [--quick] --out PATH.json``."""
    parser = argparse.ArgumentParser(prog="python -m wsrl.lab.measure", description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="where to write the JSON document")
    parser.add_argument(
        "--quick", action="store_true", help="2 small cases, a few rungs, short windows (< 40 s)"
    )
    parser.add_argument(
        "--cases",
        choices=sorted(CASE_SETS),
        default=None,
        help="which cases: default (the ladder of docs/fidelity.md), sweeps (sweeps beside other "
        "pages, a file scan; about 7 minutes) or quick (as --quick)",
    )
    parser.add_argument(
        "--warmup-s",
        type=float,
        default=None,
        help="unmeasured pattern time per rung, for every case (default: each case's steady-state "
        "timing, twice its longest access interval)",
    )
    parser.add_argument(
        "--duration-s",
        type=float,
        default=None,
        help="measured window per rung, for every case (default: each case's, at least 10 s)",
    )
    parser.add_argument("--file-dir", type=Path, default=None, help="disk directory for file populations")
    args = parser.parse_args(argv)
    cases = CASE_SETS["quick" if args.quick else (args.cases or "default")]()
    header_pending = [True]

    def progress(line: str) -> None:
        if header_pending:
            print(TABLE_HEADER, file=sys.stderr, flush=True)
            header_pending.clear()
        print(line, file=sys.stderr, flush=True)

    try:
        doc = run_measurements(
            cases,
            warmup_s=args.warmup_s,
            duration_s=args.duration_s,
            file_dir=args.file_dir,
            progress=progress,
        )
    except WsrlError as exc:
        print(f"wsrl: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("wsrl: interrupted; everything created was removed", file=sys.stderr)
        return 130
    doc["settings"]["quick"] = args.quick
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(args.out)
    print(f"{len(doc['results'])} rungs in {doc['elapsed_s']:.1f} s -> {args.out}", file=sys.stderr)
    if doc["cleanup_errors"]:
        print("cleanup errors:\n  " + "\n  ".join(doc["cleanup_errors"]), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
